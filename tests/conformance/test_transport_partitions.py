"""Partitioned streams: each message is filed under the partition of its key."""

from __future__ import annotations

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from transport import ConsumerSpec, InvalidSpecError, Partitioning, StreamSpec, partition_of

#: Partitions of keys as nats-server's ``partition(16, ...)`` transform files them.
KNOWN = {"abc": 11, "x": 7, "order-7": 11, "e": 0, "ab": 10, "start": 15, "z" * 128: 5}


def test_partition_of_is_the_servers_function() -> None:
    assert {key: partition_of(key, 16) for key in KNOWN} == KNOWN


@given(st.text(min_size=1, max_size=50), st.integers(1, 1024))
def test_partition_of_is_in_range(key: str, count: int) -> None:
    assert 0 <= partition_of(key, count) < count


def test_stored_subject_inserts_the_partition_after_the_prefix() -> None:
    parts = Partitioning(prefix="a.b", count=16)
    assert parts.stored_subject("a.b.abc.signal.go") == "a.b.11.abc.signal.go"
    assert parts.stored_subject("a.b.x.cancel") == "a.b.7.x.cancel"
    # Too short to carry a key and more, or under another prefix: as published.
    for subject in ("a.b.abc", "a.c.abc.x", "a.bc.abc.x"):
        assert parts.stored_subject(subject) == subject
    assert parts.filter(3) == "a.b.3.>"
    for published in ("a.b.abc.signal.go", "a.b.x.cancel", "a.b.7.x.cancel"):
        stored = parts.stored_subject(published)
        assert parts.published_subject(stored) == published
    assert parts.published_subject("a.b.abc.x") == "a.b.abc.x"


@pytest.mark.parametrize("count", [0, -1, 1025])
def test_a_partition_count_out_of_range_is_refused(count: int) -> None:
    with pytest.raises(InvalidSpecError, match="1 to 1024 partitions"):
        Partitioning(prefix="p", count=count)


def test_partitioned_messages_must_be_taken_by_the_stream() -> None:
    with pytest.raises(InvalidSpecError, match="partitioned"):
        StreamSpec(name="S", subjects=("a.>",), partitioning=Partitioning(prefix="b", count=4))


async def test_each_partitions_consumer_gets_its_keys_in_stored_order(
    clock, transport, make_stream, names
):
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
                durable=names.durable(str(partition)), filter_subjects=(parts.filter(partition),)
            )
            async with transport.consume(spec.name, consumer) as inbox:
                expected = [key for key in keys if partition_of(key, 4) == partition]
                got[partition] = []
                for _ in range(3 * len(expected)):
                    delivery = await inbox.receive()
                    await delivery.ack()
                    key, round_ = delivery.data.decode().split("/")
                    assert delivery.subject == f"{space}.p.{partition}.{key}.ev.{round_}"
                    got[partition].append(delivery.data.decode())
    for partition, seen in got.items():
        expected = [key for key in keys if partition_of(key, 4) == partition]
        assert seen == [f"{key}/{r}" for r in range(3) for key in expected]
    assert sum(map(len, got.values())) == 3 * len(keys)


async def test_a_delayed_message_is_filed_in_its_partition(clock, transport, make_stream, names):
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


async def test_an_existing_streams_partitioning_is_kept(clock, transport, make_stream, names):
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
