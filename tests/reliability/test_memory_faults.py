"""Faults injected into orchestrators and workers on the memory transport, in process.

Scenarios 1, 2, 3 and 7 of the reliability suite, driven by hypothesis: each
example is a fault schedule (see ``faulty_memory.py``: crashes at each point
of the event handling, lost publishes and acks, duplicated and delayed
deliveries, a frozen orchestrator) replayed in a fresh ``trio.run`` on Trio's
autojump clock, so that ack waits and retries cost no real time. After every
example the run is checked:

* every started instance completed with exactly the expected output;
* its history numbers its records 1..``seq`` with no gap, and a number seen
  twice (republished after a crash) holds the same record; each activity
  step completed once; the workflow completed once;
* every step ran at least once (the ledger the activities append to);
* the work-queue streams (events, tasks) are empty and no consumer has a
  delivery pending: nothing is left unacked;
* no dead letters, and no state for an instance nobody started.

A watchdog fails an example whose clock stops (tasks spinning at one
instant) or that runs too long in real time, instead of hanging the suite.
Hypothesis prints the failing schedule; ``CHAOS_EXAMPLES`` sets the number
of examples of the ``chaos``-marked runs (2000 each by default; 100 in the
default run). The tests after the hypothesis ones replay single schedules:
regressions for the defects these runs found.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

import pytest
import trio
import trio.testing
from faulty_memory import (
    ACTIONS,
    ActivityRun,
    Cluster,
    Fault,
    FaultyTransport,
    Journal,
    Watchdog,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from records import Records

import actors
from actors.wire import (
    EVENTS_STREAM,
    HISTORY_STREAM,
    STATES_BUCKET,
    TASKS_STREAM,
    Layout,
    StartMessage,
    decode_history,
    decode_state,
    encode_start,
)
from actors.wire._names import DEADLETTER_STREAM, plain_start_subject
from transport import ConsumerSpec, Retention, StreamSpec, open_transport
from transport.memory import MemoryTransport

#: The orchestrator consumer's and the workers' ack wait (virtual seconds).
ACK_WAIT: Final = 10.0
LAYOUT: Final = Layout(ack_wait=ACK_WAIT)
#: How long each activity works (virtual seconds), half before "mid", half after:
#: parallel branches finish at different times, so that one branch's result
#: can be decided while the other's is still in hand somewhere.
WORK: Final = {"r1": 3.0, "l2": 0.5}
DEFAULT_WORK: Final = 1.0
#: Longest an example may take to finish its instances (virtual seconds).
FINISH_WITHIN: Final = 3600.0
#: Longest the broker may take to be left with nothing pending after that,
#: and how long nothing must be pending for the run to count as over.
QUIET_WITHIN: Final = 40 * ACK_WAIT
QUIET_SPAN: Final = 3 * ACK_WAIT
#: Real seconds the clock may stand still before the run counts as a livelock,
#: and real seconds an example may take in all (they take well under one).
STALL_LIMIT: Final = 20.0
REAL_BUDGET: Final = 120.0
#: Examples per hypothesis test in the default run, and in the chaos runs.
QUICK: Final = 100
CHAOS: Final = int(os.environ.get("CHAOS_EXAMPLES") or 2000)

# -- the activities and their ledger ----------------------------------------------------

#: An execution of an activity: (instance, step, attempt, node).
Run: TypeAlias = tuple[str, str, int, str]
#: Every execution of an activity in the example running (``run_example`` makes it).
LEDGER: Records[list[Run]] = Records("ledger", list)


def next_value(value: dict[str, Any], step: str) -> dict[str, Any]:
    """What every ledger activity returns for ``value`` at ``step``."""
    return {**value, "count": value.get("count", 0) + 1, "trail": [*value.get("trail", []), step]}


async def _work(value: dict[str, Any]) -> dict[str, Any]:
    info = actors.activity_info()
    run = ActivityRun()
    node = run.node.name if run.node is not None else "?"
    LEDGER.get().append((info.instance_id, info.step, info.attempt, node))
    await run.reached("begin")
    seconds = WORK.get(info.step, DEFAULT_WORK)
    await trio.sleep(seconds / 2)
    await run.reached("mid")
    await trio.sleep(seconds / 2)
    await run.reached("end")
    return next_value(value, info.step)


@actors.activity
async def mf_step(value: dict[str, Any]) -> dict[str, Any]:
    """A step that always succeeds."""
    return await _work(value)


@actors.activity
async def mf_flaky(value: dict[str, Any]) -> dict[str, Any]:
    """A step whose first attempt fails (after doing its work), so a retry timer runs."""
    output = await _work(value)
    if actors.activity_info().attempt == 1:
        raise actors.ActivityError("first attempts fail", type="Flaky")
    return output


# -- the workflows ---------------------------------------------------------------------

_RETRY: Final = {"max_attempts": 10, "initial_interval": 2}
FLOWS: Final[dict[str, dict[str, Any]]] = {
    "mf_chain": {
        "type": "mf_chain",
        "steps": [
            {"id": "one", "activity": "mf_step", "retry": _RETRY},
            {"id": "two", "activity": "mf_flaky", "retry": _RETRY},
            {"id": "three", "activity": "mf_step", "retry": _RETRY},
            {"id": "four", "activity": "mf_step", "retry": _RETRY},
        ],
    },
    "mf_fan": {
        "type": "mf_fan",
        "steps": [
            {
                "id": "both",
                "parallel": [
                    {
                        "id": "left",
                        "steps": [
                            {"id": "l1", "activity": "mf_step", "retry": _RETRY},
                            {"id": "l2", "activity": "mf_step", "retry": _RETRY},
                        ],
                    },
                    {
                        "id": "right",
                        "steps": [{"id": "r1", "activity": "mf_step", "retry": _RETRY}],
                    },
                ],
            },
            {"id": "join", "activity": "mf_step", "retry": _RETRY},
        ],
    },
    "mf_gate": {
        "type": "mf_gate",
        "steps": [
            {"id": "one", "activity": "mf_step", "retry": _RETRY},
            {"id": "wait", "wait_signal": "go"},
            {"id": "two", "activity": "mf_step", "retry": _RETRY},
        ],
    },
}
#: The activity steps of each workflow: each must complete exactly once.
ACTIVITY_STEPS: Final = {
    "mf_chain": ("one", "two", "three", "four"),
    "mf_fan": ("l1", "l2", "r1", "join"),
    "mf_gate": ("one", "two"),
}
TYPES: Final = tuple(FLOWS)


def signal_payload(n: int) -> dict[str, Any]:
    return {"n": n, "count": 10, "trail": ["go"]}


def expected_output(workflow: str, n: int) -> dict[str, Any]:
    """What an instance of ``workflow`` started with ``{"n": n}`` must return."""
    start: dict[str, Any] = {"n": n}
    if workflow == "mf_chain":
        value = start
        for step in ACTIVITY_STEPS["mf_chain"]:
            value = next_value(value, step)
        return value
    if workflow == "mf_fan":
        left = next_value(next_value(start, "l1"), "l2")
        return next_value({"left": left, "right": next_value(start, "r1")}, "join")
    assert workflow == "mf_gate"
    return next_value(signal_payload(n), "two")


# -- one example -----------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """One run: the instances to start, the services, and the faults to inject."""

    workflows: tuple[str, ...]
    faults: tuple[Fault, ...] = ()
    orchestrators: int = 1
    workers: int = 1
    #: How long a slot stays empty after its node died (virtual seconds).
    restart_after: float = 1.0
    #: Start every instance twice at once, and once more under no message id.
    double_start: bool = False
    #: How long after an instance exists its signal is sent (virtual seconds).
    signal_after: float = 0.0

    def __repr__(self) -> str:
        faults = ", ".join(str(f) for f in self.faults) or "none"
        return (
            f"Example(workflows={self.workflows}, orchestrators={self.orchestrators}, "
            f"workers={self.workers}, restart_after={self.restart_after}, "
            f"double_start={self.double_start}, signal_after={self.signal_after}, "
            f"faults=[{faults}])"
        )


@dataclass
class Outcome:
    """What an example's run found."""

    problems: list[str] = field(default_factory=list)
    journal: Journal = field(default_factory=Journal)
    #: Every execution of an activity in the example.
    ledger: list[Run] = field(default_factory=list)
    #: (instance, step, attempt) -> how many runs beyond the first.
    duplicate_runs: dict[tuple[str, str, int], int] = field(default_factory=dict)

    def report(self) -> str:
        lines = [f"{len(self.problems)} problem(s):", *(f"  - {p}" for p in self.problems)]
        lines.append(f"faults fired: {self.journal.fired}")
        lines.append(f"nodes killed: {self.journal.killed}")
        lines.append(f"writes after a freeze: {self.journal.thawed_writes}")
        lines.append(f"steps run more than once: {self.duplicate_runs}")
        return "\n".join(lines)


