"""Property tests of actors.core._decide.decide: hostile event sequences, checked invariants.

A hypothesis state machine generates a definition (1-4 steps, random retry
policies and timeouts, input and output expressions that may fail at run
time), starts an instance, then feeds it what the network could deliver:
the results and timers its commands asked for, in any order and with any
outcome, plus duplicates, redeliveries of anything seen before, stale and
future attempts, timers nobody started, events for unknown steps, cancels,
repeated starts and events decided without the instance's definition. Time
never goes backwards.

After every decision the invariants of ``_core``'s contract are checked, and
at the end the whole event log is replayed from scratch: the result must be
equal, decision by decision.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from actors.core import (
    ActivityCompleted,
    ActivityFailed,
    CancelRequested,
    Command,
    Definition,
    ErrorInfo,
    Event,
    ExpressionError,
    InstanceState,
    InstanceStatus,
    RecordHistory,
    ScheduleActivity,
    StartRequested,
    StartTimer,
    StepState,
    StepStatus,
    TimerFired,
    TimerKind,
    decide,
    parse_definition,
)

INSTANCE = "inst-1"
ERROR_TYPES = ("Transient", "Fatal", "Timeout")


@st.composite
def definitions(draw: st.DrawFn) -> Definition:
    """Plain data as a user would write it, validated by parse_definition."""
    count = draw(st.integers(1, 4))
    steps: list[dict[str, Any]] = []
    for i in range(count):
        initial = draw(st.sampled_from([0.25, 1.0, 2.5]))
        retry = {
            "max_attempts": draw(st.integers(1, 4)),
            "initial_interval": initial,
            "backoff": draw(st.sampled_from([1.0, 1.5, 2.0, 3.0])),
            "max_interval": initial * draw(st.sampled_from([1, 2, 10])),
            "non_retryable": draw(st.sampled_from([[], ["Fatal"], ["Fatal", "Timeout"]])),
        }
        timeout: dict[str, Any] = {"start_to_close": draw(st.sampled_from(["10s", "30s"]))}
        if draw(st.booleans()):
            timeout["schedule_to_start"] = draw(st.sampled_from(["500ms", "5s"]))
        # Mostly chaining or expressions that work; abs() fails unless input.n is a number.
        inputs = [None, None, "{from_input: input, wf: workflow.id}", "{n: abs(input.n)}"]
        if i > 0:
            inputs += [f"{{prev: steps.s{i - 1}.output, first: steps.s0.output}}"] * 2
        step: dict[str, Any] = {"id": f"s{i}", "activity": f"act{i % 2}", "retry": retry}
        step["timeout"] = timeout
        source = draw(st.sampled_from(inputs))
        if source is not None:
            step["input"] = source
        steps.append(step)
    data: dict[str, Any] = {"type": "prop", "version": draw(st.integers(1, 3)), "steps": steps}
    output = draw(
        st.sampled_from([None, f"{{last: steps.s{count - 1}.output}}", "abs(steps.s0.output)"])
    )
    if output is not None:
        data["output"] = output
    return parse_definition(data)


workflow_inputs = st.sampled_from([{"n": 3}, {"n": -1.5}, {"n": 0}, {"n": "x"}, None])
outputs = st.integers(-5, 5) | st.sampled_from([None, "out", {"k": 1}])
errors = st.builds(
    ErrorInfo,
    type=st.sampled_from(ERROR_TYPES),
    message=st.sampled_from(["boom", ""]),
    non_retryable=st.sampled_from([False, False, True]),
)
step_names = st.sampled_from(["s0", "s1", "s2", "s3", "ghost"])
attempts = st.integers(-1, 6)
stray_events = st.one_of(
    st.builds(ActivityCompleted, step_names, attempts, st.just("stray")),
    st.builds(ActivityFailed, step_names, attempts, errors),
    st.builds(TimerFired, st.sampled_from(TimerKind), step_names, attempts),
    st.builds(StartRequested, st.just(INSTANCE), st.just("prop"), st.integers(0, 3), outputs),
)


def context(state: InstanceState) -> dict[str, Any]:
    """The documented expression context: input, completed steps' outputs, workflow."""
    return {
        "input": state.input,
        "steps": {
            step_id: {"output": step.output}
            for step_id, step in state.steps.items()
            if step.status is StepStatus.COMPLETED
        },
        "workflow": {"id": state.id, "type": state.type, "version": state.version},
    }


