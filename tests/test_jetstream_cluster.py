"""JetStream only: the transport on a 3-node loopback cluster losing a node.

Streams and buckets have 3 replicas. The node holding the stream's leadership
is SIGKILLed mid-run; the transport, given every node's URL, carries on:
publishes retried with their message ids are stored once, every published
message is consumed, and a KV watch sees writes made after the failover.
"""

from __future__ import annotations

import pytest
import trio
from natsserver import NatsCluster

from transport import (
    ConsumerSpec,
    KVSpec,
    Retention,
    StreamSpec,
    TransportError,
    open_transport,
)
from transport.jscore import ENSURE_PATIENCE

pytestmark = [pytest.mark.jetstream, pytest.mark.usefixtures("nats_client")]

BEFORE, AFTER = 50, 50


@pytest.fixture
def cluster(tmp_path):
    with NatsCluster(tmp_path / "cluster", 3) as nodes:
        yield nodes


def stream_leader(cluster: NatsCluster, stream: str) -> int:
    """Index of the node that leads ``stream``, asked of any live node."""
    names = [node.server_name for node in cluster.nodes]
    for node in cluster.nodes:
        if not node.running:
            continue
        info = node.monitor("/jsz?streams=true")
        for account in info.get("account_details") or []:
            for detail in account.get("stream_detail") or []:
                leader = (detail.get("cluster") or {}).get("leader")
                if detail.get("name") == stream and leader in names:
                    return names.index(leader)
    raise AssertionError(f"no node reports a leader for {stream}")


async def publish_until_stored(transport, subject: str, data: bytes, msg_id: str) -> int:
    """Publish, retrying with the same id through a failover; return the seq."""
    with trio.fail_after(60):
        while True:
            try:
                return (await transport.publish(subject, data, msg_id=msg_id)).seq
            except TransportError:
                await trio.sleep(0.2)  # back off while a new leader is elected


async def test_a_replicated_stream_and_bucket_survive_losing_the_leader(cluster):
    stream = StreamSpec(
        name="CLUSTERED", subjects=("cl.>",), retention=Retention.WORK_QUEUE, replicas=3
    )
    async with open_transport(cluster.urls) as transport:
        await transport.ensure_stream(stream)
        kv = await transport.ensure_kv(KVSpec(bucket="CLUSTERED", replicas=3, history=10))
        sent = set()
        for i in range(BEFORE):
            await publish_until_stored(transport, "cl.job", b"%d" % i, f"job-{i}")
            sent.add(b"%d" % i)
        before = await kv.put("k", b"before")

        await trio.to_thread.run_sync(cluster.kill, stream_leader(cluster, stream.name))

        seqs = []
        for i in range(BEFORE, BEFORE + AFTER):
            seqs.append(await publish_until_stored(transport, "cl.job", b"%d" % i, f"job-{i}"))
            sent.add(b"%d" % i)
        # A retry after the failover must not store a second copy.
        again = await publish_until_stored(transport, "cl.job", b"dup", f"job-{BEFORE}")
        assert again == seqs[0]

        received = set()
        with trio.fail_after(60):
            async with transport.consume(stream.name, ConsumerSpec(durable="c")) as inbox:
                async for delivery in inbox:
                    received.add(delivery.data)
                    await delivery.ack()
                    if received >= sent:
                        break
        assert received == sent

        with trio.fail_after(60):
            async with kv.watch("k", since=before) as watch:
                while True:
                    try:
                        after = await kv.put("k", b"after")
                        break
                    except TransportError:
                        await trio.sleep(0.2)
                change = await watch.receive()
        assert (change.key, change.value, change.revision) == ("k", b"after", after)


async def test_creating_streams_waits_for_a_cluster_short_of_a_quorum(cluster):
    """A stream and a bucket ensured while two of three nodes are down (no meta
    leader: requests time out, or are answered that JetStream is unavailable)
    are made once the nodes return: ``ensure_stream`` asks again, it does not
    give up at the first request's deadline. Every service of a deployment
    provisions as it starts, often beside a cluster that is still forming."""
    down = 7.0  # longer than one request's deadline (5 s)
    for i in (1, 2):
        await trio.to_thread.run_sync(cluster.kill, i)
    stream = StreamSpec(name="LATE", subjects=("late.>",), replicas=3)

    async def come_back() -> None:
        await trio.sleep(down)
        for i in (1, 2):
            await trio.to_thread.run_sync(lambda i=i: cluster.restart(i, wait_healthy=False))

    async with open_transport(cluster.urls) as transport:
        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(come_back)
            with trio.fail_after(ENSURE_PATIENCE):
                await transport.ensure_stream(stream)
                kv = await transport.ensure_kv(KVSpec(bucket="LATE", replicas=3))
        assert trio.current_time() - began >= down, "made without a quorum?"
        seq = await publish_until_stored(transport, "late.one", b"1", "late-1")
        [stored] = await transport.read(stream.name, "late.>")
        assert (stored.stream_seq, stored.data) == (seq, b"1")
        revision = await kv.put("k", b"v")
        assert (await kv.get("k")).revision == revision
    replicas = {
        detail["name"]: (detail.get("config") or {}).get("num_replicas")
        for node in cluster.nodes
        for account in node.monitor("/jsz?streams=true&config=true").get("account_details") or []
        for detail in account.get("stream_detail") or []
    }
    assert replicas == {"LATE": 3, "KV_LATE": 3}, replicas