def _instance_ids(example: Example) -> dict[str, tuple[str, int]]:
    """Instance id -> (workflow, n)."""
    return {f"{w}-{n}": (w, n) for n, w in enumerate(example.workflows)}


def orchestrator_factory(transport: FaultyTransport) -> actors.Orchestrator:
    config = actors.OrchestratorConfig(layout=LAYOUT, passivate_after=3.0, drain_timeout=1.0)
    return actors.Orchestrator(transport, config)


def worker_factory(transport: FaultyTransport) -> actors.Worker:
    config = actors.WorkerConfig(
        layout=LAYOUT,
        ack_wait=ACK_WAIT,
        concurrency=4,
        drain_timeout=1.0,
    )
    activities = actors.collect_activities([sys.modules[__name__]])
    return actors.Worker(transport, activities, config)


async def _start(client: actors.Client, broker: MemoryTransport, example: Example) -> None:
    async with trio.open_nursery() as nursery:
        for instance, (workflow, n) in _instance_ids(example).items():
            copies = 2 if example.double_start else 1
            for _ in range(copies):
                nursery.start_soon(_start_one, client, workflow, n, instance)
            if example.double_start:
                # A start the broker cannot recognise as a repeat: no message id.
                data = encode_start(StartMessage(instance, {"n": n}))
                await broker.publish(plain_start_subject(workflow), data)


