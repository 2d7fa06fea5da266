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
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

from ._definition import ActivityStep, Definition
from ._expressions import ExpressionError

__all__ = [
    "ActivityCompleted",
    "ActivityFailed",
    "CancelRequested",
    "Command",
    "ErrorInfo",
    "Event",
    "InstanceState",
    "InstanceStatus",
    "RecordHistory",
    "ScheduleActivity",
    "StartRequested",
    "StartTimer",
    "StepState",
    "StepStatus",
    "TimerFired",
    "TimerKind",
    "decide",
    "fail_instance",
]


class InstanceStatus(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self is not InstanceStatus.RUNNING


class StepStatus(enum.StrEnum):
    #: A task for the current attempt is published; waiting for its result.
    SCHEDULED = "scheduled"
    #: The current attempt failed; a timer will schedule the next one.
    RETRY_WAIT = "retry_wait"
    COMPLETED = "completed"
    FAILED = "failed"


class TimerKind(enum.StrEnum):
    #: Start the next attempt of a step after its backoff.
    RETRY = "retry"
    #: The attempt has had all the time its timeouts allow.
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A failure as data: the error's type name, message and traceback."""

    type: str
    message: str
    traceback: str = ""
    non_retryable: bool = False

    def to_data(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
            "non_retryable": self.non_retryable,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ErrorInfo:
        return cls(
            str(data.get("type", "Error")),
            str(data.get("message", "")),
            str(data.get("traceback", "")),
            bool(data.get("non_retryable", False)),
        )


# -- events ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartRequested:
    instance_id: str
    workflow_type: str
    version: int
    input: Any


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


@dataclass(frozen=True, slots=True)
class TimerFired:
    kind: TimerKind
    step: str
    attempt: int


@dataclass(frozen=True, slots=True)
class CancelRequested:
    reason: str = ""


Event: TypeAlias = (
    StartRequested | ActivityCompleted | ActivityFailed | TimerFired | CancelRequested
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


Command: TypeAlias = ScheduleActivity | StartTimer | RecordHistory


# -- state -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepState:
    status: StepStatus
    attempt: int
    scheduled_at: float
    output: Any = None
    error: ErrorInfo | None = None
    finished_at: float | None = None


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
    #: Index of the step running now; ``len(steps)`` once all are done.
    cursor: int = 0
    steps: Mapping[str, StepState] = field(default_factory=dict)
    output: Any = None
    error: ErrorInfo | None = None
    #: Number of history records written so far.
    seq: int = 0
    #: The commands of the latest decision (published, or to be re-published).
    outbox: tuple[Command, ...] = ()
    #: Which event made that decision (the transport's sequence number of the
    #: delivery; 0 if unknown). Set by the orchestrator, not by ``decide``:
    #: if that same event comes back, its ack may have been lost with the
    #: outbox unpublished, so the outbox is published again.
    cause: int = 0


class _Builder:
    """Accumulates one decision's changes and commands."""

    __slots__ = ("commands", "now", "state")

    def __init__(self, state: InstanceState, now: float) -> None:
        self.state = state
        self.now = now
        self.commands: list[Command] = []

    def history(self, kind: str, **detail: Any) -> None:
        self.commands.append(RecordHistory(self.state.seq + 1, kind, self.now, detail))
        self.state = replace(self.state, seq=self.state.seq + 1)

    def set_step(self, step_id: str, step: StepState) -> None:
        steps = dict(self.state.steps)
        steps[step_id] = step
        self.state = replace(self.state, steps=steps)

    def finish(self) -> tuple[InstanceState, list[Command]]:
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
    fails the instance. ``state`` is ``None`` for an
    instance that does not exist yet; only a start creates one. An event
    that changes nothing returns ``state`` itself and no commands.
    """
    if state is None:
        if not isinstance(event, StartRequested):
            return None, []
        return _start(definition, event, now)
    if state.status.terminal or isinstance(event, StartRequested):
        return state, []
    if isinstance(event, CancelRequested):
        build = _Builder(state, now)
        build.state = replace(state, status=InstanceStatus.CANCELLED)
        build.history("workflow.cancelled", reason=event.reason)
        return build.finish()
    if definition is None or (definition.type, definition.version) != (state.type, state.version):
        # The definition an instance started with is gone (deleted from the
        # bucket, or unreadable by this engine): it cannot go on.
        error = ErrorInfo(
            "DefinitionMissing",
            f"workflow type {state.type!r} version {state.version} is no longer registered",
            non_retryable=True,
        )
        return fail_instance(state, None, error, now)
    step_def = definition.step(event.step)
    current = state.steps.get(event.step)
    if step_def is None or current is None:
        return state, []
    if isinstance(event, ActivityCompleted):
        return _completed(definition, state, step_def, current, event, now)
    if isinstance(event, ActivityFailed):
        if current.status is not StepStatus.SCHEDULED or event.attempt != current.attempt:
            return state, []
        return _failed(definition, state, step_def, current, event.error, now)
    return _timer(definition, state, step_def, current, event, now)


def fail_instance(
    state: InstanceState | None,
    start: StartRequested | None,
    error: ErrorInfo,
    now: float,
) -> tuple[InstanceState, list[Command]]:
    """Fail an instance outright (a bug, an oversized state, an unknown type).

    ``state`` is the instance as last persisted, or ``None`` with the
    ``start`` that would have created it. A terminal instance is returned as is.
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
        )
    if state.status.terminal:
        return state, []
    build = _Builder(state, now)
    build.state = replace(build.state, status=InstanceStatus.FAILED, error=error)
    build.history("workflow.failed", error=error.to_data())
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
    )
    build = _Builder(state, now)
    build.history("workflow.started", type=definition.type, version=definition.version)
    _schedule(build, definition, 0, attempt=1)
    return build.finish()


def _context(state: InstanceState) -> dict[str, Any]:
    return {
        "input": state.input,
        "steps": {
            step_id: {"output": step.output}
            for step_id, step in state.steps.items()
            if step.status is StepStatus.COMPLETED
        },
        "workflow": {"id": state.id, "type": state.type, "version": state.version},
    }


def _step_input(state: InstanceState, definition: Definition, index: int) -> Any:
    step = definition.steps[index]
    if step.input is not None:
        return step.input.evaluate(_context(state))
    if index == 0:
        return state.input
    previous = state.steps.get(definition.steps[index - 1].id)
    return None if previous is None else previous.output


def _schedule(build: _Builder, definition: Definition, index: int, *, attempt: int) -> None:
    """Schedule ``attempt`` of step ``index``; fail the instance if its input fails."""
    step = definition.steps[index]
    try:
        value = _step_input(build.state, definition, index)
    except ExpressionError as exc:
        _fail_workflow(build, ErrorInfo("ExpressionError", f"step {step.id!r} input: {exc}"))
        return
    now = build.now
    build.state = replace(build.state, cursor=index)
    build.set_step(step.id, StepState(StepStatus.SCHEDULED, attempt, now))
    timeout = step.timeout
    build.commands.append(
        ScheduleActivity(
            step.id,
            attempt,
            step.activity,
            value,
            now,
            timeout.schedule_to_start,
            timeout.start_to_close,
            timeout.heartbeat,
        )
    )
    build.history("activity.scheduled", step=step.id, attempt=attempt, activity=step.activity)
    if timeout.schedule_to_start is not None:
        # The worker refuses a task that waited too long, but a task can also
        # be lost with its worker; this timer bounds the attempt either way.
        fire_at = now + timeout.schedule_to_start + timeout.start_to_close
        build.commands.append(StartTimer(TimerKind.TIMEOUT, step.id, attempt, fire_at))


def _completed(
    definition: Definition,
    state: InstanceState,
    step_def: ActivityStep,
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
    build.set_step(
        step_def.id,
        replace(
            current, status=StepStatus.COMPLETED, output=event.output, error=None, finished_at=now
        ),
    )
    build.history("activity.completed", step=step_def.id, attempt=event.attempt)
    index = definition.index(step_def.id) + 1
    if index < len(definition.steps):
        _schedule(build, definition, index, attempt=1)
    else:
        _complete_workflow(build, definition)
    return build.finish()


def _failed(
    definition: Definition,
    state: InstanceState,
    step_def: ActivityStep,
    current: StepState,
    error: ErrorInfo,
    now: float,
) -> tuple[InstanceState, list[Command]]:
    policy = step_def.retry
    build = _Builder(state, now)
    build.history(
        "activity.failed",
        step=step_def.id,
        attempt=current.attempt,
        error=error.to_data(),
    )
    final = (
        error.non_retryable
        or error.type in policy.non_retryable
        or current.attempt >= policy.max_attempts
    )
    if final:
        build.set_step(
            step_def.id, replace(current, status=StepStatus.FAILED, error=error, finished_at=now)
        )
        _fail_workflow(
            build,
            ErrorInfo(
                error.type,
                f"step {step_def.id!r} failed after {current.attempt} attempt(s): {error.message}",
                error.traceback,
                non_retryable=True,
            ),
        )
        return build.finish()
    delay = policy.delay(current.attempt)
    build.set_step(step_def.id, replace(current, status=StepStatus.RETRY_WAIT, error=error))
    build.commands.append(StartTimer(TimerKind.RETRY, step_def.id, current.attempt, now + delay))
    build.history(
        "activity.retry_scheduled", step=step_def.id, attempt=current.attempt + 1, at=now + delay
    )
    return build.finish()


def _timer(
    definition: Definition,
    state: InstanceState,
    step_def: ActivityStep,
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
        _schedule(build, definition, definition.index(step_def.id), attempt=current.attempt + 1)
        return build.finish()
    if current.status is not StepStatus.SCHEDULED:
        return state, []
    timeout = step_def.timeout
    error = ErrorInfo(
        "ActivityTimeout",
        f"no result within schedule_to_start ({timeout.schedule_to_start}s) "
        f"+ start_to_close ({timeout.start_to_close}s)",
    )
    return _failed(definition, state, step_def, current, error, now)


def _complete_workflow(build: _Builder, definition: Definition) -> None:
    try:
        if definition.output is not None:
            output = definition.output.evaluate(_context(build.state))
        else:
            last = build.state.steps.get(definition.steps[-1].id)
            output = None if last is None else last.output
    except ExpressionError as exc:
        _fail_workflow(build, ErrorInfo("ExpressionError", f"workflow output: {exc}"))
        return
    build.state = replace(
        build.state,
        status=InstanceStatus.COMPLETED,
        output=output,
        cursor=len(definition.steps),
    )
    build.history("workflow.completed")


def _fail_workflow(build: _Builder, error: ErrorInfo) -> None:
    build.state = replace(build.state, status=InstanceStatus.FAILED, error=error)
    build.history("workflow.failed", error=error.to_data())
