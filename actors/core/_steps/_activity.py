"""Activity steps: a task for a worker, with retries, timeouts and a compensation.

Each attempt publishes a task (``ScheduleActivity``) and waits for its
result. A failed attempt is retried after its backoff (a ``retry`` timer)
while the policy allows, then fails the step. An attempt that may be lost
with its worker is bounded by a ``timeout`` timer. The step's compensation
is an activity too, run by the same rules under the key ``<step>~undo``
when the compensation sequence (``_compensation.py``) gets to it.

An attempt the instance no longer wants (its step abandoned, or its time
up while the task may still run) is withdrawn with ``CancelActivity``: the
workers cancel it if it runs and refuse it if it comes. An activity step
abandoned while its task may still be running is *settling*: its
compensation waits until the task reports or its time is up
(:func:`await_settling`, :func:`settle`).

History: ``activity.scheduled``, ``activity.completed``,
``activity.failed``, ``activity.retry_scheduled``, ``activity.settled``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

from .._commands import CancelActivity, ScheduleActivity, StartTimer
from .._error_info import ErrorInfo
from .._events import ActivityCompleted, ActivityFailed, StepEvent, TimerFired, TimerKind
from .._expressions import ExpressionError
from .._flow import RateLimit, StepLimit, parse_rate, parse_step_limit, step_key_value
from .._refs import step_key
from .._scope import context, input_of
from .._state import StepState, StepStatus

if TYPE_CHECKING:
    from .._decision import Decision
    from .._definition import Definition
    from .._expressions import Expression
    from .._parse import Checker
    from .._refs import Ref

__all__ = [
    "FIELDS",
    "ActivityStep",
    "Compensation",
    "RetryPolicy",
    "Timeouts",
    "abandoned",
    "await_settling",
    "begin",
    "parse",
    "result",
    "schedule",
    "settle",
    "timer",
]


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
    #: At most ``limit`` attempts out at once per value of its key, across
    #: every instance (see ``_flow.py``); ``None``: no limit.
    concurrency: StepLimit | None = None
    #: At most so many attempts started per period (paced by the workers).
    rate: RateLimit | None = None

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "activity": self.activity}
        if self.input is not None:
            data["input"] = self.input.source
        data["retry"] = self.retry.to_data()
        data["timeout"] = self.timeout.to_data()
        if self.compensate is not None:
            data["compensate"] = self.compensate.to_data()
        if self.concurrency is not None:
            data["concurrency"] = self.concurrency.to_data()
        if self.rate is not None:
            data["rate"] = self.rate.to_data()
        return data


# -- the definition format ---------------------------------------------------------

#: The fields of an activity step (its kind: the key ``activity``).
FIELDS: Final = frozenset(
    {"id", "activity", "input", "retry", "timeout", "compensate", "concurrency", "rate"}
)
_COMPENSATE_FIELDS: Final = frozenset({"activity", "input"})
_RETRY_FIELDS: Final = frozenset(RetryPolicy.__dataclass_fields__)
_TIMEOUT_FIELDS: Final = frozenset(Timeouts.__dataclass_fields__)


def parse(
    checker: Checker, step: Mapping[str, Any], step_id: str | None, depth: int
) -> ActivityStep | None:
    activity = checker.name(step, "activity", "activity name")
    expression = checker.expression(step, "input")
    retry = _retry(checker, step.get("retry"))
    timeout = _timeouts(checker, step.get("timeout"))
    compensate = _compensation(checker, step.get("compensate"))
    concurrency = parse_step_limit(checker, step.get("concurrency"))
    rate = parse_rate(checker, step.get("rate"))
    if step_id is None or activity is None or retry is None or timeout is None:
        return None
    return ActivityStep(
        step_id, activity, expression, retry, timeout, compensate, concurrency, rate
    )


def _compensation(checker: Checker, data: object) -> Compensation | None:
    """The compensation; ``None`` if there is none, or if it is invalid."""
    if data is None:
        return None
    with checker.at("compensate"):
        comp = checker.mapping(data, _COMPENSATE_FIELDS, "compensate")
        if comp is None:
            return None
        activity = checker.name(comp, "activity", "activity name")
        expression = checker.expression(comp, "input")
        return None if activity is None else Compensation(activity, expression)


def _retry(checker: Checker, data: object) -> RetryPolicy | None:
    if data is None:
        return RetryPolicy()
    with checker.at("retry"):
        retry = checker.mapping(data, _RETRY_FIELDS, "retry")
        if retry is None:
            return None
        before = len(checker.errors)
        default = RetryPolicy()
        attempts = checker.integer(
            retry, "max_attempts", default.max_attempts, 1, 10_000, "must be from 1 to 10000"
        )
        initial = checker.duration(retry, "initial_interval", positive=True)
        maximum = checker.duration(retry, "max_interval", positive=True)
        backoff = checker.number(retry, "backoff", default.backoff, 1.0, 100.0)
        initial = default.initial_interval if initial is None else initial
        maximum = max(default.max_interval, initial) if maximum is None else maximum
        if maximum < initial:
            with checker.at("max_interval"):
                checker.error("must not be less than initial_interval")
        names = retry.get("non_retryable", [])
        with checker.at("non_retryable"):
            if not isinstance(names, list) or not all(
                isinstance(name, str) and name.strip() and len(name) <= 200 for name in names
            ):
                checker.error("must be a list of error type names")
                names = []
        if len(checker.errors) != before or attempts is None or backoff is None:
            return None
        return RetryPolicy(attempts, initial, backoff, maximum, tuple(names))


def _timeouts(checker: Checker, data: object) -> Timeouts | None:
    if data is None:
        return Timeouts()
    with checker.at("timeout"):
        timeout = checker.mapping(data, _TIMEOUT_FIELDS, "timeout")
        if timeout is None:
            return None
        before = len(checker.errors)
        to_start = checker.duration(timeout, "schedule_to_start", positive=True)
        to_close = checker.duration(timeout, "start_to_close", positive=True)
        heartbeat = checker.duration(timeout, "heartbeat", positive=True)
        if len(checker.errors) != before:
            return None
        return Timeouts(
            to_start, Timeouts().start_to_close if to_close is None else to_close, heartbeat
        )


# -- running it ----------------------------------------------------------------------


def begin(build: Decision, definition: Definition, ref: Ref, step: ActivityStep) -> None:
    schedule(build, definition, ref, attempt=1)


def schedule(build: Decision, definition: Definition, ref: Ref, *, attempt: int) -> None:
    """Schedule ``attempt`` of an activity (or compensation); fail if its input fails."""
    step = ref.step
    assert isinstance(step, ActivityStep)
    state = build.state
    try:
        if ref.undo:
            assert step.compensate is not None
            undone = state.steps[step_key(step.id, ref.path)]
            output = undone.output if undone.status is StepStatus.COMPLETED else None
            if step.compensate.input is not None:
                data = context(state, definition, ref)
                data["output"] = output
                value = step.compensate.input.evaluate(data)
            elif undone.status is StepStatus.COMPLETED:
                value = output
            else:
                # It did not complete (it failed, or was abandoned): what it
                # was asked to do is all there is to undo.
                value = input_of(state, definition, replace(ref, undo=False), step.input)
        else:
            value = input_of(state, definition, ref, step.input)
    except ExpressionError as exc:
        what = f"step {ref.key!r} {'compensation ' if ref.undo else ''}input"
        build.step_failed(definition, ref, ErrorInfo("ExpressionError", f"{what}: {exc}"))
        return
    rate = None
    if not ref.undo:
        # Keys are checked here, so that the runtime, which takes the
        # attempt's slot by one and paces it by the other, finds a value.
        try:
            if step.concurrency is not None:
                step_key_value(step.concurrency, definition, state.id, value)
            if step.rate is not None:
                rate = step.rate.pace(step.activity, definition, state.id, value)
        except ExpressionError as exc:
            error = ErrorInfo(
                "InvalidConcurrencyKey", f"step {ref.key!r}: {exc}", non_retryable=True
            )
            build.step_failed(definition, ref, error)
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
            rate,
        )
    )
    build.history("activity.scheduled", step=ref.key, attempt=attempt, activity=activity)
    if timeout.schedule_to_start is not None:
        # The worker refuses a task that waited too long, but a task can also
        # be lost with its worker; this timer bounds the attempt either way.
        fire_at = now + timeout.schedule_to_start + timeout.start_to_close
        build.commands.append(StartTimer(TimerKind.TIMEOUT, ref.key, attempt, fire_at))


def result(
    build: Decision,
    definition: Definition,
    ref: Ref,
    current: StepState,
    event: ActivityCompleted | ActivityFailed,
) -> bool:
    """A worker's result for the live attempt: the step (or compensation) is done, or retried."""
    if isinstance(event, ActivityFailed):
        _attempt_failed(build, definition, ref, current, event.error, unsent=event.unsent)
        return True
    build.history("activity.completed", step=ref.key, attempt=event.attempt)
    if event.attempt < current.attempt and current.status is StepStatus.SCHEDULED:
        # A late success of an earlier attempt: the one out is not needed.
        build.commands.append(
            CancelActivity(ref.key, current.attempt, f"attempt {event.attempt} completed the step")
        )
    if ref.undo:
        build.set_step(
            ref.key,
            replace(
                current,
                status=StepStatus.COMPLETED,
                output=event.output,
                error=None,
                finished_at=build.now,
            ),
        )
        build.next_compensation(definition)
    else:
        build.step_done(definition, ref, event.output)
    return True