async def _start_one(client: actors.Client, workflow: str, n: int, instance: str) -> None:
    await client.start(workflow, {"n": n}, id=instance)


async def _signal_when_started(
    client: actors.Client, instance: str, n: int, example: Example
) -> None:
    # A signal for an instance that does not exist yet goes to dead letters;
    # one that arrives before the wait step began is kept for it.
    await client.wait_for(instance, lambda info: True)
    await trio.sleep(example.signal_after)
    for _ in range(2 if example.double_start else 1):
        await client.signal(instance, "go", signal_payload(n), signal_id="go")


async def run_example(example: Example) -> Outcome:
    """Run ``example`` on a fresh broker; return what the checks found."""
    with LEDGER.fresh() as ledger, trio.CancelScope() as root:
        outcome = Outcome(ledger=ledger)
        watchdog = Watchdog(root, stall=STALL_LIMIT, budget=REAL_BUDGET)
        trio.lowlevel.add_instrument(watchdog)
        try:
            await _run_example(example, outcome)
        finally:
            trio.lowlevel.remove_instrument(watchdog)
    if watchdog.tripped is not None:
        outcome.problems.append(f"stuck: {watchdog.tripped}")
    return outcome


async def _run_example(example: Example, outcome: Outcome) -> None:
    ids = _instance_ids(example)
    async with MemoryTransport() as broker, trio.open_nursery() as nursery:
        cluster = Cluster(broker, nursery, example.faults, restart_after=example.restart_after)
        outcome.journal = cluster.journal
        async with actors.Client(broker, layout=LAYOUT) as client:
            for flow in FLOWS.values():
                await client.register(flow)
            for i in range(example.orchestrators):
                await cluster.keep(f"orchestrator-{'ab'[i]}", orchestrator_factory)
            for i in range(example.workers):
                await cluster.keep(f"worker-{'ab'[i]}", worker_factory)
            await _start(client, broker, example)
            unfinished = set(ids)
            with trio.move_on_after(FINISH_WITHIN):
                async with trio.open_nursery() as waiting:
                    for instance, (workflow, n) in ids.items():
                        if workflow == "mf_gate":
                            waiting.start_soon(_signal_when_started, client, instance, n, example)
                        waiting.start_soon(_finish, client, instance, unfinished)
            if unfinished:
                outcome.problems.append(
                    f"not finished after {FINISH_WITHIN:g}s: {sorted(unfinished)}"
                )
            await cluster.thawed()
            await _wait_quiet(broker)
            await check(broker, ids, outcome)
        cluster.stop()
        nursery.cancel_scope.cancel()


async def _finish(client: actors.Client, instance: str, unfinished: set[str]) -> None:
    await client.wait(instance)
    unfinished.discard(instance)


