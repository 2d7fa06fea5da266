"""JetStream only: a server SIGKILLed mid-consume and restarted on the same store.

One scenario, checked by a ledger: every published message is received at least
once (redeliveries allowed), the consume channel and a KV watch opened before
the kill carry on by themselves, and the connection events tell the story.
"""

from __future__ import annotations

from collections import Counter

import pytest
import trio

from transport import (
    ConnectionLostError,
    ConnectionState,
    ConsumerSpec,
    KVChange,
    KVSpec,
    OutMessage,
    PubAck,
    Retention,
    StreamSpec,
    TransportError,
    TransportTimeoutError,
    open_transport,
)

pytestmark = pytest.mark.jetstream

PUBLISHED = 200
ACKED_BEFORE_KILL = 50
WRITES_BEFORE_KILL = 5
WRITES_AFTER_RESTART = 20


async def test_consume_and_watch_survive_a_server_kill_and_restart(fresh_nats_server, names):
    server = fresh_nats_server
    space = names.space()
    spec = StreamSpec(name=names.stream(), subjects=(f"{space}.>",), retention=Retention.WORK_QUEUE)
    # A short ack wait bounds how long a delivery lost with the server takes to return.
    consumer = ConsumerSpec(durable=names.durable(), ack_wait=3.0)

    received: Counter[int] = Counter()
    acked: set[int] = set()
    half_done = trio.Event()
    resume = trio.Event()
    all_received = trio.Event()
    watched: list[KVChange] = []
    watched_enough = {n: trio.Event() for n in (WRITES_BEFORE_KILL, WRITES_AFTER_RESTART)}
    states: list[ConnectionState] = []
    disconnected = trio.Event()
    reconnected = trio.Event()

    async with open_transport(server.url) as transport:
        events = transport.connection_events()
        await transport.ensure_stream(spec)
        # History holds every write, so a watch that resumes late still sees them all.
        kv = await transport.ensure_kv(KVSpec(bucket=names.bucket(), history=64))
        with trio.fail_after(30):
            acks = await transport.publish_many(
                [OutMessage(f"{space}.job", b"%d" % i, msg_id=f"job-{i}") for i in range(PUBLISHED)]
            )
        published = {ack.seq for ack in acks}
        assert len(published) == PUBLISHED

        async def work(inbox):
            async for delivery in inbox:
                received[delivery.stream_seq] += 1
                if len(acked) == ACKED_BEFORE_KILL and not resume.is_set():
                    # Hold this one, with the channel full behind it, across the kill.
                    half_done.set()
                    await resume.wait()
                try:
                    await delivery.ack()
                except TransportError:
                    continue  # outcome unknown: it comes back if the ack was lost
                acked.add(delivery.stream_seq)
                if published <= received.keys():
                    all_received.set()

        async def watch_changes(watch):
            async for change in watch:
                watched.append(change)
                if len(watched) == WRITES_BEFORE_KILL:
                    watched_enough[WRITES_BEFORE_KILL].set()
                if len(watched) == WRITES_BEFORE_KILL + WRITES_AFTER_RESTART:
                    watched_enough[WRITES_AFTER_RESTART].set()

        async def follow_events():
            async for event in events:
                states.append(event.state)
                if event.state is ConnectionState.DISCONNECTED:
                    disconnected.set()
                elif event.state is ConnectionState.CONNECTED and disconnected.is_set():
                    reconnected.set()

        written: list[KVChange] = []
        stage = "starting"

        def progress() -> str:
            missing = sorted(published - received.keys())
            return (
                f"stuck at {stage!r}: received {len(received)}/{PUBLISHED} "
                f"(missing {missing[:10]}...), acked {len(acked)}, "
                f"watched revisions {[c.revision for c in watched]} of "
                f"{[c.revision for c in written]} written, states {states}"
            )

        try:
            with trio.fail_after(60):
                async with (
                    transport.consume(spec.name, consumer, buffer=16) as inbox,
                    kv.watch() as watch,
                    trio.open_nursery() as nursery,
                ):
                    nursery.start_soon(work, inbox)
                    nursery.start_soon(watch_changes, watch)
                    nursery.start_soon(follow_events)
                    stage = "writing before the kill"
                    for i in range(WRITES_BEFORE_KILL):
                        written.append(KVChange("k", b"%d" % i, await kv.put("k", b"%d" % i)))
                    await watched_enough[WRITES_BEFORE_KILL].wait()
                    stage = "acking the first messages"
                    await half_done.wait()

                    stage = "killing the server"
                    await trio.to_thread.run_sync(server.kill)
                    await disconnected.wait()
                    stage = "restarting the server"
                    await trio.to_thread.run_sync(server.restart)
                    stage = "waiting for the reconnection"
                    await reconnected.wait()
                    assert transport.state is ConnectionState.CONNECTED

                    resume.set()
                    stage = "writing after the restart"
                    for i in range(WRITES_BEFORE_KILL, WRITES_BEFORE_KILL + WRITES_AFTER_RESTART):
                        written.append(KVChange("k", b"%d" % i, await kv.put("k", b"%d" % i)))
                    stage = "watching the writes after the restart"
                    await watched_enough[WRITES_AFTER_RESTART].wait()
                    stage = "receiving the rest"
                    await all_received.wait()
                    nursery.cancel_scope.cancel()
        except trio.TooSlowError:
            pytest.fail(progress())

    # (1) Nothing published was lost; only redeliveries may repeat a message.
    assert received.keys() == published
    # (3) The watch saw every write, in order, without gaps or repeats.
    assert watched == written
    revisions = [change.revision for change in watched]
    assert revisions == list(range(revisions[0], revisions[0] + len(revisions)))
    # (4) The connection went away and came back.
    assert ConnectionState.DISCONNECTED in states
    assert ConnectionState.CONNECTED in states[states.index(ConnectionState.DISCONNECTED) :]


async def test_publish_across_a_restart_is_safe_to_retry_with_its_msg_id(fresh_nats_server, names):
    server = fresh_nats_server
    spec = StreamSpec(name=names.stream(), subjects=(f"{names.space()}.>",))
    subject = f"{names.space()}.a"
    outcome: list[PubAck | TransportError] = []
    async with open_transport(server.url) as transport:
        events = transport.connection_events()
        await transport.ensure_stream(spec)

        async def wait_for(state):
            async for event in events:
                if event.state is state:
                    return

        async def publish_once():
            try:
                outcome.append(await transport.publish(subject, b"once", msg_id="once"))
            except (ConnectionLostError, TransportTimeoutError) as exc:
                outcome.append(exc)  # unknown outcome: retrying with the id is safe

        with trio.fail_after(30):
            await trio.to_thread.run_sync(server.kill)
            await wait_for(ConnectionState.DISCONNECTED)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish_once)
                await trio.to_thread.run_sync(server.restart)
                await wait_for(ConnectionState.CONNECTED)
            retried = await transport.publish(subject, b"once", msg_id="once")
            marker = await transport.publish(subject, b"marker")
            consumer = ConsumerSpec(durable=names.durable())
            async with transport.consume(spec.name, consumer) as inbox:
                got = [await inbox.receive(), await inbox.receive()]
    first = outcome[0]
    if isinstance(first, PubAck):
        assert retried == PubAck(spec.name, first.seq, duplicate=True)
    assert [d.data for d in got] == [b"once", b"marker"]
    assert got[1].stream_seq == marker.seq
