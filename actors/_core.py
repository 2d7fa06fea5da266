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

import datetime
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, TypeAlias

from ._definition import ActivityStep, Definition, RetryPolicy, SignalStep, SleepStep, Step
from ._expressions import ExpressionError
from ._wire import UNDO_SUFFIX

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
    "SignalReceived",
    "StartRequested",
    "StartTimer",
    "StepState",
    "StepStatus",
    "TerminateRequested",
    "TimerFired",
    "TimerKind",
    "decide",
    "fail_instance",
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
    COMPLETED = "completed"
    FAILED = "failed"


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
    fails the instance. ``state`` is ``None`` for an instance that does not
    exist yet; only a start creates one. An event that changes nothing
    returns ``state`` itself and no commands.
    """
    if state is None:
        if not isinstance(event, StartRequested):
            return None, []
        return _start(definition, event, now)
    if state.status.terminal or isinstance(event, StartRequested):
        return state, []
    if isinstance(event, TerminateRequested):
        build = _Builder(state, now)
        build.state = replace(state, status=InstanceStatus.TERMINATED, compensations=())
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
    # While compensating, only the compensations still count.
    if (state.status is InstanceStatus.COMPENSATING) != ref.undo:
        return state, []
    if isinstance(event, ActivityCompleted):
        return _completed(definition, state, ref, current, event, now)
    if isinstance(event, ActivityFailed):
        if current.status is not StepStatus.SCHEDULED or event.attempt != current.attempt:
            return state, []
        return _failed(definition, state, ref, current, event.error, now)
    return _timer(definition, state, ref, current, event, now)


def fail_instance(
    state: InstanceState | None,
    start: StartRequested | None,
    error: ErrorInfo,
    now: float,
) -> tuple[InstanceState, list[Command]]:
    """Fail an instance outright (a bug, an oversized state, an unknown type).

    No compensation runs: the engine, not the workflow, is at fault.
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
    build.state = replace(build.state, status=InstanceStatus.FAILED, error=error, compensations=())
    build.history("workflow.failed", error=error.to_data())
    return build.finish()


#: Suffix of the step key of a step's compensation (``~`` is not a valid
#: name character, so it never collides with a step id).
UNDO: Final = UNDO_SUFFIX
#: How many signal sequence numbers an instance remembers.
_SEEN_SIGNALS: Final = 256


@dataclass(frozen=True, slots=True)
class _Ref:
    """What a step key names: a step, or (``undo``) that step's compensation."""

    step: Step
    index: int
    undo: bool

    @property
    def key(self) -> str:
        return self.step.id + UNDO if self.undo else self.step.id

    @property
    def retry(self) -> RetryPolicy:
        return self.step.retry if isinstance(self.step, ActivityStep) else RetryPolicy(1)


def _resolve(definition: Definition, key: str) -> _Ref | None:
    undo = key.endswith(UNDO)
    step_id = key[: -len(UNDO)] if undo else key
    index = definition.index(step_id)
    if index < 0:
        return None
    step = definition.steps[index]
    if undo and not (isinstance(step, ActivityStep) and step.compensate is not None):
        return None
    return _Ref(step, index, undo)


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
    _begin(build, definition, 0)
    return build.finish()


def _context(state: InstanceState) -> dict[str, Any]:
    return {
        "input": state.input,
        "steps": {
            step_id: {"output": step.output}
            for step_id, step in state.steps.items()
            if step.status is StepStatus.COMPLETED and UNDO not in step_id
        },
        "workflow": {"id": state.id, "type": state.type, "version": state.version},
    }


def _chained(state: InstanceState, definition: Definition, index: int) -> Any:
    """What flows into step ``index`` by default: the previous step's output."""
    if index == 0:
        return state.input
    previous = state.steps.get(definition.steps[index - 1].id)
    return None if previous is None else previous.output


def _begin(build: _Builder, definition: Definition, index: int) -> None:
    """Start step ``index`` (or complete the workflow past the last step)."""
    if index >= len(definition.steps):
        _complete_workflow(build, definition)
        return
    step = definition.steps[index]
    build.state = replace(build.state, cursor=index)
    if isinstance(step, ActivityStep):
        _schedule(build, definition, _Ref(step, index, undo=False), attempt=1)
    elif isinstance(step, SleepStep):
        _sleep(build, definition, step, index)
    else:
        _wait_signal(build, definition, step, index)