def _pending(broker: MemoryTransport) -> list[str]:
    """What the work-queue streams still hold or have out unacked."""
    left: list[str] = []
    for name in (EVENTS_STREAM, TASKS_STREAM):
        stream = broker._streams[name]
        left.extend(f"{name} holds {m.subject} (seq {m.seq})" for m in stream.messages.values())
        for consumer in stream.consumers.values():
            left.extend(
                f"consumer {consumer.name} has seq {seq} pending" for seq in consumer._pending
            )
    return left


async def _wait_quiet(broker: MemoryTransport) -> None:
    """Wait until nothing has been pending for ``QUIET_SPAN`` (at most ``QUIET_WITHIN``).

    A moment with nothing pending is not enough: a node that just thawed
    may be about to publish what it decided before it froze.
    """
    quiet_since: float | None = None
    with trio.move_on_after(QUIET_WITHIN):
        # Polling: the broker has no event for "every queue drained"; on the
        # autojump clock each poll costs no real time.
        while True:
            now = trio.current_time()
            if _pending(broker):
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= QUIET_SPAN:
                return
            await trio.sleep(1.0)


async def check(broker: MemoryTransport, ids: dict[str, tuple[str, int]], out: Outcome) -> None:
    """Check every invariant of the run; add what fails to ``out.problems``."""
    problems = out.problems
    states = await broker.kv(STATES_BUCKET)
    for instance, (workflow, n) in sorted(ids.items()):
        entry = await states.get(instance)
        if entry is None:
            problems.append(f"{instance}: no state")
            continue
        state = decode_state(entry.value)
        if str(state.status) != "completed":
            problems.append(f"{instance}: {state.status}, error {state.error}")
        elif state.output != expected_output(workflow, n):
            problems.append(f"{instance}: output {state.output!r}")
        problems.extend(await _history_problems(broker, instance, workflow, state.seq))
        for step in ACTIVITY_STEPS[workflow]:
            if not any(e[0] == instance and e[1] == step for e in out.ledger):
                problems.append(f"{instance}: step {step} never ran")
    runs = Counter((e[0], e[1], e[2]) for e in out.ledger)
    out.duplicate_runs = {key: n - 1 for key, n in runs.items() if n > 1}
    # The bucket holds instance states only: no client or index writes there.
    unknown = set(await states.keys()) - set(ids)
    if unknown:
        problems.append(f"keys of instances nobody started: {sorted(unknown)}")
    problems.extend(_pending(broker))
    letters = await broker.read(DEADLETTER_STREAM, "deadletter.>")
    problems.extend(f"dead letter: {m.subject} {m.data[:200]!r}" for m in letters)


async def _history_problems(
    broker: MemoryTransport, instance: str, workflow: str, seq: int
) -> list[str]:
    problems: list[str] = []
    messages = await broker.read(HISTORY_STREAM, f"history.{instance}", limit=100_000)
    records: dict[int, dict[str, Any]] = {}
    for record in (r for message in messages for r in decode_history(message.data)):
        first = records.setdefault(record["seq"], record)
        if first != record:
            problems.append(f"{instance}: two records numbered {record['seq']}: {first} / {record}")
    if sorted(records) != list(range(1, seq + 1)):
        problems.append(f"{instance}: history numbers {sorted(records)}, state seq {seq}")
    completed = Counter(
        r["detail"]["step"] for r in records.values() if r["kind"] == "activity.completed"
    )
    if completed != Counter(ACTIVITY_STEPS[workflow]):
        problems.append(f"{instance}: activity.completed per step {dict(completed)}")
    kinds = Counter(r["kind"] for r in records.values())
    if kinds["workflow.completed"] != 1:
        problems.append(f"{instance}: {kinds['workflow.completed']} workflow.completed records")
    return problems


def run(example: Example, seed: int | None = None) -> Outcome:
    """Run one example in a trio run of its own, on the autojump clock.

    Trio shuffles the order in which ready tasks run; hypothesis seeds that
    shuffle per example. ``seed`` fixes it for a test of one schedule, so
    that which orchestrator takes which event is the same on every run.
    """
    if seed is not None:
        trio._core._run._r.seed(seed)
    clock = trio.testing.MockClock(autojump_threshold=0)
    return trio.run(run_example, example, clock=clock)


def assert_clean(example: Example, seed: int | None = None) -> Outcome:
    """Run ``example``; fail (showing the schedule) if a check failed or the run crashed."""
    try:
        outcome = run(example, seed)
    except Exception as exc:
        exc.add_note(f"while running {example!r}")
        raise
    assert not outcome.problems, f"{example!r}\n{outcome.report()}"
    return outcome


# -- strategies ------------------------------------------------------------------------