def timer(
    build: Decision,
    definition: Definition,
    ref: Ref,
    current: StepState,
    event: TimerFired,
) -> bool:
    """A ``retry`` timer starts the next attempt; a ``timeout`` one fails this attempt."""
    if event.kind is TimerKind.RETRY and current.status is StepStatus.RETRY_WAIT:
        schedule(build, definition, ref, attempt=current.attempt + 1)
        return True
    if event.kind is TimerKind.TIMEOUT and current.status is StepStatus.SCHEDULED:
        assert isinstance(ref.step, ActivityStep)
        timeout = ref.step.timeout
        error = ErrorInfo(
            "ActivityTimeout",
            f"no result within schedule_to_start ({timeout.schedule_to_start}s) "
            f"+ start_to_close ({timeout.start_to_close}s)",
        )
        # The task may still be queued, or running on a worker that lost touch.
        build.commands.append(CancelActivity(ref.key, current.attempt, error.message))
        _attempt_failed(build, definition, ref, current, error, unsent=False)
        return True
    return False


def _attempt_failed(
    build: Decision,
    definition: Definition,
    ref: Ref,
    current: StepState,
    error: ErrorInfo,
    *,
    unsent: bool,
) -> None:
    """Attempt ``current.attempt`` of ``ref`` failed: retry it, or fail the step.

    ``unsent``: the attempt's task never went out (if it was the first,
    the step has nothing to compensate).
    """
    assert isinstance(ref.step, ActivityStep)
    policy = ref.step.retry
    build.history("activity.failed", step=ref.key, attempt=current.attempt, error=error.to_data())
    final = (
        error.non_retryable
        or error.type in policy.non_retryable
        or current.attempt >= policy.max_attempts
    )
    if final:
        build.last_attempt_failed(ref, current, error, unsent=unsent)
        error = ErrorInfo(
            error.type,
            f"step {ref.key!r} failed after {current.attempt} attempt(s): {error.message}",
            error.traceback,
            non_retryable=True,
            cause=error.cause,
        )
        build.step_failed(definition, ref, error)
        return
    now = build.now
    delay = policy.delay(current.attempt)
    build.set_step(ref.key, replace(current, status=StepStatus.RETRY_WAIT, error=error))
    build.commands.append(StartTimer(TimerKind.RETRY, ref.key, current.attempt, now + delay))
    build.history(
        "activity.retry_scheduled", step=ref.key, attempt=current.attempt + 1, at=now + delay
    )