def expected_input(definition: Definition, state: InstanceState, index: int) -> Any:
    """A step's input: its expression, else the previous output (first: the workflow's)."""
    step = definition.steps[index]
    if step.input is not None:
        return step.input.evaluate(context(state))
    if index == 0:
        return state.input
    return state.steps[definition.steps[index - 1].id].output


class CoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.definition: Definition = parse_definition(
            {"type": "unset", "steps": [{"id": "a", "activity": "a"}]}
        )
        self.state: InstanceState | None = None
        self.now = 0.0
        #: Every decision: (definition given, event, now) -> (state, commands).
        self.log: list[tuple[Definition | None, Event, float]] = []
        self.results: list[tuple[InstanceState | None, list[Command]]] = []
        self.history: list[RecordHistory] = []
        #: The history record with which each step's first task went out.
        self.first_dispatch: dict[str, int] = {}
        #: Activity attempts that commands asked for (step, attempt): their result is due.
        self.tasks: list[tuple[str, int]] = []
        self.timers: list[StartTimer] = []
        self.failed_tasks: list[tuple[str, int]] = []

    # -- the one way events reach the core ------------------------------------------

    def decide(self, event: Event) -> None:
        self.decide_with(self.definition, event)

    def decide_with(self, used: Definition | None, event: Event) -> None:
        before = self.state
        new, commands = decide(used, before, event, self.now)  # never raises
        self.log.append((used, event, self.now))
        self.results.append((new, commands))
        self.check_decision(used, before, event, new, commands)
        self.state = new
        for command in commands:
            if isinstance(command, ScheduleActivity):
                self.tasks.append((command.step, command.attempt))
            elif isinstance(command, StartTimer):
                self.timers.append(command)

    def check_decision(
        self,
        used: Definition | None,
        before: InstanceState | None,
        event: Event,
        new: InstanceState | None,
        commands: list[Command],
    ) -> None:
        """The contracts every decision keeps, then the outcome this event must have."""
        if new is None:
            assert before is None
            assert not isinstance(event, StartRequested)
            assert commands == []
            return
        if new is before:
            assert commands == []
        else:
            assert commands, "a change always records history"
            assert new.outbox == tuple(commands)
            assert new.updated_at == self.now
        for record in (c for c in commands if isinstance(c, RecordHistory)):
            assert record.seq == len(self.history) + 1
            assert record.at == self.now
            self.history.append(record)
        assert new.seq == len(self.history)
        for command in commands:
            if isinstance(command, ScheduleActivity):
                self.check_task(new, command, commands)
            elif isinstance(command, StartTimer) and command.kind is TimerKind.RETRY:
                step = self.definition.step(command.step)
                assert step is not None
                assert command.fire_at == self.now + step.retry.delay(command.attempt)
        self.check_outcome(self.expected(used, before, event), before, event, new, commands)

    def check_task(
        self, new: InstanceState, task: ScheduleActivity, commands: list[Command]
    ) -> None:
        """A task: its step's settings, its input, and its TIMEOUT guard timer."""
        now = self.now
        index = self.definition.index(task.step)
        step = self.definition.steps[index]
        assert 1 <= task.attempt <= step.retry.max_attempts
        scheduled = new.steps[task.step]
        # Its first task went out with its first activity.scheduled record.
        [record] = [
            c.seq
            for c in commands
            if isinstance(c, RecordHistory)
            and c.kind == "activity.scheduled"
            and c.detail["step"] == task.step
        ]
        assert scheduled.dispatched == self.first_dispatch.setdefault(task.step, record)
        assert replace(scheduled, dispatched=0) == StepState(
            StepStatus.SCHEDULED, task.attempt, now
        )
        assert (task.activity, task.scheduled_at) == (step.activity, now)
        timeout = step.timeout
        assert (task.schedule_to_start, task.start_to_close, task.heartbeat) == (
            timeout.schedule_to_start,
            timeout.start_to_close,
            timeout.heartbeat,
        )
        assert task.input == expected_input(self.definition, new, index)
        guards = [c for c in commands if isinstance(c, StartTimer) and c.kind is TimerKind.TIMEOUT]
        if timeout.schedule_to_start is None:
            assert guards == []
        else:
            fire_at = now + timeout.schedule_to_start + timeout.start_to_close
            assert guards == [StartTimer(TimerKind.TIMEOUT, task.step, task.attempt, fire_at)]

    def expected(self, used: Definition | None, before: InstanceState | None, event: Event) -> str:
        """What ``event`` must do to ``before``: the rules of _core, restated."""
        if before is None:
            return "start" if isinstance(event, StartRequested) else "nothing"
        if before.status.terminal or isinstance(event, StartRequested):
            return "nothing"
        if isinstance(event, CancelRequested):
            return "cancel"
        if used is not self.definition:
            return "definition-missing"
        step = self.definition.step(event.step)
        current = before.steps.get(event.step)
        if step is None or current is None:
            return "nothing"
        waiting = current.status in (StepStatus.SCHEDULED, StepStatus.RETRY_WAIT)
        if isinstance(event, ActivityCompleted):
            # A late success of an earlier attempt is accepted.
            return "complete" if waiting and 1 <= event.attempt <= current.attempt else "nothing"
        if event.attempt != current.attempt:
            return "nothing"
        if isinstance(event, TimerFired) and event.kind is TimerKind.RETRY:
            return "next-attempt" if current.status is StepStatus.RETRY_WAIT else "nothing"
        if isinstance(event, TimerFired) and event.kind is not TimerKind.TIMEOUT:
            return "nothing"  # sleep and signal timers mean nothing to an activity step
        if current.status is not StepStatus.SCHEDULED:
            return "nothing"
        error = (
            event.error if isinstance(event, ActivityFailed) else ErrorInfo("ActivityTimeout", "")
        )
        final = (
            error.non_retryable
            or error.type in step.retry.non_retryable
            or current.attempt >= step.retry.max_attempts
        )
        return "fail" if final else "retry"

    def check_outcome(
        self,
        outcome: str,
        before: InstanceState | None,
        event: Event,
        new: InstanceState,
        commands: list[Command],
    ) -> None:
        kinds = [c.kind for c in commands if isinstance(c, RecordHistory)]
        tasks = [c for c in commands if isinstance(c, ScheduleActivity)]
        retries = [c for c in commands if isinstance(c, StartTimer) and c.kind is TimerKind.RETRY]
        if outcome == "nothing":
            assert new is before
            return
        if outcome == "start":
            assert isinstance(event, StartRequested)
            assert (new.id, new.input, new.created_at) == (INSTANCE, event.input, self.now)
            assert kinds[0] == "workflow.started"
            self.check_next(new, "s0", kinds[1:], tasks)
            return
        assert before is not None
        assert before.status is InstanceStatus.RUNNING
        if outcome in ("cancel", "definition-missing"):
            # The running step is abandoned, then the instance ends.
            ending = "workflow.cancelled" if outcome == "cancel" else "workflow.failed"
            assert kinds == ["steps.cancelled", ending]
            assert new.steps.keys() == before.steps.keys()
            for key, step in new.steps.items():
                was = before.steps[key]
                if was.status.active:
                    assert step.status is StepStatus.CANCELLED
                else:
                    assert step == was
            if outcome == "cancel":
                assert (new.status, new.error) == (InstanceStatus.CANCELLED, None)
            else:
                assert new.status is InstanceStatus.FAILED
                assert new.error is not None
                assert new.error.type == "DefinitionMissing"
            return
        assert not isinstance(event, StartRequested | CancelRequested)
        current = before.steps[event.step]
        step = new.steps[event.step]
        if outcome == "complete":
            assert isinstance(event, ActivityCompleted)
            assert (step.status, step.output, step.finished_at) == (
                StepStatus.COMPLETED,
                event.output,
                self.now,
            )
            assert kinds[0] == "activity.completed"
            index = self.definition.index(event.step)
            if index + 1 < len(self.definition.steps):
                self.check_next(new, self.definition.steps[index + 1].id, kinds[1:], tasks)
            else:
                self.check_end(new, kinds[1:])
        elif outcome == "next-attempt":
            assert step.attempt == current.attempt + 1
            self.check_next(new, event.step, kinds, tasks)
        elif outcome == "retry":
            assert kinds == ["activity.failed", "activity.retry_scheduled"]
            assert (step.status, step.attempt) == (StepStatus.RETRY_WAIT, current.attempt)
            assert [(t.step, t.attempt) for t in retries] == [(event.step, current.attempt)]
            assert tasks == []
            assert new.status is InstanceStatus.RUNNING
        else:
            assert outcome == "fail"
            assert kinds == ["activity.failed", "workflow.failed"]
            assert (step.status, new.status) == (StepStatus.FAILED, InstanceStatus.FAILED)
            assert step.error is not None
            assert new.error is not None
            assert new.error.type == step.error.type
            assert retries == []
            assert tasks == []

    def check_next(
        self, new: InstanceState, step_id: str, kinds: list[str], tasks: list[ScheduleActivity]
    ) -> None:
        """Step ``step_id`` was to be scheduled: it is, or its input failed the instance."""
        try:
            expected_input(self.definition, new, self.definition.index(step_id))
        except ExpressionError:
            assert kinds == ["workflow.failed"]
            assert new.error is not None
            assert new.error.type == "ExpressionError"
            assert tasks == []
        else:
            assert kinds == ["activity.scheduled"]
            assert [task.step for task in tasks] == [step_id]
            assert new.status is InstanceStatus.RUNNING

    def check_end(self, new: InstanceState, kinds: list[str]) -> None:
        """The last step completed: the instance completes, or its output fails it."""
        output = self.definition.output
        try:
            expected = (
                new.steps[self.definition.steps[-1].id].output
                if output is None
                else output.evaluate(context(new))
            )
        except ExpressionError:
            assert kinds == ["workflow.failed"]
            assert new.error is not None
            assert new.error.type == "ExpressionError"
        else:
            assert kinds == ["workflow.completed"]
            assert (new.status, new.output) == (InstanceStatus.COMPLETED, expected)

    # -- rules ----------------------------------------------------------------------

    @initialize(definition=definitions(), workflow_input=workflow_inputs, stray=st.booleans())
    def start(self, definition: Definition, workflow_input: Any, stray: bool) -> None:
        self.definition = definition
        if stray:  # an event for an instance that does not exist yet
            self.decide(ActivityCompleted("s0", 1, "early"))
        self.decide(StartRequested(INSTANCE, definition.type, definition.version, workflow_input))

    @rule(seconds=st.sampled_from([0.0, 0.1, 1.0, 3.0, 60.0, 1000.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @precondition(lambda self: self.tasks)
    @rule(data=st.data(), dice=st.integers(0, 2), keep=st.booleans())
    def deliver_result(self, data: st.DataObject, dice: int, keep: bool) -> None:
        """A result the commands asked for, any of them (reordering), mostly a success.

        A kept task can be delivered again, with another outcome (an activity
        runs at least once: a second run may succeed where the first failed).
        """
        index = data.draw(st.integers(0, len(self.tasks) - 1), label="task")
        step, attempt = self.tasks[index] if keep else self.tasks.pop(index)
        if dice:
            self.decide(ActivityCompleted(step, attempt, data.draw(outputs, label="output")))
        else:
            self.decide(ActivityFailed(step, attempt, data.draw(errors, label="error")))
            self.failed_tasks.append((step, attempt))

    @precondition(lambda self: self.running() and self.failed_tasks)
    @rule(data=st.data())
    def late_success(self, data: st.DataObject) -> None:
        """A success of an attempt that failed (or timed out) before."""
        step, attempt = data.draw(st.sampled_from(self.failed_tasks), label="failed task")
        self.decide(ActivityCompleted(step, attempt, "late"))

    @precondition(lambda self: self.timers)
    @rule(data=st.data(), on_time=st.booleans())
    def fire_timer(self, data: st.DataObject, on_time: bool) -> None:
        """A started timer, at its time (or early: a clock skew), in any order."""
        timer = self.timers.pop(data.draw(st.integers(0, len(self.timers) - 1), label="timer"))
        if on_time:
            self.now = max(self.now, timer.fire_at)
        self.decide(TimerFired(timer.kind, timer.step, timer.attempt))

    @precondition(lambda self: self.log)
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        """Any earlier event again (a duplicate, or a redelivery after a crash)."""
        _, event, _ = data.draw(st.sampled_from(self.log), label="replayed")
        self.decide(event)

    @precondition(lambda self: self.running())
    @rule(event=stray_events)
    def stray(self, event: Event) -> None:
        """What nobody asked for: stale, future or unknown attempts and steps, a restart."""
        self.decide(event)

    @precondition(lambda self: self.running())
    @rule(reason=st.sampled_from(["", "user"]), dice=st.integers(0, 7))
    def cancel(self, reason: str, dice: int) -> None:
        if dice == 0:  # rarely: a cancel ends the interesting part of a run
            self.decide(CancelRequested(reason))

    @precondition(lambda self: self.running() and self.tasks)
    @rule(data=st.data(), missing=st.booleans(), dice=st.integers(0, 15))
    def without_definition(self, data: st.DataObject, missing: bool, dice: int) -> None:
        """Rarely, a due result decided while the definition is gone (or another one)."""
        if dice:
            return
        step, attempt = data.draw(st.sampled_from(self.tasks), label="task")
        other = None if missing else replace(self.definition, version=self.definition.version + 1)
        self.decide_with(other, ActivityCompleted(step, attempt, "wrong"))

    def running(self) -> bool:
        return self.state is not None and not self.state.status.terminal

    # -- invariants of the state ------------------------------------------------------

    @invariant()
    def state_is_consistent(self) -> None:
        state = self.state
        if state is None:
            return
        definition = self.definition
        assert state.seq == len(self.history)
        assert [record.seq for record in self.history] == list(range(1, len(self.history) + 1))
        completions = Counter(
            record.detail["step"] for record in self.history if record.kind == "activity.completed"
        )
        assert all(count == 1 for count in completions.values()), completions
        for step_id, step in state.steps.items():
            step_def = definition.step(step_id)
            assert step_def is not None
            assert 1 <= step.attempt <= step_def.retry.max_attempts
            assert (step.status is StepStatus.COMPLETED) == (completions[step_id] == 1)
        # Steps run in order: those before the cursor completed, none after it started.
        ids = [step.id for step in definition.steps]
        started = [step_id for step_id in ids if step_id in state.steps]
        assert started == ids[: len(started)]
        assert all(state.steps[step_id].status is StepStatus.COMPLETED for step_id in started[:-1])
        if state.status is InstanceStatus.COMPLETED:
            assert started == ids
            assert all(step.status is StepStatus.COMPLETED for step in state.steps.values())
            assert state.error is None
        elif state.status is InstanceStatus.RUNNING:
            assert started
            assert state.steps[started[-1]].status in (
                StepStatus.SCHEDULED,
                StepStatus.RETRY_WAIT,
            )
            assert state.error is None
        elif state.status is InstanceStatus.FAILED:
            assert state.error is not None
        if state.status is not InstanceStatus.FAILED:
            assert not any(step.status is StepStatus.FAILED for step in state.steps.values())

    @invariant()
    def terminal_is_final(self) -> None:
        """A terminal instance is changed by nothing (checked with a sample of events)."""
        state = self.state
        if state is None or not state.status.terminal:
            return
        events = (
            CancelRequested("late"),
            ActivityCompleted("s0", 1, "late"),
            TimerFired(TimerKind.RETRY, "s0", 1),
        )
        for definition in (self.definition, None):
            for event in events:
                assert decide(definition, state, event, self.now + 1) == (state, [])
                assert decide(definition, state, event, self.now + 1)[0] is state

    def teardown(self) -> None:
        """Replaying the log from scratch gives the same decisions and the same state."""
        state: InstanceState | None = None
        for (used, event, now), expected in zip(self.log, self.results, strict=True):
            result = decide(used, state, event, now)
            assert result == expected
            state = result[0]
        assert state == self.state


CoreMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCore = CoreMachine.TestCase