def _faults(
    slots: Sequence[str],
    moves: Sequence[tuple[str, str]],
    *,
    lives: int,
    nth: int,
    max_size: int,
    arg: st.SearchStrategy[float] | None = None,
) -> st.SearchStrategy[tuple[Fault, ...]]:
    """Lists of faults in ``slots``, each an (operation, action) of ``moves``."""
    args = arg if arg is not None else st.sampled_from([0.5, 3.0, ACK_WAIT * 1.5])

    def build(slot: str, life: int, move: tuple[str, str], n: int, seconds: float) -> Fault:
        op, action = move
        needs_arg = action in ("delay", "freeze", "freeze_mid")
        return Fault(slot, life, op, n, action, seconds if needs_arg else 0.0)

    # Early lives are likelier: a later one exists only if the ones before died.
    life = st.integers(0, lives - 1) | st.just(0)
    fault = st.builds(
        build,
        st.sampled_from(list(slots)),
        life,
        st.sampled_from(list(moves)),
        st.integers(1, nth),
        args,
    )
    return st.lists(fault, max_size=max_size).map(tuple)


def _moves(op: str, *actions: str) -> list[tuple[str, str]]:
    chosen = actions or ACTIONS[op]
    return [(op, a) for a in chosen]


workflow_lists = st.lists(st.sampled_from(TYPES), min_size=1, max_size=3).map(tuple)
restarts = st.sampled_from([0.5, 5.0, 2 * ACK_WAIT])
signal_delays = st.sampled_from([0.0, 0.5, 2.0, ACK_WAIT + 2])

#: Scenario 1: the orchestrator dies (or its broker calls fail) at each point
#: of its event handling: before or after the state write, in the middle of
#: or after the publish, before or after the ack.
ORCHESTRATOR_MOVES: Final = [
    *_moves("state.write", "crash_before", "crash_after", "fail_before", "fail_after"),
    *_moves("publish", "crash_before", "crash_mid", "crash_after", "fail_before", "fail_mid"),
    *_moves("publish", "fail_after"),
    *_moves("ack"),
    *_moves("deliver"),
    *_moves("state.read"),
]

#: Scenario 2: workers die in the middle of activities, and before or after
#: they publish a result or ack a task.
WORKER_MOVES: Final = [
    *_moves("run"),
    *_moves("publish", "crash_before", "crash_after", "fail_before", "fail_after"),
    *_moves("ack"),
    *_moves("deliver"),
]

#: Scenario 7: copies of everything (messages stored twice under other ids,
#: deliveries handed over twice, late, or with their acks lost).
DUPLICATE_MOVES: Final = [
    *_moves("publish", "duplicate"),
    *_moves("deliver"),
    *_moves("ack", "lose"),
]


def orchestrator_crash_examples(max_faults: int) -> st.SearchStrategy[Example]:
    return st.builds(
        Example,
        workflows=workflow_lists,
        faults=_faults(
            ["orchestrator-a"], ORCHESTRATOR_MOVES, lives=4, nth=12, max_size=max_faults
        ),
        restart_after=restarts,
        signal_after=signal_delays,
    )


def worker_kill_examples(max_faults: int) -> st.SearchStrategy[Example]:
    return st.builds(
        Example,
        workflows=workflow_lists,
        faults=_faults(["worker-a", "worker-b"], WORKER_MOVES, lives=5, nth=4, max_size=max_faults),
        workers=st.integers(1, 2),
        restart_after=restarts,
        signal_after=signal_delays,
    )


def _with_freeze(
    draw: st.DrawFn, others: tuple[Fault, ...], lives: int, nth: int
) -> tuple[Fault, ...]:
    slot = draw(st.sampled_from(["orchestrator-a", "orchestrator-b"]))
    # Past the ack wait; the longest also past the duplicate window (120 s),
    # so what the thawed node publishes again is stored again.
    hold = draw(st.sampled_from([2.5 * ACK_WAIT, 4 * ACK_WAIT, 15 * ACK_WAIT]))
    freeze = Fault(
        slot, draw(st.integers(0, lives - 1)), "state.write", draw(st.integers(1, nth)), "freeze"
    )
    freeze = Fault(freeze.slot, freeze.life, freeze.op, freeze.nth, "freeze", hold)
    # The freeze first: it wins over another fault drawn for the same write.
    return (freeze, *others)


