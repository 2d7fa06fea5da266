"""A durable sleep survives a SIGKILLed orchestrator and a SIGKILLed nats-server.

Real processes: one ``python -m actors.orchestrator`` and one ``python -m
actors.worker`` (serving ``ledger_activities``) against a nats-server of the
test's own, with its own store. Instances of ``ledger -> sleep 5 s -> ledger``
are started; once every one has recorded ``sleep.started`` (so its timer, a
scheduled message on ``WORKFLOW_EVENTS``, is stored), the orchestrator is
SIGKILLed, then the nats-server is SIGKILLed and restarted on the same port and
store (the worker and this test's transport reconnect), and a new orchestrator
is started. The timers must then fire from the restarted store, once each and
not early: every instance completes with the right output, records exactly one
``sleep.completed`` at or after its ``until``, its history is numbered 1..seq
with no gap or duplicate, and its second step ran exactly once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pytest
import trio
from ledger_activities import duplicate_runs, next_value, read_ledger
from natsserver import NatsServer
from processes import Services, read_history, read_states

import actors
from actors.wire import EVENTS_STREAM, HISTORY_STREAM, decode_history
from transport import ConsumerSpec, Transport, open_transport

pytestmark = pytest.mark.jetstream

SLEEP_SECONDS = 5.0
INSTANCES = 5
#: Bound of every wait (generous: the whole test takes ~8 s).
WAIT = 90

NAPPER = f"""
type: ledger_napper
version: 1
steps:
  - {{id: before, activity: ledger_increment}}
  - {{id: nap, sleep: {SLEEP_SECONDS}}}
  - {{id: after, activity: ledger_increment}}
