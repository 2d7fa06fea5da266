"""Property tests of actors.core._decide.decide on tree-shaped definitions.

A hypothesis state machine generates nested definitions (activities, child
workflows, parallel, map over ``input.items``, choice on ``input.flag``; up
to three containers deep; random retries, concurrency and compensations),
starts an instance and feeds it plausible events: results of the tasks it
has out, failures, retry timers, late successes of earlier attempts,
redeliveries, stale attempts, pauses and resumes, rare cancels and
terminates. At the end it drains the instance (completes whatever is still
out) so that every run reaches an end.

Some runs start queued behind workflow-level concurrency limits (and are
sent signals, pauses, cancels and slot grants while they wait, as the
runtime would), some with their type paused or with a signal; what the
core owes those starts is checked by ``tree_flow.py``.

Every activity (and child) returns a deterministic function of its step key
and the input it was given, so a small reference interpreter here, which
knows nothing of ``_core``, computes the input each step must get and the
output the workflow must end with. After every decision the contracts of
``_core`` are checked, with map concurrency, dropped item states and the
order of compensations.

Also: a map over 10,000 items driven to completion, with its stored state
size checked along the way.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Final

import jmespath
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)
from tree_flow import Decider, FlowRun

from actors.core import (
    ActivityCompleted,
    ActivityFailed,
    ActivityStep,
    CancelActivity,
    CancelChild,
    CancelRequested,
    Command,
    Definition,
    ErrorInfo,
    Event,
    InstanceState,
    InstanceStatus,
    PauseRequested,
    RecordHistory,
    ResumeRequested,
    ScheduleActivity,
    SlotGranted,
    StartChild,
    StartRequested,
    StepState,
    StepStatus,
    TerminateRequested,
    TimerFired,
    TimerKind,
    decide,
    parse_definition,
)
from actors.core._steps import ChildStep, ChoiceStep, MapStep, ParallelStep, Step
from actors.wire import encode_state

INSTANCE: Final = "inst-1"
UNDO: Final = "~undo"
#: Values of ``input.flag``: JMESPath-truthy and falsy ones, 0 among the truthy.
FLAGS: Final[tuple[Any, ...]] = (True, False, None, 0, 2, "x", "", [], {"k": 1})
#: Conditions of choice branches; the last two differ between map items.
CONDITIONS: Final = ("input.flag", "!input.flag", "input.flag == `2`", "index == `0`", "item > `1`")
ACTIVITY_INPUT: Final = "{f: input.flag, i: index}"
COMPENSATE_INPUT: Final = "{out: output, i: index}"


# -- what the workers "return" -----------------------------------------------------


def digest(value: Any) -> str:
    """A short, stable fingerprint of a JSON-like value (tuples count as lists)."""
    text = json.dumps(value, sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def output_for(key: str, value: Any) -> str:
    """What the activity (or child) at ``key`` returns for input ``value``.

    Depends on both, so a wrong input or a result routed to the wrong step
    changes the workflow's output; a digest keeps outputs small however
    deep the tree.
    """
    return f"{key}:{digest(value)}"


# -- definitions -------------------------------------------------------------------


@st.composite
def tree_definitions(draw: st.DrawFn) -> dict[str, Any]:
    """Plain definition data: a random tree of steps, containers up to three deep.

    Choice branches may be empty, so containers (and map items) may finish
    as they start. Some compensations have an input expression.
    """
    ids = itertools.count()

    def sequence(depth: int, *, empty: bool = False) -> list[dict[str, Any]]:
        size = draw(st.integers(0 if empty else 1, 3 if depth == 0 else 2))
        return [step(depth) for _ in range(size)]

    def step(depth: int) -> dict[str, Any]:
        kinds = ["activity", "activity", "workflow"]
        if depth < 3:
            kinds += ["parallel", "map", "choice"]
        kind = draw(st.sampled_from(kinds))
        step_id = f"s{next(ids)}"
        if kind == "activity":
            data: dict[str, Any] = {
                "id": step_id,
                "activity": "work",
                "retry": {"max_attempts": draw(st.integers(1, 3)), "initial_interval": "1s"},
            }
            if draw(st.integers(0, 2)) == 0:
                data["input"] = ACTIVITY_INPUT
            if draw(st.integers(0, 2)):
                data["compensate"] = {"activity": "undo"}
                if draw(st.integers(0, 3)):
                    data["compensate"]["input"] = COMPENSATE_INPUT
            return data
        if kind == "workflow":
            return {"id": step_id, "workflow": "child"}
        if kind == "parallel":
            branches = draw(st.integers(1, 3))
            return {
                "id": step_id,
                "parallel": [
                    {"id": f"b{i}", "steps": sequence(depth + 1)} for i in range(branches)
                ],
            }
        if kind == "map":
            return {
                "id": step_id,
                "map": "input.items",
                "concurrency": draw(st.integers(1, 3)),
                "steps": sequence(depth + 1),
            }
        choices = draw(st.integers(1, 2))
        data = {
            "id": step_id,
            "choice": [
                {
                    "when": draw(st.sampled_from(CONDITIONS)),
                    "steps": sequence(depth + 1, empty=True),
                }
                for _ in range(choices)
            ],
        }
        default = draw(st.sampled_from(["steps", "steps", "none", "empty"]))
        if default == "empty":
            data["default"] = []
        elif default == "steps":
            data["default"] = sequence(depth + 1)
        return data

    return {"type": "tree", "version": 1, "steps": sequence(0)}


@st.composite
def workflow_inputs(draw: st.DrawFn) -> dict[str, Any]:
    """``{"flag": ..., "items": [...]}``; rarely no items, which fails every map."""
    data: dict[str, Any] = {"flag": draw(st.sampled_from(FLAGS))}
    if draw(st.integers(0, 19)):
        data["items"] = draw(st.lists(st.integers(0, 3), max_size=3))
    return data


# -- the reference interpreter -----------------------------------------------------

#: A sequence that cannot finish (no choice held, or a map over a non-list).
FAIL: Final = object()


def truthy(value: Any) -> bool:
    """JMESPath truth (written out: ``0 == False`` in Python, but 0 is true)."""
    if value is None or value is False:
        return False
    return not (isinstance(value, str | list | dict) and len(value) == 0)


def parse_key(key: str) -> tuple[str, tuple[int, ...], bool]:
    """``(step id, map item path, undo)`` of a step key (``s3@1@0~undo``)."""
    undo = key.endswith(UNDO)
    base = key[: -len(UNDO)] if undo else key
    step_id, *indices = base.split("@")
    return step_id, tuple(int(index) for index in indices), undo


def key_of(step_id: str, path: tuple[int, ...]) -> str:
    return step_id + "".join(f"@{i}" for i in path)


class Reference:
    """What an instance of ``definition`` must do for ``workflow_input``.

    Walks the tree the way the definition format documents it, recording
    the input of every activity and child step on the way (``inputs``) and
    the branch each choice takes (``branches``; ``None``: no branch holds
    and there is no default). ``result`` is the workflow's output, or
    ``FAIL`` if it cannot complete.
    """

    def __init__(self, definition: Definition, workflow_input: dict[str, Any]) -> None:
        self.input = workflow_input
        self.items = workflow_input.get("items")
        self.inputs: dict[str, Any] = {}
        self.branches: dict[str, int | None] = {}
        self.result = self.sequence(definition.steps, workflow_input, ())

    def context(self, path: tuple[int, ...]) -> dict[str, Any]:
        """What expressions see: the input, and inside a map its item and index."""
        context: dict[str, Any] = {"input": self.input}
        if path:
            assert isinstance(self.items, list)
            context["index"] = path[-1]  # every map iterates input.items
            context["item"] = self.items[path[-1]]
        return context

    def sequence(self, steps: tuple[Step, ...], value: Any, path: tuple[int, ...]) -> Any:
        for step in steps:
            value = self.step(step, value, path)
            if value is FAIL:
                return FAIL
        return value

    def step(self, step: Step, value: Any, path: tuple[int, ...]) -> Any:
        key = key_of(step.id, path)
        if isinstance(step, ActivityStep | ChildStep):
            if step.input is not None:
                value = jmespath.search(step.input.source, self.context(path))
            self.inputs[key] = value
            return output_for(key, value)
        if isinstance(step, ParallelStep):
            # Every branch runs (and may schedule work) even if another fails.
            outputs = {b.id: self.sequence(b.steps, value, path) for b in step.branches}
            return FAIL if FAIL in outputs.values() else outputs
        if isinstance(step, MapStep):
            if not isinstance(self.items, list):
                return FAIL
            results = [
                self.sequence(step.steps, item, (*path, i)) for i, item in enumerate(self.items)
            ]
            return FAIL if FAIL in results else results
        assert isinstance(step, ChoiceStep)
        context = self.context(path)
        taken = next(
            (
                number
                for number, branch in enumerate(step.choices)
                if branch.when is not None and truthy(jmespath.search(branch.when.source, context))
            ),
            None,
        )
        if taken is None and step.default is not None:
            taken = len(step.choices)
        self.branches[key] = taken
        if taken is None:
            return FAIL
        return self.sequence(step.branches[taken].steps, value, path)


def width(steps: tuple[Step, ...], items: int) -> int:
    """The most activities and children a sequence can have out at once."""
    return max((step_width(step, items) for step in steps), default=0)


def step_width(step: Step, items: int) -> int:
    if isinstance(step, ParallelStep):
        return sum(width(b.steps, items) for b in step.branches)
    if isinstance(step, MapStep):
        return min(step.concurrency, items) * width(step.steps, items)
    if isinstance(step, ChoiceStep):
        return max((width(b.steps, items) for b in step.branches), default=0)
    return 1


def enclosing_maps(
    steps: tuple[Step, ...], into: dict[str, tuple[MapStep, ...]], maps: tuple[MapStep, ...] = ()
) -> dict[str, tuple[MapStep, ...]]:
    """The map steps around each step id, outermost first."""
    for step in steps:
        into[step.id] = maps
        if isinstance(step, MapStep):
            enclosing_maps(step.steps, into, (*maps, step))
        elif isinstance(step, ParallelStep | ChoiceStep):
            for branch in step.branches:
                enclosing_maps(branch.steps, into, maps)
    return into


def compensable(step: Step | None) -> bool:
    return isinstance(step, ActivityStep) and step.compensate is not None


def undoable(step: Step | None) -> bool:
    """An activity with a compensation, or a container holding one."""
    if isinstance(step, MapStep):
        return any(undoable(inner) for inner in step.steps)
    if isinstance(step, ParallelStep | ChoiceStep):
        return any(undoable(inner) for branch in step.branches for inner in branch.steps)
    return compensable(step)


def kept(definition: Definition, key: str, step: StepState) -> bool:
    """Whether a finished map item may keep this state: a completed activity
    with a compensation (or a completed container holding one, which the
    compensation's input expression may need for its item)."""
    return step.status is StepStatus.COMPLETED and undoable(definition.step(parse_key(key)[0]))


# -- the machine -------------------------------------------------------------------

PENDING: Final = (StepStatus.SCHEDULED, StepStatus.RETRY_WAIT)


class TreeMachine(RuleBasedStateMachine):
    """One instance of a random tree definition, driven by plausible events."""

    def __init__(self) -> None:
        super().__init__()
        self.definition = parse_definition(
            {"type": "unset", "steps": [{"id": "a", "activity": "a"}]}
        )
        self.reference = Reference(self.definition, {})
        self.maps: dict[str, tuple[MapStep, ...]] = {}
        self.width = 0
        self.state: InstanceState | None = None
        self.now = 0.0
        self.log: list[Event] = []
        self.history: list[RecordHistory] = []
        #: Commands asking for (step key, attempt): each at most once.
        self.asked: Counter[tuple[str, int]] = Counter()
        self.task_inputs: dict[tuple[str, int], Any] = {}
        #: Outputs the test returned, by step key (for compensation inputs).
        self.outputs: dict[str, Any] = {}
        self.completions: Counter[str] = Counter()
        #: Undoable steps in the order their completion was applied.
        self.compensable_done: list[str] = []
        #: Per undoable step whose task went out: the history seq of its first
        #: activity.scheduled record, and of the record that ended it (its
        #: completion, its last failure, or the steps.cancelled that abandoned it).
        self.dispatched: dict[str, int] = {}
        self.ended: dict[str, int] = {}
        self.last_failure: dict[str, int] = {}
        self.expected_undo: list[str] | None = None
        self.undo_order: list[str] = []
        #: Set once a cancel, terminate or final failure ends the run early.
        self.disrupted = False
        #: Set while a decision is being checked: a failure leaves it set.
        self.broken = False
        #: Whether the drain at the end fails a task once something can be
        #: undone (so that many runs compensate).
        self.fail_at_end = False
        #: Whether the decision under check resumes the instance.
        self.resuming = False
        #: How the instance was started (queued, of a paused type, with a
        #: signal) and the checks on that (``tree_flow.py``).
        self.flow = FlowRun(self.definition, StartRequested(INSTANCE, "tree", 1, None))

    # -- the one way events reach the core ------------------------------------------

    def send(self, event: Event, via: Decider | None = None) -> None:
        """Decide ``event`` (or, with ``via``, make the decision the runtime makes
        in its place) and check the result."""
        self.broken = True
        self.now += 1.0
        before = self.state
        if via is None:
            via = self.decided(event)
        # A resume (a cancel resumes too) decides what was held: several events at once.
        self.resuming = (
            isinstance(event, ResumeRequested | CancelRequested)
            and before is not None
            and before.paused is not None
        )
        new, commands = via(before)  # never raises
        self.log.append(event)
        assert new is not None
        if before is not None and before.status.terminal:
            assert new is before, "a terminal instance stays terminal"
        # A no-op is exactly: the same object back, and no commands.
        assert (new is before) == (commands == [])
        if new is not before:
            assert new.outbox == tuple(commands)
            assert new.updated_at == self.now
            # Ended otherwise than the definition and input alone decide.
            # (A resume decides the results held while paused, failures too.)
            if isinstance(event, CancelRequested | TerminateRequested) or (
                isinstance(event, ActivityFailed | ResumeRequested)
                and new.status is not InstanceStatus.RUNNING
                and before is not None
                and before.status is InstanceStatus.RUNNING
            ):
                self.disrupted = True
        held = (
            {e.step: e for e in before.held if isinstance(e, ActivityCompleted)}
            if (before is not None and self.resuming)
            else {}
        )
        for command in commands:
            if isinstance(command, RecordHistory) and (
                command.kind in ("activity.completed", "child.result", "activity.settled")
            ):
                if isinstance(event, ActivityCompleted):
                    assert command.detail["step"] == event.step
                    self.outputs[event.step] = event.output
                elif command.detail["step"] in held:
                    self.outputs[command.detail["step"]] = held[command.detail["step"]].output
            self.check_command(new, command)
        self.check_cancelled_children(before, new, commands)
        self.check_withdrawals(before, new, event, commands)
        self.flow.check(before, new, event, commands, self.now)
        # The same event again, right away, changes nothing.
        again, more = via(new)
        assert again is new
        assert more == []
        self.state = new
        self.check_state(new)
        self.broken = False

    def decided(self, event: Event) -> Decider:
        return lambda state: decide(self.definition, state, event, self.now)

    def check_command(self, new: InstanceState, command: Command) -> None:
        if isinstance(command, RecordHistory):
            assert command.seq == len(self.history) + 1, "history is numbered without gaps"
            assert command.at == self.now
            self.history.append(command)
            self.check_record(command)
        elif isinstance(command, ScheduleActivity):
            self.check_task(new, command)
        elif isinstance(command, StartChild):
            self.check_child(command)

    def check_record(self, record: RecordHistory) -> None:
        key = record.detail.get("step", "")
        step_id, _, undo = parse_key(key) if key else ("", (), False)
        undoable_step = bool(key) and not undo and compensable(self.definition.step(step_id))
        if record.kind in ("activity.completed", "child.result"):
            self.completions[key] += 1
            assert self.completions[key] == 1, f"{key} completed twice"
            if undoable_step:
                self.compensable_done.append(key)
                self.ended[key] = record.seq
        elif record.kind == "activity.scheduled" and undoable_step:
            self.dispatched.setdefault(key, record.seq)
        elif record.kind == "activity.failed" and undoable_step:
            self.last_failure[key] = record.seq
        elif record.kind == "steps.cancelled":
            for abandoned in record.detail["steps"]:
                self.ended.setdefault(abandoned, record.seq)
        elif record.kind == "compensation.started":
            # Every step whose task went out is undone (rule 11), the one
            # that ended last first (the one dispatched last, of those that
            # ended together).
            def order(key: str) -> tuple[int, int]:
                return self.ended.get(key, self.last_failure.get(key, 0)), self.dispatched[key]

            expected = [key + UNDO for key in sorted(self.dispatched, key=order, reverse=True)]
            assert record.detail["steps"] == expected
            self.expected_undo = expected
        elif record.kind == "choice.taken":
            key = record.detail["step"]
            step = self.definition.step(parse_key(key)[0])
            assert isinstance(step, ChoiceStep)
            taken = self.reference.branches[key]
            assert taken is not None
            assert record.detail["branch"] == ("default" if taken == len(step.choices) else taken)

    def check_task(self, new: InstanceState, task: ScheduleActivity) -> None:
        """A task names an activity step (or the undo of one) and gets its input."""
        step_id, path, undo = parse_key(task.step)
        step = self.definition.step(step_id)
        assert isinstance(step, ActivityStep), task
        assert len(path) == len(self.maps[step_id])
        assert 1 <= task.attempt <= step.retry.max_attempts
        self.asked[(task.step, task.attempt)] += 1
        assert self.asked[(task.step, task.attempt)] == 1, f"{task.step} #{task.attempt} twice"
        # Scheduled now (or already abandoned, if the same decision failed the
        # instance; or done, if a resume's held events went on past it).
        scheduled = new.steps[task.step]
        assert (scheduled.attempt, scheduled.scheduled_at) == (task.attempt, self.now)
        ended = (StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.RETRY_WAIT)
        assert scheduled.status in (StepStatus.SCHEDULED, StepStatus.CANCELLED) or (
            self.resuming and scheduled.status in ended
        )
        if undo:
            assert step.compensate is not None
            assert task.activity == step.compensate.activity
            undone = task.step[: -len(UNDO)]
            completed = new.steps[undone].status is StepStatus.COMPLETED
            output = self.outputs[undone] if completed else None
            if step.compensate.input is not None:
                assert task.input == {"out": output, "i": path[-1] if path else None}
            elif completed:
                assert task.input == output
            else:
                # A step that did not complete is undone from what it was asked.
                assert task.input == self.reference.inputs[undone]
            if task.attempt == 1:
                self.undo_order.append(task.step)
        else:
            assert task.activity == step.activity
            assert task.input == self.reference.inputs[task.step]
        if task.attempt > 1:
            assert task.input == self.task_inputs[(task.step, 1)], "a retry gets the same input"
        self.task_inputs[(task.step, task.attempt)] = task.input

    def check_child(self, start: StartChild) -> None:
        step_id, path, undo = parse_key(start.step)
        step = self.definition.step(step_id)
        assert isinstance(step, ChildStep)
        assert not undo
        assert len(path) == len(self.maps[step_id])
        assert (start.workflow, start.version) == (step.workflow, step.version)
        assert start.child == f"{INSTANCE}-{start.step.replace('@', '-')}"
        assert start.input == self.reference.inputs[start.step]
        self.asked[(start.step, 1)] += 1
        assert self.asked[(start.step, 1)] == 1, f"child {start.step} started twice"
        self.task_inputs[(start.step, 1)] = start.input

    def check_cancelled_children(
        self, before: InstanceState | None, new: InstanceState, commands: list[Command]
    ) -> None:
        """Children whose step was abandoned are told to stop, once each."""
        if before is None or new is before:
            return
        # Children started before, or in this very decision, then abandoned.
        stopped = [
            key
            for key, step in new.steps.items()
            if step.status is StepStatus.CANCELLED
            and isinstance(self.definition.step(parse_key(key)[0]), ChildStep)
            and (key not in before.steps or before.steps[key].status is StepStatus.SCHEDULED)
        ]
        cancels = [c for c in commands if isinstance(c, CancelChild)]
        # Both sides sorted as child ids: keys sort otherwise ("s30" < "s3@0",
        # but "inst-1-s3-0" < "inst-1-s30").
        assert sorted(c.child for c in cancels) == sorted(
            f"{INSTANCE}-{key.replace('@', '-')}" for key in stopped
        )
        terminate = new.status is InstanceStatus.TERMINATED
        assert all(c.terminate == terminate for c in cancels)

    def check_withdrawals(
        self,
        before: InstanceState | None,
        new: InstanceState,
        event: Event,
        commands: list[Command],
    ) -> None:
        """Exactly the activity tasks out that the decision gave up on are withdrawn, once each.

        A task is out from its ``ScheduleActivity`` (before, or in this very
        decision) until its attempt reports; it is given up when its attempt
        is no longer the step's scheduled one, or the instance ended (a
        termination leaves a running compensation as it was), and no result
        for it came.
        """
        out = {
            key: step.attempt
            for key, step in (
                before.steps.items() if before is not None and not before.status.terminal else ()
            )
            if step.status is StepStatus.SCHEDULED and self.is_activity(key)
        }
        for command in commands:
            if isinstance(command, ScheduleActivity):
                out[command.step] = command.attempt
        reported = [event] if isinstance(event, ActivityCompleted | ActivityFailed) else []
        if isinstance(event, ResumeRequested | CancelRequested) and before is not None:
            # Resumed (a cancel resumes too): the results held meanwhile are decided.
            reported += [
                e for e in before.held if isinstance(e, ActivityCompleted | ActivityFailed)
            ]
        for result in reported:
            if out.get(result.step) == result.attempt:
                del out[result.step]
        if self.resuming:
            # Several events in one decision: a task scheduled by one (a held
            # retry timer) may be reported by the next (a held late success).
            reported_now = {(r.step, r.attempt) for r in reported}
            scheduled_now = {
                (c.step, c.attempt) for c in commands if isinstance(c, ScheduleActivity)
            }
            out = {
                key: attempt
                for key, attempt in out.items()
                if (key, attempt) not in reported_now or (key, attempt) not in scheduled_now
            }
        expected = {
            (key, attempt)
            for key, attempt in out.items()
            if new.status.terminal
            or not (
                (step := new.steps.get(key)) is not None
                and step.status is StepStatus.SCHEDULED
                and step.attempt == attempt
            )
        }
        withdrawn = [(c.step, c.attempt) for c in commands if isinstance(c, CancelActivity)]
        assert len(withdrawn) == len(set(withdrawn)), withdrawn
        assert set(withdrawn) == expected

    def is_activity(self, key: str) -> bool:
        step_id, _, undo = parse_key(key)
        return undo or isinstance(self.definition.step(step_id), ActivityStep)

    # -- invariants of the state ------------------------------------------------------

    def check_state(self, state: InstanceState) -> None:
        definition = self.definition
        assert state.seq == len(self.history)
        for key, step in state.steps.items():
            step_id, path, undo = parse_key(key)
            assert definition.step(step_id) is not None, key
            assert len(path) == len(self.maps[step_id]), key
            if not undo and step.branch >= 0:
                assert step.branch == self.reference.branches[key]
            if not undo:
                self.check_item_dropped(state, key, step)
        self.check_maps(state)
        scheduled = [
            key
            for key, step in state.steps.items()
            if step.status is StepStatus.SCHEDULED and not key.endswith(UNDO)
        ]
        assert len(scheduled) <= self.width, (scheduled, self.width)
        undoing = [k for k, s in state.steps.items() if k.endswith(UNDO) and s.status in PENDING]
        if self.expected_undo is not None:
            # One compensation at a time, in the order announced.
            assert self.undo_order == self.expected_undo[: len(self.undo_order)]
            assert len(undoing) <= 1
        else:
            assert self.undo_order == []
        if state.status is InstanceStatus.RUNNING:
            # Only activities and children wait here: something must be out
            # (unless its start is held: its type was paused).
            assert any(step.status in PENDING for step in state.steps.values()) or (
                state.paused is not None and not state.steps
            )
            assert state.error is None
        elif state.status is InstanceStatus.COMPENSATING:
            # A compensation runs, or the next one waits for its step's task.
            pending = state.compensations
            waits = bool(pending) and state.steps[pending[0][: -len(UNDO)]].in_flight
            assert len(undoing) == 1 or (not undoing and waits)
        elif state.status is InstanceStatus.COMPLETED:
            assert self.reference.result is not FAIL
            assert state.output == self.reference.result
            assert state.error is None
        elif state.status is InstanceStatus.FAILED:
            assert state.error is not None
            if state.error.type in ("NoChoiceMatched", "ExpressionError"):
                assert self.reference.result is FAIL, state.error
        if state.compensation == "completed":
            assert self.undo_order == self.expected_undo

    def check_item_dropped(self, state: InstanceState, key: str, step: StepState) -> None:
        """Inside a map copy that is over (completed, or gone with its own item),
        only completed undoable activities are left."""
        step_id, path, _ = parse_key(key)
        for depth, map_step in enumerate(self.maps[step_id]):
            owner = state.steps.get(key_of(map_step.id, path[:depth]))
            if owner is None or owner.status is StepStatus.COMPLETED:
                assert kept(self.definition, key, step), f"{key} outlived its map item"
                return

    def check_maps(self, state: InstanceState) -> None:
        """A running map copy has exactly ``next_item - finished_items`` items
        under way, never more than its concurrency, none past ``next_item``."""
        running: dict[str, set[int]] = {}
        for key, step in state.steps.items():
            step_id, path, undo = parse_key(key)
            if undo or kept(self.definition, key, step):
                continue
            for depth, map_step in enumerate(self.maps[step_id]):
                running.setdefault(key_of(map_step.id, path[:depth]), set()).add(path[depth])
        for key, step in state.steps.items():
            owner = self.definition.step(parse_key(key)[0])
            if not isinstance(owner, MapStep) or step.status is not StepStatus.RUNNING:
                continue
            items = running.get(key, set())
            under_way = step.next_item - step.finished_items
            assert 0 <= under_way <= owner.concurrency, (key, step)
            assert len(items) == under_way, (key, sorted(items), step)
            assert all(item < step.next_item for item in items)
            assert step.items is not None
            assert step.next_item <= len(step.items)

    # -- rules ----------------------------------------------------------------------

    @initialize(data=st.data())
    def start(self, data: st.DataObject) -> None:
        plain = data.draw(
            tree_definitions(),
            label="definition",
        )
        self.definition = parse_definition(plain)
        workflow_input = data.draw(workflow_inputs(), label="input")
        self.reference = Reference(self.definition, workflow_input)
        self.maps = enclosing_maps(self.definition.steps, {})
        items = workflow_input.get("items")
        self.width = width(self.definition.steps, len(items) if isinstance(items, list) else 0)
        self.fail_at_end = data.draw(st.integers(0, 2), label="fail at end") == 0
        # Some runs start queued (the definition then has limits), some carry
        # their type's pause or a signal.
        self.flow = FlowRun.draw(data, plain, INSTANCE, workflow_input)
        self.definition = self.flow.definition
        if self.flow.queued:
            behind = data.draw(st.sampled_from(self.flow.behind), label="behind")
            self.send(self.flow.start, lambda state: self.flow.queue(state, behind, self.now))
        else:
            self.send(self.flow.start)

    def running(self) -> bool:
        return self.state is not None and not self.state.status.terminal

    def keys(self, status: StepStatus) -> list[str]:
        assert self.state is not None
        return sorted(k for k, s in self.state.steps.items() if s.status is status)

    def result_for(self, key: str, attempt: int) -> ActivityCompleted:
        """The success a worker would report for ``attempt`` of ``key``.

        Every attempt gets the first one's input (checked in check_task), so
        the output is the same whichever attempt, even one not made yet.
        """
        if key.endswith(UNDO):
            return ActivityCompleted(key, attempt, "undone")
        return ActivityCompleted(key, attempt, output_for(key, self.task_inputs[(key, 1)]))

    def has(self, status: StepStatus) -> bool:
        return self.running() and bool(self.keys(status))

    @precondition(lambda self: self.has(StepStatus.SCHEDULED))
    @rule(data=st.data(), dice=st.integers(0, 9))
    def deliver(self, data: st.DataObject, dice: int) -> None:
        """The result of a task that is out: mostly a success of its current
        attempt, sometimes of an earlier one, sometimes a failure."""
        key = data.draw(st.sampled_from(self.keys(StepStatus.SCHEDULED)), label="step")
        assert self.state is not None
        attempt = self.state.steps[key].attempt
        if dice < 3:
            error = ErrorInfo("Boom", "x", non_retryable=dice == 0)
            self.send(ActivityFailed(key, attempt, error))
        else:
            self.send(self.result_for(key, data.draw(st.integers(1, attempt), label="attempt")))

    @precondition(lambda self: self.has(StepStatus.RETRY_WAIT))
    @rule(data=st.data(), late=st.booleans())
    def retry_or_late_success(self, data: st.DataObject, late: bool) -> None:
        """The retry timer fires, or the failed attempt's success arrives after all."""
        key = data.draw(st.sampled_from(self.keys(StepStatus.RETRY_WAIT)), label="step")
        assert self.state is not None
        attempt = self.state.steps[key].attempt
        if late:
            self.send(self.result_for(key, attempt))
        else:
            self.send(TimerFired(TimerKind.RETRY, key, attempt))

    @precondition(lambda self: self.log)
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        """Any earlier event again (a duplicate, or a redelivery after a crash)."""
        self.send(data.draw(st.sampled_from(self.log), label="event"))

    @precondition(lambda self: self.asked)
    @rule(data=st.data(), shift=st.sampled_from([-1, 0, 1]), kind=st.integers(0, 2))
    def stale(self, data: st.DataObject, shift: int, kind: int) -> None:
        """An event about any task ever asked for, for a neighbouring attempt."""
        key, attempt = data.draw(st.sampled_from(sorted(self.asked)), label="task")
        attempt += shift
        if kind == 0:
            self.send(self.result_for(key, attempt))
        elif kind == 1:
            self.send(ActivityFailed(key, attempt, ErrorInfo("Boom", "stale")))
        else:
            self.send(TimerFired(TimerKind.RETRY, key, attempt))

    @precondition(lambda self: self.running())
    @rule(dice=st.integers(0, 59))
    def cancel(self, dice: int) -> None:
        """Rarely: a cancel or a terminate ends the interesting part of a run
        (less rarely once there is something to compensate)."""
        if self.compensable_done and dice < 6:
            dice = 0 if dice < 5 else 1
        assert self.state is not None
        if self.state.status is InstanceStatus.QUEUED and dice < 8:
            dice %= 2  # while it waits: some queued instances never run
        if dice == 0:
            self.send(CancelRequested("user"))
        elif dice == 1:
            self.send(TerminateRequested("admin"))

    @precondition(lambda self: self.running())
    @rule(dice=st.integers(0, 9))
    def pause_or_resume(self, dice: int) -> None:
        """Sometimes pause the instance (what comes is then held), and resume it later."""
        assert self.state is not None
        if self.state.paused is None and dice < 2:
            self.send(PauseRequested("ops", "a pause", by_type=dice == 1))
        elif self.state.paused is not None and dice < 4:
            # Resuming the type resumes only an instance paused with it.
            self.send(ResumeRequested("ops", by_type=dice == 3))

    @precondition(lambda self: self.flow.queued)
    @rule(data=st.data(), again=st.integers(0, 3))
    def grant(self, data: st.DataObject, again: int) -> None:
        """A slot is granted: the runtime takes the instance's limits again and
        finds it behind one (``again`` 0: queued anew, or unchanged) or admits
        it. Also after it began or ended (a grant redelivered, or raced)."""
        assert self.state is not None
        event = SlotGranted(data.draw(st.sampled_from(self.flow.behind), label="slot"))
        if self.state.status is InstanceStatus.QUEUED and again == 0:
            behind = data.draw(st.sampled_from(self.flow.behind), label="behind")
            self.send(event, lambda state: self.flow.queue(state, behind, self.now))
        else:
            self.send(event)

    @precondition(
        lambda self: self.state is not None and self.state.status is InstanceStatus.QUEUED
    )
    @rule()
    def signal(self) -> None:
        """A signal for the queued instance: it is kept for when it runs."""
        self.send(self.flow.signal())

    def teardown(self) -> None:
        """Drain: complete whatever is out until the instance ends (in some runs,
        fail a task once something can be undone), then check the end."""
        if self.broken or self.state is None:
            return
        if self.state.paused is not None and not self.state.status.terminal:
            self.send(ResumeRequested("ops"))
        if self.state.status is InstanceStatus.QUEUED:
            self.send(SlotGranted(self.flow.behind[0]))
        for _ in range(10_000):
            if self.state.status.terminal:
                break
            scheduled = self.keys(StepStatus.SCHEDULED)
            if scheduled:
                key = scheduled[0]
                attempt = self.state.steps[key].attempt
                running = self.state.status is InstanceStatus.RUNNING
                if self.fail_at_end and running and self.compensable_done:
                    self.send(ActivityFailed(key, attempt, ErrorInfo("Fatal", "end", "", True)))
                else:
                    self.send(self.result_for(key, attempt))
                continue
            in_flight = sorted(k for k, s in self.state.steps.items() if s.in_flight)
            if in_flight and self.state.status is InstanceStatus.COMPENSATING:
                # An abandoned step's task reports (or its time runs out):
                # its compensation waited for that.
                key = in_flight[0]
                attempt = self.state.steps[key].attempt
                self.send(self.result_for(key, attempt))
                continue
            waiting = self.keys(StepStatus.RETRY_WAIT)
            assert waiting, "a live instance with nothing out is stuck"
            self.send(TimerFired(TimerKind.RETRY, waiting[0], self.state.steps[waiting[0]].attempt))
        state = self.state
        assert state.status.terminal
        self.flow.check_history(self.history)
        if not self.disrupted:
            if self.reference.result is FAIL:
                assert state.status is InstanceStatus.FAILED
                assert state.error is not None
                assert state.error.type in ("NoChoiceMatched", "ExpressionError")
            else:
                assert state.status is InstanceStatus.COMPLETED
        if state.status is InstanceStatus.COMPLETED:
            # Only top-level steps and the undoable ones inside maps are left.
            for key, step in state.steps.items():
                assert step.status is StepStatus.COMPLETED
                assert not parse_key(key)[1] or kept(self.definition, key, step)


MACHINE_SETTINGS: Final = settings(
    max_examples=600,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_tree_decisions_keep_their_contracts() -> None:
    run_state_machine_as_test(TreeMachine, settings=MACHINE_SETTINGS)


# -- minimal examples of what the machine found ------------------------------------
#
# The first two failed (IndexError, KeyError) until 942b6df; the last two
# are open bugs, so the machine leaves their shapes out for now.


def start(definition: Definition, workflow_input: Any) -> tuple[InstanceState, list[Command]]:
    state, commands = decide(
        definition, None, StartRequested(INSTANCE, definition.type, 1, workflow_input), 0.0
    )
    assert state is not None
    return state, commands


def in_a_map(
    steps: list[dict[str, Any]], then: Sequence[dict[str, Any]] = (), **options: Any
) -> Definition:
    """A workflow ``tree`` whose first step is a map ``m`` over ``input.items``
    running ``steps`` per item (with ``options``: ``concurrency``...), and
    ``then`` after it."""
    return parse_definition(
        {
            "type": "tree",
            "steps": [{"id": "m", "map": "input.items", **options, "steps": steps}, *then],
        }
    )


def test_map_does_not_start_items_past_the_end() -> None:
    """Item 0 finishes at once (an empty branch) and starts item 1 itself; the
    loop that fills the map up to its concurrency must not start an item 2."""
    definition = in_a_map(
        [
            {
                "id": "c",
                "choice": [{"when": "index == `0`", "steps": []}],
                "default": [{"id": "a", "activity": "work"}],
            }
        ],
        concurrency=2,
    )
    state, commands = start(definition, {"items": [10, 20]})
    assert [(c.step, c.input) for c in commands if isinstance(c, ScheduleActivity)] == [("a@1", 20)]
    assert (state.steps["m"].next_item, state.steps["m"].finished_items) == (2, 1)


def test_compensation_input_of_a_step_in_a_finished_map() -> None:
    """The undo of a@0 is scheduled after map m completed: its input
    expression sees the step's output and the item's index."""
    definition = in_a_map(
        [
            {
                "id": "a",
                "activity": "work",
                "compensate": {"activity": "undo", "input": "{out: output, i: index}"},
            }
        ],
        then=[{"id": "b", "activity": "work", "retry": {"max_attempts": 1}}],
    )
    state, _ = start(definition, {"items": [10]})
    new, _ = decide(definition, state, ActivityCompleted("a@0", 1, "x"), 1.0)
    assert new is not None
    new, commands = decide(definition, new, ActivityFailed("b", 1, ErrorInfo("Boom", "")), 2.0)
    assert new is not None
    assert new.status is InstanceStatus.COMPENSATING
    (task,) = [c for c in commands if isinstance(c, ScheduleActivity)]
    assert (task.step, task.input) == ("a@0~undo", {"out": "x", "i": 0})


def test_a_container_that_finishes_at_once_inside_a_map() -> None:
    """The parallel step finishes as it starts (its branch is an empty choice
    branch), which finishes map item 0 and drops the parallel's state while
    the parallel step is still starting its branches."""
    definition = in_a_map(
        [
            {
                "id": "p",
                "parallel": [
                    {
                        "id": "b",
                        "steps": [{"id": "c", "choice": [{"when": "input.flag", "steps": []}]}],
                    }
                ],
            }
        ]
    )
    state, _ = start(definition, {"items": [1], "flag": True})
    assert (state.status, state.output) == (InstanceStatus.COMPLETED, [{"b": 1}])


def test_a_map_item_finishing_keeps_another_maps_steps() -> None:
    """Two maps in a parallel: finishing b@0 wiped a@0, whose result is then
    ignored, and the instance never ends."""
    definition = parse_definition(
        {
            "type": "tree",
            "steps": [
                {
                    "id": "p",
                    "parallel": [
                        {
                            "id": "x",
                            "steps": [
                                {
                                    "id": "mx",
                                    "map": "input.items",
                                    "steps": [{"id": "a", "activity": "work"}],
                                }
                            ],
                        },
                        {
                            "id": "y",
                            "steps": [
                                {
                                    "id": "my",
                                    "map": "input.items",
                                    "steps": [{"id": "b", "activity": "work"}],
                                }
                            ],
                        },
                    ],
                }
            ],
        }
    )
    state, _ = start(definition, {"items": [1]})
    new, _ = decide(definition, state, ActivityCompleted("b@0", 1, "B"), 1.0)
    assert new is not None
    assert "a@0" in new.steps
    new, _ = decide(definition, new, ActivityCompleted("a@0", 1, "A"), 2.0)
    assert new is not None
    assert (new.status, new.output) == (InstanceStatus.COMPLETED, {"x": ["A"], "y": ["B"]})


# -- a big map ------------------------------------------------------------------------

BIG: Final = 10_000
#: The stored state holds three lists of 10,000 ints of at most 3 CBOR bytes
#: each (input.items, the map's items, the outputs it collects: 29,720 bytes
#: each), 50 in-flight step states and the last decision's outbox: the most
#: seen is 91,741 bytes. Keeping anything per finished item (a step state
#: encodes to ~60 bytes) would pass this bound by the 700th item; it is also
#: far below the 768 KiB max_state default.
MAX_BIG_STATE: Final = 128 * 1024


def test_map_over_10000_items_keeps_state_bounded() -> None:
    """A 10,000-item map runs to completion in bounded state: finished items
    leave only their output behind. Results come back out of order."""
    started = time.monotonic()
    definition = parse_definition(
        {
            "type": "big",
            "steps": [
                {
                    "id": "m",
                    "map": "input.items",
                    "concurrency": 50,
                    "steps": [{"id": "inc", "activity": "inc"}],
                }
            ],
        }
    )
    items = list(range(BIG))
    state, commands = start(definition, {"items": items})
    sizes = [len(encode_state(state))]
    out = [c for c in commands if isinstance(c, ScheduleActivity)]
    events = 0
    while out:
        assert len(out) <= 50
        # Mostly the oldest task first, every third time the newest.
        task = out.pop(-1 if events % 3 == 0 else 0)
        events += 1
        new, commands = decide(
            definition, state, ActivityCompleted(task.step, 1, task.input + 1), events / 1000
        )
        assert new is not None
        assert new is not state
        state = new
        out += [c for c in commands if isinstance(c, ScheduleActivity)]
        if events % 500 == 0:
            sizes.append(len(encode_state(state)))
            assert sizes[-1] <= MAX_BIG_STATE, (events, sizes[-1])
    assert events == BIG
    assert state.status is InstanceStatus.COMPLETED
    assert state.output == [item + 1 for item in items]
    assert list(state.steps) == ["m"]  # every item's step states were dropped
    # Not a speed figure (bench/ has those): a guard against work that grows with
    # the map's size per event, which would take minutes here; about 3 s is usual,
    # 25 s has been seen on a loaded machine.
    assert time.monotonic() - started < 90.0
