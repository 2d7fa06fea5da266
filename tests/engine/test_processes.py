"""The engine as separate processes: services SIGKILLed mid-run, shared and restarted.

Every test runs ``python -m actors.orchestrator`` and ``python -m actors.worker``
subprocesses (see ``processes.py``) against a nats-server of its own. The workers
serve ``ledger_activities``, which append every execution to a ledger file, so
each test can check, beyond the outputs:

* the history stream: exactly one ``activity.completed`` per (instance, step),
  records numbered 1..seq with no gap, and the final state's ``seq`` equal to the
  number of distinct records (every step applied once);
* the ledger: which process ran what, and how often a step ran more than once
  (allowed: activities run at least once; reported and bounded).
"""

from __future__ import annotations

import json
import sysconfig
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import trio
from flow import in_sequence
from ledger_activities import duplicate_runs, read_ledger
from processes import (
    ACTIVITIES_MODULE,
    Services,
    history_problems,
    read_history,
    read_states,
    wait_results,
)

import actors
from actors import InstanceStatus
from actors.wire import decode_deadletter
from transport import ConsumerSpec, Transport, open_transport

pytestmark = pytest.mark.jetstream

COUNT_STEPS = ("first", "second", "third")
COUNT = in_sequence("ledger_count", dict.fromkeys(COUNT_STEPS, "ledger_increment"))

SLOW = """
type: ledger_slow_flow
version: 1
steps:
  - id: slow
    activity: ledger_slow
    timeout: {start_to_close: 60s, heartbeat: 2s}
"""

#: Workflows of the many-instance tests.
MANY = 200


def count_output(n: int) -> dict[str, Any]:
    """What ``ledger_count`` returns for the input ``{"n": n, "count": 0}``."""
    return {"n": n, "count": 3, "trail": ["first", "second", "third"]}


async def start_many(
    client: actors.Client, count: int, on_started: Callable[[str], None] | None = None
) -> dict[str, int]:
    """Start ``count`` ``ledger_count`` instances; id -> n. ``on_started`` is told each id
    once its start is stored."""
    ids = {f"wf-{n:04d}": n for n in range(count)}
    with trio.fail_after(60):
        for instance_id, n in ids.items():
            await client.start("ledger_count", {"n": n, "count": 0}, id=instance_id)
            if on_started is not None:
                on_started(instance_id)
    return ids


async def run_counts(client: actors.Client, count: int) -> dict[str, int]:
    """Register ``ledger_count``, run ``count`` instances of it to their end and check
    that every output is right; id -> n."""
    await client.register(COUNT)
    ids = await start_many(client, count)
    results: dict[str, Any] = {}
    with trio.fail_after(120):
        await wait_results(client, ids, results)
    assert results == {instance_id: count_output(n) for instance_id, n in ids.items()}
    return ids


async def check_history_and_ledger(
    transport: Transport,
    ids: Iterable[str],
    steps: tuple[str, ...],
    ledger: Path,
    *,
    max_duplicates: int,
    others: Iterable[str] = (),
) -> None:
    """Every instance of ``ids`` completed, each step applied once; duplicate runs bounded.

    ``others``: the remaining instances of the test, whose history is not checked.
    """
    ids = sorted(ids)
    others = sorted(others)
    with trio.fail_after(60):
        states = await read_states(transport, [*ids, *others])
    assert sorted(states) == sorted([*ids, *others])
    assert {str(states[i].status) for i in ids} == {"completed"}
    expected_records = sum(s.seq for s in states.values())
    with trio.fail_after(120):
        records = await read_history(transport, expected_records)
    assert len(records) == expected_records

    by_instance: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        assert record["_subject"] == f"history.{record['instance']}"
        by_instance.setdefault(record["instance"], []).append(record)
    assert sorted(by_instance) == sorted([*ids, *others]), "history of unknown instances"
    problems = history_problems(by_instance, states, ids, steps)
    assert not problems, "\n".join(problems[:20])

    entries = read_ledger(ledger)
    ran = {(e.instance, e.step) for e in entries if e.phase == "end"}
    assert ran >= {(i, s) for i in ids for s in steps}
    duplicates = duplicate_runs(entries)
    print(f"ledger: {len(entries)} lines; steps run more than once: {duplicates}")
    assert sum(duplicates.values()) <= max_duplicates, duplicates


async def run_many_counts(services: Services) -> None:
    """Run :data:`MANY` ``ledger_count`` workflows on the running services: every output
    right, every step applied once, few run twice."""
    async with open_transport(services.url) as transport, actors.Client(transport) as client:
        ids = await run_counts(client, MANY)
        await check_history_and_ledger(
            transport, ids, COUNT_STEPS, services.ledger, max_duplicates=MANY // 100
        )


