"""Reading stored messages by subject, in pages, without a consumer (``Transport.read``).

The JetStream transport reads a page with one batched direct get, or message
by message where the server or the stream does not offer that. The tests at
the end run the second way on purpose, and check the batches' bookkeeping
against canned replies (no server).
"""

from __future__ import annotations

import asyncio
import json

import pytest
import trio
from nats.aio.msg import Msg

from transport import (
    ConsumerSpec,
    InvalidSpecError,
    NotFoundError,
    OutMessage,
    Retention,
    StoredMessage,
    StreamSpec,
    TransportClosedError,
    TransportError,
    open_transport,
)
from transport._specs import DELIVER_AT_HEADER
from transport.jetstream._read import _epoch, _Reader


async def publish_many(transport, messages, chunk=500):
    """Publish ``messages`` (OutMessage) in pipelined chunks; return their sequences."""
    seqs = []
    for i in range(0, len(messages), chunk):
        seqs += [ack.seq for ack in await transport.publish_many(messages[i : i + chunk])]
    return seqs


async def read_all(transport, stream, subject, *, page):
    """Every message on ``subject``, page by page; also the pages' lengths."""
    found, sizes, start = [], [], 1
    while True:
        got = await transport.read(stream, subject, start_seq=start, limit=page)
        sizes.append(len(got))
        found += got
        if len(got) < page:
            return found, sizes
        start = got[-1].stream_seq + 1


async def consumer_count(transport, stream):
    """How many consumers ``stream`` has, from each transport's own bookkeeping."""
    if hasattr(transport, "_streams") and not hasattr(transport, "_api"):
        return len(transport._streams[stream].consumers)
    info = await transport._api(f"STREAM.INFO.{stream}")
    return info["state"]["consumer_count"]


async def test_read_returns_the_messages_of_the_subject_in_order(transport, make_stream, names):
    spec = await make_stream()
    subject = f"{names.space()}.a"
    before = transport.now()
    for i in range(5):
        await transport.publish(subject, b"data %d" % i, headers={"X-Index": str(i)})
    after = transport.now()
    got = await transport.read(spec.name, subject)
    assert all(isinstance(m, StoredMessage) for m in got)
    assert [m.subject for m in got] == [subject] * 5
    assert [m.data for m in got] == [b"data %d" % i for i in range(5)]
    assert [m.stream_seq for m in got] == [1, 2, 3, 4, 5]
    assert [m.headers.get("X-Index") for m in got] == [str(i) for i in range(5)]
    # The broker's clock may differ from ours by a little (JetStream).
    assert all(before - 1 <= m.time <= after + 1 for m in got)
    assert [m.time for m in got] == sorted(m.time for m in got)


async def test_read_leaves_out_the_other_subjects(transport, make_stream, names):
    spec = await make_stream()
    space = names.space()
    for i in range(6):
        await transport.publish(f"{space}.{'ab'[i % 2]}", b"%d" % i)
    await transport.publish(f"{space}.a.deeper", b"deeper")
    a = await transport.read(spec.name, f"{space}.a")
    b = await transport.read(spec.name, f"{space}.b")
    assert [(m.data, m.stream_seq) for m in a] == [(b"0", 1), (b"2", 3), (b"4", 5)]
    assert [(m.data, m.stream_seq) for m in b] == [(b"1", 2), (b"3", 4), (b"5", 6)]


async def test_read_takes_wildcards(transport, make_stream, names):
    spec = await make_stream()
    space = names.space()
    for subject in ("x.1", "y.1", "x.2", "x.2.z"):
        await transport.publish(f"{space}.{subject}", subject.encode())
    star = await transport.read(spec.name, f"{space}.x.*")
    rest = await transport.read(spec.name, f"{space}.x.>")
    every = await transport.read(spec.name, ">")
    assert [m.data for m in star] == [b"x.1", b"x.2"]
    assert [m.data for m in rest] == [b"x.1", b"x.2", b"x.2.z"]
    assert [m.data for m in every] == [b"x.1", b"y.1", b"x.2", b"x.2.z"]


async def test_read_starts_at_start_seq(transport, make_stream, names):
    spec = await make_stream()
    space = names.space()
    for i in range(1, 9):
        await transport.publish(f"{space}.{'ab'[i % 2]}", b"%d" % i)
    # Sequence 3 is on "b": the read starts at the next "a" message.
    got = await transport.read(spec.name, f"{space}.a", start_seq=3)
    assert [m.stream_seq for m in got] == [4, 6, 8]
    assert [m.stream_seq for m in await transport.read(spec.name, f"{space}.a", start_seq=8)] == [8]
    assert await transport.read(spec.name, f"{space}.a", start_seq=9) == []
    assert await transport.read(spec.name, f"{space}.a", start_seq=10**9) == []


