"""Size limits on what an instance takes in, gives out and keeps.

Every limit is checked before anything is written or published, so an
instance over one fails whole, with an error that says which limit and by
how much, and never half-way (a state saying a task went out that did not).
Sizes are those of the encoded messages and records, in bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..errors import SizeLimitError

__all__ = ["Limits", "LimitExceededError"]

_KIB: Final = 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits one orchestrator enforces (clients check ``max_input`` early).

    ``max_input``: a start message, an activity's task, a child's start, a
    signal. ``max_output``: an activity's or child's result, and the
    workflow's output. ``max_state``: the stored instance state, which must
    also fit the broker's largest message (1 MiB by default).
    """

    max_input: int = 256 * _KIB
    max_output: int = 256 * _KIB
    max_state: int = 768 * _KIB

    def __post_init__(self) -> None:
        for name in ("max_input", "max_output", "max_state"):
            if getattr(self, name) < 1024:
                raise ValueError(f"{name} must be at least 1024 bytes")


class LimitExceededError(SizeLimitError, ValueError):
    """Something is over a :class:`Limits` limit; the message says what and by how much."""

    def __init__(self, what: str, size: int, limit: int, kind: str) -> None:
        self.kind = kind
        super().__init__(f"{what} is {size} bytes, over the {limit}-byte limit")
