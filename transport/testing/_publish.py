"""Publishing: receipts, deduplication by message id, batches."""

from __future__ import annotations

import pytest
import trio

from .. import ConsumerSpec, InvalidSpecError, NotFoundError, OutMessage, PubAck, Transport
from ._fixtures import Clock, MakeStream, Names, SuiteBase


class PublishTests(SuiteBase):
    """Publishing: receipts, deduplication by message id, batches."""

    async def test_publish_returns_receipts_with_increasing_seqs(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream()
        acks = [await transport.publish(f"{names.space()}.a", b"%d" % i) for i in range(5)]
        assert all(ack.stream == spec.name and not ack.duplicate for ack in acks)
        assert [ack.seq for ack in acks] == [1, 2, 3, 4, 5]

    async def test_publish_with_a_repeated_msg_id_is_a_duplicate_with_the_same_seq(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream()
        subject = f"{names.space()}.a"
        first = await transport.publish(subject, b"once", msg_id="m-1")
        again = await transport.publish(subject, b"once", msg_id="m-1")
        assert first == PubAck(spec.name, 1, duplicate=False)
        assert again == PubAck(spec.name, 1, duplicate=True)
        # The duplicate stored nothing: the next message takes the next seq.
        assert await transport.publish(subject, b"next", msg_id="m-2") == PubAck(spec.name, 2)
        with trio.fail_after(10):
            async with transport.consume(spec.name, ConsumerSpec(durable=names.durable())) as inbox:
                got = [await inbox.receive() for _ in range(2)]
        assert [(d.stream_seq, d.data) for d in got] == [(1, b"once"), (2, b"next")]

    async def test_msg_id_is_forgotten_after_the_duplicate_window(
        self, clock: Clock, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream(duplicate_window=1.0)
        subject = f"{names.space()}.a"
        assert await transport.publish(subject, b"", msg_id="m") == PubAck(spec.name, 1)
        assert (await transport.publish(subject, b"", msg_id="m")).duplicate
        # JetStream prunes its id table on a timer, so allow up to twice the window.
        await trio.sleep(2.5)
        assert await transport.publish(subject, b"", msg_id="m") == PubAck(spec.name, 2)

    async def test_publish_to_a_wildcard_subject_raises_invalid_spec(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        await make_stream()
        for subject in (f"{names.space()}.*", f"{names.space()}.>", f"{names.space()}.a b", ""):
            with pytest.raises(InvalidSpecError):
                await transport.publish(subject, b"")

    async def test_publish_many_returns_receipts_in_order_for_a_thousand_messages(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        # Alternate between two streams so that a receipt can only match its message
        # if the receipts really are in the order of the messages.
        one = await make_stream("1")
        two = await make_stream("2")
        messages = [
            OutMessage(f"{names.space(str(1 + i % 2))}.m", b"%d" % i, msg_id=f"id-{i}")
            for i in range(1000)
        ]
        with trio.fail_after(30):
            acks = await transport.publish_many(messages)
        assert [ack.stream for ack in acks] == [one.name, two.name] * 500
        assert [ack.seq for ack in acks[0::2]] == list(range(1, 501))
        assert [ack.seq for ack in acks[1::2]] == list(range(1, 501))
        assert not any(ack.duplicate for ack in acks)
        with trio.fail_after(30):
            async with transport.consume(two.name, ConsumerSpec(durable=names.durable())) as inbox:
                got = [await inbox.receive() for _ in range(500)]
                for delivery in got:
                    await delivery.ack()
        assert [d.data for d in got] == [b"%d" % i for i in range(1, 1000, 2)]
        assert [d.stream_seq for d in got] == list(range(1, 501))

    async def test_publish_many_of_nothing_returns_nothing(self, transport: Transport) -> None:
        assert await transport.publish_many([]) == []

    async def test_publish_many_again_with_the_same_msg_ids_stores_nothing(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        await make_stream()
        messages = [OutMessage(f"{names.space()}.a", b"%d" % i, msg_id=f"m{i}") for i in range(20)]
        first = await transport.publish_many(messages)
        again = await transport.publish_many(messages)
        assert [ack.seq for ack in again] == [ack.seq for ack in first]
        assert all(ack.duplicate for ack in again)

    async def test_publish_many_with_a_msg_id_twice_in_one_batch_stores_it_once(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream()
        subject = f"{names.space()}.a"
        acks = await transport.publish_many(
            [OutMessage(subject, b"1", msg_id="m"), OutMessage(subject, b"1", msg_id="m")]
        )
        assert acks == [PubAck(spec.name, 1), PubAck(spec.name, 1, duplicate=True)]

    async def test_publish_many_with_headers_and_without_msg_ids(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream()
        messages = [
            OutMessage(f"{names.space()}.a", b"1", headers={"X-Kind": "first"}),
            OutMessage(f"{names.space()}.b", b"2"),
        ]
        assert await transport.publish_many(messages) == [
            PubAck(spec.name, 1),
            PubAck(spec.name, 2),
        ]
        with trio.fail_after(10):
            async with transport.consume(spec.name, ConsumerSpec(durable=names.durable())) as inbox:
                first = await inbox.receive()
                second = await inbox.receive()
        assert (first.subject, first.data, first.headers.get("X-Kind")) == (
            f"{names.space()}.a",
            b"1",
            "first",
        )
        assert (second.subject, second.data) == (f"{names.space()}.b", b"2")

    async def test_publish_many_with_one_bad_message_publishes_the_others_then_raises(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream()
        messages = [
            OutMessage(f"{names.space()}.a", b"before"),
            OutMessage(f"{names.space('nobody')}.a", b"lost"),
            OutMessage(f"{names.space()}.a", b"after"),
        ]
        with pytest.raises(NotFoundError):
            await transport.publish_many(messages)
        with trio.fail_after(10):
            async with transport.consume(spec.name, ConsumerSpec(durable=names.durable())) as inbox:
                got = [await inbox.receive() for _ in range(2)]
        assert sorted(d.data for d in got) == [b"after", b"before"]
        # Nothing else was stored.
        assert (await transport.publish(f"{names.space()}.a", b"")).seq == 3
