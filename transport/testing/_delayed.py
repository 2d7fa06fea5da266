"""Delayed delivery (durable timers): ``deliver_at`` on ``Transport.now()``'s clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from .. import (
    DELIVER_AT_HEADER,
    ConsumerSpec,
    InvalidSpecError,
    OutMessage,
    Retention,
    Transport,
)
from ._fixtures import Clock, Inbox, MakeStream, Names, SuiteBase

#: How much earlier than due a delayed message may come (clock granularity).
EARLY = 0.05
#: How much later than due it may come (JetStream's scheduler is coarser).
LATE = 3.0


class DelayedTests(SuiteBase):
    """Delayed delivery (durable timers): ``deliver_at`` on ``Transport.now()``'s clock."""

    @pytest.fixture
    async def timers(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> AsyncIterator[Inbox]:
        """The inbox of a new durable on a new stream that allows delayed delivery."""
        spec = await make_stream(allow_delayed=True)
        async with transport.consume(spec.name, ConsumerSpec(durable=names.durable())) as inbox:
            yield inbox

    @pytest.mark.parametrize("delay", [2.0, -60.0], ids=["future", "past"])
    async def test_delayed_message_is_delivered_when_due(
        self, clock: Clock, transport: Transport, names: Names, timers: Inbox, delay: float
    ) -> None:
        subject = f"{names.space()}.timer"
        with trio.fail_after(20):
            published = transport.now()
            due = published + delay
            ack = await transport.publish(
                subject, b"fired", deliver_at=due, headers={"X-Timer": "t1"}
            )
            delivery = await timers.receive()
            arrived = transport.now()
            await delivery.ack()
        # Due in the past: at once.
        assert max(due, published) - EARLY <= arrived <= max(due, published) + LATE
        assert ack.stream == names.stream()
        assert (delivery.subject, delivery.data, delivery.num_delivered) == (subject, b"fired", 1)
        assert delivery.headers["X-Timer"] == "t1"
        assert float(delivery.headers[DELIVER_AT_HEADER]) == pytest.approx(due, abs=1e-3)

    async def test_delayed_messages_come_in_deliver_at_order(
        self, clock: Clock, transport: Transport, names: Names, timers: Inbox
    ) -> None:
        subject = f"{names.space()}.a"
        with trio.fail_after(20):
            now = transport.now()
            await transport.publish_many(
                [
                    OutMessage(subject, b"third", deliver_at=now + 5.0),
                    OutMessage(subject, b"first", deliver_at=now + 1.0),
                    OutMessage(subject, b"second", deliver_at=now + 3.0),
                ]
            )
            got = [await timers.receive() for _ in range(3)]
            arrived = transport.now()
        assert [d.data for d in got] == [b"first", b"second", b"third"]
        assert arrived >= now + 5.0 - EARLY

    async def test_delayed_publish_with_a_repeated_msg_id_is_delivered_once(
        self, clock: Clock, transport: Transport, names: Names, timers: Inbox
    ) -> None:
        subject = f"{names.space()}.a"
        due = transport.now() + 1.0
        with trio.fail_after(20):
            first = await transport.publish(subject, b"once", msg_id="timer-1", deliver_at=due)
            again = await transport.publish(subject, b"once", msg_id="timer-1", deliver_at=due)
            assert (again.seq, again.duplicate) == (first.seq, True)
            await transport.publish(subject, b"marker", deliver_at=due + 2.0)
            got = [await timers.receive(), await timers.receive()]
        assert [d.data for d in got] == [b"once", b"marker"]

    async def test_publish_with_deliver_at_to_a_stream_without_allow_delayed_raises_invalid_spec(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        await make_stream()
        with pytest.raises(InvalidSpecError):
            await transport.publish(f"{names.space()}.a", b"", deliver_at=transport.now() + 1.0)
        with pytest.raises(InvalidSpecError):
            await transport.publish_many(
                [OutMessage(f"{names.space()}.a", b"", deliver_at=transport.now() + 1.0)]
            )

    @pytest.mark.parametrize("retention", [Retention.LIMITS, Retention.WORK_QUEUE])
    async def test_delayed_messages_wait_while_later_ones_pass_on_the_subject_published(
        self,
        clock: Clock,
        transport: Transport,
        make_stream: MakeStream,
        names: Names,
        retention: Retention,
    ) -> None:
        spec = await make_stream(allow_delayed=True, retention=retention)
        subject = f"{names.space()}.a"
        with trio.fail_after(20):
            async with transport.consume(spec.name, ConsumerSpec(durable=names.durable())) as inbox:
                now = transport.now()
                await transport.publish(subject, b"later", deliver_at=now + 2.0)
                await transport.publish(subject, b"now")
                await transport.publish(subject, b"sooner", deliver_at=now + 1.0)
                got = []
                for _ in range(3):
                    delivery = await inbox.receive()
                    got.append(delivery)
                    await delivery.ack()
        assert [d.data for d in got] == [b"now", b"sooner", b"later"]
        assert DELIVER_AT_HEADER not in got[0].headers
        # Only the subject published on: nothing of how the broker keeps the timer.
        assert {d.subject for d in got} == {subject}

    async def test_delayed_message_on_a_work_queue_stream_is_gone_once_acked(
        self, clock: Clock, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream(allow_delayed=True, retention=Retention.WORK_QUEUE)
        consumer = ConsumerSpec(durable=names.durable())
        subject = f"{names.space()}.a"
        with trio.fail_after(20):
            async with transport.consume(spec.name, consumer) as inbox:
                await transport.publish(subject, b"timer", deliver_at=transport.now() + 1.0)
                delivery = await inbox.receive()
                await delivery.ack()
            marker = await transport.publish(subject, b"marker")
            async with transport.consume(spec.name, consumer) as inbox:
                first = await inbox.receive()
        assert delivery.data == b"timer"
        assert (first.stream_seq, first.data) == (marker.seq, b"marker")

    async def test_delayed_message_published_while_no_context_is_open_waits_for_one(
        self, clock: Clock, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream(allow_delayed=True)
        consumer = ConsumerSpec(durable=names.durable())
        with trio.fail_after(20):
            async with transport.consume(spec.name, consumer):
                pass
            due = transport.now() + 1.0
            await transport.publish(f"{names.space()}.a", b"timer", deliver_at=due)
            await trio.sleep(2.0)
            async with transport.consume(spec.name, consumer) as inbox:
                delivery = await inbox.receive()
        assert delivery.data == b"timer"
        assert float(delivery.headers[DELIVER_AT_HEADER]) == pytest.approx(due, abs=1e-3)

    async def test_delayed_messages_with_ids_alike_but_for_punctuation_all_arrive(
        self, clock: Clock, transport: Transport, names: Names, timers: Inbox
    ) -> None:
        # These ids once shared one schedule on JetStream (each of ".@~_" became
        # "_"), so only the last one published was delivered.
        ids = ["t.nap@1.1", "t.nap_1.1", "t.nap~1.1", "t_nap_1_1", "t.nap.1.1"]
        due = transport.now() + 1.0
        with trio.fail_after(20):
            for msg_id in ids:
                await transport.publish(
                    f"{names.space()}.timer", msg_id.encode(), msg_id=msg_id, deliver_at=due
                )
            got = set()
            for _ in ids:
                delivery = await timers.receive()
                await delivery.ack()
                got.add(delivery.data.decode())
        assert got == set(ids)
