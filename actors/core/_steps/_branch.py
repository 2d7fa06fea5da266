"""A branch: a sequence of steps inside a parallel or a choice step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._expressions import Expression
    from ._dispatch import Step

__all__ = ["Branch"]


@dataclass(frozen=True, slots=True)
class Branch:
    """A named sequence of steps inside a parallel or choice step.

    In a choice, ``when`` guards the branch (``None`` for the default).
    """

    id: str
    steps: tuple[Step, ...]
    when: Expression | None = None

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"steps": [step.to_data() for step in self.steps]}
        if self.when is not None:
            return {"when": self.when.source, **data}
        return {"id": self.id, **data}
