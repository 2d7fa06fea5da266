"""Where each step of a definition sits, worked out once when the definition is built.

Step ids are unique across a definition, nested steps included, so an id
alone finds a step's :class:`Place`; what ``decide`` needs to know of a
step's surroundings (what holds it, which maps it runs under, which
outputs its expressions may read) is looked up here, never searched for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._steps import compensation, nesting

if TYPE_CHECKING:
    from ._steps import Step

__all__ = ["Place", "place_steps"]


@dataclass(frozen=True, slots=True)
class Place:
    """Where a step sits in its definition.

    ``sequence`` is the list of steps it belongs to and ``index`` its
    position there. ``owner`` is the parallel, map or choice step holding
    that sequence (``None`` at the top level) and ``branch`` which of its
    branches it is (0 for a map's body). ``maps`` counts the map steps
    around it: each running copy of the step is keyed by its id plus one
    ``@index`` per enclosing map, outermost first; ``item_of`` is the
    nearest of them (``None`` outside any map).

    ``visible`` holds the ids of the steps whose outputs the step's
    expressions may read: those that come before it in its sequence and in
    every sequence around it, with everything nested in them. A step in a
    parallel branch never sees a sibling branch's steps, whose progress
    depends on timing.

    ``compensable``: the step has a compensation of its own.
    ``undoable``: it has one, or a step nested in it does.
    """

    step: Step
    sequence: tuple[Step, ...]
    index: int
    owner: str | None
    branch: int
    maps: int
    visible: frozenset[str] = frozenset()
    item_of: str | None = None
    compensable: bool = False
    undoable: bool = False


def place_steps(steps: tuple[Step, ...]) -> dict[str, Place]:
    """The place of every step of a definition whose top-level steps are ``steps``, by id."""
    places: dict[str, Place] = {}
    _place(steps, None, 0, 0, None, frozenset(), places)
    return places


def _place(
    steps: tuple[Step, ...],
    owner: str | None,
    branch: int,
    maps: int,
    item_of: str | None,
    before: frozenset[str],
    into: dict[str, Place],
) -> tuple[set[str], bool]:
    """Place ``steps`` (one sequence) into ``into``, the steps nested in them too.

    Returns the ids of all those steps, and whether any of them can be undone.
    """
    seen = set(before)
    inside: set[str] = set()
    undoable = False
    for index, step in enumerate(steps):
        visible = frozenset(seen)
        held = nesting(step)
        ids = {step.id}
        compensable = compensation(step) is not None
        undoable_here = compensable
        nested: dict[str, Place] = {}
        for number, sequence in enumerate(held.sequences):
            nested_ids, nested_undoable = _place(
                sequence,
                step.id,
                number,
                maps + 1 if held.per_item else maps,
                step.id if held.per_item else item_of,
                visible,
                nested,
            )
            ids |= nested_ids
            undoable_here = undoable_here or nested_undoable
        # Listed before the steps nested in it.
        into[step.id] = Place(
            step, steps, index, owner, branch, maps, visible, item_of, compensable, undoable_here
        )
        into.update(nested)
        seen |= ids
        inside |= ids
        undoable = undoable or undoable_here
    return inside, undoable
