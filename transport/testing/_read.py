"""Reading stored messages by subject, in pages, without a consumer (``Transport.read``)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio

from .. import (
    DELIVER_AT_HEADER,
    ConsumerSpec,
    InvalidSpecError,
    NotFoundError,
    OutMessage,
    Retention,
    StoredMessage,
    StreamSpec,
    Transport,
    TransportClosedError,
)
from ._fixtures import Clock, Connect, CountConsumers, MakeStream, Names, SuiteBase


async def publish_many(
    transport: Transport, messages: Sequence[OutMessage], chunk: int = 500
) -> list[int]:
    """Publish ``messages`` in pipelined chunks; return their sequences."""
    seqs: list[int] = []
    for i in range(0, len(messages), chunk):
        seqs += [ack.seq for ack in await transport.publish_many(messages[i : i + chunk])]
    return seqs


async def read_all(
    transport: Transport, stream: str, subject: str, *, page: int
) -> tuple[list[StoredMessage], list[int]]:
    """Every message on ``subject``, page by page; also the pages' lengths."""
    found: list[StoredMessage] = []
    sizes: list[int] = []
    start = 1
    while True:
        got = await transport.read(stream, subject, start_seq=start, limit=page)
        sizes.append(len(got))
        found += got
        if len(got) < page:
            return found, sizes
        start = got[-1].stream_seq + 1


async def alternating_stream(
    transport: Transport, make_stream: MakeStream, names: Names
) -> tuple[StreamSpec, str]:
    """A new stream holding ``b"0"`` to ``b"5"`` (sequences 1 to 6), published to
    ``{space}.a`` and ``{space}.b`` in turn; its spec and its subject space."""
    spec = await make_stream()
    space = names.space()
    for i in range(6):
        await transport.publish(f"{space}.{'ab'[i % 2]}", b"%d" % i)
    return spec, space


class ReadTests(SuiteBase):
    """``read`` and ``holds``: stored messages looked up without a consumer."""

    async def test_read_returns_the_messages_of_the_subject_in_order(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
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

    async def test_read_leaves_out_the_other_subjects(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec, space = await alternating_stream(transport, make_stream, names)
        await transport.publish(f"{space}.a.deeper", b"deeper")
        a = await transport.read(spec.name, f"{space}.a")
        b = await transport.read(spec.name, f"{space}.b")
        assert [(m.data, m.stream_seq) for m in a] == [(b"0", 1), (b"2", 3), (b"4", 5)]
        assert [(m.data, m.stream_seq) for m in b] == [(b"1", 2), (b"3", 4), (b"5", 6)]

    async def test_read_takes_wildcards(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
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

    async def test_read_starts_at_start_seq(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream()
        space = names.space()
        for i in range(1, 9):
            await transport.publish(f"{space}.{'ab'[i % 2]}", b"%d" % i)
        # Sequence 3 is on "b": the read starts at the next "a" message.
        got = await transport.read(spec.name, f"{space}.a", start_seq=3)
        assert [m.stream_seq for m in got] == [4, 6, 8]
        assert [
            m.stream_seq for m in await transport.read(spec.name, f"{space}.a", start_seq=8)
        ] == [8]
        assert await transport.read(spec.name, f"{space}.a", start_seq=9) == []
        assert await transport.read(spec.name, f"{space}.a", start_seq=10**9) == []

    async def test_read_returns_at_most_limit_and_pages_on(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream()
        subject = f"{names.space()}.a"
        for i in range(7):
            await transport.publish(subject, b"%d" % i)
        first = await transport.read(spec.name, subject, limit=3)
        second = await transport.read(
            spec.name, subject, start_seq=first[-1].stream_seq + 1, limit=3
        )
        third = await transport.read(
            spec.name, subject, start_seq=second[-1].stream_seq + 1, limit=3
        )
        assert [m.data for m in first + second + third] == [b"%d" % i for i in range(7)]
        assert [len(first), len(second), len(third)] == [3, 3, 1]
        assert len(await transport.read(spec.name, subject, limit=1)) == 1

    async def test_read_of_a_subject_with_nothing_stored_is_empty(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream()
        space = names.space()
        assert await transport.read(spec.name, f"{space}.a") == []
        await transport.publish(f"{space}.b", b"b")
        assert await transport.read(spec.name, f"{space}.a") == []
        # A subject the stream does not even take: nothing stored there either.
        assert await transport.read(spec.name, f"{names.space('other')}.a") == []

    async def test_read_of_a_missing_stream_raises_not_found(
        self, transport: Transport, names: Names
    ) -> None:
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
    async def test_read_refuses_bad_arguments(
        self, transport: Transport, stream: str, subject: str, options: dict[str, int]
    ) -> None:
        with pytest.raises(InvalidSpecError):
            await transport.read(stream, subject, **options)

    async def test_read_of_thousands_in_pages(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
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

    async def test_read_of_large_messages_beyond_one_batch(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
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

    async def test_read_creates_no_consumer_and_moves_none(
        self,
        transport: Transport,
        make_stream: MakeStream,
        names: Names,
        count_consumers: CountConsumers | None,
    ) -> None:
        spec = await make_stream(retention=Retention.WORK_QUEUE)
        subject = f"{names.space()}.a"
        for i in range(4):
            await transport.publish(subject, b"%d" % i)
        for _ in range(50):
            assert len(await transport.read(spec.name, subject, limit=3)) == 3
        if count_consumers is not None:
            assert await count_consumers(transport, spec.name) == 0
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

    async def test_holds_looks_up_one_sequence(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
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

    async def test_purge_removes_the_messages_of_one_subject(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec, space = await alternating_stream(transport, make_stream, names)
        assert await transport.purge(spec.name, f"{space}.a") == 3
        left = await transport.read(spec.name, f"{space}.>")
        assert [(m.subject, m.data) for m in left] == [
            (f"{space}.b", b"1"),
            (f"{space}.b", b"3"),
            (f"{space}.b", b"5"),
        ]
        assert await transport.purge(spec.name, f"{space}.a") == 0
        assert await transport.purge(spec.name, f"{space}.*") == 3
        assert await transport.read(spec.name, f"{space}.>") == []
        with pytest.raises(NotFoundError):
            await transport.purge(f"{spec.name}_none", f"{space}.a")
        for bad_stream, bad_subject in ((spec.name, "a..b"), ("a.b", "x"), ("", "x")):
            with pytest.raises(InvalidSpecError):
                await transport.purge(bad_stream, bad_subject)

    async def test_read_skips_messages_removed_by_a_limit(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
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

    async def test_delayed_message_is_read_once_due(
        self, clock: Clock, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
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

    async def test_a_cancelled_read_leaves_the_transport_usable(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream()
        subject = f"{names.space()}.a"
        await publish_many(transport, [OutMessage(subject, b"%d" % i) for i in range(1000)])
        with trio.move_on_after(0):
            await transport.read(spec.name, subject)
        got = await transport.read(spec.name, subject, limit=2000)
        assert len(got) == 1000

    async def test_read_after_aclose_raises_transport_closed(
        self, connect: Connect, names: Names
    ) -> None:
        async with connect() as transport:
            await transport.aclose()
            with pytest.raises(TransportClosedError):
                await transport.read(names.stream(), f"{names.space()}.a")