# -- a worker killed mid-activity -----------------------------------------------------


async def test_worker_sigkilled_mid_activity_task_goes_to_the_other_worker(
    services: Services,
) -> None:
    for name in ("worker-a", "worker-b"):
        services.worker(name, "--ack-wait", "2")
    services.orchestrator("orchestrator")
    await services.wait_ready("worker-a", "worker-b", "orchestrator")
    pids = {services.services[name].pid: name for name in ("worker-a", "worker-b")}

    async with open_transport(services.url) as transport, actors.Client(transport) as client:
        await client.register(SLOW)
        instance_id = await client.start("ledger_slow_flow", {"seconds": 3}, id="slow-1")

        with trio.fail_after(60):
            # Another process writes the ledger: nothing to wait on but the file.
            while not (begun := read_ledger(services.ledger)):  # noqa: ASYNC110
                await trio.sleep(0.05)
        first = begun[0]
        assert (first.instance, first.step) == ("slow-1", "slow")
        assert (first.attempt, first.delivery) == (1, 1)
        killed = pids[first.pid]
        await services.sigkill(killed)

        with trio.fail_after(60):
            output = await client.result(instance_id)
        assert output == {"seconds": 3, "count": 1, "trail": ["slow"]}

        entries = read_ledger(services.ledger)
        print("ledger:", entries)
        survivor = next(pid for pid in pids if pid != first.pid)
        by_pid = {pid: [e.phase for e in entries if e.pid == pid] for pid in pids}
        # The killed worker began and never finished; the other ran it to the end,
        # as a redelivery (delivery 2, or more) of the same attempt.
        assert by_pid[first.pid] == ["begin"]
        assert by_pid[survivor] == ["begin", "end"]
        redelivered = [e for e in entries if e.pid == survivor]
        assert {e.attempt for e in redelivered} == {1}
        assert all(e.delivery >= 2 for e in redelivered), redelivered

        await check_history_and_ledger(
            transport, [instance_id], ("slow",), services.ledger, max_duplicates=1
        )
        info = await client.status(instance_id)
        assert info is not None
        assert info.steps["slow"]["attempt"] == 1

    codes = await services.terminate_all()
    assert codes == {"worker-a" if killed == "worker-b" else "worker-b": 0, "orchestrator": 0}


# -- two orchestrators share the work ---------------------------------------------------


async def test_two_orchestrators_share_many_workflows(services: Services) -> None:
    services.orchestrator("orchestrator-1")
    services.orchestrator("orchestrator-2")
    services.worker("worker-1")
    services.worker("worker-2")
    await services.wait_ready(*services.services)

    await run_many_counts(services)

    # Neither orchestrator logged a traceback; both drain and exit 0 on SIGTERM.
    for name in ("orchestrator-1", "orchestrator-2"):
        assert "Traceback" not in services.services[name].log()
    assert await services.terminate_all() == dict.fromkeys(services.services, 0)


# -- the services as commands of the one command line ----------------------------------


async def test_the_services_run_as_commands_of_the_command_line(services: Services) -> None:
    """``python -m actors orchestrator``, the ``actors`` script's ``worker`` and a worker
    whose ``--url`` comes before its command serve as the modules' entry points do."""
    script = Path(sysconfig.get_path("scripts")) / "actors"
    assert script.is_file(), f"no {script}: reinstall the package (pip install -e .)"
    url, module = services.url, ACTIVITIES_MODULE
    services.spawn("orchestrator", ["-m", "actors", "orchestrator", "--url", url, "--lease", "3"])
    services.spawn("worker-1", [str(script), "worker", "--url", url, "--activities", module])
    services.spawn(
        "worker-2",
        ["-m", "actors", "--url", url, "worker", "--activities", module, "--concurrency", "4"],
    )
    await services.wait_ready(*services.services)

    await run_many_counts(services)
    # Both workers took tasks: each serves the activities, whichever way it was started.
    pids = {entry.pid for entry in read_ledger(services.ledger)}
    assert {services.services["worker-1"].pid, services.services["worker-2"].pid} <= pids
    assert await services.terminate_all() == dict.fromkeys(services.services, 0)


# -- an orchestrator killed mid-run and restarted --------------------------------------


