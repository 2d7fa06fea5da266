"""Streams: creation, validation, limits."""

from __future__ import annotations

import contextlib

import pytest
import trio

from transport import (
    ConsumerSpec,
    Discard,
    InvalidSpecError,
    KVSpec,
    NotFoundError,
    PubAck,
    Retention,
    StorageFullError,
    StreamSpec,
    TooLargeError,
    open_transport,
)


async def test_ensure_stream_is_idempotent(transport, names):
    spec = StreamSpec(name=names.stream(), subjects=(f"{names.space()}.>",))
    await transport.ensure_stream(spec)
    await transport.ensure_stream(spec)
    assert await transport.publish(f"{names.space()}.a", b"1") == PubAck(spec.name, 1)


async def test_ensure_stream_again_keeps_the_messages(transport, make_stream, names):
    spec = await make_stream()
    await transport.publish(f"{names.space()}.a", b"1")
    await transport.ensure_stream(spec)
    assert (await transport.publish(f"{names.space()}.a", b"2")).seq == 2


async def test_ensure_stream_brings_an_existing_stream_to_the_spec(transport, names):
    first = StreamSpec(name=names.stream(), subjects=(f"{names.space('a')}.>",))
    await transport.ensure_stream(first)
    with pytest.raises(NotFoundError):
        await transport.publish(f"{names.space('b')}.x", b"")
    wider = StreamSpec(name=first.name, subjects=(*first.subjects, f"{names.space('b')}.>"))
    await transport.ensure_stream(wider)
    assert await transport.publish(f"{names.space('b')}.x", b"") == PubAck(first.name, 1)


async def test_ensure_stream_rejects_subjects_overlapping_another_stream(transport, names):
    await transport.ensure_stream(
        StreamSpec(name=names.stream("1"), subjects=(f"{names.space()}.>",))
    )
    with pytest.raises(InvalidSpecError):
        await transport.ensure_stream(
            StreamSpec(name=names.stream("2"), subjects=(f"{names.space()}.a.*",))
        )


@pytest.mark.parametrize("name", ["", "has space", "has.dot", "x" * 65, "star*", "gt>", "é"])
def test_stream_spec_rejects_bad_names(name):
    with pytest.raises(InvalidSpecError):
        StreamSpec(name=name, subjects=("a.>",))


@pytest.mark.parametrize(
    "subject", ["", "a..b", ".a", "a.", "a b", "a.>.b", "a.b>", "a.*b", ">x", "a\tb"]
)
def test_stream_spec_rejects_bad_subjects(subject):
    with pytest.raises(InvalidSpecError):
        StreamSpec(name="S", subjects=(subject,))


def test_stream_spec_needs_a_subject():
    with pytest.raises(InvalidSpecError):
        StreamSpec(name="S", subjects=())


@pytest.mark.parametrize("subjects", [("_sched.>",), ("_sched",), ("ok.>", "_sched.S.x")])
def test_stream_spec_reserves_the_schedule_prefix(subjects):
    with pytest.raises(InvalidSpecError):
        StreamSpec(name="S", subjects=subjects)


@pytest.mark.parametrize(
    "options",
    [
        {"replicas": 0},
        {"replicas": 6},
        {"duplicate_window": 0},
        {"max_msg_size": 0},
        {"max_age": -1.0},
        {"max_bytes": 0},
        {"max_msgs": 0},
    ],
)
def test_stream_spec_rejects_bad_limits(options):
    with pytest.raises(InvalidSpecError):
        StreamSpec(name="S", subjects=("a.>",), **options)


@pytest.mark.parametrize(
    "options",
    [
        {"durable": "bad name"},
        {"durable": "C", "filter_subjects": ("a..b",)},
        {"durable": "C", "ack_wait": 0},
        {"durable": "C", "max_deliver": 0},
        {"durable": "C", "max_ack_pending": 0},
    ],
)
def test_consumer_spec_rejects_bad_options(options):
    with pytest.raises(InvalidSpecError):
        ConsumerSpec(**options)


@pytest.mark.parametrize(
    "options",
    [
        {"bucket": "bad.name"},
        {"bucket": "B", "history": 0},
        {"bucket": "B", "history": 65},
        {"bucket": "B", "ttl": 0},
        {"bucket": "B", "max_value_size": -1},
    ],
)
def test_kv_spec_rejects_bad_options(options):
    with pytest.raises(InvalidSpecError):
        KVSpec(**options)


def test_invalid_spec_error_is_a_value_error():
    with pytest.raises(ValueError, match="stream name"):
        StreamSpec(name="a b", subjects=("a",))


