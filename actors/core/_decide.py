"""The sans-io core: ``decide(definition, state, event, now) -> (state, commands)``.

Pure: no I/O, no Trio, no transport, no clock but the ``now`` it is given.
Given the same arguments it returns equal results, which is what lets the
actors be thin and the engine be tested exhaustively.

Contracts the actors rely on:

* ``decide`` never raises for anything a user or the network can cause: a bad
  expression, an unknown step, a duplicate, stale or out-of-order event. Such
  events either become state (a failed step, a failed instance) or are
  ignored, in which case the very same ``state`` object comes back with no
  commands (``new is state`` means "nothing to persist").
* Applying an event twice is a no-op (durability rule 4): each step records
  its attempt and outcome, and only the events that match are applied.
* A terminal instance stays terminal; nothing changes it again.
* The returned state's ``outbox`` holds exactly the commands returned, so a
  crash between persisting and publishing loses nothing (rule 5).
* Every change appends one or more history records, numbered by ``seq``.

Steps form a tree: parallel, map and choice steps hold sequences of steps.
Each running copy of a step has a *key*: its id (unique in the definition)
plus ``@i`` for the item of every map around it, outermost first
(``charge@3``); ``~undo`` appended names its compensation. Events name
steps by key, and ``InstanceState.steps`` is keyed by it.
"""

from __future__ import annotations

import datetime
import enum
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, TypeAlias

from ._definition import (
    ActivityStep,
    ChildStep,
    ChoiceStep,
    Definition,
    MapStep,
    ParallelStep,
    Place,
    RetryPolicy,
    SignalStep,
    SleepStep,
    Step,
)
from ._expressions import ExpressionError
from ._keys import UNDO_SUFFIX

__all__ = [
    "ActivityCompleted",
    "ActivityFailed",
    "CancelChild",
    "CancelRequested",
    "Command",
    "ErrorInfo",
    "Event",
    "InstanceState",
    "InstanceStatus",
    "MAX_CHILD_DEPTH",
    "NotifyParent",
    "RecordHistory",
    "ScheduleActivity",
    "SignalReceived",
    "StartChild",
    "StartRequested",
    "StartTimer",
    "StepState",
    "StepStatus",
    "TerminateRequested",
    "TimerFired",
    "TimerKind",
    "child_id",
    "decide",
    "fail_instance",
    "step_key",
]


class InstanceStatus(enum.StrEnum):
    RUNNING = "running"
    #: Failed or cancelled; the compensations of completed steps are running.
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: Stopped at once on request, without compensation.
    TERMINATED = "terminated"

    @property
    def terminal(self) -> bool:
        return self not in (InstanceStatus.RUNNING, InstanceStatus.COMPENSATING)


class StepStatus(enum.StrEnum):
    #: A task for the current attempt is published; waiting for its result.
    SCHEDULED = "scheduled"
    #: The current attempt failed; a timer will schedule the next one.
    RETRY_WAIT = "retry_wait"
    #: Sleeping, or waiting for a signal.
    WAITING = "waiting"
    #: A parallel, map or choice step whose inner steps are under way.
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    #: Abandoned unfinished because the instance ended (a sibling failed,
    #: or a cancel); a late result for it is ignored.
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        return self in _ACTIVE


_ACTIVE: Final = frozenset(
    {StepStatus.SCHEDULED, StepStatus.RETRY_WAIT, StepStatus.WAITING, StepStatus.RUNNING}
)


