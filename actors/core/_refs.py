"""Step keys, and the running copies of steps they name.

Each running copy of a step has a *key*: its id (unique in the definition)
plus ``@i`` for the item of every map around it, outermost first
(``charge@3``); ``~undo`` appended names its compensation. Events name
steps by key, and ``InstanceState.steps`` is keyed by it. A :class:`Ref`
is what a key names, resolved against the definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ._keys import UNDO_SUFFIX

if TYPE_CHECKING:
    from ._definition import Definition
    from ._places import Place
    from ._steps import Step

__all__ = ["UNDO", "Ref", "child_id", "parse_key", "resolve", "step_key"]

#: Suffix of the step key of a step's compensation (``~`` is not a valid
#: name character, so it never collides with a step id).
UNDO: Final = UNDO_SUFFIX


def step_key(step_id: str, path: tuple[int, ...] = ()) -> str:
    """The key of the copy of ``step_id`` running for map items ``path``."""
    return step_id + "".join(f"@{i}" for i in path)


def parse_key(key: str) -> tuple[str, tuple[int, ...], bool] | None:
    """``(step id, map item path, undo)`` from a step key; ``None`` if malformed."""
    undo = key.endswith(UNDO)
    if undo:
        key = key[: -len(UNDO)]
    step_id, *indices = key.split("@")
    if not all(index.isdigit() and len(index) < 10 for index in indices):
        return None
    return step_id, tuple(int(index) for index in indices), undo


def child_id(parent: str, key: str, run: int = 1) -> str:
    """The instance id of the child that step ``key`` of ``parent`` starts in run ``run``.

    Derived, never random, so that a repeated start finds the same child. A
    retried parent's later runs start children of their own (``-r{run}``).
    """
    child = f"{parent}-{key.replace('@', '-')}"
    return child if run == 1 else f"{child}-r{run}"


@dataclass(frozen=True, slots=True)
class Ref:
    """What a step key names: a copy of a step, or (``undo``) its compensation."""

    place: Place
    path: tuple[int, ...]
    undo: bool = False

    @property
    def step(self) -> Step:
        return self.place.step

    @property
    def key(self) -> str:
        key = step_key(self.place.step.id, self.path)
        return key + UNDO if self.undo else key

    def sibling(self, definition: Definition, index: int) -> Ref:
        """The copy of the step at ``index`` in the same sequence."""
        return Ref(definition.places[self.place.sequence[index].id], self.path)

    def owner(self, definition: Definition) -> Ref | None:
        """The parallel, map or choice step around this one (``None`` at the top)."""
        if self.place.owner is None:
            return None
        owner = definition.places[self.place.owner]
        return Ref(owner, self.path[: owner.maps])

    def item_of(self, definition: Definition) -> tuple[Ref, int] | None:
        """The nearest map around this copy, and which of its items the copy runs for."""
        if self.place.item_of is None:
            return None
        owner = definition.places[self.place.item_of]
        return Ref(owner, self.path[: owner.maps]), self.path[owner.maps]


def resolve(definition: Definition, key: str) -> Ref | None:
    """What ``key`` names in ``definition``; ``None`` if it names nothing there."""
    parsed = parse_key(key)
    if parsed is None:
        return None
    step_id, path, undo = parsed
    place = definition.places.get(step_id)
    if place is None or len(path) != place.maps:
        return None
    if undo and not place.compensable:
        return None
    return Ref(place, path, undo)