async def test_publish_to_a_subject_no_stream_takes_raises_not_found(transport, make_stream, names):
    await make_stream()
    with pytest.raises(NotFoundError):
        await transport.publish(f"{names.space('nobody')}.x", b"lost")


async def test_publish_over_max_msg_size_raises_too_large_and_the_transport_still_works(
    transport, make_stream, names
):
    spec = await make_stream(max_msg_size=100)
    with pytest.raises(TooLargeError):
        await transport.publish(f"{names.space()}.big", b"x" * 200)
    assert await transport.publish(f"{names.space()}.small", b"x" * 100) == PubAck(spec.name, 1)
    other = await make_stream("2")
    assert await transport.publish(f"{names.space('2')}.a", b"") == PubAck(other.name, 1)


async def test_publish_over_the_connection_payload_limit_leaves_the_transport_working(
    transport_url, names
):
    # NATS refuses payloads over the server's max_payload (1 MiB by default); the
    # memory broker has no connection, so it may store the message instead.
    spec = StreamSpec(name=names.stream(), subjects=(f"{names.space()}.>",))
    finished = False
    with trio.fail_after(20):
        async with open_transport(transport_url) as transport:
            await transport.ensure_stream(spec)
            with contextlib.suppress(TooLargeError):
                await transport.publish(f"{names.space()}.huge", b"x" * (8 * 1024 * 1024))
            ack = await transport.publish(f"{names.space()}.small", b"")
            assert ack.stream == spec.name
            finished = True
    assert finished


async def test_publish_to_a_full_discard_new_stream_raises_storage_full(
    transport, make_stream, names
):
    await make_stream(max_msgs=3, discard=Discard.NEW)
    for i in range(3):
        await transport.publish(f"{names.space()}.a", b"%d" % i)
    with pytest.raises(StorageFullError):
        await transport.publish(f"{names.space()}.a", b"one too many")


async def test_a_full_discard_old_stream_drops_the_oldest_messages(transport, make_stream, names):
    spec = await make_stream(max_msgs=3, discard=Discard.OLD)
    for i in range(5):
        await transport.publish(f"{names.space()}.a", b"%d" % i)
    with trio.fail_after(10):
        async with transport.consume(spec.name, ConsumerSpec(durable=names.durable())) as inbox:
            got = [await inbox.receive() for _ in range(3)]
    assert [(d.stream_seq, d.data) for d in got] == [(3, b"2"), (4, b"3"), (5, b"4")]


async def test_work_queue_stream_rejects_overlapping_consumer_filters(
    transport, make_stream, names
):
    spec = await make_stream(retention=Retention.WORK_QUEUE)
    space = names.space()
    with trio.fail_after(10):
        async with transport.consume(
            spec.name, ConsumerSpec(durable=names.durable("a"), filter_subjects=(f"{space}.a.>",))
        ):
            pass
        # The durable outlives its consume context, so it still holds its filter.
        with pytest.raises(InvalidSpecError):
            async with transport.consume(
                spec.name, ConsumerSpec(durable=names.durable("b"), filter_subjects=(f"{space}.>",))
            ):
                pass
        # Disjoint filters are fine.
        async with transport.consume(
            spec.name, ConsumerSpec(durable=names.durable("c"), filter_subjects=(f"{space}.c.>",))
        ):
            pass


async def test_work_queue_stream_rejects_a_second_unfiltered_consumer(
    transport, make_stream, names
):
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


async def test_limits_stream_allows_overlapping_consumer_filters(transport, make_stream, names):
    spec = await make_stream()
    with trio.fail_after(10):
        async with (
            transport.consume(spec.name, ConsumerSpec(durable=names.durable("a"))),
            transport.consume(
                spec.name,
                ConsumerSpec(durable=names.durable("b"), filter_subjects=(f"{names.space()}.>",)),
            ),
        ):
            pass


async def test_messages_older_than_max_age_are_removed(clock, transport, make_stream, names):
    spec = await make_stream(max_age=1.0)
    await transport.publish(f"{names.space()}.a", b"old")
    # The broker may expire on a timer, so allow a few max_ages.
    await trio.sleep(3.0)
    marker = await transport.publish(f"{names.space()}.a", b"marker")
    with trio.fail_after(10):
        async with transport.consume(spec.name, ConsumerSpec(durable=names.durable())) as inbox:
            first = await inbox.receive()
    assert (first.stream_seq, first.data) == (marker.seq, b"marker")
