"""The public surfaces of ``actors`` and ``transport`` are deliberate.

Every package of the two has an ``__all__`` that lists exactly its public
names: each listed name exists, nothing private is listed, and nothing public
is left out (so a name becomes public by being added to ``__all__``, never
by accident). And no module reaches into another package's private parts: a
package's private modules (``_x.py``) and private names (``_y``) are for the
modules inside that package (its subpackages included); everything else goes
through the package's ``__init__.py``. This covers imports between our own
packages; what a module takes from a third-party library is that library's
business.
"""

from __future__ import annotations
import __future__

import ast
import importlib
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOTS = ("actors", "transport")
REPO = Path(__file__).resolve().parents[1]


def _packages() -> list[str]:
    """Every package of the two, found on disk (importing them is for the tests)."""
    return sorted(
        ".".join(init.parent.relative_to(REPO).parts)
        for root in ROOTS
        for init in (REPO / root).rglob("__init__.py")
    )


def _modules() -> list[tuple[str, Path]]:
    """Every module of the two packages: its dotted name and its file."""
    found: list[tuple[str, Path]] = []
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found.append((".".join(parts), path))
    return found


PACKAGES = _packages()


def test_the_packages_named_in_the_architecture_are_all_checked() -> None:
    named = {
        "actors",
        "actors.cli",
        "actors.core",
        "actors.http",
        "actors.runtime",
        "actors.testing",
        "actors.wire",
        "transport",
        "transport.jetstream",
        "transport.memory",
        "transport.testing",
    }
    assert named <= set(PACKAGES)


def _public_names(package: types.ModuleType) -> set[str]:
    """What ``package`` offers by name: not private, and not its own submodules."""
    names = set()
    for name, value in vars(package).items():
        if name.startswith("_") or not name.isidentifier():
            continue  # private, or pytest's assertion rewriting's own ("@py_builtins")
        if isinstance(value, __future__._Feature):
            continue  # ``from __future__ import annotations`` binds a name
        if isinstance(value, types.ModuleType) and value.__name__.startswith(
            f"{package.__name__}."
        ):
            continue  # a submodule, bound as an attribute once imported
        names.add(name)
    return names


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_exactly_the_public_names(name: str) -> None:
    package = importlib.import_module(name)
    listed = getattr(package, "__all__", None)
    assert isinstance(listed, list | tuple), f"{name} has no __all__"
    assert all(isinstance(item, str) for item in listed)
    assert len(set(listed)) == len(listed), f"{name}.__all__ lists a name twice"
    missing = [item for item in listed if not hasattr(package, item)]
    assert not missing, f"{name}.__all__ lists names it does not have: {missing}"
    private = [item for item in listed if item.startswith("_")]
    assert not private, f"{name}.__all__ exports private names: {private}"
    unlisted = sorted(_public_names(package) - set(listed))
    assert not unlisted, f"{name} has public names missing from __all__: {unlisted}"


@pytest.mark.parametrize("name", PACKAGES)
def test_star_import_gives_what_all_lists(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {name} import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(importlib.import_module(name).__all__)


@dataclass(frozen=True)
class PrivateImport:
    """``importer`` (a module) imports ``what``, private to package ``owner``."""

    importer: str
    line: int
    what: str
    owner: str

    def allowed(self) -> bool:
        return self.importer == self.owner or self.importer.startswith(f"{self.owner}.")

    def __str__(self) -> str:
        return f"{self.importer}:{self.line} imports {self.what} (private to {self.owner})"


def _is_private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def _is_package(dotted: str) -> bool:
    return (REPO.joinpath(*dotted.split(".")) / "__init__.py").is_file()


def _owner(dotted: str) -> str | None:
    """The package whose private part ``dotted`` (a module or a name) is, if it is one.

    ``a.b._c.d`` belongs to ``a.b``, the package holding the private ``_c``.
    """
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if _is_private(part):
            owner = ".".join(parts[:i])
            # A private name of a plain module belongs to the module's package.
            return owner if _is_package(owner) else owner.rpartition(".")[0]
    return None


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    # A module's package is itself if it is one (``__init__``), else its parent.
    base = module.split(".")
    if not _is_package(module):
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _private_imports(module: str, path: Path) -> list[PrivateImport]:
    found: list[PrivateImport] = []
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            targets = [f"{source}.{alias.name}" for alias in node.names if alias.name != "*"]
        else:
            continue
        for target in targets:
            if target.split(".")[0] not in ROOTS:
                continue
            owner = _owner(target)
            if owner is not None:
                found.append(PrivateImport(module, node.lineno, target, owner))
    return found


def test_no_module_imports_another_packages_private_parts() -> None:
    offences = [
        str(found)
        for module, path in _modules()
        for found in _private_imports(module, path)
        if not found.allowed()
    ]
    assert not offences, "\n".join(offences)


def test_the_private_import_check_sees_what_it_must(tmp_path: Path) -> None:
    # The rule itself, on imports written the ways the packages write them.
    def offences(module: str, source: str) -> list[str]:
        path = tmp_path / "m.py"
        path.write_text(source)
        return [str(f) for f in _private_imports(module, path) if not f.allowed()]

    runtime = "actors.runtime._client"
    assert offences(runtime, "from ..core._decide import decide\n") == [
        f"{runtime}:1 imports actors.core._decide.decide (private to actors.core)"
    ]
    assert offences(runtime, "from actors.core import _helper\n") == [
        f"{runtime}:1 imports actors.core._helper (private to actors.core)"
    ]
    assert offences(runtime, "import transport._specs\n") == [
        f"{runtime}:1 imports transport._specs (private to transport)"
    ]
    assert offences(runtime, "def f():\n    from transport._options import parse_url\n") == [
        f"{runtime}:2 imports transport._options.parse_url (private to transport)"
    ]
    assert offences(runtime, "from ._orchestrator import _State\n") == []
    assert offences(runtime, "from ..core import decide\nfrom transport import Delivery\n") == []
    # A subpackage may use the private modules of the packages it is inside.
    memory = "transport.memory._stream"
    assert offences(memory, "from .._subjects import SubjectFilter\n") == []
    assert offences("transport._open", "from .memory._transport import X\n") == [
        "transport._open:1 imports transport.memory._transport.X (private to transport.memory)"
    ]
    assert offences("transport", "from ._errors import TransportError\n") == []


#: What the instances' state is to a module: its bucket, its schema, its codec.
_STATE_NAMES = frozenset(
    {"STATES_BUCKET", "InstanceState", "StepState", "StepStatus", "decode_state", "state_to_data"}
)


def test_the_worker_knows_nothing_of_the_instances_state() -> None:
    """The state schema is the orchestrator's; withdrawals reach workers on a bucket of theirs."""
    path = REPO / "actors" / "runtime" / "_worker.py"
    tree = ast.parse(path.read_text())
    imported = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert not (imported | used) & _STATE_NAMES
    assert "CANCELS_BUCKET" in imported
