"""Workers announce themselves in ``WORKER_PRESENCE``; ``Client.workers()`` reads it.

A running worker is listed with what it serves, its ``seen`` advances, and it
is gone once it stopped cleanly; a SIGKILLed worker process drops out once
its entry is older than its ttl; an entry that does not decode is skipped.
"""

from __future__ import annotations

import importlib.metadata
import logging
import socket

import pytest
import trio
from natsserver import NatsServer
from processes import Services

import actors
from actors.runtime._partitions import member_id
from actors.wire import (
    PRESENCE_BUCKET,
    WorkerPresence,
    decode_presence,
    encode_presence,
    presence_key,
)
from transport import KVOp, Transport, open_transport

#: Short, so that ``seen`` moves within a test; the engine's default is 5 s.
INTERVAL = 0.5


@actors.activity
async def pack(value: object) -> object:
    return value


@actors.activity
def label(value: object) -> object:
    return value


async def _next_write(transport: Transport, key: str) -> WorkerPresence | None:
    """The next change of ``key`` in the presence bucket: the entry put, or ``None``
    for a delete. Waits for it (bound it)."""
    bucket = await transport.kv(PRESENCE_BUCKET)
    async with bucket.watch(key, since=await bucket.latest_revision()) as changes:
        change = await changes.receive()
    if change.op is not KVOp.PUT:
        return None
    return decode_presence(key, change.value)


async def test_a_running_worker_is_listed_until_it_stops_cleanly(
    engine_url: str, clock: trio.testing.MockClock | None
) -> None:
    config = actors.WorkerConfig(concurrency=3, presence_interval=INTERVAL, drain_timeout=1.0)
    async with (
        open_transport(engine_url) as transport,
        actors.Client(transport) as client,
    ):
        assert await client.workers() == []
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                specs = actors.collect_activities([pack, label])
                worker = actors.Worker(transport, specs, config)
                await nursery.start(worker.run)
                # Listed as soon as it is started, with what it serves.
                [listed] = await client.workers()
                assert listed.id == worker.id
                assert listed.activities == ("label", "pack")
                assert (listed.concurrency, listed.running) == (3, 0)
                assert listed.pid > 0
                assert listed.host
                assert listed.ttl == 3 * INTERVAL
                assert listed.version == importlib.metadata.version("actors")

                # It rewrites the entry: ``seen`` advances, nothing else moves.
                rewritten = await _next_write(transport, worker.id)
                assert rewritten is not None
                assert rewritten.seen > listed.seen
                assert rewritten.started_at == listed.started_at
                [again] = await client.workers()
                assert again.seen >= rewritten.seen

                worker.shutdown()
        # Deleted on the way out, not left to expire.
        bucket = await transport.kv(PRESENCE_BUCKET)
        assert await bucket.get(worker.id) is None
        assert await client.workers() == []