"""
#: What every instance records, in order (one of each).
KINDS = [
    "workflow.started",
    "activity.scheduled",
    "activity.completed",
    "sleep.started",
    "sleep.completed",
    "activity.scheduled",
    "activity.completed",
    "workflow.completed",
]


def expected_output(n: int) -> dict[str, Any]:
    return next_value(next_value({"n": n, "count": 0}, "before"), "after")


async def wait_sleep_started(transport: Transport, ids: Iterable[str]) -> dict[str, float]:
    """Wait until every instance of ``ids`` recorded ``sleep.started``; id -> its ``until``."""
    pending = set(ids)
    until: dict[str, float] = {}
    spec = ConsumerSpec(durable="test-sleep-started", filter_subjects=("history.>",))
    async with transport.consume(HISTORY_STREAM, spec) as deliveries:
        async for delivery in deliveries:
            await delivery.ack()
            for record in decode_history(delivery.data):
                if record["kind"] == "sleep.started" and record["instance"] in pending:
                    until[record["instance"]] = float(record["detail"]["until"])
                    pending.discard(record["instance"])
                    if not pending:
                        return until
    raise AssertionError(f"history ended before sleep.started of {sorted(pending)}")


async def events_stream_messages(server: NatsServer) -> int:
    """Messages left in ``WORKFLOW_EVENTS`` (events and pending schedules), per /jsz."""
    jsz = await trio.to_thread.run_sync(lambda: server.monitor("/jsz?streams=true"))
    for account in jsz.get("account_details") or ():
        for stream in account.get("stream_detail") or ():
            if stream["name"] == EVENTS_STREAM:
                return int(stream["state"]["messages"])
    raise AssertionError(f"no stream {EVENTS_STREAM} in /jsz")


async def wait_events_left(server: NatsServer, count: int) -> None:
    """Wait until ``WORKFLOW_EVENTS`` holds exactly ``count`` messages (bound it)."""
    # The broker's counters are all there is to wait on: poll.
    while await events_stream_messages(server) != count:  # noqa: ASYNC110
        await trio.sleep(0.05)


async def test_sleep_survives_orchestrator_and_server_sigkill(
    fresh_nats_server: NatsServer, services: Services
) -> None:
    server = fresh_nats_server
    # A short ack wait: an event the killed orchestrator held (its ack lost)
    # comes back to the new one quickly.
    orchestrator_args = ("--ack-wait", "2")
    services.orchestrator("orchestrator", *orchestrator_args)
    services.worker("worker")
    await services.wait_ready("orchestrator", "worker")
    worker_pid = services.services["worker"].pid

    async with open_transport(services.url) as transport, actors.Client(transport) as client:
        await client.register(NAPPER)
        ids = {f"nap-{n}": n for n in range(INSTANCES)}
        results: dict[str, Any] = {}

        async def wait_result(instance_id: str) -> None:
            results[instance_id] = await client.result(instance_id)

        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                for instance_id, n in ids.items():
                    await client.start("ledger_napper", {"n": n, "count": 0}, id=instance_id)
                    # Waiting from now on: the client's watch lives through the restart.
                    nursery.start_soon(wait_result, instance_id)
                until = await wait_sleep_started(transport, ids)
                # Every other event is acked (gone from the work queue): what is
                # left in WORKFLOW_EVENTS are the timers, one stored schedule each.
                await wait_events_left(server, INSTANCES)
                assert not results, results

                # No timer is due yet: kill everything that holds them.
                killed_at = time.time()
                await services.sigkill("orchestrator")
                # A restart waits for the server to be healthy: not on the event loop.
                await trio.to_thread.run_sync(server.kill)
                await trio.to_thread.run_sync(server.restart)
                restarted_at = time.time()
                services.orchestrator("orchestrator", *orchestrator_args)
                print(
                    f"killed {min(until.values()) - killed_at:.2f}s before the first timer "
                    f"was due; server back {restarted_at - killed_at:.2f}s later"
                )
                assert restarted_at < min(until.values()), "the server was back too late"
                await services.wait_ready("orchestrator")
        assert results == {instance_id: expected_output(n) for instance_id, n in ids.items()}

        # The state and the history: each record once, numbered 1..seq, no gap.
        with trio.fail_after(WAIT):
            states = await read_states(transport, ids)
            records = await read_history(transport, len(ids) * len(KINDS))
        assert {i: str(s.status) for i, s in states.items()} == dict.fromkeys(ids, "completed")
        by_instance: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            by_instance.setdefault(record["instance"], []).append(record)
        assert sorted(by_instance) == sorted(ids)
        late: list[float] = []
        for instance_id in ids:
            mine = by_instance[instance_id]
            seqs = [r["seq"] for r in mine]
            assert sorted(seqs) == list(range(1, states[instance_id].seq + 1)), (instance_id, seqs)
            assert states[instance_id].seq == len(KINDS), (instance_id, states[instance_id].seq)
            # One of each (one sleep.completed: the timer fired once), in order.
            kinds = Counter(r["kind"] for r in mine)
            assert kinds == Counter(KINDS), (instance_id, kinds)
            assert [r["kind"] for r in sorted(mine, key=lambda r: r["seq"])] == KINDS, mine
            (started,) = [r for r in mine if r["kind"] == "sleep.started"]
            (completed,) = [r for r in mine if r["kind"] == "sleep.completed"]
            assert started["detail"] == {"step": "nap", "until": until[instance_id]}
            assert completed["detail"] == {"step": "nap"}
            # Not early: the timer fired at (or after) the time it was set for.
            assert completed["at"] >= started["detail"]["until"], (started, completed)
            assert completed["at"] - started["at"] >= SLEEP_SECONDS
            late.append(completed["at"] - started["detail"]["until"])
            step = states[instance_id].steps["nap"]
            assert str(step.status) == "completed"
            assert step.finished_at == completed["at"]

        print(f"sleeps ended {min(late):.3f}s to {max(late):.3f}s after their time")

        # The ledger: the step after the sleep ran exactly once per instance.
        entries = read_ledger(services.ledger)
        begun = Counter((e.instance, e.step) for e in entries if e.phase == "begin")
        ended = Counter((e.instance, e.step) for e in entries if e.phase == "end")
        assert {i: begun[(i, "after")] for i in ids} == dict.fromkeys(ids, 1)
        assert {i: ended[(i, "after")] for i in ids} == dict.fromkeys(ids, 1)
        assert all(ended[(i, "before")] >= 1 for i in ids), ended
        print(f"ledger: {len(entries)} lines; runs beyond the first: {duplicate_runs(entries)}")
        # The worker that ran the second steps is the one that lived through the restart.
        assert {e.pid for e in entries if e.step == "after"} == {worker_pid}

        # No timer (nor any event) is left over to fire again.
        with trio.fail_after(WAIT):
            await wait_events_left(server, 0)

    orchestrator_log = services.services["orchestrator"].log()
    assert orchestrator_log.count("]: ready") == 2, "the orchestrator did not serve twice"
    assert "Traceback" not in orchestrator_log.rpartition("\n=== ")[2]
    assert "Traceback" not in services.services["worker"].log()
    assert await services.terminate_all() == {"orchestrator": 0, "worker": 0}