class TimerKind(enum.StrEnum):
    #: Start the next attempt of a step after its backoff.
    RETRY = "retry"
    #: The attempt has had all the time its timeouts allow.
    TIMEOUT = "timeout"
    #: A sleep step's time has come.
    SLEEP = "sleep"
    #: A signal step waited as long as it may.
    SIGNAL_TIMEOUT = "signal_timeout"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A failure as data: the error's type name, message and traceback.

    ``cause`` is the error behind this one, as data (a child workflow's).
    """

    type: str
    message: str
    traceback: str = ""
    non_retryable: bool = False
    cause: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.cause is not None:
            # A cause comes from the network (a worker's result) or from a
            # child, whose error has causes of its own: kept to a bounded
            # chain of known fields, so that the error fits the codec's
            # nesting limit wherever it is stored (state, history, results).
            object.__setattr__(self, "cause", _bounded_cause(self.cause, MAX_CAUSES))

    def to_data(self) -> dict[str, Any]:
        data = {
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
            "non_retryable": self.non_retryable,
        }
        if self.cause is not None:
            data["cause"] = dict(self.cause)
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ErrorInfo:
        cause = data.get("cause")
        return cls(
            str(data.get("type", "Error")),
            str(data.get("message", "")),
            str(data.get("traceback", "")),
            bool(data.get("non_retryable", False)),
            dict(cause) if isinstance(cause, Mapping) else None,
        )


# -- events ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartRequested:
    """Start an instance; a child names its ``parent`` and the parent's step key."""

    instance_id: str
    workflow_type: str
    version: int
    input: Any
    parent: str | None = None
    parent_step: str | None = None
    #: How deep the instance nests: 0 at the top, its parent's depth + 1 for a child.
    depth: int = 0


@dataclass(frozen=True, slots=True)
class ActivityCompleted:
    step: str
    attempt: int
    output: Any


@dataclass(frozen=True, slots=True)
class ActivityFailed:
    step: str
    attempt: int
    error: ErrorInfo
    #: The attempt's task was never published (the orchestrator refused it,
    #: over a size limit): it cannot have taken effect. Never on the wire.
    unsent: bool = False


@dataclass(frozen=True, slots=True)
class TimerFired:
    kind: TimerKind
    step: str
    attempt: int


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """Stop the instance; the compensations of its completed steps run first."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class TerminateRequested:
    """Stop the instance at once, without compensation."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class SignalReceived:
    """Signal ``name`` with its payload.

    ``seq`` identifies the message (its stream sequence), so that a
    redelivered signal is applied once.
    """

    name: str
    payload: Any
    seq: int


Event: TypeAlias = (
    StartRequested
    | ActivityCompleted
    | ActivityFailed
    | TimerFired
    | CancelRequested
    | TerminateRequested
    | SignalReceived
)


# -- commands ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScheduleActivity:
    """Publish a task for ``attempt`` of ``step`` to the activity's queue."""

    step: str
    attempt: int
    activity: str
    input: Any
    scheduled_at: float
    schedule_to_start: float | None
    start_to_close: float
    heartbeat: float | None


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Deliver ``TimerFired(kind, step, attempt)`` to the instance at ``fire_at``."""

    kind: TimerKind
    step: str
    attempt: int
    fire_at: float


@dataclass(frozen=True, slots=True)
class RecordHistory:
    """Append record number ``seq`` to the instance's history."""

    seq: int
    kind: str
    at: float
    detail: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class StartChild:
    """Start instance ``child`` of ``workflow`` (``version`` 0: the newest) for step ``step``."""

    child: str
    workflow: str
    version: int
    input: Any
    step: str


@dataclass(frozen=True, slots=True)
class CancelChild:
    """Cancel (or, with ``terminate``, terminate) child instance ``child``."""

    child: str
    terminate: bool
    reason: str


@dataclass(frozen=True, slots=True)
class NotifyParent:
    """Report this child's end to step ``step`` of instance ``parent`` as its result."""

    parent: str
    step: str
    output: Any
    error: ErrorInfo | None


Command: TypeAlias = (
    ScheduleActivity | StartTimer | RecordHistory | StartChild | CancelChild | NotifyParent
)


# -- state -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepState:
    """One running copy of a step.

    ``done`` orders the ends of steps (the instance's ``seq`` when it
    completed, failed or was abandoned), the reverse of the order
    compensations run in; ``dispatched`` is the ``seq`` at which its first
    task went out (0: none did, so there is nothing to undo); ``in_flight``
    marks an abandoned step whose task may still be running, whose
    compensation waits until it reports or its time is up. A choice keeps
    the ``branch`` it took; a map keeps its ``items``, how many it has
    started (``next_item``) and finished, and collects the items' outputs
    in ``output`` while it runs.
    """

    status: StepStatus
    attempt: int
    scheduled_at: float
    output: Any = None
    error: ErrorInfo | None = None
    finished_at: float | None = None
    done: int = 0
    branch: int = -1
    items: tuple[Any, ...] | None = None
    next_item: int = 0
    finished_items: int = 0
    dispatched: int = 0
    in_flight: bool = False


@dataclass(frozen=True, slots=True)
class InstanceState:
    """One instance: what it runs, where it is, and what it last decided.

    ``steps`` maps each step that has started to its state and is never
    mutated in place: a decision builds a new mapping.
    """

    id: str
    type: str
    version: int
    input: Any
    status: InstanceStatus
    created_at: float
    updated_at: float
    steps: Mapping[str, StepState] = field(default_factory=dict)
    output: Any = None
    error: ErrorInfo | None = None
    #: Number of history records written so far.
    seq: int = 0
    #: The commands of the latest decision (published, or to be re-published).
    outbox: tuple[Command, ...] = ()
    #: Signals received and not yet taken by a ``wait_signal`` step, by name.
    signals: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    #: Sequence numbers of the latest signals applied (a bounded memory).
    seen_signals: tuple[int, ...] = ()
    #: While compensating: the steps still to undo, next first; and the
    #: status the instance ends in (failed or cancelled).
    compensations: tuple[str, ...] = ()
    ending: InstanceStatus | None = None
    #: ``"completed"`` or ``"failed"`` once compensation has run.
    compensation: str | None = None
    #: Which event made that decision (the transport's sequence number of the
    #: delivery; 0 if unknown). Set by the orchestrator, not by ``decide``:
    #: if that same event comes back, its ack may have been lost with the
    #: outbox unpublished, so the outbox is published again.
    cause: int = 0
    #: For a child workflow: the parent instance and the key of its step.
    parent: str | None = None
    parent_step: str | None = None
    #: How deep the instance nests (0 at the top; see ``MAX_CHILD_DEPTH``).
    depth: int = 0


class _Builder:
    """Accumulates one decision's changes and commands.

    ``later`` holds what a finished step sets going next (the step after it,
    or the end of its sequence). Running those from a queue, not by calling
    down, keeps the stack flat however many steps finish in one decision (a
    long run of zero sleeps, a map of ten thousand empty choices).
    """

    __slots__ = ("commands", "later", "now", "state", "was_terminal")

    def __init__(self, state: InstanceState, now: float) -> None:
        self.state = state
        self.now = now
        self.commands: list[Command] = []
        self.was_terminal = state.status.terminal
        self.later: deque[Callable[[], None]] = deque()

    def history(self, kind: str, **detail: Any) -> None:
        self.commands.append(RecordHistory(self.state.seq + 1, kind, self.now, detail))
        self.state = replace(self.state, seq=self.state.seq + 1)

    def set_step(self, step_id: str, step: StepState) -> None:
        steps = dict(self.state.steps)
        steps[step_id] = step
        self.state = replace(self.state, steps=steps)

    def drop_steps(self, keys: list[str]) -> None:
        steps = dict(self.state.steps)
        for key in keys:
            del steps[key]
        self.state = replace(self.state, steps=steps)

    def finish(self) -> tuple[InstanceState, list[Command]]:
        while self.later:
            self.later.popleft()()
        state = self.state
        if state.status.terminal and not self.was_terminal and state.parent is not None:
            self.commands.append(_notice(state))
        commands = tuple(self.commands)
        return replace(self.state, updated_at=self.now, outbox=commands), list(commands)


def decide(
    definition: Definition | None,
    state: InstanceState | None,
    event: Event,
    now: float,
) -> tuple[InstanceState | None, list[Command]]:
    """Apply ``event`` to ``state`` at time ``now``; return the new state and commands.

    ``definition`` is the one the instance runs (for a start: the one it
    asked for), or ``None`` if no such type or version is registered, which
    fails the instance. ``state`` is ``None`` for an instance that does not
    exist yet; only a start creates one. An event that changes nothing
    returns ``state`` itself and no commands.
    """
    if state is None:
        if not isinstance(event, StartRequested):
            return None, []
        return _start(definition, event, now)
    if isinstance(event, StartRequested) and event.parent is not None:
        return _child_conflict(state, event, now)
    if state.status.terminal or isinstance(event, StartRequested):
        return state, []
    if isinstance(event, TerminateRequested):
        build = _Builder(state, now)
        _abandon(build, definition, terminate=True, reason=event.reason)
        build.state = replace(build.state, status=InstanceStatus.TERMINATED, compensations=())
        build.history("workflow.terminated", reason=event.reason)
        return build.finish()
    runnable = definition is not None and (definition.type, definition.version) == (
        state.type,
        state.version,
    )
    if isinstance(event, CancelRequested):
        if state.status is InstanceStatus.COMPENSATING:
            return state, []
        build = _Builder(state, now)
        # Without its definition an instance cannot compensate; it still stops.
        _end(build, definition if runnable else None, InstanceStatus.CANCELLED, None, event.reason)
        return build.finish()
    if definition is None or not runnable:
        # The definition an instance started with is gone (deleted from the
        # bucket, or unreadable by this engine): it cannot go on.
        error = ErrorInfo(
            "DefinitionMissing",
            f"workflow type {state.type!r} version {state.version} is no longer registered",
            non_retryable=True,
        )
        return fail_instance(state, None, error, now)
    if isinstance(event, SignalReceived):
        return _signal(definition, state, event, now)
    ref = _resolve(definition, event.step)
    current = state.steps.get(event.step)
    if ref is None or current is None:
        return state, []
    if current.in_flight and not ref.undo:
        return _settle(definition, state, ref, current, event, now)
    # While compensating, only the compensations still count.
    if (state.status is InstanceStatus.COMPENSATING) != ref.undo:
        return state, []
    if isinstance(event, ActivityCompleted):
        return _completed(definition, state, ref, current, event, now)
    if isinstance(event, ActivityFailed):
        if current.status is not StepStatus.SCHEDULED or event.attempt != current.attempt:
            return state, []
        return _failed(definition, state, ref, current, event.error, now, unsent=event.unsent)
    return _timer(definition, state, ref, current, event, now)


def fail_instance(
    state: InstanceState | None,
    start: StartRequested | None,
    error: ErrorInfo,
    now: float,
    definition: Definition | None = None,
) -> tuple[InstanceState, list[Command]]:
    """Fail an instance outright (a bug, an oversized state, an unknown type).

    No compensation runs: the engine, not the workflow, is at fault.
    ``state`` is the instance as last persisted, or ``None`` with the
    ``start`` that would have created it. A terminal instance is returned as
    is. With its ``definition``, the instance's running children are
    cancelled too.
    """
    if state is None:
        if start is None:
            raise ValueError("fail_instance needs a state or a start")
        state = InstanceState(
            id=start.instance_id,
            type=start.workflow_type,
            version=start.version,
            input=None,
            status=InstanceStatus.RUNNING,
            created_at=now,
            updated_at=now,
            parent=start.parent,
            parent_step=start.parent_step,
            depth=start.depth,
        )
    if state.status.terminal:
        return state, []
    build = _Builder(state, now)
    _abandon(build, definition, terminate=False, reason=error.message)
    build.state = replace(build.state, status=InstanceStatus.FAILED, error=error, compensations=())
    build.history("workflow.failed", error=error.to_data())
    return build.finish()


#: Suffix of the step key of a step's compensation (``~`` is not a valid
#: name character, so it never collides with a step id).
UNDO: Final = UNDO_SUFFIX
#: How many signal sequence numbers an instance remembers.
_SEEN_SIGNALS: Final = 256
#: The longest instance id (a child's id is its parent's plus its step key).
_MAX_ID: Final = 128
#: How deep child workflows may nest: a top-level instance has depth 0, its
#: children 1, theirs 2. A child step of an instance at this depth fails the
#: instance with ``ChildDepthExceeded`` (a workflow that starts itself, or
#: A -> B -> A, stops there instead of starting instances for ever).
MAX_CHILD_DEPTH: Final = 16
#: The longest chain of causes an error keeps (see ``ErrorInfo``). Above
#: ``MAX_CHILD_DEPTH``, so that a chain of children keeps every cause; far
#: enough below the codec's nesting limit (32) for an error stored inside a
#: state's step or outbox.
MAX_CAUSES: Final = 20


def _bounded_cause(cause: Mapping[str, Any], levels: int) -> dict[str, Any]:
    """``cause`` as ``ErrorInfo.to_data`` gives it, with at most ``levels`` errors in its chain.

    Only the fields of an error are kept; the innermost one kept says so if
    deeper causes were dropped (its message names them all anyway: each
    child's error message quotes its own child's).
    """
    links: list[Mapping[str, Any]] = []
    current: Any = cause
    while isinstance(current, Mapping) and len(links) < levels:
        links.append(current)
        current = current.get("cause")
    bounded: dict[str, Any] | None = None
    for number, link in enumerate(reversed(links)):
        message = str(link.get("message", ""))
        if number == 0 and isinstance(current, Mapping):
            message += f" (its causes are not kept: a chain of more than {levels})"
        data: dict[str, Any] = {
            "type": str(link.get("type", "Error")),
            "message": message,
            "traceback": str(link.get("traceback", "")),
            "non_retryable": bool(link.get("non_retryable", False)),
        }
        if bounded is not None:
            data["cause"] = bounded
        bounded = data
    assert bounded is not None  # ``cause`` itself is a mapping: one link at least
    return bounded


def step_key(step_id: str, path: tuple[int, ...] = ()) -> str:
    """The key of the copy of ``step_id`` running for map items ``path``."""
    return step_id + "".join(f"@{i}" for i in path)


def _parse_key(key: str) -> tuple[str, tuple[int, ...], bool] | None:
    """``(step id, map item path, undo)`` from a step key; ``None`` if malformed."""
    undo = key.endswith(UNDO)
    if undo:
        key = key[: -len(UNDO)]
    step_id, *indices = key.split("@")
    if not all(index.isdigit() and len(index) < 10 for index in indices):
        return None
    return step_id, tuple(int(index) for index in indices), undo


def child_id(parent: str, key: str) -> str:
    """The instance id of the child that step ``key`` of ``parent`` starts.

    Derived, never random, so that a repeated start finds the same child.
    """
    return f"{parent}-{key.replace('@', '-')}"


@dataclass(frozen=True, slots=True)
class _Ref:
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

    @property
    def retry(self) -> RetryPolicy:
        return self.step.retry if isinstance(self.step, ActivityStep) else RetryPolicy(1)

    def sibling(self, definition: Definition, index: int) -> _Ref:
        """The copy of the step at ``index`` in the same sequence."""
        return _Ref(definition.places[self.place.sequence[index].id], self.path)


def _resolve(definition: Definition, key: str) -> _Ref | None:
    parsed = _parse_key(key)
    if parsed is None:
        return None
    step_id, path, undo = parsed
    place = definition.places.get(step_id)
    if place is None or len(path) != place.maps:
        return None
    step = place.step
    if undo and not (isinstance(step, ActivityStep) and step.compensate is not None):
        return None
    return _Ref(place, path, undo)


def _owner_ref(definition: Definition, ref: _Ref) -> _Ref | None:
    """The parallel, map or choice step around ``ref`` (``None`` at the top)."""
    if ref.place.owner is None:
        return None
    owner = definition.places[ref.place.owner]
    return _Ref(owner, ref.path[: owner.maps])


def _notice(state: InstanceState) -> NotifyParent:
    """What a child that just ended tells its parent."""
    assert state.parent is not None
    assert state.parent_step is not None
    if state.status is InstanceStatus.COMPLETED:
        return NotifyParent(state.parent, state.parent_step, state.output, None)
    cause = state.error or ErrorInfo(
        "Cancelled" if state.status is InstanceStatus.CANCELLED else "Terminated",
        f"the child was {state.status}",
    )
    error = ErrorInfo(
        "ChildWorkflowFailed",
        f"child workflow {state.id!r} ({state.type} v{state.version}) ended {state.status}: "
        f"{cause.type}: {cause.message}",
        non_retryable=True,
        cause=cause.to_data(),
    )
    return NotifyParent(state.parent, state.parent_step, None, error)


def _child_conflict(
    state: InstanceState, event: StartRequested, now: float
) -> tuple[InstanceState, list[Command]]:
    """A child's start for an id that is taken: by this very child, or by another.

    The same child's start again (a redelivery) changes nothing. Another's
    (an id a user chose, or one that two derivations share) is refused: the
    parent's step fails rather than wait for a child that is not its own.
    """
    assert event.parent is not None
    assert event.parent_step is not None
    if (state.parent, state.parent_step) == (event.parent, event.parent_step):
        return state, []
    error = ErrorInfo(
        "ChildIdConflict",
        f"instance {state.id!r} already exists and is not the child of step "
        f"{event.parent_step!r} of {event.parent!r}",
        non_retryable=True,
    )
    refusal = NotifyParent(event.parent, event.parent_step, None, error)
    if refusal in state.outbox:
        return state, []  # the same start again, already refused
    build = _Builder(state, now)
    build.history("child.refused", parent=event.parent, step=event.parent_step)
    build.commands.append(refusal)
    return build.finish()


def _start(
    definition: Definition | None, event: StartRequested, now: float
) -> tuple[InstanceState, list[Command]]:
    if definition is None:
        error = ErrorInfo(
            "UnknownWorkflowType",
            f"no workflow type {event.workflow_type!r} at version {event.version} is registered"
            if event.version
            else f"no workflow type {event.workflow_type!r} is registered",
            non_retryable=True,
        )
        return fail_instance(None, event, error, now)
    state = InstanceState(
        id=event.instance_id,
        type=definition.type,
        version=definition.version,
        input=event.input,
        status=InstanceStatus.RUNNING,
        created_at=now,
        updated_at=now,
        parent=event.parent,
        parent_step=event.parent_step,
        depth=event.depth,
    )
    build = _Builder(state, now)
    detail: dict[str, Any] = {"type": definition.type, "version": definition.version}
    if event.parent is not None:
        detail["parent"] = event.parent
    build.history("workflow.started", **detail)
    _begin(build, definition, _Ref(definition.places[definition.steps[0].id], ()))
    return build.finish()


# -- what expressions see ----------------------------------------------------------


def _context(build: _Builder, definition: Definition, ref: _Ref | None) -> dict[str, Any]:
    """The data expressions of ``ref`` (``None``: the workflow's output) see.

    ``input``; ``steps.<id>.output`` of every completed step visible from
    ``ref`` (see ``Place.visible``; inside a map item, that item's copies);
    ``workflow``; and, inside a map, the nearest map's ``item`` and ``index``.
    """
    state = build.state
    visible: dict[str, Any] = {}
    path = () if ref is None else ref.path
    for key, step in state.steps.items():
        if step.status is not StepStatus.COMPLETED:
            continue
        parsed = _parse_key(key)
        if parsed is None or parsed[2]:
            continue
        step_id, step_path, _ = parsed
        if ref is not None and step_id not in ref.place.visible:
            continue
        if step_path == path[: len(step_path)]:
            visible[step_id] = {"output": step.output}
    context: dict[str, Any] = {
        "input": state.input,
        "steps": visible,
        "workflow": {"id": state.id, "type": state.type, "version": state.version},
    }
    if ref is not None and ref.path:
        owner = _owner_ref(definition, ref)
        while owner is not None and not isinstance(owner.step, MapStep):
            owner = _owner_ref(definition, owner)
        if owner is not None:
            index = ref.path[len(owner.path)]
            items = state.steps[owner.key].items or ()
            context["index"] = index
            # A completed map keeps its items only if something in it may be
            # undone (see _step_done); nothing else asks for them then.
            context["item"] = items[index] if index < len(items) else None
    return context


def _chained(build: _Builder, definition: Definition, ref: _Ref) -> Any:
    """What flows into ``ref`` by default: the output of the step before it.

    The first step of a branch receives the input of the parallel or choice
    step around it; the first step of a map item receives the item; the
    first step of the workflow receives the workflow's input.
    """
    if ref.place.index > 0:
        previous = build.state.steps.get(ref.sibling(definition, ref.place.index - 1).key)
        return None if previous is None else previous.output
    owner = _owner_ref(definition, ref)
    if owner is None:
        return build.state.input
    if isinstance(owner.step, MapStep):
        items = build.state.steps[owner.key].items or ()
        return items[ref.path[len(owner.path)]]
    return _chained(build, definition, owner)


def _input_of(build: _Builder, definition: Definition, ref: _Ref, source: Any) -> Any:
    """The value of a step's ``input`` expression, or the chained value without one."""
    if source is None:
        return _chained(build, definition, ref)
    return source.evaluate(_context(build, definition, ref))


def _truthy(value: Any) -> bool:
    """JMESPath truth: false, null and empty strings, lists and maps are false."""
    return value is not None and value is not False and value != "" and value != [] and value != {}


# -- starting steps ----------------------------------------------------------------


def _begin(build: _Builder, definition: Definition, ref: _Ref) -> None:
    """Start the step ``ref`` names (the instance must still be running)."""
    if build.state.status is not InstanceStatus.RUNNING:
        return
    step = ref.step
    if isinstance(step, ActivityStep):
        _schedule(build, definition, ref, attempt=1)
    elif isinstance(step, SleepStep):
        _sleep(build, definition, ref, step)
    elif isinstance(step, SignalStep):
        _wait_signal(build, definition, ref, step)
    elif isinstance(step, ChildStep):
        _start_child(build, definition, ref, step)
    elif isinstance(step, ParallelStep):
        build.set_step(ref.key, StepState(StepStatus.RUNNING, 1, build.now))
        build.history("parallel.started", step=ref.key, branches=[b.id for b in step.branches])
        for branch in step.branches:
            first = definition.places[branch.steps[0].id]
            _begin(build, definition, _Ref(first, ref.path))
            if build.state.steps[ref.key].status is not StepStatus.RUNNING:
                return
    elif isinstance(step, MapStep):
        _begin_map(build, definition, ref, step)
    else:
        _begin_choice(build, definition, ref, step)


def _begin_map(build: _Builder, definition: Definition, ref: _Ref, step: MapStep) -> None:
    try:
        items = step.items.evaluate(_context(build, definition, ref))
    except ExpressionError as exc:
        _fail_workflow(build, definition, ErrorInfo("ExpressionError", f"step {ref.key!r}: {exc}"))
        return
    if not isinstance(items, list):
        error = ErrorInfo(
            "ExpressionError", f"step {ref.key!r}: map gave {type(items).__name__}, not a list"
        )
        _fail_workflow(build, definition, error)
        return
    build.set_step(
        ref.key,
        StepState(StepStatus.RUNNING, 1, build.now, output=[None] * len(items), items=tuple(items)),
    )
    build.history("map.started", step=ref.key, items=len(items), concurrency=step.concurrency)
    if not items:
        _step_done(build, definition, ref, [])
        return
    for _ in range(min(step.concurrency, len(items))):
        if not _next_item(build, definition, ref, step):
            return


def _next_item(build: _Builder, definition: Definition, ref: _Ref, step: MapStep) -> bool:
    """Start the map's next item; ``False`` once the map is no longer running."""
    current = build.state.steps[ref.key]
    item = current.next_item
    if item >= len(current.items or ()):
        return current.status is StepStatus.RUNNING
    build.set_step(ref.key, replace(current, next_item=item + 1))
    first = definition.places[step.steps[0].id]
    _begin(build, definition, _Ref(first, (*ref.path, item)))
    return build.state.steps[ref.key].status is StepStatus.RUNNING


def _begin_choice(build: _Builder, definition: Definition, ref: _Ref, step: ChoiceStep) -> None:
    context = _context(build, definition, ref)
    taken = -1
    for number, branch in enumerate(step.choices):
        assert branch.when is not None
        try:
            if _truthy(branch.when.evaluate(context)):
                taken = number
                break
        except ExpressionError as exc:
            error = ErrorInfo("ExpressionError", f"step {ref.key!r} choice {number}: {exc}")
            _fail_workflow(build, definition, error)
            return
    if taken < 0 and step.default is None:
        error = ErrorInfo(
            "NoChoiceMatched",
            f"step {ref.key!r}: no condition held and there is no default",
            non_retryable=True,
        )
        _fail_workflow(build, definition, error)
        return
    if taken < 0:
        taken = len(step.choices)
    build.set_step(ref.key, StepState(StepStatus.RUNNING, 1, build.now, branch=taken))
    build.history(
        "choice.taken", step=ref.key, branch="default" if taken == len(step.choices) else taken
    )
    steps = step.branches[taken].steps
    if not steps:
        _step_done(build, definition, ref, _chained(build, definition, ref))
        return
    _begin(build, definition, _Ref(definition.places[steps[0].id], ref.path))


def _start_child(build: _Builder, definition: Definition, ref: _Ref, step: ChildStep) -> None:
    key = ref.key
    try:
        value = _input_of(build, definition, ref, step.input)
    except ExpressionError as exc:
        error = ErrorInfo("ExpressionError", f"step {key!r} input: {exc}")
        _fail_workflow(build, definition, error)
        return
    child = child_id(build.state.id, key)
    if len(child) > _MAX_ID:
        error = ErrorInfo(
            "ChildIdTooLong",
            f"step {key!r}: the child's id {child[:60]!r}... would be over {_MAX_ID} "
            "characters (children nest too deep)",
            non_retryable=True,
        )
        _fail_workflow(build, definition, error)
        return
    if build.state.depth >= MAX_CHILD_DEPTH:
        error = ErrorInfo(
            "ChildDepthExceeded",
            f"step {key!r}: its child {step.workflow!r} would nest {build.state.depth + 1} "
            f"deep; the limit is {MAX_CHILD_DEPTH} (does a workflow start itself, "
            "directly or through others?)",
            non_retryable=True,
        )
        _fail_workflow(build, definition, error)
        return
    build.set_step(key, StepState(StepStatus.SCHEDULED, 1, build.now))
    build.commands.append(StartChild(child, step.workflow, step.version, value, key))
    build.history("child.started", step=key, child=child, workflow=step.workflow)


def _schedule(build: _Builder, definition: Definition, ref: _Ref, *, attempt: int) -> None:
    """Schedule ``attempt`` of an activity (or compensation); fail if its input fails."""
    step = ref.step
    assert isinstance(step, ActivityStep)
    try:
        if ref.undo:
            assert step.compensate is not None
            undone = build.state.steps[step_key(step.id, ref.path)]
            output = undone.output if undone.status is StepStatus.COMPLETED else None
            if step.compensate.input is not None:
                context = _context(build, definition, ref)
                context["output"] = output
                value = step.compensate.input.evaluate(context)
            elif undone.status is StepStatus.COMPLETED:
                value = output
            else:
                # It did not complete (it failed, or was abandoned): what it
                # was asked to do is all there is to undo.
                value = _input_of(build, definition, replace(ref, undo=False), step.input)
        else:
            value = _input_of(build, definition, ref, step.input)
    except ExpressionError as exc:
        what = f"step {ref.key!r} {'compensation ' if ref.undo else ''}input"
        _step_failed(build, ref, ErrorInfo("ExpressionError", f"{what}: {exc}"), definition)
        return
    now = build.now
    activity = step.compensate.activity if ref.undo and step.compensate else step.activity
    previous = build.state.steps.get(ref.key)
    # The activity.scheduled record below is number seq + 1.
    first = previous.dispatched if previous is not None and previous.dispatched else 0
    build.set_step(
        ref.key,
        StepState(StepStatus.SCHEDULED, attempt, now, dispatched=first or build.state.seq + 1),
    )
    timeout = step.timeout
    build.commands.append(
        ScheduleActivity(
            ref.key,
            attempt,
            activity,
            value,
            now,
            timeout.schedule_to_start,
            timeout.start_to_close,
            timeout.heartbeat,
        )
    )
    build.history("activity.scheduled", step=ref.key, attempt=attempt, activity=activity)
    if timeout.schedule_to_start is not None:
        # The worker refuses a task that waited too long, but a task can also
        # be lost with its worker; this timer bounds the attempt either way.
        fire_at = now + timeout.schedule_to_start + timeout.start_to_close
        build.commands.append(StartTimer(TimerKind.TIMEOUT, ref.key, attempt, fire_at))


def _sleep(build: _Builder, definition: Definition, ref: _Ref, step: SleepStep) -> None:
    if step.until is not None:
        try:
            fire_at = _to_epoch(step.until.evaluate(_context(build, definition, ref)))
        except ExpressionError as exc:
            _fail_workflow(
                build,
                definition,
                ErrorInfo("ExpressionError", f"step {ref.key!r} sleep_until: {exc}"),
            )
            return
    else:
        fire_at = build.now + (step.seconds or 0.0)
    build.set_step(ref.key, StepState(StepStatus.WAITING, 1, build.now))
    build.history("sleep.started", step=ref.key, until=fire_at)
    if fire_at <= build.now:
        _step_done(build, definition, ref, _chained(build, definition, ref))
        return
    build.commands.append(StartTimer(TimerKind.SLEEP, ref.key, 1, fire_at))


def _to_epoch(value: Any) -> float:
    """Seconds since the epoch from a number or an ISO 8601 string (UTC if no zone)."""
    if isinstance(value, bool) or value is None:
        raise ExpressionError(f"sleep_until gave {value!r}, not a time")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise ExpressionError(f"sleep_until gave {value!r}, not an ISO 8601 time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        return moment.timestamp()
    raise ExpressionError(f"sleep_until gave {type(value).__name__}, not a time")


def _wait_signal(build: _Builder, definition: Definition, ref: _Ref, step: SignalStep) -> None:
    build.set_step(ref.key, StepState(StepStatus.WAITING, 1, build.now))
    waiting = build.state.signals.get(step.signal, ())
    if waiting:
        # It came before the step began: it was kept for this moment.
        signals = dict(build.state.signals)
        if len(waiting) > 1:
            signals[step.signal] = waiting[1:]
        else:
            del signals[step.signal]
        build.state = replace(build.state, signals=signals)
        build.history("signal.taken", step=ref.key, signal=step.signal)
        _step_done(build, definition, ref, waiting[0])
        return
    build.history("signal.waiting", step=ref.key, signal=step.signal)
    if step.timeout is not None:
        build.commands.append(
            StartTimer(TimerKind.SIGNAL_TIMEOUT, ref.key, 1, build.now + step.timeout)
        )


def _signal(
    definition: Definition, state: InstanceState, event: SignalReceived, now: float
) -> tuple[InstanceState, list[Command]]:
    if event.seq in state.seen_signals or state.status is not InstanceStatus.RUNNING:
        return state, []
    build = _Builder(state, now)
    seen = (*state.seen_signals, event.seq)[-_SEEN_SIGNALS:]
    build.state = replace(build.state, seen_signals=seen)
    # The step waiting longest for this signal takes it (steps are kept in
    # the order they began).
    for key, current in state.steps.items():
        if current.status is not StepStatus.WAITING:
            continue
        ref = _resolve(definition, key)
        if ref is None or ref.undo:
            continue
        if isinstance(ref.step, SignalStep) and ref.step.signal == event.name:
            build.history("signal.received", signal=event.name, step=key)
            _step_done(build, definition, ref, event.payload)
            return build.finish()
    signals = dict(state.signals)
    signals[event.name] = (*signals.get(event.name, ()), event.payload)
    build.state = replace(build.state, signals=signals)
    build.history("signal.received", signal=event.name, kept=True)
    return build.finish()


# -- finishing steps ---------------------------------------------------------------


def _step_done(build: _Builder, definition: Definition, ref: _Ref, output: Any) -> None:
    """The step ``ref`` finished with ``output``: record it and go on."""
    current = build.state.steps[ref.key]
    build.set_step(
        ref.key,
        replace(
            current,
            status=StepStatus.COMPLETED,
            output=output,
            error=None,
            finished_at=build.now,
            done=build.state.seq,
            # The items stay while a compensation inside may still need one.
            items=current.items if _undoable(ref.step) else None,
        ),
    )
    step = ref.step
    if isinstance(step, SleepStep):
        build.history("sleep.completed", step=ref.key)
    elif isinstance(step, SignalStep):
        build.history("signal.completed", step=ref.key)
    elif isinstance(step, ParallelStep | MapStep | ChoiceStep | ChildStep):
        build.history(f"{_KIND_NAMES[type(step)]}.completed", step=ref.key)
    build.later.append(lambda: _advance(build, definition, ref, output))


def _advance(build: _Builder, definition: Definition, ref: _Ref, output: Any) -> None:
    """Go on after ``ref`` finished with ``output`` (unless the instance ended meanwhile)."""
    if build.state.status is not InstanceStatus.RUNNING:
        return
    if ref.place.index + 1 < len(ref.place.sequence):
        _begin(build, definition, ref.sibling(definition, ref.place.index + 1))
    else:
        _sequence_done(build, definition, ref, output)


def _undoable(step: Step) -> bool:
    """Whether ``step`` is, or holds, an activity step with a compensation."""
    if isinstance(step, ActivityStep):
        return step.compensate is not None
    if isinstance(step, MapStep):
        return any(_undoable(inner) for inner in step.steps)
    if isinstance(step, ParallelStep | ChoiceStep):
        return any(_undoable(inner) for branch in step.branches for inner in branch.steps)
    return False


_KIND_NAMES: Final[Mapping[type, str]] = {
    ParallelStep: "parallel",
    MapStep: "map",
    ChoiceStep: "choice",
    ChildStep: "child",
}


def _sequence_done(build: _Builder, definition: Definition, last: _Ref, output: Any) -> None:
    """The sequence whose last step is ``last`` finished with ``output``."""
    owner = _owner_ref(definition, last)
    if owner is None:
        _complete_workflow(build, definition)
        return
    current = build.state.steps.get(owner.key)
    if current is None or current.status is not StepStatus.RUNNING:
        return
    step = owner.step
    if isinstance(step, ChoiceStep):
        _step_done(build, definition, owner, output)
    elif isinstance(step, ParallelStep):
        outputs: dict[str, Any] = {}
        for branch in step.branches:
            done = build.state.steps.get(step_key(branch.steps[-1].id, owner.path))
            if done is None or done.status is not StepStatus.COMPLETED:
                return
            outputs[branch.id] = done.output
        _step_done(build, definition, owner, outputs)
    else:
        assert isinstance(step, MapStep)
        _item_done(build, definition, owner, step, last.path[len(owner.path)], output)


def _item_done(
    build: _Builder, definition: Definition, ref: _Ref, step: MapStep, item: int, output: Any
) -> None:
    """Item ``item`` of map ``ref`` finished: keep its output, forget its steps."""
    prefix = (*ref.path, item)
    dropped: list[str] = []
    for key, state in build.state.steps.items():
        parsed = _parse_key(key)
        if parsed is None or parsed[1][: len(prefix)] != prefix:
            continue
        place = definition.places.get(parsed[0])
        # Another map (in a sibling branch, say) numbers its items alike.
        if place is None or not _within(definition, place, ref.step.id):
            continue
        # A completed step that can be undone is kept for compensation.
        if not (_undoable(place.step) and state.status is StepStatus.COMPLETED):
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
        _step_done(build, definition, ref, results)
    elif current.next_item < total:
        _next_item(build, definition, ref, step)


def _within(definition: Definition, place: Place, container: str) -> bool:
    """Whether the step at ``place`` is nested (at any depth) in step ``container``."""
    owner = place.owner
    while owner is not None:
        if owner == container:
            return True
        owner = definition.places[owner].owner
    return False


def _completed(
    definition: Definition,
    state: InstanceState,
    ref: _Ref,
    current: StepState,
    event: ActivityCompleted,
    now: float,
) -> tuple[InstanceState, list[Command]]:
    # A late success of an earlier attempt still counts: the work is done.
    if current.status not in (StepStatus.SCHEDULED, StepStatus.RETRY_WAIT):
        return state, []
    if not 1 <= event.attempt <= current.attempt:
        return state, []
    build = _Builder(state, now)
    build.history(
        "child.result" if isinstance(ref.step, ChildStep) else "activity.completed",
        step=ref.key,
        attempt=event.attempt,
    )
    if ref.undo:
        build.set_step(
            ref.key,
            replace(
                current,
                status=StepStatus.COMPLETED,
                output=event.output,
                error=None,
                finished_at=now,
            ),
        )
        _next_compensation(build, definition)
    else:
        _step_done(build, definition, ref, event.output)
    return build.finish()


def _failed(
    definition: Definition,
    state: InstanceState,
    ref: _Ref,
    current: StepState,
    error: ErrorInfo,
    now: float,
    *,
    unsent: bool = False,
) -> tuple[InstanceState, list[Command]]:
    """Attempt ``current.attempt`` of ``ref`` failed: retry it, or fail the step.

    ``unsent``: the attempt's task never went out (if it was the first,
    the step has nothing to compensate).
    """
    policy = ref.retry
    build = _Builder(state, now)
    build.history(
        "child.failed" if isinstance(ref.step, ChildStep) else "activity.failed",
        step=ref.key,
        attempt=current.attempt,
        error=error.to_data(),
    )
    final = (
        error.non_retryable
        or error.type in policy.non_retryable
        or current.attempt >= policy.max_attempts
    )
    if final:
        dispatched = 0 if unsent and current.attempt == 1 else current.dispatched
        build.set_step(
            ref.key,
            replace(
                current,
                status=StepStatus.FAILED,
                error=error,
                finished_at=now,
                done=build.state.seq,
                dispatched=dispatched,
            ),
        )
        if not isinstance(ref.step, ChildStep):
            error = ErrorInfo(
                error.type,
                f"step {ref.key!r} failed after {current.attempt} attempt(s): {error.message}",
                error.traceback,
                non_retryable=True,
                cause=error.cause,
            )
        _step_failed(build, ref, error, definition)
        return build.finish()
    delay = policy.delay(current.attempt)
    build.set_step(ref.key, replace(current, status=StepStatus.RETRY_WAIT, error=error))
    build.commands.append(StartTimer(TimerKind.RETRY, ref.key, current.attempt, now + delay))
    build.history(
        "activity.retry_scheduled", step=ref.key, attempt=current.attempt + 1, at=now + delay
    )
    return build.finish()


def _step_failed(
    build: _Builder, ref: _Ref, error: ErrorInfo, definition: Definition | None = None
) -> None:
    """A step (or compensation) failed for good; ``error`` is the workflow's."""
    current = build.state.steps.get(ref.key)
    if current is not None and current.status is not StepStatus.FAILED:
        build.set_step(
            ref.key,
            replace(
                current,
                status=StepStatus.FAILED,
                error=error,
                finished_at=build.now,
                done=build.state.seq,
            ),
        )
    if ref.undo:
        build.state = replace(build.state, compensation="failed")
        build.history("compensation.failed", step=ref.key, error=error.to_data())
        _finish_ending(build)
        return
    # No step catches a failure: it ends the instance, whose other running
    # steps (a parallel step's siblings, a map's other items) are abandoned.
    _fail_workflow(build, definition, error)


def _timer(
    definition: Definition,
    state: InstanceState,
    ref: _Ref,
    current: StepState,
    event: TimerFired,
    now: float,
) -> tuple[InstanceState, list[Command]]:
    if event.attempt != current.attempt:
        return state, []
    if event.kind is TimerKind.RETRY:
        if current.status is not StepStatus.RETRY_WAIT:
            return state, []
        build = _Builder(state, now)
        _schedule(build, definition, ref, attempt=current.attempt + 1)
        return build.finish()
    if event.kind in (TimerKind.SLEEP, TimerKind.SIGNAL_TIMEOUT):
        expected = SleepStep if event.kind is TimerKind.SLEEP else SignalStep
        if current.status is not StepStatus.WAITING or not isinstance(ref.step, expected):
            return state, []
        build = _Builder(state, now)
        if event.kind is TimerKind.SLEEP:
            _step_done(build, definition, ref, _chained(build, definition, ref))
        else:
            assert isinstance(ref.step, SignalStep)
            error = ErrorInfo(
                "SignalTimeout",
                f"step {ref.key!r}: no signal {ref.step.signal!r} within {ref.step.timeout}s",
                non_retryable=True,
            )
            build.history("signal.timed_out", step=ref.key)
            _step_failed(build, ref, error, definition)
        return build.finish()
    if current.status is not StepStatus.SCHEDULED or not isinstance(ref.step, ActivityStep):
        return state, []
    timeout = ref.step.timeout
    error = ErrorInfo(
        "ActivityTimeout",
        f"no result within schedule_to_start ({timeout.schedule_to_start}s) "
        f"+ start_to_close ({timeout.start_to_close}s)",
    )
    return _failed(definition, state, ref, current, error, now)


# -- ending the instance -----------------------------------------------------------


def _complete_workflow(build: _Builder, definition: Definition) -> None:
    try:
        if definition.output is not None:
            output = definition.output.evaluate(_context(build, definition, None))
        else:
            last = build.state.steps.get(definition.steps[-1].id)
            output = None if last is None else last.output
    except ExpressionError as exc:
        _fail_workflow(build, definition, ErrorInfo("ExpressionError", f"workflow output: {exc}"))
        return
    build.state = replace(build.state, status=InstanceStatus.COMPLETED, output=output)
    build.history("workflow.completed")


def _fail_workflow(build: _Builder, definition: Definition | None, error: ErrorInfo) -> None:
    _end(build, definition, InstanceStatus.FAILED, error)


def _abandon(
    build: _Builder, definition: Definition | None, *, terminate: bool, reason: str
) -> None:
    """Mark every unfinished step cancelled, and stop the children among them.

    Workers running an abandoned step's activity see it is no longer wanted
    (at their next check) and cancel it. Without the definition, children
    cannot be told apart and are left to finish (their result is ignored).
    """
    abandoned: list[str] = []
    steps = dict(build.state.steps)
    for key, current in build.state.steps.items():
        if not current.status.active or key.endswith(UNDO):
            continue
        # They end with the steps.cancelled record written below.
        steps[key] = replace(
            current, status=StepStatus.CANCELLED, finished_at=build.now, done=build.state.seq + 1
        )
        abandoned.append(key)
        ref = None if definition is None else _resolve(definition, key)
        if ref is not None and isinstance(ref.step, ChildStep):
            build.commands.append(
                CancelChild(child_id(build.state.id, key), terminate, reason or "parent ended")
            )
    if abandoned:
        build.state = replace(build.state, steps=steps)
        build.history("steps.cancelled", steps=abandoned)


def _end(
    build: _Builder,
    definition: Definition | None,
    ending: InstanceStatus,
    error: ErrorInfo | None,
    reason: str = "",
) -> None:
    """End the instance as ``ending``, compensating its completed steps first.

    Compensations run one at a time, the latest completed step's first.
    ``reason`` is a cancel's reason, recorded in the history.
    """
    build.state = replace(build.state, error=error)
    in_flight = {
        key
        for key, step in build.state.steps.items()
        if step.status is StepStatus.SCHEDULED and not key.endswith(UNDO)
    }
    _abandon(build, definition, terminate=False, reason=reason or (error.message if error else ""))
    undo: list[tuple[int, int, str]] = []
    if definition is not None:
        for key, step in build.state.steps.items():
            # Rule 11: a step whose task went out may have taken effect,
            # whether or not it was seen to complete.
            if not step.dispatched or key.endswith(UNDO):
                continue
            ref = _resolve(definition, key)
            if ref is None or not isinstance(ref.step, ActivityStep) or ref.step.compensate is None:
                continue
            undo.append((step.done, step.dispatched, key + UNDO))
            if key in in_flight:
                _await_settling(build, ref, step)
    if not undo or definition is None:
        build.state = replace(build.state, status=ending)
        _record_ending(build, reason)
        return
    keys = [key for _, _, key in sorted(undo, reverse=True)]
    build.state = replace(
        build.state,
        status=InstanceStatus.COMPENSATING,
        ending=ending,
        compensations=tuple(keys),
    )
    detail: dict[str, Any] = {"steps": keys, "ending": str(ending)}
    if ending is InstanceStatus.CANCELLED:
        detail["reason"] = reason
    build.history("compensation.started", **detail)
    _next_compensation(build, definition)


def _next_compensation(build: _Builder, definition: Definition) -> None:
    """Start the next compensation; or wait, if its step's task may still be running."""
    pending = build.state.compensations
    if not pending:
        build.state = replace(build.state, compensation="completed")
        build.history("compensation.completed")
        _finish_ending(build)
        return
    undone = build.state.steps.get(pending[0][: -len(UNDO)])
    if undone is not None and undone.in_flight:
        # Undone before it is done, the step could still take effect after
        # its compensation: wait for its result, or for its time to be up.
        build.history("compensation.waiting", step=pending[0])
        return
    build.state = replace(build.state, compensations=pending[1:])
    ref = _resolve(definition, pending[0])
    assert ref is not None
    _schedule(build, definition, ref, attempt=1)


def _await_settling(build: _Builder, ref: _Ref, step: StepState) -> None:
    """Mark an abandoned step whose task may be running; bound the wait with a timer.

    The timer fires when the attempt has had all the time its timeouts
    allow (the same timer, by message id, that ``_schedule`` sets when the
    step has a ``schedule_to_start``).
    """
    assert isinstance(ref.step, ActivityStep)
    timeout = ref.step.timeout
    fire_at = step.scheduled_at + (timeout.schedule_to_start or 0.0) + timeout.start_to_close
    build.set_step(ref.key, replace(step, in_flight=True))
    build.commands.append(
        StartTimer(TimerKind.TIMEOUT, ref.key, step.attempt, max(fire_at, build.now))
    )


def _settle(
    definition: Definition,
    state: InstanceState,
    ref: _Ref,
    current: StepState,
    event: ActivityCompleted | ActivityFailed | TimerFired,
    now: float,
) -> tuple[InstanceState, list[Command]]:
    """An abandoned step's running attempt reported, or ran out of time: undo it now.

    Its output, if it completed after all, is what its compensation gets.
    """
    if event.attempt != current.attempt or (
        isinstance(event, TimerFired) and event.kind is not TimerKind.TIMEOUT
    ):
        return state, []
    build = _Builder(state, now)
    if isinstance(event, ActivityCompleted):
        build.set_step(
            ref.key,
            replace(current, in_flight=False, status=StepStatus.COMPLETED, output=event.output),
        )
        outcome = "completed"
    else:
        build.set_step(ref.key, replace(current, in_flight=False))
        outcome = "failed" if isinstance(event, ActivityFailed) else "timed_out"
    build.history("activity.settled", step=ref.key, attempt=current.attempt, outcome=outcome)
    pending = build.state.compensations
    running = any(
        key.endswith(UNDO) and step.status.active for key, step in build.state.steps.items()
    )
    if pending and pending[0] == ref.key + UNDO and not running:
        _next_compensation(build, definition)
    return build.finish()


def _finish_ending(build: _Builder) -> None:
    ending = build.state.ending or InstanceStatus.FAILED
    build.state = replace(build.state, status=ending, compensations=(), ending=None)
    _record_ending(build)


def _record_ending(build: _Builder, reason: str = "") -> None:
    state = build.state
    detail: dict[str, Any] = {}
    if state.status is InstanceStatus.CANCELLED:
        if state.compensation is None:
            detail["reason"] = reason
        kind = "workflow.cancelled"
    else:
        detail["error"] = state.error.to_data() if state.error is not None else None
        kind = "workflow.failed"
    if state.compensation is not None:
        detail["compensation"] = state.compensation
    build.history(kind, **detail)