async def test_a_malformed_entry_is_skipped_and_the_live_ones_are_listed(
    engine_url: str, clock: trio.testing.MockClock | None, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_transport(engine_url) as transport, actors.Client(transport) as client:
        bucket = await transport.kv(PRESENCE_BUCKET)
        now = transport.now()
        good = WorkerPresence("far-1-abc", "far", 1, now, ("pack",), 2, 1, "9.9", now, ttl=60)
        stale = WorkerPresence("gone-2-abc", "gone", 2, now - 90, ("pack",), 2, 0, "", now - 61)
        await bucket.put(good.id, encode_presence(good))
        await bucket.put(stale.id, encode_presence(stale))
        await bucket.put("broken-3-abc", b"{not json")
        await bucket.put("liar-4-abc", b'{"id": "someone-else", "activities": [], "seen": 1}')
        with caplog.at_level(logging.WARNING, logger="actors.worker"):
            assert await client.workers() == [good]
        skipped = "\n".join(r.getMessage() for r in caplog.records)
        assert "'broken-3-abc' is not JSON" in skipped
        assert "its id 'someone-else' is not its key" in skipped


@pytest.mark.jetstream
async def test_a_sigkilled_worker_drops_out_after_its_ttl(services: Services) -> None:
    services.worker("worker-a", "--presence-interval", "1")
    services.worker("worker-b", "--presence-interval", "0.3", "--concurrency", "2")
    await services.wait_ready("worker-a", "worker-b")
    pids = {services.services[name].pid: name for name in ("worker-a", "worker-b")}

    async with open_transport(services.url) as transport, actors.Client(transport) as client:
        listed = await client.workers()
        assert {w.pid for w in listed} == set(pids)
        assert all("ledger_increment" in w.activities for w in listed)
        by_name = {pids[w.pid]: w for w in listed}
        assert (by_name["worker-a"].concurrency, by_name["worker-b"].concurrency) == (16, 2)

        await services.sigkill("worker-a")
        bucket = await transport.kv(PRESENCE_BUCKET)
        entry = await bucket.get(by_name["worker-a"].id)
        assert entry is not None
        last = decode_presence(entry.key, entry.value)
        # Nothing deletes its entry; still listed until it is a ttl (3 s) old...
        assert by_name["worker-a"].id in {w.id for w in await client.workers()}
        # ...and not after: a wait for a time, not for a condition.
        await trio.sleep(max(0.0, last.seen + last.ttl - transport.now()) + 0.05)
        remaining = await client.workers()
        assert [w.pid for w in remaining] == [services.services["worker-b"].pid]

        # The one stopped by SIGTERM deletes its own entry.
        assert await services.terminate("worker-b") == 0
        assert await bucket.keys() == [by_name["worker-a"].id]
        assert await client.workers() == []


def test_a_worker_id_is_a_key_token_whatever_the_host_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A host name with letters outside ASCII, dots or spaces still gives an
    # id the bucket takes as one key (NATS refuses any other letters in a key).
    monkeypatch.setattr(socket, "gethostname", lambda: "hôte Ünïcode.example")
    worker_id = member_id()
    assert presence_key(worker_id) == worker_id
    assert worker_id.startswith("h-te--n-code-example-")


async def test_a_broker_outage_while_announcing_never_stops_the_worker(
    fresh_nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    interval = 0.2
    config = actors.WorkerConfig(presence_interval=interval, drain_timeout=1.0)
    failed = trio.Event()

    class OnFailure(logging.Handler):
        """Sets ``failed`` at the warning of a failed write (logged in this thread)."""

        def emit(self, record: logging.LogRecord) -> None:
            if "could not announce this worker" in record.getMessage():
                failed.set()

    watcher = OnFailure()
    logging.getLogger("actors.worker").addHandler(watcher)
    try:
        with caplog.at_level(logging.WARNING, logger="actors.worker"):
            async with open_transport(fresh_nats_server.url) as transport:
                async with trio.open_nursery() as nursery:
                    worker = actors.Worker(transport, actors.collect_activities([pack]), config)
                    await nursery.start(worker.run)
                    bucket = await transport.kv(PRESENCE_BUCKET)
                    since = await bucket.latest_revision()
                    # The watch resumes by itself once the broker is back.
                    async with bucket.watch(worker.id, since=since) as changes:
                        # In a thread: killing and restarting wait for the process.
                        await trio.to_thread.run_sync(fresh_nats_server.kill)
                        # Writes fail while the broker is away, each logged...
                        with trio.fail_after(30):
                            await failed.wait()
                        assert "could not announce this worker" in caplog.text
                        await trio.to_thread.run_sync(fresh_nats_server.restart)
                        back = transport.now()
                        # ...and the worker, still serving, writes again once it is back.
                        with trio.fail_after(30):
                            async for change in changes:
                                assert change.op is KVOp.PUT
                                rewritten = decode_presence(change.key, change.value)
                                if rewritten.seen >= back:
                                    break
                    assert rewritten.activities == ("pack",)
                    worker.shutdown()
                assert await bucket.get(worker.id) is None
    finally:
        logging.getLogger("actors.worker").removeHandler(watcher)


#: What ``hold`` waits for, and says it began: made afresh by the test that uses it.
GATES: dict[str, trio.Event] = {}


@actors.activity
async def hold(value: object) -> object:
    GATES["entered"].set()
    await GATES["release"].wait()
    return value


async def test_the_entry_counts_the_tasks_running_now(
    engine_url: str, clock: trio.testing.MockClock | None
) -> None:
    GATES.update(entered=trio.Event(), release=trio.Event())
    config = actors.WorkerConfig(presence_interval=INTERVAL, drain_timeout=1.0)
    async with open_transport(engine_url) as transport, trio.open_nursery() as nursery:
        orchestrator = actors.Orchestrator(transport, actors.OrchestratorConfig(drain_timeout=1.0))
        await nursery.start(orchestrator.run)
        worker = actors.Worker(transport, actors.collect_activities([hold]), config)
        await nursery.start(worker.run)
        async with actors.Client(transport) as client:
            await client.register("type: held\nsteps: [{id: h, activity: hold}]\n")
            with trio.fail_after(30):
                instance_id = await client.start("held", {"n": 1})
                await GATES["entered"].wait()
                busy = await _next_write(transport, worker.id)
                assert busy is not None
                assert busy.running == 1
                GATES["release"].set()
                assert await client.result(instance_id) == {"n": 1}
                idle = await _next_write(transport, worker.id)
                assert idle is not None
                assert idle.running == 0
        orchestrator.shutdown()
        worker.shutdown()