async def test_orchestrator_sigkilled_mid_run_and_restarted(services: Services) -> None:
    # A short ack wait: the events the dead orchestrator held come back fast.
    services.orchestrator("orchestrator", "--ack-wait", "2")
    services.worker("worker-1")
    services.worker("worker-2")
    await services.wait_ready(*services.services)

    async with open_transport(services.url) as transport, actors.Client(transport) as client:
        await client.register(COUNT)
        results: dict[str, Any] = {}
        kill_now = trio.Event()
        started: list[str] = []
        unfinished_at_kill: list[int] = []

        def on_started(instance_id: str) -> None:
            # Half the starts stored: the kill lands while the orchestrator is
            # deciding the newest of them (a kill timed by the results seen
            # came after the whole run on a fast machine: 200 workflows take
            # about a second, and the client's view lags the store).
            started.append(instance_id)
            if len(started) == MANY // 2:
                kill_now.set()

        async def kill_and_restart() -> None:
            await kill_now.wait()
            before = list(started)  # the kill below comes before any other task runs
            await services.sigkill("orchestrator")
            # Read from the store while no orchestrator runs.
            infos = [await client.status(instance_id) for instance_id in before]
            unfinished_at_kill.append(
                sum(info is None or not info.status.terminal for info in infos)
            )
            services.orchestrator("orchestrator", "--ack-wait", "2")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(kill_and_restart)
            ids = await start_many(client, MANY, on_started)
            with trio.fail_after(120):
                await wait_results(client, ids, results)

        print(f"unfinished when the orchestrator was killed: {unfinished_at_kill}")
        assert unfinished_at_kill, "the orchestrator was never killed"
        assert unfinished_at_kill[0] > 0, "the kill came after the run"
        assert results == {instance_id: count_output(n) for instance_id, n in ids.items()}
        await check_history_and_ledger(
            transport, ids, COUNT_STEPS, services.ledger, max_duplicates=MANY // 100
        )

    log = services.services["orchestrator"].log()
    assert log.count("]: ready") == 2, "the orchestrator did not serve twice"
    assert await services.terminate_all() == dict.fromkeys(services.services, 0)


# -- starts published straight to the subject ---------------------------------------------


async def test_raw_json_starts_and_an_unknown_workflow_type(services: Services) -> None:
    services.orchestrator("orchestrator")
    services.worker("worker")
    await services.wait_ready("orchestrator", "worker")

    async with open_transport(services.url) as transport, actors.Client(transport) as client:
        await client.register(COUNT)

        def body(data: dict[str, Any]) -> bytes:
            return json.dumps(data).encode()

        # A JSON start with an id, published twice without a message id: one instance.
        raw = body({"id": "raw-1", "input": {"n": 1, "count": 0}})
        for _ in range(2):
            await transport.publish("workflow.start.ledger_count", raw)
        # Without an id, the instance is named after the start's stream sequence.
        ack = await transport.publish(
            "workflow.start.ledger_count", body({"input": {"n": 2, "count": 0}})
        )
        anonymous = f"ledger_count-{ack.seq}"
        # An unknown type fails its instance; a malformed start goes to dead letters.
        await transport.publish(
            "workflow.start.no_such_type", body({"id": "raw-unknown", "input": {"n": 3}})
        )
        await transport.publish("workflow.start.ledger_count", b'{"id": "raw-broken", "input"')

        with trio.fail_after(60):
            assert await client.result("raw-1") == count_output(1)
            assert await client.result(anonymous) == count_output(2)
            unknown = await client.wait("raw-unknown")
        assert unknown.status is InstanceStatus.FAILED
        assert unknown.error is not None
        assert unknown.error.type == "UnknownWorkflowType"
        assert "no_such_type" in unknown.error.message
        assert unknown.type == "no_such_type"
        with pytest.raises(actors.WorkflowFailedError) as failed:
            await client.result("raw-unknown")
        assert failed.value.error.type == "UnknownWorkflowType"

        # The service goes on: a workflow started after those completes.
        after = await client.start("ledger_count", {"n": 4, "count": 0}, id="after-unknown")
        with trio.fail_after(60):
            assert await client.result(after) == count_output(4)

        assert await client.status("raw-broken") is None
        with trio.fail_after(30):
            async with transport.consume(
                "WORKFLOW_DEADLETTERS", ConsumerSpec(durable="test-deadletters")
            ) as deliveries:
                dead = await deliveries.receive()
                await dead.ack()
        letter = decode_deadletter(dead.data)
        assert letter["subject"] == "workflow.start.ledger_count"
        assert "malformed" in letter["reason"]
        assert letter["data"] == b'{"id": "raw-broken", "input"'

        entries = read_ledger(services.ledger)
        runs = Counter((e.instance, e.step) for e in entries if e.phase == "begin")
        assert runs == Counter(
            (instance_id, step)
            for instance_id in ("raw-1", anonymous, "after-unknown")
            for step in COUNT_STEPS
        )
        await check_history_and_ledger(
            transport,
            ["raw-1", anonymous, "after-unknown"],
            COUNT_STEPS,
            services.ledger,
            max_duplicates=0,
            others=["raw-unknown"],
        )

    # SIGTERM drains both services, which exit 0.
    assert await services.terminate_all() == {"orchestrator": 0, "worker": 0}