async def test_read_returns_at_most_limit_and_pages_on(transport, make_stream, names):
    spec = await make_stream()
    subject = f"{names.space()}.a"
    for i in range(7):
        await transport.publish(subject, b"%d" % i)
    first = await transport.read(spec.name, subject, limit=3)
    second = await transport.read(spec.name, subject, start_seq=first[-1].stream_seq + 1, limit=3)
    third = await transport.read(spec.name, subject, start_seq=second[-1].stream_seq + 1, limit=3)
    assert [m.data for m in first + second + third] == [b"%d" % i for i in range(7)]
    assert [len(first), len(second), len(third)] == [3, 3, 1]
    assert len(await transport.read(spec.name, subject, limit=1)) == 1


async def test_read_of_a_subject_with_nothing_stored_is_empty(transport, make_stream, names):
    spec = await make_stream()
    space = names.space()
    assert await transport.read(spec.name, f"{space}.a") == []
    await transport.publish(f"{space}.b", b"b")
    assert await transport.read(spec.name, f"{space}.a") == []
    # A subject the stream does not even take: nothing stored there either.
    assert await transport.read(spec.name, f"{names.space('other')}.a") == []


async def test_read_of_a_missing_stream_raises_not_found(transport, names):
    with pytest.raises(NotFoundError):
        await transport.read(names.stream("missing"), f"{names.space()}.a")


@pytest.mark.parametrize(
    ("stream", "subject", "options"),
    [
        ("bad.name", "a.b", {}),
        ("", "a.b", {}),
        ("S", "a..b", {}),
        ("S", "", {}),
        ("S", "a.>.b", {}),
        ("S", "a.b", {"start_seq": 0}),
        ("S", "a.b", {"limit": 0}),
        ("S", "a.b", {"limit": -5}),
    ],
)
async def test_read_refuses_bad_arguments(transport, stream, subject, options):
    with pytest.raises(InvalidSpecError):
        await transport.read(stream, subject, **options)


async def test_read_of_thousands_in_pages(transport, make_stream, names):
    spec = await make_stream()
    space = names.space()
    # 2,500 messages on "a", each followed by one on "b" that must not be read.
    messages = []
    for i in range(2500):
        messages.append(OutMessage(f"{space}.a", b"a%d" % i))
        messages.append(OutMessage(f"{space}.b", b"b%d" % i))
    seqs = await publish_many(transport, messages)
    with trio.fail_after(60):
        got, sizes = await read_all(transport, spec.name, f"{space}.a", page=1000)
        whole = await transport.read(spec.name, f"{space}.a", limit=5000)
    assert sizes == [1000, 1000, 500]
    assert [m.data for m in got] == [b"a%d" % i for i in range(2500)]
    assert [m.stream_seq for m in got] == seqs[::2]
    assert [m.data for m in whole] == [m.data for m in got]


async def test_read_of_large_messages_beyond_one_batch(transport, make_stream, names):
    # Twelve messages of 800 KB: more than the JetStream transport takes in
    # one batch of a direct get, so the page is read in several.
    spec = await make_stream()
    subject = f"{names.space()}.big"
    bodies = [bytes([i]) * 800_000 for i in range(12)]
    for body in bodies:
        await transport.publish(subject, body)
    with trio.fail_after(60):
        got = await transport.read(spec.name, subject, limit=100)
        page = await transport.read(spec.name, subject, start_seq=3, limit=7)
    assert [m.data for m in got] == bodies
    assert [m.stream_seq for m in page] == list(range(3, 10))


async def test_read_creates_no_consumer_and_moves_none(transport, make_stream, names):
    spec = await make_stream(retention=Retention.WORK_QUEUE)
    subject = f"{names.space()}.a"
    for i in range(4):
        await transport.publish(subject, b"%d" % i)
    for _ in range(50):
        assert len(await transport.read(spec.name, subject, limit=3)) == 3
    assert await consumer_count(transport, spec.name) == 0
    with trio.fail_after(10):
        async with transport.consume(spec.name, ConsumerSpec(durable=names.durable())) as inbox:
            first = await inbox.receive()
            await first.ack()
            # The consumer got the first message, however often it was read.
            assert first.data == b"0"
            for _ in range(3):
                await (await inbox.receive()).ack()
    # On a work queue an acknowledged message is gone for reads too. Acks
    # travel on their own (JetStream batches them), so that may take a moment,
    # and the broker tells nobody when it happens: poll.
    with trio.fail_after(10):
        while await transport.read(spec.name, subject):  # noqa: ASYNC110
            await trio.sleep(0.05)


