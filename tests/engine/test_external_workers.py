"""External workers: processes serving several activity types each, joining and leaving.

Every test runs one ``python -m actors.orchestrator`` and several ``python -m
actors.worker --only ...`` subprocesses (see ``processes.py``) against a
nats-server of its own. The workers serve ``spread_activities``, whose three
types ``spread_a``, ``spread_b`` and ``spread_c`` (A, B and C below) append every
execution, with the worker's pid, to a ledger file. So each test checks, beyond
the outputs and the history (every step completed exactly once):

* which process ran each task: only processes serving its type, and every
  process serving it a fair share;
* how often a task ran more than once: only the tasks a SIGKILLed worker held.

Each test prints its seed (``SPREAD_SEED=... pytest ...`` replays the same
inputs and activity durations), the share of each worker per type and the
duplicate runs.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pytest
import trio
from flow import in_sequence
from processes import (
    Service,
    Services,
    history_problems,
    read_history,
    read_states,
    wait_results,
)
from spread_activities import ACTIVITIES, Entry, next_value, read_ledger

import actors
from transport import Transport, open_transport

pytestmark = pytest.mark.jetstream

MODULE = "tests.engine.spread_activities"
#: Workers' ack wait: the tasks a SIGKILLed worker held come back after it.
ACK_WAIT = 2.0
#: Activities of one type a worker runs at once. Small, so that every worker is
#: busy and the tasks have to spread.
CONCURRENCY = 4
#: A worker's least share of the tasks of a type it serves, with one other.
FAIR_SHARE = 0.2

MIX_STEPS = {"a1": "A", "b1": "B", "c1": "C", "a2": "A", "c2": "C"}
CHAIN_STEPS = {"s1": "A", "s2": "A", "s3": "A", "s4": "A"}


def _spread(workflow_type: str, steps: dict[str, str]) -> dict[str, Any]:
    """A workflow of ``steps`` (step id -> activity type, a key of ``ACTIVITIES``) in order."""
    return in_sequence(workflow_type, {step: ACTIVITIES[kind] for step, kind in steps.items()})


MIX = _spread("spread_mix", MIX_STEPS)
CHAIN = _spread("spread_chain", CHAIN_STEPS)


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("SPREAD_SEED") or random.randrange(2**32))
    print(f"SPREAD_SEED={value}")
    return value


def worker(services: Services, name: str, *types: str) -> Service:
    """Start a worker serving the activity types ``types`` (``"A"``, ``"B"``, ``"C"``)."""
    return services.spawn(
        name,
        [
            "-m",
            "actors.worker",
            "--url",
            services.url,
            "--activities",
            MODULE,
            "--only",
            *(ACTIVITIES[t] for t in types),
            "--ack-wait",
            str(ACK_WAIT),
            "--concurrency",
            str(CONCURRENCY),
        ],
    )


def expected_output(value: dict[str, Any], steps: dict[str, str]) -> dict[str, Any]:
    for step, kind in steps.items():
        value = next_value(value, ACTIVITIES[kind], step)
    return value


async def start_all(
    client: actors.Client, workflow_type: str, inputs: dict[str, dict[str, Any]]
) -> None:
    with trio.fail_after(60):
        for instance_id, value in inputs.items():
            await client.start(workflow_type, value, id=instance_id)


async def check_exactly_once(
    transport: Transport,
    inputs: dict[str, dict[str, Any]],
    results: dict[str, Any],
    steps: dict[str, str],
) -> None:
    """Every instance completed with the output its input and ``steps`` make (see
    ``expected_output``), each step once, at attempt 1, in state and history."""
    assert results == {i: expected_output(v, steps) for i, v in inputs.items()}
    ids = sorted(inputs)
    step_ids = sorted(steps)
    with trio.fail_after(60):
        states = await read_states(transport, ids)
    assert sorted(states) == ids
    problems: list[str] = []
    for instance_id, state in states.items():
        if str(state.status) != "completed":
            problems.append(f"{instance_id}: {state.status} {state.error}")
        if sorted(state.steps) != step_ids:
            problems.append(f"{instance_id}: steps {sorted(state.steps)}")
        for key, step in state.steps.items():
            if (str(step.status), step.attempt) != ("completed", 1):
                problems.append(f"{instance_id}.{key}: {step.status} at attempt {step.attempt}")
    assert not problems, "\n".join(problems[:20])

    expected = sum(state.seq for state in states.values())
    with trio.fail_after(120):
        records = await read_history(transport, expected)
    assert len(records) == expected
    by_instance: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_instance[record["instance"]].append(record)
    assert sorted(by_instance) == ids, "history of unknown instances"
    problems += history_problems(by_instance, states, ids, step_ids)
    assert not problems, "\n".join(problems[:20])


def spread(entries: list[Entry], names: dict[int, str]) -> dict[str, Counter[str]]:
    """Activity type ("A", ...) -> worker name -> tasks it began."""
    kinds = {name: kind for kind, name in ACTIVITIES.items()}
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for entry in entries:
        if entry.phase == "begin":
            table[kinds[entry.activity]][names.get(entry.pid, f"pid {entry.pid}")] += 1
    return table


def print_spread(table: dict[str, Counter[str]]) -> None:
    for kind in sorted(table):
        total = sum(table[kind].values())
        shares = ", ".join(
            f"{name} {n} ({n / total:.0%})" for name, n in sorted(table[kind].items())
        )
        print(f"  {kind}: {total} runs: {shares}")


def runs_per_task(entries: list[Entry]) -> dict[tuple[str, str], list[Entry]]:
    """(instance, step) -> its ``begin`` entries, in ledger order."""
    runs: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    for entry in entries:
        if entry.phase == "begin":
            runs[entry.instance, entry.step].append(entry)
    return runs


# -- three workers serving (A, B), (C) and (A, C) ----------------------------------------

MIX_COUNT = 120


async def test_tasks_spread_over_every_worker_serving_their_type(
    services: Services, seed: int
) -> None:
    rng = random.Random(seed)
    servers = {"worker-ab": ("A", "B"), "worker-c": ("C",), "worker-ac": ("A", "C")}
    services.orchestrator("orchestrator")
    for name, types in servers.items():
        worker(services, name, *types)
    await services.wait_ready(*services.services)
    names = {services.services[name].pid: name for name in servers}
    print(
        "workers:", {name: (services.services[name].pid, types) for name, types in servers.items()}
    )

    inputs = {
        f"mix-{n:03d}": {"n": n, "sleep": round(rng.uniform(0.02, 0.08), 3), "trail": []}
        for n in range(MIX_COUNT)
    }
    began = time.monotonic()
    async with open_transport(services.url) as transport, actors.Client(transport) as client:
        await client.register(MIX)
        results: dict[str, Any] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(start_all, client, "spread_mix", inputs)
            with trio.fail_after(120):
                await wait_results(client, inputs, results)
        print(f"{MIX_COUNT} workflows of {len(MIX_STEPS)} steps in {time.monotonic() - began:.1f}s")
        await check_exactly_once(transport, inputs, results, MIX_STEPS)

    entries = read_ledger(services.ledger)
    table = spread(entries, names)
    print("tasks begun, per type and worker:")
    print_spread(table)
    runs = runs_per_task(entries)
    duplicates = {key: len(r) - 1 for key, r in runs.items() if len(r) > 1}
    print(f"ledger: {len(entries)} lines; tasks run more than once: {duplicates}")

    # Every task ran to its end, on a process serving its type (begin and end
    # lines alike), and nothing ran on any other process.
    ends = {(e.instance, e.step) for e in entries if e.phase == "end"}
    assert ends == {(i, step) for i in inputs for step in MIX_STEPS}
    assert {names.get(e.pid) for e in entries} <= set(servers), "a task ran on an unknown pid"
    kinds = {activity: kind for kind, activity in ACTIVITIES.items()}
    wrong = [e for e in entries if kinds[e.activity] not in servers[names[e.pid]]]
    assert not wrong, f"tasks ran on workers not serving their type: {wrong[:5]}"
    assert set(table["A"]) == {"worker-ab", "worker-ac"}
    assert set(table["B"]) == {"worker-ab"}
    assert set(table["C"]) == {"worker-c", "worker-ac"}
    # Both servers of A, and both of C, did a fair share.
    for kind in ("A", "C"):
        total = sum(table[kind].values())
        for name, n in table[kind].items():
            assert n >= FAIR_SHARE * total, f"{name} ran {n} of {total} {kind} tasks"
    # Nobody was killed: no task should have run twice (a worker that held a
    # task past the ack wait without saying it is in progress would show here).
    assert not duplicates

    for name in services.services:
        assert "Traceback" not in services.services[name].log(), name
    assert await services.terminate_all() == dict.fromkeys(services.services, 0)


# -- workers joining and leaving mid-run -------------------------------------------------

CHAIN_COUNT = 150


async def test_workers_joining_and_leaving_mid_run_lose_nothing(
    services: Services, seed: int
) -> None:
    rng = random.Random(seed)
    services.orchestrator("orchestrator")
    worker(services, "worker-1", "A")
    worker(services, "worker-2", "A")
    await services.wait_ready(*services.services)
    names = {services.services[n].pid: n for n in ("worker-1", "worker-2")}

    inputs = {
        f"chain-{n:03d}": {"n": n, "sleep": round(rng.uniform(0.03, 0.09), 3), "trail": []}
        for n in range(CHAIN_COUNT)
    }
    total_tasks = CHAIN_COUNT * len(CHAIN_STEPS)
    began = time.monotonic()
    exit_codes: dict[str, int] = {}

    def ended() -> list[Entry]:
        return [e for e in read_ledger(services.ledger) if e.phase == "end"]

    async def until(what: str, condition: Callable[[list[Entry]], bool]) -> None:
        done: list[Entry] = []
        with trio.move_on_after(60):
            # Another process writes the ledger: nothing to wait on but the file.
            while not condition(done := ended()):  # noqa: ASYNC110
                await trio.sleep(0.05)
            note(f"{what} ({len(done)} of {total_tasks} tasks done)")
            return
        table = spread(done, names)
        raise AssertionError(f"no time to {what}: after 60s, tasks done per worker {table}")

    def note(what: str) -> None:
        print(f"{time.monotonic() - began:6.2f}s {what}")

    async def leave_drained() -> None:
        exit_codes["worker-1"] = await services.terminate("worker-1")
        note(f"worker-1 exited with {exit_codes['worker-1']}")

    async def join_and_leave(nursery: trio.Nursery) -> None:
        await until("SIGTERM worker-1, start worker-3", lambda done: len(done) >= total_tasks // 5)
        nursery.start_soon(leave_drained)
        names[worker(services, "worker-3", "A").pid] = "worker-3"
        await services.wait_ready("worker-3")
        note("worker-3 ready")
        joined = services.services["worker-3"].pid
        # worker-3 has taken its part of the work before worker-2 goes.
        await until(
            "SIGKILL worker-2",
            lambda done: len(done) >= total_tasks // 2 and sum(e.pid == joined for e in done) >= 20,
        )
        await services.sigkill("worker-2")

    async with open_transport(services.url) as transport, actors.Client(transport) as client:
        await client.register(CHAIN)
        results: dict[str, Any] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(join_and_leave, nursery)
            await start_all(client, "spread_chain", inputs)
            with trio.fail_after(120):
                await wait_results(client, inputs, results)
            note("every workflow finished")
        await check_exactly_once(transport, inputs, results, CHAIN_STEPS)

    entries = read_ledger(services.ledger)
    table = spread(entries, names)
    print("tasks begun, per worker:")
    print_spread(table)
    pids = {name: pid for pid, name in names.items()}
    assert set(table["A"]) == {"worker-1", "worker-2", "worker-3"}, "an unknown pid ran a task"

    # worker-1 left by SIGTERM: it finished every task it began (it drained),
    # and exited 0.
    assert exit_codes == {"worker-1": 0}
    drained = [e for e in entries if e.pid == pids["worker-1"]]
    assert Counter(e.phase for e in drained)["begin"] == Counter(e.phase for e in drained)["end"]
    # worker-3 joined mid-run and did work (it ran everything after the SIGKILL).
    assert table["A"]["worker-3"] >= 20

    # Tasks ran more than once only where worker-2, SIGKILLed, held them: each
    # ran at most once elsewhere, and then as a redelivery of the same attempt.
    runs = runs_per_task(entries)
    killed = pids["worker-2"]
    duplicates = {key: r for key, r in runs.items() if len(r) > 1}
    held = {
        phase: {(e.instance, e.step) for e in entries if e.pid == killed and e.phase == phase}
        for phase in ("begin", "end")
    }
    cut = sorted(held["begin"] - held["end"])
    print(f"worker-2's tasks cut by the SIGKILL (begun, never ended): {len(cut)} {cut}")
    print(
        f"tasks run more than once: {len(duplicates)} "
        + str(
            {f"{i}.{s}": [names.get(e.pid, e.pid) for e in r] for (i, s), r in duplicates.items()}
        )
    )
    for key, r in duplicates.items():
        others = [e for e in r if e.pid != killed]
        assert len(others) <= 1, (key, r)
        assert any(e.pid == killed for e in r), (key, r)
        assert {e.attempt for e in r} == {1}, (key, r)
        assert all(e.delivery >= 2 for e in others), (key, r)
    # Tasks handed back (worker-1's buffered ones) or left by worker-2 ran
    # again as later deliveries of their attempt.
    again = Counter(names[e.pid] for e in entries if e.phase == "begin" and e.delivery > 1)
    print(f"runs of a redelivered task, per worker: {dict(again)}")
    # The killed worker ran at most CONCURRENCY tasks at once, and each of its
    # actors held at most one more whose ack it had sent but that may not
    # have left the process yet.
    assert len(cut) <= CONCURRENCY
    assert len(duplicates) <= 2 * CONCURRENCY
    assert set(cut) <= set(duplicates)

    assert "Traceback" not in services.services["worker-3"].log()
    assert await services.terminate_all() == {"orchestrator": 0, "worker-3": 0}