def _activity_input(build: _Builder, ref: _Ref) -> Any:
    step = ref.step
    assert isinstance(step, ActivityStep)
    state = build.state
    if ref.undo:
        assert step.compensate is not None
        if step.compensate.input is not None:
            context = _context(state)
            context["output"] = state.steps[step.id].output
            return step.compensate.input.evaluate(context)
        return state.steps[step.id].output
    if step.input is not None:
        return step.input.evaluate(_context(state))
    return _UNSET


_UNSET: Final = object()


def _schedule(build: _Builder, definition: Definition, ref: _Ref, *, attempt: int) -> None:
    """Schedule ``attempt`` of an activity (or compensation); fail if its input fails."""
    step = ref.step
    assert isinstance(step, ActivityStep)
    try:
        value = _activity_input(build, ref)
    except ExpressionError as exc:
        what = f"step {step.id!r} {'compensation ' if ref.undo else ''}input"
        _step_failed(build, ref, ErrorInfo("ExpressionError", f"{what}: {exc}"), definition)
        return
    if value is _UNSET:
        value = _chained(build.state, definition, ref.index)
    now = build.now
    activity = step.compensate.activity if ref.undo and step.compensate else step.activity
    build.set_step(ref.key, StepState(StepStatus.SCHEDULED, attempt, now))
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


def _sleep(build: _Builder, definition: Definition, step: SleepStep, index: int) -> None:
    if step.until is not None:
        try:
            fire_at = _to_epoch(step.until.evaluate(_context(build.state)))
        except ExpressionError as exc:
            _fail_workflow(
                build,
                definition,
                ErrorInfo("ExpressionError", f"step {step.id!r} sleep_until: {exc}"),
            )
            return
    else:
        fire_at = build.now + (step.seconds or 0.0)
    build.set_step(step.id, StepState(StepStatus.WAITING, 1, build.now))
    build.history("sleep.started", step=step.id, until=fire_at)
    if fire_at <= build.now:
        _step_done(build, definition, index, _chained(build.state, definition, index))
        return
    build.commands.append(StartTimer(TimerKind.SLEEP, step.id, 1, fire_at))


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


def _wait_signal(build: _Builder, definition: Definition, step: SignalStep, index: int) -> None:
    build.set_step(step.id, StepState(StepStatus.WAITING, 1, build.now))
    waiting = build.state.signals.get(step.signal, ())
    if waiting:
        # It came before the step began: it was kept for this moment.
        signals = dict(build.state.signals)
        if len(waiting) > 1:
            signals[step.signal] = waiting[1:]
        else:
            del signals[step.signal]
        build.state = replace(build.state, signals=signals)
        build.history("signal.taken", step=step.id, signal=step.signal)
        _step_done(build, definition, index, waiting[0])
        return
    build.history("signal.waiting", step=step.id, signal=step.signal)
    if step.timeout is not None:
        build.commands.append(
            StartTimer(TimerKind.SIGNAL_TIMEOUT, step.id, 1, build.now + step.timeout)
        )


def _signal(
    definition: Definition, state: InstanceState, event: SignalReceived, now: float
) -> tuple[InstanceState, list[Command]]:
    if event.seq in state.seen_signals or state.status is not InstanceStatus.RUNNING:
        return state, []
    build = _Builder(state, now)
    seen = (*state.seen_signals, event.seq)[-_SEEN_SIGNALS:]
    build.state = replace(build.state, seen_signals=seen)
    index = state.cursor
    step = definition.steps[index] if index < len(definition.steps) else None
    current = state.steps.get(step.id) if step is not None else None
    if (
        isinstance(step, SignalStep)
        and step.signal == event.name
        and current is not None
        and current.status is StepStatus.WAITING
    ):
        build.history("signal.received", signal=event.name, step=step.id)
        _step_done(build, definition, index, event.payload)
    else:
        signals = dict(state.signals)
        signals[event.name] = (*signals.get(event.name, ()), event.payload)
        build.state = replace(build.state, signals=signals)
        build.history("signal.received", signal=event.name, kept=True)
    return build.finish()