async def test_holds_looks_up_one_sequence(transport, make_stream, names):
    spec = await make_stream(retention=Retention.WORK_QUEUE)
    subject = f"{names.space()}.a"
    seqs = [(await transport.publish(subject, b"%d" % i)).seq for i in range(3)]
    assert [await transport.holds(spec.name, seq) for seq in seqs] == [True] * 3
    assert not await transport.holds(spec.name, seqs[-1] + 1)  # not yet stored
    with trio.fail_after(10):
        async with transport.consume(spec.name, ConsumerSpec(durable=names.durable())) as inbox:
            await (await inbox.receive()).ack()
            await (await inbox.receive()).ack()
        # Acked on a work queue: gone. Acks travel on their own: poll.
        while await transport.holds(spec.name, seqs[1]):  # noqa: ASYNC110
            await trio.sleep(0.05)
    assert not await transport.holds(spec.name, seqs[0])
    assert await transport.holds(spec.name, seqs[2])
    with pytest.raises(NotFoundError):
        await transport.holds(f"{spec.name}_none", 1)
    for bad_stream, bad_seq in ((spec.name, 0), (spec.name, -1), ("a.b", 1), ("", 1)):
        with pytest.raises(InvalidSpecError):
            await transport.holds(bad_stream, bad_seq)


async def test_read_skips_messages_removed_by_a_limit(transport, make_stream, names):
    spec = await make_stream(max_msgs=3)
    subject = f"{names.space()}.a"
    for i in range(5):
        await transport.publish(subject, b"%d" % i)
    got = await transport.read(spec.name, subject)
    assert [(m.data, m.stream_seq) for m in got] == [(b"2", 3), (b"3", 4), (b"4", 5)]
    assert [m.stream_seq for m in await transport.read(spec.name, subject, start_seq=2)] == [
        3,
        4,
        5,
    ]


async def test_delayed_message_is_read_once_due(clock, transport, make_stream, names):
    spec = await make_stream(allow_delayed=True)
    subject = f"{names.space()}.timer"
    due = transport.now() + 1.5
    await transport.publish(subject, b"later", deliver_at=due, msg_id="later")
    await transport.publish(subject, b"now")
    # Nothing of the pending timer, even to a read of every subject.
    assert [m.data for m in await transport.read(spec.name, ">")] == [b"now"]
    with trio.fail_after(20):
        while True:  # JetStream's scheduler may be a little late
            got = await transport.read(spec.name, subject)
            if len(got) == 2:
                break
            await trio.sleep(0.1)
    assert transport.now() >= due - 0.05
    assert sorted(m.data for m in got) == [b"later", b"now"]
    later = next(m for m in got if m.data == b"later")
    assert float(later.headers[DELIVER_AT_HEADER]) == pytest.approx(due, abs=1e-3)


async def test_a_cancelled_read_leaves_the_transport_usable(transport, make_stream, names):
    spec = await make_stream()
    subject = f"{names.space()}.a"
    await publish_many(transport, [OutMessage(subject, b"%d" % i) for i in range(1000)])
    with trio.move_on_after(0):
        await transport.read(spec.name, subject)
    got = await transport.read(spec.name, subject, limit=2000)
    assert len(got) == 1000


async def test_read_after_aclose_raises_transport_closed(transport_url, names):
    async with open_transport(transport_url) as transport:
        await transport.aclose()
        with pytest.raises(TransportClosedError):
            await transport.read(names.stream(), f"{names.space()}.a")


# -- JetStream: one message per request --------------------------------------------


async def _without_direct_get(transport, stream):
    """Turn direct gets off on an existing stream, as a stream made elsewhere may be."""
    config = (await transport._api(f"STREAM.INFO.{stream}"))["config"]
    config["allow_direct"] = False
    await transport._api(f"STREAM.UPDATE.{stream}", config)