@st.composite
def competing_examples(draw: st.DrawFn, max_faults: int) -> Example:
    """Scenario 3: two orchestrators, one frozen past the ack wait in a state write."""
    # The other faults neither kill nor freeze: the frozen node's event must
    # reach the other orchestrator while it is frozen.
    others = draw(
        _faults(
            ["orchestrator-a", "orchestrator-b"],
            [
                *_moves("state.write", "fail_before", "fail_after"),
                *_moves("publish", "fail_before", "fail_after", "duplicate"),
                *_moves("ack", "lose"),
                *_moves("deliver", "duplicate"),
            ],
            lives=1,
            nth=12,
            max_size=max_faults,
        )
    )
    return Example(
        workflows=draw(workflow_lists),
        faults=_with_freeze(draw, others, lives=1, nth=8),
        orchestrators=2,
        workers=draw(st.integers(1, 2)),
        signal_after=draw(signal_delays),
    )


def duplicate_examples(max_faults: int) -> st.SearchStrategy[Example]:
    return st.builds(
        Example,
        workflows=workflow_lists,
        faults=_faults(
            ["orchestrator-a", "orchestrator-b", "worker-a"],
            DUPLICATE_MOVES,
            lives=1,
            nth=12,
            max_size=max_faults,
            arg=st.sampled_from([0.5, 3.0, ACK_WAIT * 1.5]),
        ),
        orchestrators=st.integers(1, 2),
        double_start=st.just(True),
        signal_after=signal_delays,
    )


def mixed_examples(max_faults: int) -> st.SearchStrategy[Example]:
    """Everything at once, on every slot: for the long chaos run."""
    return st.builds(
        Example,
        workflows=st.lists(st.sampled_from(TYPES), min_size=1, max_size=5).map(tuple),
        faults=_faults(
            ["orchestrator-a", "orchestrator-b", "worker-a", "worker-b"],
            sorted(
                {
                    *ORCHESTRATOR_MOVES,
                    *WORKER_MOVES,
                    *DUPLICATE_MOVES,
                    ("state.write", "freeze"),
                }
            ),
            lives=4,
            nth=10,
            max_size=max_faults,
        ),
        orchestrators=st.integers(1, 2),
        workers=st.integers(1, 2),
        restart_after=restarts,
        signal_after=signal_delays,
        double_start=st.booleans(),
    )