def _step_done(build: _Builder, definition: Definition, index: int, output: Any) -> None:
    """Step ``index`` finished with ``output``: record it and go on."""
    step = definition.steps[index]
    current = build.state.steps[step.id]
    build.set_step(
        step.id,
        replace(
            current, status=StepStatus.COMPLETED, output=output, error=None, finished_at=build.now
        ),
    )
    if isinstance(step, SleepStep):
        build.history("sleep.completed", step=step.id)
    elif isinstance(step, SignalStep):
        build.history("signal.completed", step=step.id)
    _begin(build, definition, index + 1)


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
    build.history("activity.completed", step=ref.key, attempt=event.attempt)
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
        _step_done(build, definition, ref.index, event.output)
    return build.finish()


def _failed(
    definition: Definition,
    state: InstanceState,
    ref: _Ref,
    current: StepState,
    error: ErrorInfo,
    now: float,
) -> tuple[InstanceState, list[Command]]:
    policy = ref.retry
    build = _Builder(state, now)
    build.history(
        "activity.failed",
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
        build.set_step(
            ref.key, replace(current, status=StepStatus.FAILED, error=error, finished_at=now)
        )
        _step_failed(
            build,
            ref,
            ErrorInfo(
                error.type,
                f"step {ref.key!r} failed after {current.attempt} attempt(s): {error.message}",
                error.traceback,
                non_retryable=True,
            ),
            definition,
        )
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
            replace(current, status=StepStatus.FAILED, error=error, finished_at=build.now),
        )
    if ref.undo:
        build.state = replace(build.state, compensation="failed")
        build.history("compensation.failed", step=ref.key, error=error.to_data())
        _finish_ending(build)
        return
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
            _step_done(build, definition, ref.index, _chained(state, definition, ref.index))
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


def _complete_workflow(build: _Builder, definition: Definition) -> None:
    try:
        if definition.output is not None:
            output = definition.output.evaluate(_context(build.state))
        else:
            last = build.state.steps.get(definition.steps[-1].id)
            output = None if last is None else last.output
    except ExpressionError as exc:
        _fail_workflow(build, definition, ErrorInfo("ExpressionError", f"workflow output: {exc}"))
        return
    build.state = replace(
        build.state,
        status=InstanceStatus.COMPLETED,
        output=output,
        cursor=len(definition.steps),
    )
    build.history("workflow.completed")


def _fail_workflow(build: _Builder, definition: Definition | None, error: ErrorInfo) -> None:
    _end(build, definition, InstanceStatus.FAILED, error)


def _end(
    build: _Builder,
    definition: Definition | None,
    ending: InstanceStatus,
    error: ErrorInfo | None,
    reason: str = "",
) -> None:
    """End the instance as ``ending``, compensating its completed steps first.

    ``reason`` is a cancel's reason, recorded in the history.
    """
    build.state = replace(build.state, error=error)
    undo: list[str] = []
    if definition is not None:
        for step in reversed(definition.steps):
            done = build.state.steps.get(step.id)
            if (
                isinstance(step, ActivityStep)
                and step.compensate is not None
                and done is not None
                and done.status is StepStatus.COMPLETED
            ):
                undo.append(step.id + UNDO)
    if not undo or definition is None:
        build.state = replace(build.state, status=ending)
        _record_ending(build, reason)
        return
    build.state = replace(
        build.state,
        status=InstanceStatus.COMPENSATING,
        ending=ending,
        compensations=tuple(undo),
    )
    detail: dict[str, Any] = {"steps": list(undo), "ending": str(ending)}
    if ending is InstanceStatus.CANCELLED:
        detail["reason"] = reason
    build.history("compensation.started", **detail)
    _next_compensation(build, definition)


def _next_compensation(build: _Builder, definition: Definition) -> None:
    pending = build.state.compensations
    if not pending:
        build.state = replace(build.state, compensation="completed")
        build.history("compensation.completed")
        _finish_ending(build)
        return
    build.state = replace(build.state, compensations=pending[1:])
    ref = _resolve(definition, pending[0])
    assert ref is not None
    _schedule(build, definition, ref, attempt=1)


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
