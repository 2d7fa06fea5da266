"""Workflow definitions: the model, its limits and its errors.

A definition is plain data (a mapping, from YAML, JSON or the builder in
``_builder.py``) that :func:`~._parse.parse_definition` turns into a frozen
:class:`Definition` with every expression compiled. Validation collects
every problem it finds and reports each as a :class:`FieldError` with the
path of the field at fault, e.g. ``steps[1].retry.initial_interval: "1x" is
not a duration``.

The canonical plain form (``Definition.to_data()``) is what the
``WORKFLOW_DEFINITIONS`` bucket stores; parsing it again gives an equal
definition, so what runs is exactly what was registered. The kinds of steps
are in ``_steps/``, one module each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from ..errors import RequestError
from ._places import Place, place_steps

if TYPE_CHECKING:
    from ._expressions import Expression
    from ._flow import ConcurrencyLimit
    from ._steps import Step

__all__ = [
    "MAX_NESTING",
    "MAX_STEPS",
    "MAX_VERSION",
    "Definition",
    "DefinitionError",
    "FieldError",
]

MAX_STEPS: Final = 1000
#: How deep parallel, map and choice steps may nest inside one another.
MAX_NESTING: Final = 8
MAX_VERSION: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with a definition: where (``steps[0].retry``) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class DefinitionError(RequestError, ValueError, http_type="InvalidDefinition"):
    """A definition that cannot be registered; ``errors`` lists every problem."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = tuple(errors)
        lines = "\n".join(f"  {error}" for error in self.errors)
        super().__init__(f"invalid workflow definition ({len(self.errors)} problems):\n{lines}")


@dataclass(frozen=True, slots=True)
class Definition:
    """A validated, compiled workflow type at one version.

    Step ids are unique across the whole definition, nested steps included,
    so an id alone finds a step's :class:`Place`.
    """

    type: str
    version: int
    steps: tuple[Step, ...]
    output: Expression | None = None
    description: str = ""
    #: Workflow-level concurrency limits (see ``_flow.py``); empty: none.
    concurrency: tuple[ConcurrencyLimit, ...] = ()
    places: Mapping[str, Place] = field(default_factory=dict, compare=False, repr=False)
    #: Whether any activity step has a concurrency limit (``_flow.py``).
    limited_steps: bool = field(default=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "places", place_steps(self.steps))
        limited = any(
            getattr(place.step, "concurrency", None) is not None for place in self.places.values()
        )
        object.__setattr__(self, "limited_steps", limited)

    def step(self, step_id: str) -> Step | None:
        place = self.places.get(step_id)
        return None if place is None else place.step

    def index(self, step_id: str) -> int:
        """The position of top-level ``step_id``; ``-1`` if there is no such step."""
        place = self.places.get(step_id)
        return -1 if place is None or place.owner is not None else place.index

    def to_data(self) -> dict[str, Any]:
        """The canonical plain form: every default spelled out."""
        data: dict[str, Any] = {
            "type": self.type,
            "version": self.version,
            "steps": [step.to_data() for step in self.steps],
        }
        if self.output is not None:
            data["output"] = self.output.source
        if self.description:
            data["description"] = self.description
        if self.concurrency:
            data["concurrency"] = [limit.to_data() for limit in self.concurrency]
        return data
