"""What a step's expressions see, and what flows into a step by default."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._refs import parse_key
from ._state import InstanceState, StepStatus

if TYPE_CHECKING:
    from ._definition import Definition
    from ._expressions import Expression
    from ._refs import Ref

__all__ = ["chained", "context", "input_of"]


def context(state: InstanceState, definition: Definition, ref: Ref | None) -> dict[str, Any]:
    """The data expressions of ``ref`` (``None``: the workflow's output) see.

    ``input``; ``steps.<id>.output`` of every completed step visible from
    ``ref`` (see ``Place.visible``; inside a map item, that item's copies);
    ``workflow``; and, inside a map, the nearest map's ``item`` and ``index``.
    """
    visible: dict[str, Any] = {}
    path = () if ref is None else ref.path
    for key, step in state.steps.items():
        if step.status is not StepStatus.COMPLETED:
            continue
        parsed = parse_key(key)
        if parsed is None or parsed[2]:
            continue
        step_id, step_path, _ = parsed
        if ref is not None and step_id not in ref.place.visible:
            continue
        if step_path == path[: len(step_path)]:
            visible[step_id] = {"output": step.output}
    data: dict[str, Any] = {
        "input": state.input,
        "steps": visible,
        "workflow": {"id": state.id, "type": state.type, "version": state.version},
    }
    item = None if ref is None else ref.item_of(definition)
    if item is not None:
        owner, index = item
        items = state.steps[owner.key].items or ()
        data["index"] = index
        # A completed map keeps its items only if something in it may be
        # undone (see Decision.step_done); nothing else asks for them then.
        data["item"] = items[index] if index < len(items) else None
    return data


def chained(state: InstanceState, definition: Definition, ref: Ref) -> Any:
    """What flows into ``ref`` by default: the output of the step before it.

    The first step of a branch receives the input of the parallel or choice
    step around it; the first step of a map item receives the item; the
    first step of the workflow receives the workflow's input.
    """
    if ref.place.index > 0:
        previous = state.steps.get(ref.sibling(definition, ref.place.index - 1).key)
        return None if previous is None else previous.output
    owner = ref.owner(definition)
    if owner is None:
        return state.input
    if ref.place.item_of == ref.place.owner:  # the step around it is a map
        items = state.steps[owner.key].items or ()
        return items[ref.path[len(owner.path)]]
    return chained(state, definition, owner)


def input_of(
    state: InstanceState, definition: Definition, ref: Ref, source: Expression | None
) -> Any:
    """The value of a step's ``input`` expression, or the chained value without one."""
    if source is None:
        return chained(state, definition, ref)
    return source.evaluate(context(state, definition, ref))
