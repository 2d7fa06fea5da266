"""Workflow definitions: the declarative format, its validation and its model.

A definition is plain data (a mapping, from YAML, JSON or the builder in
``_builder.py``) that :func:`parse_definition` turns into a frozen
:class:`Definition` with every expression compiled. Validation collects every
problem it finds and reports each with the path of the field at fault, e.g.
``steps[1].retry.initial_interval: "1x" is not a duration``.

The canonical plain form (``Definition.to_data()``) is what the
``WORKFLOW_DEFINITIONS`` bucket stores; parsing it again gives an equal
definition, so what runs is exactly what was registered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

import yaml

from ..errors import RequestError
from ._expressions import Expression, ExpressionError
from ._keys import InvalidNameError, check_name

__all__ = [
    "ActivityStep",
    "Branch",
    "ChildStep",
    "ChoiceStep",
    "Compensation",
    "Definition",
    "DefinitionError",
    "FieldError",
    "MapStep",
    "ParallelStep",
    "Place",
    "RetryPolicy",
    "SignalStep",
    "SleepStep",
    "Step",
    "Timeouts",
    "load_definition",
    "parse_definition",
    "parse_duration",
]

MAX_STEPS: Final = 1000
#: How deep parallel, map and choice steps may nest inside one another.
MAX_NESTING: Final = 8
#: The most items of a map that may run at once.
MAX_CONCURRENCY: Final = 1000
MAX_VERSION: Final = 1_000_000
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


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
class RetryPolicy:
    """How a failed activity is retried.

    Attempt ``n`` (counting from 1) that fails is followed, after
    ``delay(n)`` seconds, by attempt ``n + 1``, as long as ``n <
    max_attempts`` and the error's type is not in ``non_retryable``.
    """

    max_attempts: int = 3
    initial_interval: float = 1.0
    backoff: float = 2.0
    max_interval: float = 60.0
    non_retryable: tuple[str, ...] = ()

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` before the next one."""
        try:
            raw = self.initial_interval * self.backoff ** (attempt - 1)
        except OverflowError:
            # A float power overflows (raises) only far beyond max_interval.
            return self.max_interval
        return min(raw, self.max_interval)

    def to_data(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts,
            "initial_interval": self.initial_interval,
            "backoff": self.backoff,
            "max_interval": self.max_interval,
            "non_retryable": list(self.non_retryable),
        }


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Limits on one activity attempt, in seconds (``None``: no limit).

    ``schedule_to_start``: longest wait in the queue before a worker starts it.
    ``start_to_close``: longest run once started. ``heartbeat``: longest gap
    between two heartbeats of a running activity.
    """

    schedule_to_start: float | None = None
    start_to_close: float = 300.0
    heartbeat: float | None = None

    def to_data(self) -> dict[str, Any]:
        return {
            "schedule_to_start": self.schedule_to_start,
            "start_to_close": self.start_to_close,
            "heartbeat": self.heartbeat,
        }


@dataclass(frozen=True, slots=True)
class Compensation:
    """The activity that undoes a completed step, should the workflow not finish.

    ``input=None`` passes the step's own output.
    """

    activity: str
    input: Expression | None = None

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"activity": self.activity}
        if self.input is not None:
            data["input"] = self.input.source
        return data


@dataclass(frozen=True, slots=True)
class ActivityStep:
    """Run activity ``activity`` with the value of ``input`` (a mapping).

    ``input=None`` passes the previous step's output (the workflow's input
    for the first step).
    """

    id: str
    activity: str
    input: Expression | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: Timeouts = field(default_factory=Timeouts)
    compensate: Compensation | None = None

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "activity": self.activity}
        if self.input is not None:
            data["input"] = self.input.source
        data["retry"] = self.retry.to_data()
        data["timeout"] = self.timeout.to_data()
        if self.compensate is not None:
            data["compensate"] = self.compensate.to_data()
        return data


@dataclass(frozen=True, slots=True)
class SleepStep:
    """Wait durably: ``seconds`` from when the step starts, or ``until`` a time.

    ``until`` evaluates to seconds since the epoch or an ISO 8601 time (UTC
    if it names no zone). A time already past ends the step at once.
    """

    id: str
    seconds: float | None = None
    until: Expression | None = None

    def to_data(self) -> dict[str, Any]:
        if self.until is not None:
            return {"id": self.id, "sleep_until": self.until.source}
        return {"id": self.id, "sleep": self.seconds}


@dataclass(frozen=True, slots=True)
class SignalStep:
    """Wait for signal ``signal``; its payload is the step's output.

    A signal sent before the step starts is kept and taken when it does.
    With a ``timeout``, the step fails with ``SignalTimeout`` after it.
    """

    id: str
    signal: str
    timeout: float | None = None

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "wait_signal": self.signal}
        if self.timeout is not None:
            data["timeout"] = self.timeout
        return data


@dataclass(frozen=True, slots=True)
class ChildStep:
    """Start workflow ``workflow`` as a child and wait for its result.

    ``version`` 0 takes the newest version when the step starts. ``input``
    ``None`` passes the previous step's output. The child's output is the
    step's output; its failure, cancellation or termination fails the step.
    """

    id: str
    workflow: str
    version: int = 0
    input: Expression | None = None

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "workflow": self.workflow}
        if self.version:
            data["version"] = self.version
        if self.input is not None:
            data["input"] = self.input.source
        return data


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


@dataclass(frozen=True, slots=True)
class ParallelStep:
    """Run every branch at once; done when all are.

    The output maps each branch's id to the output of its last step. The
    first step of every branch receives the parallel step's own input.
    """

    id: str
    branches: tuple[Branch, ...]

    def to_data(self) -> dict[str, Any]:
        return {"id": self.id, "parallel": [branch.to_data() for branch in self.branches]}


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


@dataclass(frozen=True, slots=True)
class ChoiceStep:
    """Run the first branch whose ``when`` holds, else ``default``.

    Truth follows JMESPath: ``false``, ``null`` and empty strings, lists and
    maps are false. With no branch taken and no default the step fails with
    ``NoChoiceMatched``; an empty default passes the step's input on.
    """

    id: str
    choices: tuple[Branch, ...]
    default: Branch | None = None

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "choice": [branch.to_data() for branch in self.choices],
        }
        if self.default is not None:
            data["default"] = [step.to_data() for step in self.default.steps]
        return data

    @property
    def branches(self) -> tuple[Branch, ...]:
        """The guarded branches, then the default if there is one."""
        return self.choices if self.default is None else (*self.choices, self.default)


Step: TypeAlias = (
    ActivityStep | SleepStep | SignalStep | ChildStep | ParallelStep | MapStep | ChoiceStep
)
#: Steps that hold sequences of other steps.
Container: TypeAlias = ParallelStep | MapStep | ChoiceStep


@dataclass(frozen=True, slots=True)
class Place:
    """Where a step sits in its definition.

    ``sequence`` is the list of steps it belongs to and ``index`` its
    position there. ``owner`` is the parallel, map or choice step holding
    that sequence (``None`` at the top level) and ``branch`` which of its
    branches it is (0 for a map's body). ``maps`` counts the map steps
    around it: each running copy of the step is keyed by its id plus one
    ``@index`` per enclosing map, outermost first.

    ``visible`` holds the ids of the steps whose outputs the step's
    expressions may read: those that come before it in its sequence and in
    every sequence around it, with everything nested in them. A step in a
    parallel branch never sees a sibling branch's steps, whose progress
    depends on timing.
    """

    step: Step
    sequence: tuple[Step, ...]
    index: int
    owner: str | None
    branch: int
    maps: int
    visible: frozenset[str] = frozenset()


def _inner(step: Step) -> tuple[Step, ...]:
    """The steps directly inside ``step`` (a container), in order."""
    if isinstance(step, MapStep):
        return step.steps
    if isinstance(step, ParallelStep | ChoiceStep):
        return tuple(inner for branch in step.branches for inner in branch.steps)
    return ()


def _ids(step: Step) -> list[str]:
    """``step``'s id and those of every step nested in it."""
    ids = [step.id]
    for inner in _inner(step):
        ids.extend(_ids(inner))
    return ids


def _places(
    steps: tuple[Step, ...],
    owner: str | None,
    branch: int,
    maps: int,
    before: frozenset[str],
    into: dict[str, Place],
) -> None:
    seen = set(before)
    for index, step in enumerate(steps):
        visible = frozenset(seen)
        into[step.id] = Place(step, steps, index, owner, branch, maps, visible)
        if isinstance(step, MapStep):
            _places(step.steps, step.id, 0, maps + 1, visible, into)
        elif isinstance(step, ParallelStep | ChoiceStep):
            for number, inner in enumerate(step.branches):
                _places(inner.steps, step.id, number, maps, visible, into)
        seen.update(_ids(step))


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
    places: Mapping[str, Place] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        places: dict[str, Place] = {}
        _places(self.steps, None, 0, 0, frozenset(), places)
        object.__setattr__(self, "places", places)

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
        return data


def parse_duration(value: object) -> float:
    """Seconds from ``1.5``, ``"500ms"``, ``"30s"``, ``"1m30s"``, ``"2h"``, ``"1d"``.

    Raises ``ValueError`` for anything else, negative numbers included.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float (and maybe for repr)
            raise ValueError("the number is too large to be a duration") from None
        if seconds < 0 or seconds != seconds or seconds == float("inf"):
            raise ValueError(f"{value!r} is not a duration (a finite number >= 0 is needed)")
        return seconds
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError(f"{value!r} is not a duration")
    text = value.strip()
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration (examples: 500ms, 30s, 1m30s, 2h, 1d)")
    return total


def load_definition(text: str | bytes, *, format: str = "yaml") -> Definition:
    """Parse a definition from YAML (a superset of JSON) or strict JSON text.

    Raises :class:`DefinitionError` for text that does not parse, as for a
    definition that is not valid.
    """
    if format not in ("json", "yaml"):
        raise ValueError(f"unknown definition format {format!r}: use yaml or json")
    try:
        data = json.loads(text) if format == "json" else yaml.safe_load(text)
    # ValueError: JSONDecodeError, and an integer literal of more than 4300
    # digits (Python's int/str conversion limit) in either format.
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise DefinitionError([FieldError("", f"not valid {format}: {exc}")]) from None
    return parse_definition(data)


def parse_definition(data: object) -> Definition:
    """Validate plain data and build the :class:`Definition`.

    Raises :class:`DefinitionError` listing every problem found, each with
    its field path.
    """
    checker = _Checker()
    definition = checker.definition(data)
    if checker.errors or definition is None:
        raise DefinitionError(checker.errors or [FieldError("", "invalid definition")])
    return definition


_TOP_KEYS: Final = frozenset({"type", "version", "steps", "output", "description"})
#: The fields each kind of step allows; a step's kind is the one key it has
#: of these.
_STEP_KEYS: Final = {
    "activity": frozenset({"id", "activity", "input", "retry", "timeout", "compensate"}),
    "sleep": frozenset({"id", "sleep"}),
    "sleep_until": frozenset({"id", "sleep_until"}),
    "wait_signal": frozenset({"id", "wait_signal", "timeout"}),
    "workflow": frozenset({"id", "workflow", "version", "input"}),
    "parallel": frozenset({"id", "parallel"}),
    "map": frozenset({"id", "map", "steps", "concurrency"}),
    "choice": frozenset({"id", "choice", "default"}),
}
_BRANCH_KEYS: Final = frozenset({"id", "steps"})
_CHOICE_KEYS: Final = frozenset({"when", "steps"})
_COMPENSATE_KEYS: Final = frozenset({"activity", "input"})
_RETRY_KEYS: Final = frozenset(RetryPolicy.__dataclass_fields__)
_TIMEOUT_KEYS: Final = frozenset(Timeouts.__dataclass_fields__)


class _Invalid:
    """Marks a part that was present but invalid (its errors are recorded)."""


_INVALID: Final = _Invalid()


class _Checker:
    """Walks plain data, collecting :class:`FieldError` s with their paths."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []
        self._path: list[str] = []
        #: Valid step ids met so far, anywhere in the definition.
        self._seen: set[str] = set()
        self._count = 0

    @contextmanager
    def _at(self, part: str) -> Iterator[None]:
        self._path.append(part)
        try:
            yield
        finally:
            self._path.pop()

    def _error(self, message: str) -> None:
        path = "".join(
            part if part.startswith("[") or i == 0 else f".{part}"
            for i, part in enumerate(self._path)
        )
        self.errors.append(FieldError(path, message))

    def _mapping(self, data: object, allowed: frozenset[str], what: str) -> dict[str, Any] | None:
        if not isinstance(data, Mapping):
            self._error(f"{what} must be a mapping, not {_kind(data)}")
            return None
        for key in data:
            if not isinstance(key, str) or key not in allowed:
                with self._at(_key_text(key)):
                    self._error(f"unknown field (expected one of: {', '.join(sorted(allowed))})")
        return {k: v for k, v in data.items() if isinstance(k, str) and k in allowed}

    def _name(self, data: Mapping[str, Any], key: str, what: str) -> str | None:
        with self._at(key):
            if key not in data:
                self._error("required")
                return None
            try:
                return check_name(what, data[key])
            except InvalidNameError as exc:
                self._error(str(exc))
                return None

    def _expression(self, data: Mapping[str, Any], key: str) -> Expression | None:
        if data.get(key) is None:
            return None
        with self._at(key):
            try:
                return Expression(data[key])
            except ExpressionError as exc:
                self._error(str(exc))
                return None

    def _duration(self, data: Mapping[str, Any], key: str, *, positive: bool) -> float | None:
        if data.get(key) is None:
            return None
        with self._at(key):
            try:
                seconds = parse_duration(data[key])
            except ValueError as exc:
                self._error(str(exc))
                return None
            if positive and seconds <= 0:
                self._error("must be more than zero")
                return None
            return seconds

    def definition(self, data: object) -> Definition | None:
        top = self._mapping(data, _TOP_KEYS, "a definition")
        if top is None:
            return None
        workflow_type = self._name(top, "type", "workflow type")
        version = top.get("version", 1)
        with self._at("version"):
            if isinstance(version, bool) or not isinstance(version, int):
                self._error(f"must be an integer, not {_kind(version)}")
            elif not 1 <= version <= MAX_VERSION:
                self._error(f"must be from 1 to {MAX_VERSION}")
        description = top.get("description", "")
        if not isinstance(description, str):
            with self._at("description"):
                self._error("must be a string")
        steps = self._steps(top.get("steps"))
        output = self._expression(top, "output")
        if self.errors or workflow_type is None:
            return None
        return Definition(
            type=workflow_type,
            version=version,
            steps=tuple(steps),
            output=output,
            description=description,
        )

    def _steps(self, data: object, depth: int = 0, *, empty: bool = False) -> list[Step]:
        """A list of steps (at ``steps`` of the current path).

        ``empty`` allows an empty list (a choice's branches).
        """
        with self._at("steps"):
            if data is None:
                self._error("required: a list of at least one step")
                return []
            if not isinstance(data, list) or (not data and not empty):
                self._error("must be a list of at least one step")
                return []
            self._count += len(data)
            if self._count > MAX_STEPS:
                self._error(f"{self._count} steps; the limit is {MAX_STEPS} in all")
                return []
        return self._sequence(data, "steps", depth)

    def _sequence(self, data: list[Any], key: str, depth: int) -> list[Step]:
        steps: list[Step] = []
        for i, item in enumerate(data):
            with self._at(key), self._at(f"[{i}]"):
                step = self._step(item, depth)
                # Duplicates are found among valid ids even when their step has
                # other problems, so that every problem is reported at once.
                step_id = item.get("id") if isinstance(item, Mapping) else None
                if isinstance(step_id, str) and _valid_name(step_id):
                    if step_id in self._seen:
                        with self._at("id"):
                            # Unique across the whole definition, nested steps too.
                            self._error(f"duplicate step id {step_id!r}")
                    self._seen.add(step_id)
                if step is not None:
                    steps.append(step)
        return steps

    def _step(self, data: object, depth: int) -> Step | None:
        if not isinstance(data, Mapping):
            self._error(f"a step must be a mapping, not {_kind(data)}")
            return None
        kinds = [kind for kind in _STEP_KEYS if kind in data]
        if len(kinds) != 1:
            self._error(
                "a step needs exactly one of: "
                + ", ".join(_STEP_KEYS)
                + (f" (it has {', '.join(kinds)})" if kinds else "")
            )
            return None
        kind = kinds[0]
        before = len(self.errors)
        step = self._mapping(data, _STEP_KEYS[kind], f"a {kind} step")
        if step is None:
            return None
        step_id = self._name(step, "id", "step id")
        if kind in ("parallel", "map", "choice"):
            if depth >= MAX_NESTING:
                self._error(f"parallel, map and choice steps nest at most {MAX_NESTING} deep")
                return None
            container = self._container(kind, step, step_id, depth + 1)
            return None if len(self.errors) != before else container
        if kind == "activity":
            return self._activity_step(step, step_id)
        if kind == "workflow":
            return self._child_step(step, step_id)
        if kind == "wait_signal":
            signal = self._name(step, "wait_signal", "signal name")
            timeout = self._duration(step, "timeout", positive=True)
            if step_id is None or signal is None or len(self.errors) != before:
                return None
            return SignalStep(step_id, signal, timeout)
        if kind == "sleep":
            with self._at("sleep"):
                if step.get("sleep") is None:
                    self._error("required: a duration")
            seconds = self._duration(step, "sleep", positive=False)
            if step_id is None or seconds is None:
                return None
            return SleepStep(step_id, seconds=seconds)
        until = self._expression(step, "sleep_until")
        if step_id is None or until is None:
            if until is None and step.get("sleep_until") is None:
                with self._at("sleep_until"):
                    self._error("required: an expression giving a time")
            return None
        return SleepStep(step_id, until=until)

    def _container(
        self, kind: str, step: Mapping[str, Any], step_id: str | None, depth: int
    ) -> Step | None:
        if kind == "map":
            items = self._expression(step, "map")
            if step.get("map") is None:
                with self._at("map"):
                    self._error("required: an expression giving a list")
            concurrency = step.get("concurrency", 10)
            with self._at("concurrency"):
                if isinstance(concurrency, bool) or not isinstance(concurrency, int):
                    self._error(f"must be an integer, not {_kind(concurrency)}")
                elif not 1 <= concurrency <= MAX_CONCURRENCY:
                    self._error(f"must be from 1 to {MAX_CONCURRENCY}")
            body = self._steps(step.get("steps"), depth)
            if step_id is None or items is None:
                return None
            return MapStep(step_id, items, tuple(body), concurrency)
        if kind == "parallel":
            branches = self._branches(step.get("parallel"), "parallel", depth)
            if step_id is None:
                return None
            return ParallelStep(step_id, tuple(branches))
        choices = self._branches(step.get("choice"), "choice", depth)
        default = None
        if "default" in step:
            with self._at("default"):
                if not isinstance(step["default"], list):
                    self._error("must be a list of steps (it may be empty)")
                    return None
            self._count += len(step["default"])
            if self._count > MAX_STEPS:
                with self._at("default"):
                    self._error(f"{self._count} steps; the limit is {MAX_STEPS} in all")
                return None
            default = Branch("default", tuple(self._sequence(step["default"], "default", depth)))
        if step_id is None:
            return None
        return ChoiceStep(step_id, tuple(choices), default)

    def _branches(self, data: object, key: str, depth: int) -> list[Branch]:
        choice = key == "choice"
        with self._at(key):
            if not isinstance(data, list) or not data:
                self._error("must be a list of at least one branch")
                return []
            if len(data) > MAX_STEPS:
                self._error(f"{len(data)} branches; the limit is {MAX_STEPS}")
                return []
        branches: list[Branch] = []
        names: set[str] = set()
        for i, item in enumerate(data):
            with self._at(key), self._at(f"[{i}]"):
                what = "a choice branch" if choice else "a parallel branch"
                branch = self._mapping(item, _CHOICE_KEYS if choice else _BRANCH_KEYS, what)
                if branch is None:
                    continue
                if choice:
                    when = self._expression(branch, "when")
                    if branch.get("when") is None:
                        with self._at("when"):
                            self._error("required: a condition")
                    steps = self._steps(branch.get("steps"), depth, empty=True)
                    if when is not None:
                        branches.append(Branch(str(i), tuple(steps), when))
                    continue
                name = self._name(branch, "id", "branch id")
                if name is not None and name in names:
                    with self._at("id"):
                        self._error(f"duplicate branch id {name!r}")
                steps = self._steps(branch.get("steps"), depth)
                if name is not None:
                    names.add(name)
                    branches.append(Branch(name, tuple(steps)))
        return branches

    def _child_step(self, step: Mapping[str, Any], step_id: str | None) -> ChildStep | None:
        workflow = self._name(step, "workflow", "workflow type")
        version = step.get("version", 0)
        with self._at("version"):
            if isinstance(version, bool) or not isinstance(version, int):
                self._error(f"must be an integer, not {_kind(version)}")
                return None
            if not 0 <= version <= MAX_VERSION:
                self._error(f"must be from 1 to {MAX_VERSION} (or 0 for the newest)")
                return None
        expression = self._expression(step, "input")
        if step_id is None or workflow is None:
            return None
        return ChildStep(step_id, workflow, version, expression)

    def _activity_step(self, step: Mapping[str, Any], step_id: str | None) -> ActivityStep | None:
        activity = self._name(step, "activity", "activity name")
        expression = self._expression(step, "input")
        retry = self._retry(step.get("retry"))
        timeout = self._timeouts(step.get("timeout"))
        compensate = self._compensation(step.get("compensate"))
        if step_id is None or activity is None or retry is None or timeout is None:
            return None
        if compensate is _INVALID:
            return None
        assert not isinstance(compensate, _Invalid)
        return ActivityStep(step_id, activity, expression, retry, timeout, compensate)

    def _compensation(self, data: object) -> Compensation | _Invalid | None:
        """The compensation, ``None`` if there is none, ``_INVALID`` if it is invalid."""
        if data is None:
            return None
        with self._at("compensate"):
            comp = self._mapping(data, _COMPENSATE_KEYS, "compensate")
            if comp is None:
                return _INVALID
            before = len(self.errors)
            activity = self._name(comp, "activity", "activity name")
            expression = self._expression(comp, "input")
            if activity is None or len(self.errors) != before:
                return _INVALID
            return Compensation(activity, expression)

    def _retry(self, data: object) -> RetryPolicy | None:
        if data is None:
            return RetryPolicy()
        with self._at("retry"):
            retry = self._mapping(data, _RETRY_KEYS, "retry")
            if retry is None:
                return None
            before = len(self.errors)
            default = RetryPolicy()
            attempts = retry.get("max_attempts", default.max_attempts)
            with self._at("max_attempts"):
                if isinstance(attempts, bool) or not isinstance(attempts, int):
                    self._error(f"must be an integer, not {_kind(attempts)}")
                elif not 1 <= attempts <= 10_000:
                    self._error("must be from 1 to 10000")
            initial = self._duration(retry, "initial_interval", positive=True)
            maximum = self._duration(retry, "max_interval", positive=True)
            backoff = retry.get("backoff", default.backoff)
            with self._at("backoff"):
                if isinstance(backoff, bool) or not isinstance(backoff, int | float):
                    self._error(f"must be a number, not {_kind(backoff)}")
                elif not 1.0 <= backoff <= 100.0:
                    self._error("must be from 1.0 to 100.0")
            initial = default.initial_interval if initial is None else initial
            maximum = max(default.max_interval, initial) if maximum is None else maximum
            if maximum < initial:
                with self._at("max_interval"):
                    self._error("must not be less than initial_interval")
            names = retry.get("non_retryable", [])
            with self._at("non_retryable"):
                if not isinstance(names, list) or not all(
                    isinstance(name, str) and name.strip() and len(name) <= 200 for name in names
                ):
                    self._error("must be a list of error type names")
                    names = []
            if len(self.errors) != before:
                return None
            return RetryPolicy(attempts, initial, float(backoff), maximum, tuple(names))

    def _timeouts(self, data: object) -> Timeouts | None:
        if data is None:
            return Timeouts()
        with self._at("timeout"):
            timeout = self._mapping(data, _TIMEOUT_KEYS, "timeout")
            if timeout is None:
                return None
            before = len(self.errors)
            to_start = self._duration(timeout, "schedule_to_start", positive=True)
            to_close = self._duration(timeout, "start_to_close", positive=True)
            heartbeat = self._duration(timeout, "heartbeat", positive=True)
            if len(self.errors) != before:
                return None
            return Timeouts(
                to_start, Timeouts().start_to_close if to_close is None else to_close, heartbeat
            )


def _valid_name(name: str) -> bool:
    try:
        check_name("name", name)
    except InvalidNameError:
        return False
    return True


def _key_text(key: object) -> str:
    """A mapping key as a path part; never fails, never long."""
    try:
        return str(key)[:64]
    except ValueError:  # an int too large to print
        return f"<{type(key).__name__} key>"


def _kind(value: object) -> str:
    return {
        type(None): "null",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)
