"""Partitioned streams: each message is filed under the partition of its key."""

from __future__ import annotations

import trio

from .. import ConsumerSpec, Partitioning, StreamSpec, Transport, partition_of
from ._fixtures import Clock, MakeStream, Names, SuiteBase


class PartitionTests(SuiteBase):
    """Partitioned streams: each message is filed under the partition of its key."""

    async def test_each_partitions_consumer_gets_its_keys_in_stored_order(
        self, clock: Clock, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        space = names.space()
        parts = Partitioning(prefix=f"{space}.p", count=4)
        spec = await make_stream(partitioning=parts)
        keys = [f"k{n}" for n in range(12)]
        for round_ in range(3):
            for key in keys:
                await transport.publish(f"{space}.p.{key}.ev.{round_}", f"{key}/{round_}".encode())
        await transport.publish(f"{space}.other", b"not partitioned")
        got: dict[int, list[str]] = {}
        with trio.fail_after(20):
            for partition in range(4):
                consumer = ConsumerSpec(
                    durable=names.durable(str(partition)),
                    filter_subjects=(parts.filter(partition),),
                )
                async with transport.consume(spec.name, consumer) as inbox:
                    expected = [key for key in keys if partition_of(key, 4) == partition]
                    got[partition] = []
                    for _ in range(3 * len(expected)):
                        delivery = await inbox.receive()
                        await delivery.ack()
                        key, stored_round = delivery.data.decode().split("/")
                        assert delivery.subject == f"{space}.p.{partition}.{key}.ev.{stored_round}"
                        got[partition].append(delivery.data.decode())
        for partition, seen in got.items():
            expected = [key for key in keys if partition_of(key, 4) == partition]
            assert seen == [f"{key}/{r}" for r in range(3) for key in expected]
        assert sum(map(len, got.values())) == 3 * len(keys)

    async def test_a_delayed_message_is_filed_in_its_partition(
        self, clock: Clock, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        space = names.space()
        parts = Partitioning(prefix=f"{space}.p", count=16)
        spec = await make_stream(partitioning=parts, allow_delayed=True)
        consumer = ConsumerSpec(durable=names.durable(), filter_subjects=(parts.filter(11),))
        with trio.fail_after(20):
            async with transport.consume(spec.name, consumer) as inbox:
                await transport.publish(
                    f"{space}.p.abc.timer", b"due", msg_id="t1", deliver_at=transport.now() + 1.0
                )
                delivery = await inbox.receive()
                await delivery.ack()
        assert (delivery.subject, delivery.data) == (f"{space}.p.11.abc.timer", b"due")

    async def test_an_existing_streams_partitioning_is_kept(
        self, clock: Clock, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        space = names.space()
        first = await make_stream(partitioning=Partitioning(prefix=f"{space}.p", count=4))
        again = StreamSpec(
            name=first.name,
            subjects=first.subjects,
            partitioning=Partitioning(prefix=f"{space}.p", count=8),
            max_msgs=100,
        )
        kept = await transport.ensure_stream(again)
        assert kept.partitioning == first.partitioning
        assert kept.max_msgs == 100
        await transport.publish(f"{space}.p.abc.x", b"1")
        parts = Partitioning(prefix=f"{space}.p", count=4)
        consumer = ConsumerSpec(
            durable=names.durable(), filter_subjects=(parts.filter(partition_of("abc", 4)),)
        )
        with trio.fail_after(10):
            async with transport.consume(first.name, consumer) as inbox:
                delivery = await inbox.receive()
                await delivery.ack()
        assert delivery.subject == f"{space}.p.{partition_of('abc', 4)}.abc.x"
