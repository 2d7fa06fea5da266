"""The shape of the core: the kind table is complete, and the modules import without cycles.

``mypy`` checks that every dispatch of ``actors.core._steps`` names every
kind (each ends in ``assert_never``); these tests check what it cannot: that
every key of the definition format gives a kind and every kind has a key,
and that the layering the package docstring describes holds at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, get_args

import pytest

from actors.core import parse_definition
from actors.core._steps import STEP_KEYS, Step, StepKey, syntax

CORE = Path(__file__).resolve().parents[1] / "actors" / "core"

#: A smallest valid step of each key (``id`` aside).
SMALLEST: dict[str, dict[str, Any]] = {
    "activity": {"activity": "a"},
    "sleep": {"sleep": "1s"},
    "sleep_until": {"sleep_until": "input.at"},
    "wait_signal": {"wait_signal": "go"},
    "workflow": {"workflow": "child"},
    "parallel": {"parallel": [{"id": "left", "steps": [{"id": "inner", "activity": "a"}]}]},
    "map": {"map": "input.items", "steps": [{"id": "inner", "activity": "a"}]},
    "choice": {"choice": [{"when": "input.flag", "steps": []}]},
}


def test_every_key_gives_a_kind_and_every_kind_has_a_key() -> None:
    assert set(SMALLEST) == set(STEP_KEYS)
    made: set[type] = set()
    for key in STEP_KEYS:
        definition = parse_definition({"type": "t", "steps": [{"id": "s", **SMALLEST[key]}]})
        step = definition.steps[0]
        made.add(type(step))
        # Its plain form says the same step, with the same key.
        assert key in step.to_data()
        again = parse_definition(definition.to_data())
        assert again == definition
    assert made == set(get_args(Step))


@pytest.mark.parametrize("key", STEP_KEYS)
def test_each_key_allows_id_and_its_own_key(key: StepKey) -> None:
    fields, _ = syntax(key)
    assert {"id", key} <= fields


def _module(path: Path) -> str:
    parts = list(path.relative_to(CORE.parents[1]).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(module: str) -> bool:
    return (CORE.parents[1].joinpath(*module.split(".")) / "__init__.py").is_file()


def _run_time_imports(module: str, path: Path) -> set[str]:
    """The core modules ``module`` imports when it runs (not those for annotations only)."""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:  # module level only
        if not isinstance(node, ast.ImportFrom) or not node.level:
            continue  # ``if TYPE_CHECKING:`` blocks are not ImportFrom nodes at this level
        source = ".".join([*base[: len(base) - (node.level - 1)], *filter(None, [node.module])])
        if node.module:  # ``from . import _x`` imports the submodule only
            found.add(source)
        for alias in node.names:
            submodule = f"{source}.{alias.name}"
            if (
                _is_package(submodule)
                or CORE.parents[1].joinpath(*source.split("."), f"{alias.name}.py").is_file()
            ):
                found.add(submodule)  # a submodule, imported by name
    return {name for name in found if name.startswith("actors.core") and name != module}


def test_the_core_imports_without_cycles() -> None:
    graph = {
        _module(path): _run_time_imports(_module(path), path)
        for path in sorted(CORE.rglob("*.py"))
        if path.parent == CORE or path.parent.parent == CORE
    }
    # The package's face imports everything; the modules under it never import it back.
    del graph["actors.core"]
    assert not any("actors.core" in imports for imports in graph.values())
    done: set[str] = set()

    def visit(module: str, trail: tuple[str, ...]) -> None:
        assert module not in trail, " -> ".join((*trail, module))
        if module in done:
            return
        for imported in sorted(graph.get(module, ())):
            visit(imported, (*trail, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())
    # The check sees the imports it must: the decision reaches the kinds.
    assert "actors.core._steps" in graph["actors.core._decision"]
    assert "actors.core._steps._activity" in graph["actors.core._steps._dispatch"]