def abandoned(build: Decision, key: str, current: StepState, reason: str) -> None:
    """The instance gave up on step (or compensation) ``key``: withdraw its task, if one is out.

    Only a ``scheduled`` attempt has a task that may be queued or running; one
    waiting for its retry has none.
    """
    if current.status is StepStatus.SCHEDULED:
        build.commands.append(
            CancelActivity(key, current.attempt, reason or "the instance gave up the step")
        )


def await_settling(build: Decision, ref: Ref, current: StepState) -> None:
    """Mark an abandoned step whose task may be running; bound the wait with a timer.

    The timer fires when the attempt has had all the time its timeouts
    allow (the same timer, by message id, that :func:`schedule` sets when
    the step has a ``schedule_to_start``).
    """
    assert isinstance(ref.step, ActivityStep)
    timeout = ref.step.timeout
    fire_at = current.scheduled_at + (timeout.schedule_to_start or 0.0) + timeout.start_to_close
    build.set_step(ref.key, replace(current, in_flight=True))
    build.commands.append(
        StartTimer(TimerKind.TIMEOUT, ref.key, current.attempt, max(fire_at, build.now))
    )


def settle(build: Decision, ref: Ref, current: StepState, event: StepEvent) -> bool:
    """The abandoned step's attempt that may have been running reported, or its time is up.

    Its output, if it completed after all, is what its compensation gets.
    Returns ``False`` for an event about another attempt, or another timer.
    """
    if event.attempt != current.attempt or (
        isinstance(event, TimerFired) and event.kind is not TimerKind.TIMEOUT
    ):
        return False
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
    return True