def _settings(examples: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=examples,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# -- the scenarios ---------------------------------------------------------------------


def test_a_run_without_faults_passes_every_check() -> None:
    """The baseline: with no fault, every workflow finishes and every check holds.

    It also proves the checks see a run at all: each step ran exactly once.
    """
    outcome = assert_clean(Example(workflows=TYPES))
    assert outcome.duplicate_runs == {}
    assert sorted({(e[0], e[1]) for e in outcome.ledger}) == sorted(
        (f"{w}-{n}", step) for n, w in enumerate(TYPES) for step in ACTIVITY_STEPS[w]
    )


#: Each scenario twice: ``quick`` (QUICK examples, fewer faults) in every run,
#: ``long`` (CHAOS examples, more faults) among the chaos scenarios.
LENGTHS = pytest.mark.parametrize(
    "long",
    [pytest.param(False, id="quick"), pytest.param(True, id="long", marks=pytest.mark.chaos)],
)


def explore(
    examples: st.SearchStrategy[Example],
    long: bool,
    check: Callable[[Example], object] = assert_clean,
) -> None:
    """``check`` each of the examples hypothesis draws from ``examples`` (QUICK of
    them, or CHAOS when ``long``), shrinking the first that fails.

    Every scenario explores through this one function, so they share one key
    in hypothesis's example database: a failure saved by one is replayed first
    by the others too (as one more example of their own strategy, which is
    harmless), and a failure the long run found is retried by the quick one.
    """

    @_settings(CHAOS if long else QUICK)
    @given(example=examples)
    def run_one(example: Example) -> None:
        check(example)

    run_one()


@LENGTHS
def test_orchestrator_crashes_at_each_point(long: bool) -> None:
    """Scenario 1: an orchestrator dying anywhere in its event handling loses nothing.

    A replacement takes over on the same broker; what the dead one held comes
    back after the ack wait.
    """
    explore(orchestrator_crash_examples(max_faults=8 if long else 4), long)


@LENGTHS
def test_workers_killed_mid_activity(long: bool) -> None:
    """Scenario 2: workers killed repeatedly while they run activities lose nothing.

    Each killed worker is replaced; its task comes back after the ack wait
    and runs again (counted, not an error).
    """
    explore(worker_kill_examples(max_faults=10 if long else 5), long)


def _no_thawed_write(example: Example) -> None:
    outcome = assert_clean(example)
    assert outcome.journal.thawed_writes in ([], ["conflict"]), outcome.report()


@LENGTHS
def test_a_frozen_orchestrator_cannot_overwrite(long: bool) -> None:
    """Scenario 3: an orchestrator frozen past the ack wait, then resumed, changes nothing.

    Its event went to the other orchestrator meanwhile, so its write, made
    on the revision it read before, is refused (and the run stays correct).
    """
    explore(competing_examples(max_faults=6 if long else 3), long, _no_thawed_write)


@LENGTHS
def test_duplicates_are_applied_once(long: bool) -> None:
    """Scenario 7: starts, results, timers and signals arriving twice are applied once.

    Every instance is started twice at once and once more without a message
    id; events and tasks are stored again under other ids, deliveries handed
    over twice or late, acks lost.
    """
    explore(duplicate_examples(max_faults=12 if long else 6), long)


@pytest.mark.chaos
def test_every_fault_at_once_long() -> None:
    """Scenarios 1, 2, 3 and 7 mixed, on two orchestrators and two workers."""
    explore(mixed_examples(max_faults=12), long=True)


# -- regressions -----------------------------------------------------------------------


def test_a_signal_decided_on_an_unpublished_start_does_not_lose_its_task() -> None:
    """Regression: a decision made on top of an unpublished outbox replaced it.

    The start's state is written but its publish fails (one broker error, no
    crash), so the start is handed back for a second. The signal, sent as
    soon as the instance exists, is decided meanwhile on the stored state, and
    its outbox replaced the start's. When the start came back it found
    nothing to do, and only its own decision's outbox is ever published
    again: step one's task never went out, and the instance waited forever.
    """
    fault = Fault("orchestrator-a", 0, "publish", 1, "fail_before")
    outcome = assert_clean(Example(workflows=("mf_gate",), faults=(fault,)))
    assert outcome.journal.fired == [str(fault)]


def test_a_branch_decided_after_a_crash_does_not_lose_its_sibling_task() -> None:
    """Regression: the same, after an orchestrator crash between state write and publish.

    Branch ``left``'s first result is stored (its outbox schedules ``l2``) and
    the orchestrator dies before publishing. Its replacement decides branch
    ``right``'s result first, on that state; the lost outbox held ``l2``'s
    task, so the instance never finished.
    """
    fault = Fault("orchestrator-a", 0, "state.write", 2, "crash_after")
    outcome = assert_clean(Example(workflows=("mf_fan",), faults=(fault,), restart_after=0.5))
    assert outcome.journal.fired == [str(fault)]
    assert outcome.journal.killed == ["orchestrator-a#0"]


def test_a_crash_before_a_parallel_step_completes_keeps_every_history_record() -> None:
    """Regression: the same defect cost history records where no task was lost.

    The decision that records ``l2``'s completion is stored and the
    orchestrator dies before publishing it; ``r1``'s result is decided on top,
    and the history kept a gap where ``activity.completed`` of ``l2`` was.
    """
    fault = Fault("orchestrator-a", 0, "state.write", 3, "crash_after")
    outcome = assert_clean(Example(workflows=("mf_fan",), faults=(fault,), restart_after=5.0))
    assert outcome.journal.killed == ["orchestrator-a#0"]


def test_a_frozen_orchestrator_write_is_refused() -> None:
    """Scenario 3, one schedule: the frozen orchestrator's write on its old revision fails.

    Orchestrator a freezes for 2.5 ack waits in its second state write (step
    one's result); the result goes to orchestrator b, which advances the
    instance. Thawed, a's compare-and-set write is refused.
    """
    fault = Fault("orchestrator-a", 0, "state.write", 2, "freeze", 2.5 * ACK_WAIT)
    outcome = assert_clean(
        Example(workflows=("mf_chain",), faults=(fault,), orchestrators=2), seed=0
    )
    assert outcome.journal.thawed_writes == ["conflict"]


def test_an_orchestrator_frozen_past_the_duplicate_window() -> None:
    """Scenario 3, one schedule: a freeze longer than the broker's duplicate window (120 s).

    Whatever the frozen orchestrator still had to publish when it stopped
    goes out again when it resumes, no longer recognised as a repeat: a
    task may run once more (its result is ignored) and history records may
    be stored twice (the same records). The instances still finish right
    and every step is applied once.
    """
    fault = Fault("orchestrator-a", 0, "state.write", 3, "freeze", 15 * ACK_WAIT)
    example = Example(workflows=("mf_chain", "mf_fan"), faults=(fault,), orchestrators=2)
    outcome = assert_clean(example, seed=0)
    assert outcome.journal.fired == [str(fault)]
    assert outcome.journal.thawed_writes == ["conflict"]


def test_a_worker_killed_in_every_life_mid_activity() -> None:
    """Scenario 2, one schedule: each of four workers dies half-way through its first task.

    The task comes back after each ack wait; the fifth worker finishes it,
    and the step's result is applied once although it ran five times.
    """
    faults = tuple(Fault("worker-a", life, "run", 1, "crash_mid") for life in range(4))
    outcome = assert_clean(Example(workflows=("mf_chain",), faults=faults))
    assert outcome.journal.killed == [f"worker-a#{life}" for life in range(4)]
    assert outcome.duplicate_runs == {("mf_chain-0", "one", 1): 4}


async def test_an_unacked_event_is_readable_by_its_sequence(transport_url: str) -> None:
    """What the orchestrator's fix relies on, on both transports.

    A work-queue message is found by ``read(start_seq=its sequence)`` while
    it is delivered and unacked, and not once it is acked: that is how an
    orchestrator tells whether the event behind a stored outbox may still
    come back.
    """
    suffix = secrets.token_hex(4)
    stream = f"MF_{suffix}"
    subject = f"mf{suffix}.event"
    async with open_transport(transport_url) as transport:
        spec = StreamSpec(name=stream, subjects=(f"mf{suffix}.>",), retention=Retention.WORK_QUEUE)
        await transport.ensure_stream(spec)
        seqs = [(await transport.publish(subject, b"%d" % i)).seq for i in range(3)]
        consumer = ConsumerSpec(durable=f"mf_{suffix}", ack_wait=30)
        with trio.fail_after(30):
            async with transport.consume(stream, consumer) as deliveries:
                first = await deliveries.receive()
                second = await deliveries.receive()
                found = await transport.read(stream, f"mf{suffix}.>", start_seq=second.stream_seq)
                assert found[0].stream_seq == seqs[1]
                await first.ack()
                await second.ack()
                # Acks on a work queue are asynchronous on JetStream: poll
                # until the message is gone (the fix only needs "eventually").
                while True:
                    found = await transport.read(
                        stream, f"mf{suffix}.>", start_seq=seqs[1], limit=1
                    )
                    if found[0].stream_seq != seqs[1]:
                        break
                    await trio.sleep(0.05)
                assert found[0].stream_seq == seqs[2]


async def test_the_watchdog_stops_a_livelock(autojump_clock: trio.testing.MockClock) -> None:
    """The harness's guard: tasks spinning at one instant fail the example, not hang it."""
    with trio.CancelScope() as scope:
        watchdog = Watchdog(scope, stall=0.2, budget=60)
        trio.lowlevel.add_instrument(watchdog)
        try:
            while True:  # a livelock: always runnable, so the clock never jumps
                await trio.lowlevel.checkpoint()
        finally:
            trio.lowlevel.remove_instrument(watchdog)
    assert watchdog.tripped is not None
    assert watchdog.tripped.startswith("the clock stood at")
    assert "test_the_watchdog_stops_a_livelock" in watchdog.tripped


def test_a_worker_frozen_twice_then_killed() -> None:
    """The harness itself: a node frozen again while frozen, then killed, leaves no live session.

    Two activities of the only worker freeze it in turn; its next activity
    kills it, and its replacement comes 20 s later. (An earlier pump opened
    a second broker-side session after the double freeze and, at the kill,
    ended one session but cancelled the other: the ended one spun at one
    instant for ever, so the clock never reached the replacement. The
    watchdog turns such a livelock into a failure instead of a hang.)
    """
    faults = (
        Fault("worker-a", 0, "run", 1, "freeze_mid", 5.0),
        Fault("worker-a", 0, "run", 2, "freeze_mid", 5.0),
        Fault("worker-a", 0, "run", 3, "crash_begin"),
    )
    example = Example(workflows=("mf_fan",), faults=faults, restart_after=2 * ACK_WAIT)
    outcome = assert_clean(example)
    assert outcome.journal.fired == [str(f) for f in faults]
    assert outcome.journal.killed == ["worker-a#0"]
