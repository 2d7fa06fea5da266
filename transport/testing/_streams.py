"""Streams: creation, updates and limits."""

from __future__ import annotations

import contextlib

import pytest
import trio

from .. import (
    ConsumerSpec,
    Discard,
    InvalidSpecError,
    NotFoundError,
    PubAck,
    Retention,
    StorageFullError,
    StreamSpec,
    TooLargeError,
    Transport,
)
from ._fixtures import Clock, Connect, MakeStream, Names, SuiteBase, own_transport


class StreamTests(SuiteBase):
    """Streams: creation, updates, limits; publishing to what no stream takes."""

    async def test_ensure_stream_is_idempotent(self, transport: Transport, names: Names) -> None:
        spec = names.stream_spec()
        await transport.ensure_stream(spec)
        await transport.ensure_stream(spec)
        assert await transport.publish(f"{names.space()}.a", b"1") == PubAck(spec.name, 1)

    async def test_ensure_stream_again_keeps_the_messages(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream()
        await transport.publish(f"{names.space()}.a", b"1")
        await transport.ensure_stream(spec)
        assert (await transport.publish(f"{names.space()}.a", b"2")).seq == 2

    async def test_ensure_stream_brings_an_existing_stream_to_the_spec(
        self, transport: Transport, names: Names
    ) -> None:
        first = StreamSpec(name=names.stream(), subjects=(f"{names.space('a')}.>",))
        await transport.ensure_stream(first)
        with pytest.raises(NotFoundError):
            await transport.publish(f"{names.space('b')}.x", b"")
        wider = StreamSpec(name=first.name, subjects=(*first.subjects, f"{names.space('b')}.>"))
        await transport.ensure_stream(wider)
        assert await transport.publish(f"{names.space('b')}.x", b"") == PubAck(first.name, 1)

    async def test_ensure_stream_rejects_subjects_overlapping_another_stream(
        self, transport: Transport, names: Names
    ) -> None:
        await transport.ensure_stream(
            StreamSpec(name=names.stream("1"), subjects=(f"{names.space()}.>",))
        )
        with pytest.raises(InvalidSpecError):
            await transport.ensure_stream(
                StreamSpec(name=names.stream("2"), subjects=(f"{names.space()}.a.*",))
            )

    async def test_publish_to_a_subject_no_stream_takes_raises_not_found(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        await make_stream()
        with pytest.raises(NotFoundError):
            await transport.publish(f"{names.space('nobody')}.x", b"lost")

    async def test_publish_over_max_msg_size_raises_too_large_and_the_transport_still_works(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream(max_msg_size=100)
        with pytest.raises(TooLargeError):
            await transport.publish(f"{names.space()}.big", b"x" * 200)
        assert await transport.publish(f"{names.space()}.small", b"x" * 100) == PubAck(spec.name, 1)
        other = await make_stream("2")
        assert await transport.publish(f"{names.space('2')}.a", b"") == PubAck(other.name, 1)

    async def test_publish_over_the_connection_payload_limit_leaves_the_transport_working(
        self, connect: Connect, names: Names
    ) -> None:
        # A broker may refuse a payload over its connection's limit (NATS: the
        # server's max_payload, 1 MiB by default) or, with no connection to
        # limit it (the memory broker), store it; nothing else may happen.
        async with own_transport(connect) as transport:
            spec = await transport.ensure_stream(names.stream_spec())
            with contextlib.suppress(TooLargeError):
                await transport.publish(f"{names.space()}.huge", b"x" * (8 * 1024 * 1024))
            ack = await transport.publish(f"{names.space()}.small", b"")
            assert ack.stream == spec.name

    async def test_publish_to_a_full_discard_new_stream_raises_storage_full(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        await make_stream(max_msgs=3, discard=Discard.NEW)
        for i in range(3):
            await transport.publish(f"{names.space()}.a", b"%d" % i)
        with pytest.raises(StorageFullError):
            await transport.publish(f"{names.space()}.a", b"one too many")

    async def test_a_full_discard_old_stream_drops_the_oldest_messages(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream(max_msgs=3, discard=Discard.OLD)
        for i in range(5):
            await transport.publish(f"{names.space()}.a", b"%d" % i)
        with trio.fail_after(10):
            async with transport.consume(spec.name, ConsumerSpec(durable=names.durable())) as inbox:
                got = [await inbox.receive() for _ in range(3)]
        assert [(d.stream_seq, d.data) for d in got] == [(3, b"2"), (4, b"3"), (5, b"4")]

    async def test_work_queue_stream_rejects_overlapping_consumer_filters(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream(retention=Retention.WORK_QUEUE)
        space = names.space()
        with trio.fail_after(10):
            async with transport.consume(
                spec.name,
                ConsumerSpec(durable=names.durable("a"), filter_subjects=(f"{space}.a.>",)),
            ):
                pass
            # The durable outlives its consume context, so it still holds its filter.
            with pytest.raises(InvalidSpecError):
                async with transport.consume(
                    spec.name,
                    ConsumerSpec(durable=names.durable("b"), filter_subjects=(f"{space}.>",)),
                ):
                    pass
            # Disjoint filters are fine.
            async with transport.consume(
                spec.name,
                ConsumerSpec(durable=names.durable("c"), filter_subjects=(f"{space}.c.>",)),
            ):
                pass

    async def test_work_queue_stream_rejects_a_second_unfiltered_consumer(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream(retention=Retention.WORK_QUEUE)
        with trio.fail_after(10):
            async with transport.consume(spec.name, ConsumerSpec(durable=names.durable("a"))):
                pass
            with pytest.raises(InvalidSpecError):
                async with transport.consume(spec.name, ConsumerSpec(durable=names.durable("b"))):
                    pass
            # The same durable again is the same consumer, not a second one.
            async with transport.consume(spec.name, ConsumerSpec(durable=names.durable("a"))):
                pass

    async def test_limits_stream_allows_overlapping_consumer_filters(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream()
        with trio.fail_after(10):
            async with (
                transport.consume(spec.name, ConsumerSpec(durable=names.durable("a"))),
                transport.consume(
                    spec.name,
                    ConsumerSpec(
                        durable=names.durable("b"), filter_subjects=(f"{names.space()}.>",)
                    ),
                ),
            ):
                pass

    async def test_messages_older_than_max_age_are_removed(
        self, clock: Clock, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream(max_age=1.0)
        await transport.publish(f"{names.space()}.a", b"old")
        # The broker may expire on a timer, so allow a few max_ages.
        await trio.sleep(3.0)
        marker = await transport.publish(f"{names.space()}.a", b"marker")
        with trio.fail_after(10):
            async with transport.consume(spec.name, ConsumerSpec(durable=names.durable())) as inbox:
                first = await inbox.receive()
        assert (first.stream_seq, first.data) == (marker.seq, b"marker")
