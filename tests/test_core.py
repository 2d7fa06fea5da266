"""Example-based tests of actors.core._decide.decide: one scenario per behaviour.

Every decision goes through :class:`Run`, which also checks the contracts
that hold for all of them: ``new is state`` exactly when there are no
commands, the outbox equals the commands, and history records are numbered
1, 2, 3... across the whole run.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from actors.core import (
    ActivityCompleted,
    ActivityFailed,
    CancelActivity,
    CancelRequested,
    Command,
    Definition,
    ErrorInfo,
    Event,
    InstanceState,
    InstanceStatus,
    NotifyParent,
    RecordHistory,
    ScheduleActivity,
    SignalReceived,
    StartRequested,
    StartTimer,
    StepState,
    StepStatus,
    TerminateRequested,
    TimerFired,
    TimerKind,
    decide,
    fail_instance,
    parse_definition,
)

RUNNING = InstanceStatus.RUNNING
COMPLETED = InstanceStatus.COMPLETED
FAILED = InstanceStatus.FAILED
CANCELLED = InstanceStatus.CANCELLED
RETRY = TimerKind.RETRY
TIMEOUT = TimerKind.TIMEOUT


def step(step_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "activity": f"do_{step_id}", **extra}


def define(*steps: dict[str, Any], output: str | None = None, version: int = 1) -> Definition:
    data: dict[str, Any] = {"type": "order", "version": version, "steps": list(steps)}
    if output is not None:
        data["output"] = output
    return parse_definition(data)


def records(commands: list[Command]) -> list[RecordHistory]:
    return [c for c in commands if isinstance(c, RecordHistory)]


def kinds(commands: list[Command]) -> list[str]:
    return [record.kind for record in records(commands)]


def tasks(commands: list[Command]) -> list[ScheduleActivity]:
    return [c for c in commands if isinstance(c, ScheduleActivity)]


def timers(commands: list[Command]) -> list[StartTimer]:
    return [c for c in commands if isinstance(c, StartTimer)]


def withdrawals(commands: list[Command]) -> list[CancelActivity]:
    return [c for c in commands if isinstance(c, CancelActivity)]


class Run:
    """One instance driven event by event, checking the per-decision contracts."""

    def __init__(
        self, definition: Definition, workflow_input: Any = None, *, now: float = 0.0
    ) -> None:
        self.definition = definition
        self.state: InstanceState | None = None
        self.history: list[RecordHistory] = []
        start = StartRequested("inst-1", definition.type, definition.version, workflow_input)
        self.last = self.send(start, now)

    @property
    def current(self) -> InstanceState:
        assert self.state is not None
        return self.state

    def send(self, event: Event, now: float) -> list[Command]:
        before = self.state
        new, commands = decide(self.definition, before, event, now)
        assert new is not None
        if new is before:
            assert commands == []
        else:
            assert commands, "every change records history"
            assert new.outbox == tuple(commands)
            assert new.updated_at == now
        for record in records(commands):
            assert record.seq == len(self.history) + 1
            assert record.at == now
            self.history.append(record)
        assert new.seq == len(self.history)
        self.state = new
        self.last = commands
        return commands

    def ignores(self, event: Event, now: float) -> bool:
        before = self.state
        return self.send(event, now) == [] and self.state is before

    def step(self, step_id: str) -> StepState:
        return self.current.steps[step_id]


# --- the happy path ------------------------------------------------------------------


def test_happy_path_three_steps() -> None:
    definition = define(
        step("a"),
        step("b"),
        step(
            "c", input="{x: input.x, prev: steps.b.output, first: steps.a.output.n, wf: workflow}"
        ),
        output="{a: steps.a.output, c: steps.c.output, missing: steps.zzz.output}",
    )
    run = Run(definition, {"x": 1}, now=10.0)
    state = run.current
    assert (state.id, state.type, state.version, state.input) == ("inst-1", "order", 1, {"x": 1})
    assert (state.status, state.created_at) == (RUNNING, 10.0)
    # The first step without `input:` gets the workflow's input.
    assert tasks(run.last) == [ScheduleActivity("a", 1, "do_a", {"x": 1}, 10.0, None, 300.0, None)]
    assert timers(run.last) == []  # no schedule_to_start, no TIMEOUT timer
    assert state.steps == {"a": StepState(StepStatus.SCHEDULED, 1, 10.0, dispatched=2)}

    run.send(ActivityCompleted("a", 1, {"n": 5}), 11.0)
    # A later step without `input:` gets the previous step's output.
    assert tasks(run.last) == [ScheduleActivity("b", 1, "do_b", {"n": 5}, 11.0, None, 300.0, None)]
    assert run.step("a") == StepState(
        StepStatus.COMPLETED, 1, 10.0, {"n": 5}, None, 11.0, done=3, dispatched=2
    )
    assert set(run.current.steps) == {"a", "b"}

    run.send(ActivityCompleted("b", 1, "b-out"), 12.0)
    (task,) = tasks(run.last)
    assert task.input == {
        "x": 1,
        "prev": "b-out",
        "first": 5,
        "wf": {"id": "inst-1", "type": "order", "version": 1},
    }
    assert run.step("c").status is StepStatus.SCHEDULED

    run.send(ActivityCompleted("c", 1, [1, 2]), 13.0)
    state = run.current
    assert state.status is COMPLETED
    assert state.output == {"a": {"n": 5}, "c": [1, 2], "missing": None}
    assert (state.created_at, state.updated_at) == (10.0, 13.0)
    assert all(s.status is StepStatus.COMPLETED for s in state.steps.values())
    assert run.last == [
        RecordHistory(7, "activity.completed", 13.0, {"step": "c", "attempt": 1}),
        RecordHistory(8, "workflow.completed", 13.0, {}),
    ]
    assert [r.kind for r in run.history] == [
        "workflow.started",
        "activity.scheduled",
        "activity.completed",
        "activity.scheduled",
        "activity.completed",
        "activity.scheduled",
        "activity.completed",
        "workflow.completed",
    ]
    assert run.history[0].detail == {"type": "order", "version": 1}
    assert run.history[1].detail == {"step": "a", "attempt": 1, "activity": "do_a"}


def test_output_defaults_to_last_steps_output() -> None:
    run = Run(define(step("a"), step("b")), "in")
    run.send(ActivityCompleted("a", 1, None), 1.0)
    # A null output chains as null.
    assert tasks(run.last)[0].input is None
    run.send(ActivityCompleted("b", 1, {"done": True}), 2.0)
    assert (run.current.status, run.current.output) == (COMPLETED, {"done": True})


def test_outbox_holds_only_the_latest_decision() -> None:
    run = Run(define(step("a"), step("b")))
    first = run.current.outbox
    run.send(ActivityCompleted("a", 1, 1), 1.0)
    assert run.current.outbox == tuple(run.last)
    assert not [command for command in first if command in run.current.outbox]


# --- retries -------------------------------------------------------------------------


def test_retry_backs_off_up_to_max_interval() -> None:
    retry = {"max_attempts": 5, "initial_interval": "1s", "backoff": 2.0, "max_interval": "3s"}
    definition = define(step("a", retry=retry))
    policy = definition.steps[0].retry
    run = Run(definition, now=100.0)
    now = scheduled_at = 100.0
    for attempt, delay in enumerate([1.0, 2.0, 3.0, 3.0], start=1):
        now += 7.0
        error = ErrorInfo("Flaky", f"attempt {attempt}")
        run.send(ActivityFailed("a", attempt, error), now)
        assert delay == policy.delay(attempt)
        assert run.last == [
            RecordHistory(
                len(run.history) - 1,
                "activity.failed",
                now,
                {"step": "a", "attempt": attempt, "error": error.to_data()},
            ),
            StartTimer(RETRY, "a", attempt, now + delay),
            RecordHistory(
                len(run.history),
                "activity.retry_scheduled",
                now,
                {"step": "a", "attempt": attempt + 1, "at": now + delay},
            ),
        ]
        assert run.step("a") == StepState(
            StepStatus.RETRY_WAIT, attempt, scheduled_at, error=error, dispatched=2
        )
        now += delay
        scheduled_at = now
        run.send(TimerFired(RETRY, "a", attempt), now)
        assert tasks(run.last) == [
            ScheduleActivity("a", attempt + 1, "do_a", None, now, None, 300.0, None)
        ]
        assert run.step("a") == StepState(StepStatus.SCHEDULED, attempt + 1, now, dispatched=2)
    assert run.current.status is RUNNING


def test_max_attempts_exhausted_fails_the_workflow() -> None:
    run = Run(define(step("a", retry={"max_attempts": 2}), step("b")))
    run.send(ActivityFailed("a", 1, ErrorInfo("Boom", "first")), 1.0)
    run.send(TimerFired(RETRY, "a", 1), 2.0)
    error = ErrorInfo("Boom", "kaput", "Traceback...")
    run.send(ActivityFailed("a", 2, error), 3.0)
    state = run.current
    assert state.status is FAILED
    assert state.error is not None
    assert state.error.type == "Boom"
    assert state.error.message == "step 'a' failed after 2 attempt(s): kaput"
    assert state.error.traceback == "Traceback..."
    assert state.error.non_retryable
    assert run.step("a") == StepState(
        StepStatus.FAILED, 2, 2.0, None, error, 3.0, done=6, dispatched=2
    )
    assert "b" not in state.steps
    assert kinds(run.last) == ["activity.failed", "workflow.failed"]
    assert tasks(run.last) == []
    assert timers(run.last) == []
    assert run.last[-1] == RecordHistory(
        len(run.history), "workflow.failed", 3.0, {"error": state.error.to_data()}
    )


def test_a_single_attempt_fails_at_once() -> None:
    run = Run(define(step("a", retry={"max_attempts": 1})))
    run.send(ActivityFailed("a", 1, ErrorInfo("Boom", "x")), 1.0)
    assert run.current.status is FAILED
    assert timers(run.last) == []


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(ErrorInfo("OutOfStock", "none left"), id="listed-type"),
        pytest.param(ErrorInfo("Anything", "bad card", non_retryable=True), id="flagged"),
    ],
)
def test_non_retryable_errors_fail_at_once(error: ErrorInfo) -> None:
    retry = {"max_attempts": 5, "non_retryable": ["OutOfStock", "Declined"]}
    run = Run(define(step("a", retry=retry)))
    run.send(ActivityFailed("a", 1, error), 1.0)
    state = run.current
    assert state.status is FAILED
    assert state.error is not None
    assert (state.error.type, state.error.message) == (
        error.type,
        f"step 'a' failed after 1 attempt(s): {error.message}",
    )
    assert run.step("a").status is StepStatus.FAILED
    assert timers(run.last) == []


@pytest.mark.parametrize("error_type", ["outofstock", "OutOfStockError", "Other"])
def test_other_error_types_are_retried(error_type: str) -> None:
    run = Run(define(step("a", retry={"max_attempts": 5, "non_retryable": ["OutOfStock"]})))
    run.send(ActivityFailed("a", 1, ErrorInfo(error_type, "x")), 1.0)
    assert run.current.status is RUNNING
    assert run.step("a").status is StepStatus.RETRY_WAIT
    assert timers(run.last) == [StartTimer(RETRY, "a", 1, 2.0)]


def test_huge_backoff_and_many_attempts_do_not_overflow() -> None:
    retry = {"max_attempts": 300, "initial_interval": "1s", "backoff": 100, "max_interval": "1h"}
    run = Run(define(step("a", retry=retry)))
    now = 0.0
    for attempt in range(1, 300):
        run.send(ActivityFailed("a", attempt, ErrorInfo("Flaky", "")), now)
        (timer,) = timers(run.last)
        assert timer.fire_at == now + min(100.0 ** min(attempt - 1, 2), 3600.0)
        now = timer.fire_at
        run.send(TimerFired(RETRY, "a", attempt), now)
    run.send(ActivityFailed("a", 300, ErrorInfo("Flaky", "")), now)
    assert run.current.status is FAILED


# --- late, stale and duplicate events --------------------------------------------------


def test_late_success_of_an_earlier_attempt_is_accepted() -> None:
    run = Run(define(step("a", retry={"max_attempts": 3}), step("b")))
    run.send(ActivityFailed("a", 1, ErrorInfo("Timeout", "slow")), 1.0)
    assert run.step("a").status is StepStatus.RETRY_WAIT
    run.send(ActivityCompleted("a", 1, "late"), 1.5)
    assert run.step("a").status is StepStatus.COMPLETED
    assert run.step("a").output == "late"
    assert tasks(run.last) == [ScheduleActivity("b", 1, "do_b", "late", 1.5, None, 300.0, None)]
    assert run.last[0] == RecordHistory(5, "activity.completed", 1.5, {"step": "a", "attempt": 1})
    # The retry timer that was already started is now stale.
    assert run.ignores(TimerFired(RETRY, "a", 1), 2.0)


def test_success_of_an_earlier_attempt_while_the_next_runs() -> None:
    run = Run(define(step("a", retry={"max_attempts": 3}), step("b")))
    run.send(ActivityFailed("a", 1, ErrorInfo("Lost", "")), 1.0)
    run.send(TimerFired(RETRY, "a", 1), 2.0)
    assert run.step("a") == StepState(StepStatus.SCHEDULED, 2, 2.0, dispatched=2)
    run.send(ActivityCompleted("a", 1, "from attempt 1"), 3.0)
    assert run.step("a").status is StepStatus.COMPLETED
    assert run.step("a").output == "from attempt 1"
    assert run.ignores(ActivityCompleted("a", 2, "from attempt 2"), 4.0)
    assert run.ignores(ActivityFailed("a", 2, ErrorInfo("X", "")), 4.0)
    assert run.step("b").status is StepStatus.SCHEDULED


def _in_attempt_2() -> Run:
    """Step ``a`` failed once and runs its attempt 2; ``b`` has not started."""
    definition = define(
        step("a", retry={"max_attempts": 3}, timeout={"schedule_to_start": "1s"}), step("b")
    )
    run = Run(definition)
    run.send(ActivityFailed("a", 1, ErrorInfo("Flaky", "")), 1.0)
    run.send(TimerFired(RETRY, "a", 1), 2.0)
    assert run.step("a") == StepState(StepStatus.SCHEDULED, 2, 2.0, dispatched=2)
    return run


IGNORED: list[Any] = [
    pytest.param(ActivityFailed("a", 1, ErrorInfo("Flaky", "")), id="failure-of-stale-attempt"),
    pytest.param(ActivityFailed("a", 3, ErrorInfo("Flaky", "")), id="failure-of-future-attempt"),
    pytest.param(ActivityCompleted("a", 3, "x"), id="success-of-future-attempt"),
    pytest.param(ActivityCompleted("a", 0, "x"), id="success-of-attempt-0"),
    pytest.param(ActivityCompleted("a", -1, "x"), id="success-of-negative-attempt"),
    pytest.param(TimerFired(RETRY, "a", 1), id="duplicate-retry-timer"),
    pytest.param(TimerFired(RETRY, "a", 2), id="retry-timer-while-scheduled"),
    pytest.param(TimerFired(TIMEOUT, "a", 1), id="timeout-of-stale-attempt"),
    pytest.param(ActivityCompleted("b", 1, "x"), id="step-not-started"),
    pytest.param(TimerFired(RETRY, "b", 1), id="timer-of-step-not-started"),
    pytest.param(ActivityCompleted("ghost", 1, "x"), id="unknown-step-success"),
    pytest.param(ActivityFailed("ghost", 1, ErrorInfo("X", "")), id="unknown-step-failure"),
    pytest.param(TimerFired(TIMEOUT, "ghost", 1), id="unknown-step-timer"),
    pytest.param(StartRequested("inst-1", "order", 1, {}), id="duplicate-start"),
    pytest.param(StartRequested("inst-1", "other", 2, None), id="conflicting-start"),
]


@pytest.mark.parametrize("event", IGNORED)
def test_stale_and_duplicate_events_change_nothing(event: Event) -> None:
    run = _in_attempt_2()
    state = run.current
    new, commands = decide(run.definition, state, event, 5.0)
    assert new is state
    assert commands == []


def test_duplicates_of_applied_events_change_nothing() -> None:
    run = Run(define(step("a", retry={"max_attempts": 3}), step("b")))
    failure = ActivityFailed("a", 1, ErrorInfo("Flaky", ""))
    run.send(failure, 1.0)
    assert run.ignores(failure, 1.1)
    run.send(TimerFired(RETRY, "a", 1), 2.0)
    assert run.ignores(TimerFired(RETRY, "a", 1), 2.1)
    success = ActivityCompleted("a", 2, "ok")
    run.send(success, 3.0)
    assert run.ignores(success, 3.1)
    assert run.ignores(ActivityCompleted("a", 2, "different"), 3.2)
    assert run.step("a").output == "ok"
    assert [r.kind for r in run.history].count("activity.completed") == 1


@pytest.mark.parametrize(
    "definition",
    [
        pytest.param(None, id="missing"),
        pytest.param(define(step("a"), step("b"), version=2), id="other-version"),
        pytest.param(replace(define(step("a"), step("b")), type="other"), id="other-type"),
    ],
)
def test_an_event_without_the_instances_definition_fails_it(definition: Definition | None) -> None:
    run = _in_attempt_2()
    state = run.current
    new, commands = decide(definition, state, ActivityCompleted("a", 2, "ok"), 3.0)
    assert new is not None
    error = ErrorInfo(
        "DefinitionMissing",
        "workflow type 'order' version 1 is no longer registered",
        non_retryable=True,
    )
    assert (new.status, new.error) == (FAILED, error)
    # The attempt under way is abandoned: its worker learns it is unwanted.
    abandoned = replace(
        state.steps["a"], status=StepStatus.CANCELLED, finished_at=3.0, done=state.seq + 1
    )
    assert new.steps == {"a": abandoned}
    assert commands == [
        RecordHistory(state.seq + 1, "steps.cancelled", 3.0, {"steps": ["a"]}),
        RecordHistory(state.seq + 2, "workflow.failed", 3.0, {"error": error.to_data()}),
    ]
    assert new.outbox == tuple(commands)
    # Neither a cancel nor a repeated start needs the definition.
    cancelled, _ = decide(definition, state, CancelRequested("bye"), 3.0)
    assert cancelled is not None
    assert cancelled.status is CANCELLED
    restart = StartRequested("inst-1", "order", 1, None)
    assert decide(definition, state, restart, 3.0) == (state, [])
    # Nor does a terminal instance: it stays as it is.
    assert decide(definition, new, ActivityCompleted("a", 2, "ok"), 4.0)[0] is new


def test_no_instance_and_no_start_is_nothing() -> None:
    definition = define(step("a"))
    for event in (ActivityCompleted("a", 1, 1), TimerFired(RETRY, "a", 1), CancelRequested()):
        assert decide(definition, None, event, 0.0) == (None, [])


# --- timeouts -------------------------------------------------------------------------


def test_timeout_timer_fires_at_schedule_to_start_plus_start_to_close() -> None:
    definition = define(
        step(
            "a",
            retry={"max_attempts": 2, "initial_interval": "1s"},
            timeout={"schedule_to_start": "5s", "start_to_close": "30s", "heartbeat": "2s"},
        )
    )
    run = Run(definition, now=100.0)
    assert run.last[1:] == [
        ScheduleActivity("a", 1, "do_a", None, 100.0, 5.0, 30.0, 2.0),
        RecordHistory(
            2, "activity.scheduled", 100.0, {"step": "a", "attempt": 1, "activity": "do_a"}
        ),
        StartTimer(TIMEOUT, "a", 1, 135.0),
    ]
    run.send(TimerFired(TIMEOUT, "a", 1), 135.0)
    # The timed-out attempt's task may still be queued or running: withdrawn.
    assert withdrawals(run.last) == [
        CancelActivity("a", 1, "no result within schedule_to_start (5.0s) + start_to_close (30.0s)")
    ]
    error = run.step("a").error
    assert run.step("a").status is StepStatus.RETRY_WAIT
    assert error is not None
    assert error.type == "ActivityTimeout"
    assert "schedule_to_start (5.0s)" in error.message
    assert timers(run.last) == [StartTimer(RETRY, "a", 1, 136.0)]

    run.send(TimerFired(RETRY, "a", 1), 136.0)
    assert timers(run.last) == [StartTimer(TIMEOUT, "a", 2, 171.0)]
    assert run.ignores(TimerFired(TIMEOUT, "a", 1), 171.0)
    run.send(TimerFired(TIMEOUT, "a", 2), 171.0)
    state = run.current
    assert state.status is FAILED
    assert state.error is not None
    assert state.error.type == "ActivityTimeout"


def test_timeout_after_completion_is_ignored() -> None:
    run = Run(define(step("a", timeout={"schedule_to_start": "1s"}), step("b")))
    assert timers(run.last) == [StartTimer(TIMEOUT, "a", 1, 301.0)]
    run.send(ActivityCompleted("a", 1, 1), 10.0)
    assert run.ignores(TimerFired(TIMEOUT, "a", 1), 301.0)


def test_a_result_withdraws_nothing() -> None:
    run = Run(define(step("a", retry={"max_attempts": 2}), step("b")))
    run.send(ActivityFailed("a", 1, ErrorInfo("Flaky", "")), 10.0)
    assert withdrawals(run.last) == []
    run.send(TimerFired(RETRY, "a", 1), 20.0)
    run.send(ActivityCompleted("a", 2, "ok"), 30.0)
    assert withdrawals(run.last) == []


def test_timeout_while_waiting_to_retry_is_ignored() -> None:
    run = Run(define(step("a", timeout={"schedule_to_start": "1s"})))
    run.send(ActivityFailed("a", 1, ErrorInfo("Flaky", "")), 10.0)
    assert run.ignores(TimerFired(TIMEOUT, "a", 1), 301.0)
    assert run.step("a").status is StepStatus.RETRY_WAIT


# --- cancel ---------------------------------------------------------------------------


def test_cancel_stops_the_instance_for_good() -> None:
    run = Run(define(step("a"), step("b")))
    run.send(CancelRequested("user asked"), 50.0)
    state = run.current
    assert state.status is CANCELLED
    assert state.error is None
    assert run.last == [
        CancelActivity("a", 1, "user asked"),
        RecordHistory(3, "steps.cancelled", 50.0, {"steps": ["a"]}),
        RecordHistory(4, "workflow.cancelled", 50.0, {"reason": "user asked"}),
    ]
    assert run.step("a").status is StepStatus.CANCELLED
    late: list[Event] = [
        ActivityCompleted("a", 1, "x"),
        ActivityFailed("a", 1, ErrorInfo("X", "")),
        TimerFired(RETRY, "a", 1),
        CancelRequested("again"),
        StartRequested("inst-1", "order", 1, None),
    ]
    for event in late:
        assert run.ignores(event, 60.0)


@pytest.mark.parametrize("outcome", ["completed", "failed"])
def test_cancel_of_a_finished_instance_is_ignored(outcome: str) -> None:
    run = Run(define(step("a", retry={"max_attempts": 1})))
    if outcome == "completed":
        run.send(ActivityCompleted("a", 1, 1), 1.0)
    else:
        run.send(ActivityFailed("a", 1, ErrorInfo("X", "")), 1.0)
    assert run.current.status.terminal
    assert run.ignores(CancelRequested("too late"), 2.0)


# --- failures of the instance itself ---------------------------------------------------


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (3, "no workflow type 'nope' at version 3 is registered"),
        (0, "no workflow type 'nope' is registered"),
    ],
)
def test_unknown_definition_fails_the_start(version: int, message: str) -> None:
    new, commands = decide(None, None, StartRequested("i-9", "nope", version, {"x": 1}), 5.0)
    assert new is not None
    error = ErrorInfo("UnknownWorkflowType", message, non_retryable=True)
    assert (new.id, new.type, new.version) == ("i-9", "nope", version)
    assert (new.status, new.error, new.created_at) == (FAILED, error, 5.0)
    assert commands == [RecordHistory(1, "workflow.failed", 5.0, {"error": error.to_data()})]
    assert new.outbox == tuple(commands)
    assert new.seq == 1


def test_expression_error_in_the_first_input_fails_the_instance() -> None:
    run = Run(define(step("a", input="abs(input)")), "text")
    state = run.current
    assert state.status is FAILED
    assert state.error is not None
    assert state.error.type == "ExpressionError"
    assert state.error.message.startswith("step 'a' input: expression 'abs(input)' failed")
    assert state.steps == {}
    assert kinds(run.last) == ["workflow.started", "workflow.failed"]
    assert tasks(run.last) == []


def test_expression_error_in_a_later_input_fails_the_instance() -> None:
    run = Run(define(step("a"), step("b", input="abs(steps.a.output)")))
    run.send(ActivityCompleted("a", 1, "not a number"), 1.0)
    state = run.current
    assert state.status is FAILED
    assert state.error is not None
    assert state.error.type == "ExpressionError"
    assert "step 'b' input" in state.error.message
    assert run.step("a").status is StepStatus.COMPLETED
    assert "b" not in state.steps
    assert kinds(run.last) == ["activity.completed", "workflow.failed"]


def test_expression_error_in_the_output_fails_the_instance() -> None:
    run = Run(define(step("a"), output="abs(steps.a.output)"))
    run.send(ActivityCompleted("a", 1, [1]), 1.0)
    state = run.current
    assert state.status is FAILED
    assert state.error is not None
    assert state.error.type == "ExpressionError"
    assert state.error.message.startswith("workflow output: ")
    assert state.output is None
    assert kinds(run.last) == ["activity.completed", "workflow.failed"]


def test_fail_instance_of_a_running_instance() -> None:
    run = Run(define(step("a")))
    state = run.current
    error = ErrorInfo("StateTooLarge", "state is 2 MiB")
    new, commands = fail_instance(state, None, error, 9.0)
    assert (new.status, new.error, new.updated_at) == (FAILED, error, 9.0)
    assert new.steps["a"].status is StepStatus.CANCELLED
    assert commands == [
        RecordHistory(state.seq + 1, "steps.cancelled", 9.0, {"steps": ["a"]}),
        RecordHistory(state.seq + 2, "workflow.failed", 9.0, {"error": error.to_data()}),
    ]
    assert new.outbox == tuple(commands)
    assert fail_instance(new, None, ErrorInfo("Again", ""), 10.0) == (new, [])
    assert fail_instance(new, None, ErrorInfo("Again", ""), 10.0)[0] is new


def test_fail_instance_without_a_state() -> None:
    start = StartRequested("i-2", "order", 4, {"big": "input"})
    error = ErrorInfo("InputTooLarge", "too big")
    new, commands = fail_instance(None, start, error, 3.0)
    assert (new.id, new.type, new.version, new.input) == ("i-2", "order", 4, None)
    assert (new.status, new.error, new.seq) == (FAILED, error, 1)
    assert kinds(commands) == ["workflow.failed"]
    with pytest.raises(ValueError, match="needs a state or a start"):
        fail_instance(None, None, error, 3.0)


# --- small pieces -------------------------------------------------------------------


def test_history_is_numbered_from_one_without_gaps() -> None:
    run = Run(define(step("a", retry={"max_attempts": 3}), step("b")))
    run.send(ActivityFailed("a", 1, ErrorInfo("X", "")), 1.0)
    run.ignores(ActivityFailed("a", 1, ErrorInfo("X", "")), 1.5)
    run.send(TimerFired(RETRY, "a", 1), 2.0)
    run.send(ActivityCompleted("a", 2, 2), 3.0)
    run.send(ActivityCompleted("b", 1, 3), 4.0)
    assert [record.seq for record in run.history] == list(range(1, 10))
    assert run.current.seq == 9
    assert run.current.status is COMPLETED


def test_error_info_round_trips_through_data() -> None:
    error = ErrorInfo("Boom", "msg", "tb", non_retryable=True)
    assert ErrorInfo.from_data(error.to_data()) == error
    assert ErrorInfo.from_data({}) == ErrorInfo("Error", "", "", False)


def test_only_queued_running_and_compensating_are_not_terminal() -> None:
    live = {status for status in InstanceStatus if not status.terminal}
    assert live == {InstanceStatus.QUEUED, InstanceStatus.RUNNING, InstanceStatus.COMPENSATING}


# -- signals, compensation, terminate ------------------------------------------------


def _signal_run() -> Run:
    run = Run(define(step("a"), {"id": "w", "wait_signal": "go"}, output="steps.w.output"))
    return run


def test_a_redelivered_signal_is_kept_once() -> None:
    run = _signal_run()
    run.send(SignalReceived("go", "first", seq=7), 2.0)
    kept = run.current
    assert kept.signals == {"go": ("first",)}
    new, commands = decide(run.definition, kept, SignalReceived("go", "first", seq=7), 3.0)
    assert (new, commands) == (kept, [])
    # Taken when the wait begins: the step ends with it at once.
    run.send(ActivityCompleted("a", 1, None), 4.0)
    assert run.current.status is InstanceStatus.COMPLETED
    assert run.current.output == "first"
    assert run.current.signals == {}


def test_signals_wait_in_order_per_name() -> None:
    run = _signal_run()
    for seq, payload in enumerate(["one", "two"], start=1):
        run.send(SignalReceived("go", payload, seq=seq), 2.0)
    run.send(SignalReceived("other", "x", seq=3), 2.0)
    run.send(ActivityCompleted("a", 1, None), 4.0)
    assert run.current.output == "one"
    assert run.current.signals == {"go": ("two",), "other": ("x",)}


def test_compensation_runs_in_reverse_and_ignores_the_rest() -> None:
    definition = define(
        step("a", compensate={"activity": "undo_a"}),
        step("b", compensate={"activity": "undo_b", "input": "{was: output}"}),
        step("c"),
    )
    run = Run(definition)
    run.send(ActivityCompleted("a", 1, "A"), 2.0)
    run.send(ActivityCompleted("b", 1, "B"), 3.0)
    run.send(ActivityFailed("c", 1, ErrorInfo("Boom", "no", non_retryable=True)), 4.0)
    assert run.current.status is InstanceStatus.COMPENSATING
    assert tasks(run.last) == [
        ScheduleActivity("b~undo", 1, "undo_b", {"was": "B"}, 4.0, None, 300.0, None)
    ]
    # A cancel, or a stray result of a step, changes nothing while compensating.
    for event in (CancelRequested("late"), ActivityCompleted("c", 1, "late")):
        assert decide(definition, run.current, event, 5.0) == (run.current, [])
    run.send(ActivityCompleted("b~undo", 1, None), 6.0)
    assert [task.step for task in tasks(run.last)] == ["a~undo"]
    assert tasks(run.last)[0].input == "A"
    run.send(ActivityCompleted("a~undo", 1, None), 7.0)
    assert (run.current.status, run.current.compensation) == (InstanceStatus.FAILED, "completed")
    assert run.current.error is not None
    assert run.current.error.type == "Boom"


def test_terminate_skips_compensation_even_while_it_runs() -> None:
    definition = define(step("a", compensate={"activity": "undo_a"}), step("b"))
    run = Run(definition)
    run.send(ActivityCompleted("a", 1, "A"), 2.0)
    run.send(CancelRequested("stop"), 3.0)
    assert run.current.status is InstanceStatus.COMPENSATING
    run.send(TerminateRequested("now"), 4.0)
    assert run.current.status is InstanceStatus.TERMINATED
    assert kinds(run.last) == ["workflow.terminated"]
    # The running compensation's task is withdrawn: nothing follows a termination.
    assert withdrawals(run.last) == [CancelActivity("a~undo", 1, "now")]


def test_an_ending_withdraws_the_tasks_out_and_only_those() -> None:
    """A failed branch ends the instance: its sibling's task is withdrawn, a retry wait's is not."""
    definition = define(
        {
            "id": "both",
            "parallel": [
                {"id": "x", "steps": [step("a")]},
                {"id": "y", "steps": [step("b", retry={"max_attempts": 3})]},
                {"id": "z", "steps": [step("c", retry={"max_attempts": 3})]},
            ],
        }
    )
    run = Run(definition)
    run.send(ActivityFailed("b", 1, ErrorInfo("Flaky", "")), 2.0)
    assert run.step("b").status is StepStatus.RETRY_WAIT
    run.send(ActivityFailed("c", 1, ErrorInfo("Fatal", "", non_retryable=True)), 3.0)
    assert run.current.status is FAILED
    assert [(w.step, w.attempt) for w in withdrawals(run.last)] == [("a", 1)]


# --- steps that finish within the decision that starts them ---------------------------


def test_a_long_run_of_steps_that_finish_at_once_keeps_the_stack_flat() -> None:
    """999 zero sleeps in one decision: once a RecursionError, now a completed instance."""
    definition = parse_definition(
        {"type": "naps", "steps": [{"id": f"s{i}", "sleep": 0} for i in range(999)]}
    )
    run = Run(definition, "in")
    assert (run.current.status, run.current.output) == (COMPLETED, "in")
    assert kinds(run.last).count("sleep.completed") == 999


def test_a_map_whose_items_finish_at_once_never_runs_past_its_items() -> None:
    definition = parse_definition(
        {
            "type": "quick",
            "steps": [
                {
                    "id": "each",
                    "map": "input",
                    "concurrency": 5,
                    "steps": [
                        {
                            "id": "pick",
                            "choice": [{"when": "item.slow", "steps": [step("slow")]}],
                            "default": [],
                        }
                    ],
                }
            ],
        }
    )
    # Items finish at once except the slow ones, which wait for a result.
    items = [{"slow": i % 3 == 1, "n": i} for i in range(3000)]
    run = Run(definition, items)
    pending = [task.step for task in tasks(run.last)]
    assert pending == ["slow@1", "slow@4", "slow@7", "slow@10", "slow@13"]
    while pending:
        key = pending.pop(0)
        run.send(ActivityCompleted(key, 1, key), 1.0)
        pending += [task.step for task in tasks(run.last)]
        running = [k for k, s in run.current.steps.items() if s.status is StepStatus.SCHEDULED]
        assert len(running) <= 5
    assert run.current.status is COMPLETED
    expected = [f"slow@{i}" if i % 3 == 1 else item for i, item in enumerate(items)]
    assert run.current.output == expected


# --- what nested steps see, and children whose id is taken ------------------------------


def test_a_step_sees_the_steps_before_it_but_never_a_sibling_branch() -> None:
    definition = parse_definition(
        {
            "type": "scopes",
            "steps": [
                step("first"),
                {
                    "id": "both",
                    "parallel": [
                        {"id": "x", "steps": [step("a")]},
                        {
                            "id": "y",
                            "steps": [
                                step("b"),
                                step("c", input="{first: steps.first.output, a: steps.a.output}"),
                            ],
                        },
                    ],
                },
                step("after", input="{a: steps.a.output, c: steps.c.output}"),
            ],
        }
    )
    run = Run(definition)
    run.send(ActivityCompleted("first", 1, "F"), 1.0)
    run.send(ActivityCompleted("a", 1, "A"), 2.0)  # done before c starts
    run.send(ActivityCompleted("b", 1, "B"), 3.0)
    # Whether a had finished depends on timing, so c never sees it.
    assert tasks(run.last)[0].input == {"first": "F", "a": None}
    run.send(ActivityCompleted("c", 1, "C"), 4.0)
    # After the parallel step everything in it is in sight.
    assert tasks(run.last)[0].input == {"a": "A", "c": "C"}


def test_a_child_start_for_an_id_another_holds_is_refused_to_the_parent() -> None:
    definition = define(step("a"))
    run = Run(definition)
    state = run.current
    theirs = StartRequested(state.id, "order", 1, None, parent="p-1", parent_step="kid")
    new, commands = decide(definition, state, theirs, 5.0)
    assert new is not None
    (notice,) = [c for c in commands if isinstance(c, NotifyParent)]
    assert (notice.parent, notice.step, notice.output) == ("p-1", "kid", None)
    assert notice.error is not None
    assert notice.error.type == "ChildIdConflict"
    assert (new.status, new.steps) == (state.status, state.steps)
    # The same start again (a redelivery) is refused once only.
    assert decide(definition, new, theirs, 6.0) == (new, [])
    # A child's own start again changes nothing.
    child = replace(state, parent="p-1", parent_step="kid")
    assert decide(definition, child, theirs, 6.0) == (child, [])