@pytest.mark.jetstream
@pytest.mark.parametrize("how", ["old server", "stream without direct get"])
async def test_read_message_by_message(nats_url, names, how):
    async with open_transport(nats_url) as transport:
        spec = StreamSpec(name=names.stream(), subjects=(f"{names.space()}.>",))
        await transport.ensure_stream(spec)
        if how == "old server":
            transport._supports_batch_get = False
        else:
            await _without_direct_get(transport, spec.name)
        space = names.space()
        await publish_many(
            transport,
            [
                OutMessage(f"{space}.{'ab'[i % 2]}", b"%d" % i, headers={"X-I": str(i)})
                for i in range(60)
            ],
        )
        with trio.fail_after(30):
            got, sizes = await read_all(transport, spec.name, f"{space}.a", page=20)
            tail = await transport.read(spec.name, f"{space}.b", start_seq=57, limit=5)
            empty = await transport.read(spec.name, f"{space}.c")
            with pytest.raises(NotFoundError):
                await transport.read(names.stream("missing"), f"{space}.a")
    assert sizes == [20, 10]
    assert [m.data for m in got] == [b"%d" % i for i in range(0, 60, 2)]
    assert [m.stream_seq for m in got] == list(range(1, 61, 2))
    assert [m.headers["X-I"] for m in got] == [str(i) for i in range(0, 60, 2)]
    assert [m.stream_seq for m in tail] == [58, 60]
    assert empty == []


# -- JetStream: batches, checked message by message (no server) --------------------


class _FakeReplies:
    """Answers each request with the next canned batch, recording where it began."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.asked = []

    async def start(self, subject, payload, headers=None, *, collect=None):
        self.asked.append(json.loads(payload)["seq"])
        messages, end = self.answers.pop(0)
        collect.extend(messages)
        future = asyncio.get_running_loop().create_future()
        future.set_result(end)
        return future


def _stored(seq, previous, subject="s.a"):
    headers = {
        "Nats-Stream": "S",
        "Nats-Subject": subject,
        "Nats-Sequence": str(seq),
        "Nats-Time-Stamp": "2026-01-01T00:00:00.5Z",
        "Nats-Num-Pending": "0",
        "Nats-Last-Sequence": str(previous),
        "X-Own": str(seq),
    }
    return Msg(None, subject="_INBOX.x.1", data=b"%d" % seq, headers=headers)


def _end(last, pending=0):
    headers = {"Status": "204", "Description": "EOB", "Nats-Num-Pending": str(pending)}
    headers["Nats-Last-Sequence"] = str(last)
    return Msg(None, subject="_INBOX.x.1", headers=headers)


def _read_with(answers, limit=10):
    replies = _FakeReplies(answers)
    reader = _Reader(replies, "S", "s.>", 1, limit, direct=True)
    return asyncio.run(reader.run()), replies.asked


def test_a_message_lost_from_a_batch_is_asked_for_again():
    first = [_stored(1, 0), _stored(2, 1), _stored(4, 3)]  # 3 went missing
    again = [_stored(3, 0), _stored(4, 3), _stored(5, 4)]
    found, asked = _read_with([(first, _end(5)), (again, _end(5))])
    assert [m.stream_seq for m in found] == [1, 2, 3, 4, 5]
    assert asked == [1, 3]
    assert found[0].headers == {"X-Own": "1"}
    assert found[0].time == pytest.approx(1767225600.5)


def test_a_batch_cut_short_by_size_is_continued():
    found, asked = _read_with(
        [([_stored(1, 0), _stored(2, 1)], _end(2, pending=2)), ([_stored(3, 0)], _end(3))]
    )
    assert [m.stream_seq for m in found] == [1, 2, 3]
    assert asked == [1, 3]


def test_pending_schedules_are_not_read():
    batch = [_stored(1, 0), _stored(2, 1, subject="_sched.S.t1"), _stored(3, 2)]
    found, _ = _read_with([(batch, _end(3))])
    assert [m.subject for m in found] == ["s.a", "s.a"]


def test_a_batch_that_lost_everything_raises():
    with pytest.raises(TransportError, match="lost"):
        _read_with([([], _end(4))])


@pytest.mark.parametrize(
    ("stamp", "epoch"),
    [
        ("2026-01-01T00:00:00Z", 1767225600.0),
        ("2026-01-01T00:00:00.123456789Z", 1767225600.123456789),
        ("2026-01-01T01:00:00.25+01:00", 1767225600.25),
    ],
)
def test_server_time_stamps_are_read_to_the_nanosecond(stamp, epoch):
    assert _epoch(stamp) == pytest.approx(epoch, abs=1e-6)
