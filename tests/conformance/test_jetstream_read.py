"""JetStream only: ``Transport.read`` message by message, and the batches' bookkeeping.

The JetStream transport reads a page with one batched direct get, or message
by message where the server or the stream does not offer that. The first test
runs the second way on purpose; the others check the batches' bookkeeping
against canned replies (no server). The conformance suite (``transport.testing``)
covers ``read`` itself on both transports.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import trio
from nats.aio.msg import Msg

from transport import NotFoundError, OutMessage, StreamSpec, TransportError, open_transport
from transport.jetstream._read import on_the_loop
from transport.jscore import PageReader, epoch
from transport.testing._read import publish_many, read_all

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
    reader = PageReader(on_the_loop(replies), "S", "s.>", 1, limit, direct=True)
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
    ("stamp", "seconds"),
    [
        ("2026-01-01T00:00:00Z", 1767225600.0),
        ("2026-01-01T00:00:00.123456789Z", 1767225600.123456789),
        ("2026-01-01T01:00:00.25+01:00", 1767225600.25),
    ],
)
def test_server_time_stamps_are_read_to_the_nanosecond(stamp, seconds):
    assert epoch(stamp) == pytest.approx(seconds, abs=1e-6)
