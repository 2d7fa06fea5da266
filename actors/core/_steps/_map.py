"""Map steps: run a body of steps once for each item of a list.

The list is what the ``map`` expression gives when the step begins; at
most ``concurrency`` items run at once, started in order. Each item's
copies of the body's steps are keyed with ``@<index>``; inside, the
expressions see ``item`` and ``index``, and the body's first step receives
the item. The output lists each item's last output, in the items' order.

A finished item leaves only its output behind (and those of its steps
that may yet be compensated), so that a long map keeps a bounded state.

History: ``map.started``, ``map.completed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

from .._error_info import ErrorInfo
from .._expressions import ExpressionError
from .._refs import Ref, parse_key
from .._scope import context
from .._state import StepState, StepStatus

if TYPE_CHECKING:
    from .._decision import Decision
    from .._definition import Definition
    from .._expressions import Expression
    from .._parse import Checker
    from .._places import Place
    from ._dispatch import Step

__all__ = ["FIELDS", "MAX_CONCURRENCY", "MapStep", "begin", "inner_done", "parse"]

#: The most items of a map that may run at once.
MAX_CONCURRENCY: Final = 1000


@dataclass(frozen=True, slots=True)
class MapStep:
    """Run ``steps`` once for each item of the list ``items`` evaluates to.

    At most ``concurrency`` items run at once; items start in order. Inside,
    expressions see ``item`` and ``index``, and the first step receives the
    item. The output lists each item's last output, in the items' order.
    """

    id: str
    items: Expression
    steps: tuple[Step, ...]
    concurrency: int = 10

    def to_data(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "map": self.items.source,
            "concurrency": self.concurrency,
            "steps": [step.to_data() for step in self.steps],
        }


#: The fields of a map step (its kind: the key ``map``, an expression giving the list).
FIELDS: Final = frozenset({"id", "map", "steps", "concurrency"})
_COMPLETED: Final = "map.completed"


def parse(
    checker: Checker, step: Mapping[str, Any], step_id: str | None, depth: int
) -> MapStep | None:
    inner = checker.nest(depth)
    if inner is None:
        return None
    items = checker.expression(step, "map", required="an expression giving a list")
    concurrency = checker.integer(
        step, "concurrency", 10, 1, MAX_CONCURRENCY, f"must be from 1 to {MAX_CONCURRENCY}"
    )
    body = checker.steps(step.get("steps"), inner)
    if step_id is None or items is None or concurrency is None:
        return None
    return MapStep(step_id, items, tuple(body), concurrency)


def begin(build: Decision, definition: Definition, ref: Ref, step: MapStep) -> None:
    try:
        items = step.items.evaluate(context(build.state, definition, ref))
    except ExpressionError as exc:
        build.fail_workflow(definition, ErrorInfo("ExpressionError", f"step {ref.key!r}: {exc}"))
        return
    if not isinstance(items, list):
        error = ErrorInfo(
            "ExpressionError", f"step {ref.key!r}: map gave {type(items).__name__}, not a list"
        )
        build.fail_workflow(definition, error)
        return
    build.set_step(
        ref.key,
        StepState(StepStatus.RUNNING, 1, build.now, output=[None] * len(items), items=tuple(items)),
    )
    build.history("map.started", step=ref.key, items=len(items), concurrency=step.concurrency)
    if not items:
        build.step_done(definition, ref, [], _COMPLETED)
        return
    for _ in range(min(step.concurrency, len(items))):
        if not _next_item(build, definition, ref, step):
            return


def inner_done(
    build: Decision, definition: Definition, ref: Ref, step: MapStep, last: Ref, output: Any
) -> None:
    """An item finished: keep its output, forget its steps; start the next, or be done."""
    item = last.path[len(ref.path)]
    prefix = (*ref.path, item)
    dropped: list[str] = []
    for key, state in build.state.steps.items():
        parsed = parse_key(key)
        if parsed is None or parsed[1][: len(prefix)] != prefix:
            continue
        place = definition.places.get(parsed[0])
        # Another map (in a sibling branch, say) numbers its items alike.
        if place is None or not _within(definition, place, step.id):
            continue
        # A completed step that can be undone is kept for compensation.
        if not (place.undoable and state.status is StepStatus.COMPLETED):
            dropped.append(key)
    build.drop_steps(dropped)
    current = build.state.steps[ref.key]
    # A new list: states are never changed in place (the caller's stays as is).
    results = list(current.output or ())
    results[item] = output
    finished = current.finished_items + 1
    build.set_step(ref.key, replace(current, output=results, finished_items=finished))
    total = len(current.items or ())
    if finished == total:
        build.step_done(definition, ref, results, _COMPLETED)
    elif current.next_item < total:
        _next_item(build, definition, ref, step)


def _next_item(build: Decision, definition: Definition, ref: Ref, step: MapStep) -> bool:
    """Start the map's next item; ``False`` once the map is no longer running."""
    current = build.state.steps[ref.key]
    item = current.next_item
    if item >= len(current.items or ()):
        return current.status is StepStatus.RUNNING
    build.set_step(ref.key, replace(current, next_item=item + 1))
    first = definition.places[step.steps[0].id]
    build.begin(definition, Ref(first, (*ref.path, item)))
    return build.state.steps[ref.key].status is StepStatus.RUNNING


def _within(definition: Definition, place: Place, container: str) -> bool:
    """Whether the step at ``place`` is nested (at any depth) in step ``container``."""
    owner = place.owner
    while owner is not None:
        if owner == container:
            return True
        owner = definition.places[owner].owner
    return False
