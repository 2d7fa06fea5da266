"""Durable pull consumers delivering into Trio channels.

Timing tests request ``clock``: virtual time where the transport keeps Trio's
clock, short real durations on a real broker. Times are measured from just before the action that
starts the broker's timer, so "not before" checks are conservative.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import pytest
import trio

from .. import (
    ConsumerLag,
    ConsumerSpec,
    Delivery,
    InvalidSpecError,
    NotFoundError,
    OutMessage,
    Retention,
    Settlement,
    Transport,
)
from ._fixtures import Clock, Inbox, MakeStream, Names, SuiteBase

#: How much earlier than due a timed redelivery may come (clock granularity).
EARLY = 0.05
#: How much later than due a timed redelivery may come.
LATE = 3.0


async def assert_nothing_else_pending(transport: Transport, inbox: Inbox, subject: str) -> None:
    """Show that nothing but a probe reaches ``inbox`` during one ack wait.

    The probe is left unacknowledged, so it comes back one ack wait later,
    after anything that was due before that. If the next two deliveries are the
    probe, nothing else was pending. The consumer's ack wait must be short.
    """
    probe = await transport.publish(subject, b"probe")
    first = await inbox.receive()
    again = await inbox.receive()
    assert (first.stream_seq, again.stream_seq) == (probe.seq, probe.seq)
    assert (first.num_delivered, again.num_delivered) == (1, 2)
    await again.ack()


class ConsumeOne(Protocol):
    """``async with consume_one(data, **options) as (inbox, first)``.

    A new stream holding one message, ``data`` on ``<names.space()>.a``,
    consumed by a new durable (``names.durable()``, with the
    :class:`ConsumerSpec` ``options``): the inbox and the message's first
    delivery.
    """

    def __call__(
        self, data: bytes, **options: Any
    ) -> AbstractAsyncContextManager[tuple[Inbox, Delivery]]: ...


#: What a test does to give up on a delivery: ``await give_up(inbox, first)``.
GiveUp = Callable[[Inbox, Delivery], Awaitable[None]]


async def _term(inbox: Inbox, first: Delivery) -> None:
    await first.term()
    assert first.settled is Settlement.TERM


async def _nak_up_to_max_deliver(inbox: Inbox, first: Delivery) -> None:
    await first.nak()
    second = await inbox.receive()
    await second.nak()
    assert (first.num_delivered, second.num_delivered) == (1, 2)


async def _outwait_up_to_max_deliver(inbox: Inbox, first: Delivery) -> None:
    # Unfinished, the delivery comes back once its ack wait is over.
    second = await inbox.receive()
    assert (first.stream_seq, second.num_delivered) == (second.stream_seq, 2)


class ConsumeTests(SuiteBase):
    """``consume``: durable pull consumers, deliveries and how each is finished."""

    @pytest.fixture
    def consume_one(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> ConsumeOne:
        @asynccontextmanager
        async def consume_one(data: bytes, **options: Any) -> AsyncIterator[tuple[Inbox, Delivery]]:
            spec = await make_stream()
            await transport.publish(f"{names.space()}.a", data)
            consumer = ConsumerSpec(durable=names.durable(), **options)
            async with transport.consume(spec.name, consumer) as inbox:
                yield inbox, await inbox.receive()

        return consume_one

    async def test_consume_delivers_messages_in_order_with_their_fields(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream()
        space = names.space()
        for i in range(5):
            await transport.publish(f"{space}.m.{i}", b"data %d" % i, headers={"X-Index": str(i)})
        with trio.fail_after(10):
            async with transport.consume(spec.name, ConsumerSpec(durable=names.durable())) as inbox:
                got = [await inbox.receive() for _ in range(5)]
                for delivery in got:
                    assert delivery.settled is None
                    await delivery.ack()
                    assert delivery.settled is Settlement.ACK
        assert [d.subject for d in got] == [f"{space}.m.{i}" for i in range(5)]
        assert [d.data for d in got] == [b"data %d" % i for i in range(5)]
        assert [d.headers.get("X-Index") for d in got] == [str(i) for i in range(5)]
        assert [d.num_delivered for d in got] == [1] * 5
        assert [d.stream_seq for d in got] == [1, 2, 3, 4, 5]

    async def test_consumer_lag_counts_the_backlog_and_the_deliveries_awaiting_an_ack(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream(retention=Retention.WORK_QUEUE)
        space = names.space()
        consumer = ConsumerSpec(durable=names.durable(), filter_subjects=(f"{space}.a",))

        async def lag_becomes(expected: ConsumerLag) -> None:
            # The broker's counts change with no event to wait on: poll them.
            while await transport.consumer_lag(spec.name, consumer.durable) != expected:  # noqa: ASYNC110
                await trio.sleep(0.01)

        for i in range(5):
            await transport.publish(f"{space}.a", b"%d" % i)
        await transport.publish(f"{space}.b", b"not for this consumer")
        with trio.fail_after(10):
            async with transport.consume(spec.name, consumer) as inbox:
                got = [await inbox.receive() for _ in range(5)]
                await lag_becomes(ConsumerLag(pending=0, unacked=5))
                for delivery in got[:3]:
                    await delivery.ack()
                await lag_becomes(ConsumerLag(pending=0, unacked=2))
                for delivery in got[3:]:
                    await delivery.ack()
                await lag_becomes(ConsumerLag(pending=0, unacked=0))
            for i in range(2):
                await transport.publish(f"{space}.a", b"later %d" % i)
            await lag_becomes(ConsumerLag(pending=2, unacked=0))
        with pytest.raises(NotFoundError):
            await transport.consumer_lag(spec.name, names.durable("absent"))
        with pytest.raises(NotFoundError):
            await transport.consumer_lag(names.stream("absent"), consumer.durable)

    @pytest.mark.parametrize("retention", [Retention.LIMITS, Retention.WORK_QUEUE])
    async def test_a_durable_goes_on_after_what_it_acked_while_no_context_is_open(
        self, transport: Transport, make_stream: MakeStream, names: Names, retention: Retention
    ) -> None:
        spec = await make_stream(retention=retention)
        consumer = ConsumerSpec(durable=names.durable())
        for i in range(3):
            await transport.publish(f"{names.space()}.a", b"%d" % i)
        with trio.fail_after(10):
            async with transport.consume(spec.name, consumer) as inbox:
                for _ in range(3):
                    await (await inbox.receive()).ack()
            for i in range(3, 5):
                await transport.publish(f"{names.space()}.a", b"%d" % i)
            async with transport.consume(spec.name, consumer) as inbox:
                got = [await inbox.receive() for _ in range(2)]
        assert [(d.stream_seq, d.data, d.num_delivered) for d in got] == [
            (4, b"3", 1),
            (5, b"4", 1),
        ]

    async def test_a_delivery_says_when_its_message_was_stored(
        self, clock: Clock, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream()
        subject = f"{names.space()}.m"
        before = transport.now()
        await transport.publish(subject, b"early")
        await trio.sleep(1.0)
        stored = transport.now()
        await transport.publish(subject, b"late")
        with trio.fail_after(10):
            async with transport.consume(spec.name, ConsumerSpec(durable=names.durable())) as inbox:
                early, late = await inbox.receive(), await inbox.receive()
                await early.nak()
                again = await inbox.receive()
                for delivery in (early, late, again):
                    await delivery.ack()
        # Server and client clocks may differ by the granularity of either.
        assert before - EARLY <= early.stored_at <= stored
        assert stored - EARLY <= late.stored_at <= transport.now() + EARLY
        assert late.stored_at - early.stored_at >= 1.0 - EARLY
        # A redelivery keeps the time its message was stored.
        assert again.stored_at == early.stored_at

    async def test_nak_redelivers_the_message_with_num_delivered_2(
        self, consume_one: ConsumeOne
    ) -> None:
        with trio.fail_after(10):
            async with consume_one(b"again") as (inbox, first):
                await first.nak()
                assert first.settled is Settlement.NAK
                second = await inbox.receive()
                await second.ack()
        assert (first.stream_seq, first.num_delivered) == (1, 1)
        assert (second.stream_seq, second.num_delivered, second.data) == (1, 2, b"again")

    async def test_nak_with_delay_redelivers_not_before_the_delay(
        self, clock: Clock, transport: Transport, names: Names, consume_one: ConsumeOne
    ) -> None:
        with trio.fail_after(20):
            async with consume_one(b"later") as (inbox, first):
                naked_at = trio.current_time()
                await first.nak(delay=2.0)
                # Other messages are not held up by the delayed one.
                await transport.publish(f"{names.space()}.a", b"meanwhile")
                meanwhile = await inbox.receive()
                assert meanwhile.data == b"meanwhile"
                assert trio.current_time() - naked_at < 2.0
                await meanwhile.ack()
                again = await inbox.receive()
                waited = trio.current_time() - naked_at
                await again.ack()
        assert (again.stream_seq, again.num_delivered) == (1, 2)
        assert 2.0 - EARLY <= waited <= 2.0 + LATE

    async def test_unacknowledged_delivery_is_redelivered_after_ack_wait(
        self, clock: Clock, consume_one: ConsumeOne
    ) -> None:
        published_at = trio.current_time()
        with trio.fail_after(20):
            async with consume_one(b"forgotten", ack_wait=1.0) as (inbox, first):
                again = await inbox.receive()
                waited = trio.current_time() - published_at
                await again.ack()
        assert (first.num_delivered, again.num_delivered) == (1, 2)
        assert again.stream_seq == first.stream_seq
        assert 1.0 - EARLY <= waited <= 1.0 + LATE

    async def test_in_progress_restarts_the_ack_wait(
        self, clock: Clock, consume_one: ConsumeOne
    ) -> None:
        with trio.fail_after(20):
            async with consume_one(b"slow work", ack_wait=1.0) as (inbox, delivery):
                # Heartbeat for three ack waits: no redelivery meanwhile.
                for _ in range(6):
                    with trio.move_on_after(0.5):
                        early = await inbox.receive()
                        pytest.fail(f"redelivered while in progress: {early!r}")
                    await delivery.in_progress()
                last_beat = trio.current_time()
                # Once the heartbeats stop, the ack wait runs out again.
                again = await inbox.receive()
                waited = trio.current_time() - last_beat
                await again.ack()
        assert (again.stream_seq, again.num_delivered) == (delivery.stream_seq, 2)
        assert 1.0 - EARLY <= waited <= 1.0 + LATE

    @pytest.mark.parametrize(
        ("give_up", "max_deliver"),
        [
            pytest.param(_term, None, id="term"),
            pytest.param(_nak_up_to_max_deliver, 2, id="nak-up-to-max-deliver"),
            pytest.param(_outwait_up_to_max_deliver, 2, id="ack-wait-up-to-max-deliver"),
        ],
    )
    async def test_a_message_given_up_on_is_never_delivered_again(
        self,
        clock: Clock,
        transport: Transport,
        names: Names,
        consume_one: ConsumeOne,
        give_up: GiveUp,
        max_deliver: int | None,
    ) -> None:
        # max_deliver counts naks and ack wait expiries alike.
        with trio.fail_after(20):
            async with consume_one(b"poison", ack_wait=1.0, max_deliver=max_deliver) as (
                inbox,
                first,
            ):
                await give_up(inbox, first)
                await assert_nothing_else_pending(transport, inbox, f"{names.space()}.a")

    async def test_two_contexts_on_one_durable_share_the_messages(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream(retention=Retention.WORK_QUEUE)
        consumer = ConsumerSpec(durable=names.durable())
        count = 40
        seen: dict[str, list[int]] = {"a": [], "b": []}
        started = {"a": trio.Event(), "b": trio.Event()}
        all_seen = trio.Event()

        async def drain(name: str, other: str, inbox: Inbox) -> None:
            async for delivery in inbox:
                seen[name].append(delivery.stream_seq)
                assert delivery.num_delivered == 1
                if not started[name].is_set():
                    # Hold the first delivery until the other context has one too:
                    # neither may take everything.
                    started[name].set()
                    await started[other].wait()
                await delivery.ack()
                if len(seen["a"]) + len(seen["b"]) == count:
                    all_seen.set()

        with trio.fail_after(20):
            async with (
                transport.consume(spec.name, consumer, buffer=2) as a,
                transport.consume(spec.name, consumer, buffer=2) as b,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(drain, "a", "b", a)
                nursery.start_soon(drain, "b", "a", b)
                await transport.publish_many(
                    [OutMessage(f"{names.space()}.a", b"%d" % i) for i in range(count)]
                )
                await all_seen.wait()
                nursery.cancel_scope.cancel()
        assert seen["a"]
        assert seen["b"]
        assert sorted(seen["a"] + seen["b"]) == list(range(1, count + 1))

    async def test_consume_buffers_at_most_buffer_deliveries(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream(retention=Retention.WORK_QUEUE)
        consumer = ConsumerSpec(durable=names.durable())
        count, buffer = 100, 4
        acked: list[int] = []
        with trio.fail_after(30):
            async with transport.consume(spec.name, consumer, buffer=buffer) as idle:
                await transport.publish_many(
                    [OutMessage(f"{names.space()}.a", b"%d" % i) for i in range(count)]
                )
                # Nobody reads `idle`, so it may hold no more than its buffer (plus
                # at most one more buffer's worth in flight); a second context on
                # the same durable gets the rest.
                async with transport.consume(spec.name, consumer, buffer=64) as busy:
                    while len(acked) < count - 2 * buffer:
                        delivery = await busy.receive()
                        acked.append(delivery.stream_seq)
                        await delivery.ack()
                        assert idle.statistics().current_buffer_used <= buffer
                assert idle.statistics().current_buffer_used <= buffer
            # Whatever either context still held was handed back on exit.
            async with transport.consume(spec.name, consumer) as rest:
                while len(acked) < count:
                    delivery = await rest.receive()
                    acked.append(delivery.stream_seq)
                    await delivery.ack()
        assert sorted(acked) == list(range(1, count + 1))

    async def test_exiting_consume_hands_back_deliveries_at_once(
        self, clock: Clock, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream(retention=Retention.WORK_QUEUE)
        consumer = ConsumerSpec(durable=names.durable(), ack_wait=30.0)
        await transport.publish_many(
            [OutMessage(f"{names.space()}.a", b"%d" % i) for i in range(10)]
        )
        with trio.fail_after(10):
            async with transport.consume(spec.name, consumer, buffer=4) as first:
                # Two in hand and unfinished; more waiting in the channel.
                in_hand = [await first.receive(), await first.receive()]
        # Well before the 30 s ack wait, a new context gets every message.
        got = []
        with trio.move_on_after(5):
            async with transport.consume(spec.name, consumer, buffer=64) as second:
                for _ in range(10):
                    delivery = await second.receive()
                    got.append(delivery)
                    await delivery.ack()
        missing = sorted(set(range(1, 11)) - {d.stream_seq for d in got})
        assert not missing, f"not handed back on exit: {missing} (held {in_hand})"
        assert sorted(d.stream_seq for d in got) == list(range(1, 11))
        for held in in_hand:
            assert held.settled is Settlement.NAK
            again = next(d for d in got if d.stream_seq == held.stream_seq)
            assert again.num_delivered == 2

    async def test_consume_delivers_only_filter_subjects(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream()
        space = names.space()
        consumer = ConsumerSpec(
            durable=names.durable(), filter_subjects=(f"{space}.a.>", f"{space}.c")
        )
        for subject in ("a.1", "b.1", "c", "a.2", "d"):
            await transport.publish(f"{space}.{subject}", b"")
        with trio.fail_after(10):
            async with transport.consume(spec.name, consumer) as inbox:
                got = [await inbox.receive() for _ in range(3)]
        assert [(d.subject, d.stream_seq) for d in got] == [
            (f"{space}.a.1", 1),
            (f"{space}.c", 3),
            (f"{space}.a.2", 4),
        ]

    async def test_consume_on_a_missing_stream_raises_not_found(
        self, transport: Transport, names: Names
    ) -> None:
        with trio.fail_after(10), pytest.raises(NotFoundError):
            async with transport.consume(names.stream(), ConsumerSpec(durable=names.durable())):
                pytest.fail("consumed a stream that does not exist")

    async def test_consume_updates_an_existing_durable_to_the_spec(
        self, clock: Clock, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream()
        with trio.fail_after(20):
            async with transport.consume(
                spec.name, ConsumerSpec(durable=names.durable(), ack_wait=30.0)
            ):
                pass
            shorter = ConsumerSpec(durable=names.durable(), ack_wait=1.0)
            async with transport.consume(spec.name, shorter) as inbox:
                await transport.publish(f"{names.space()}.a", b"")
                first = await inbox.receive()
                with trio.fail_after(1.0 + LATE):
                    again = await inbox.receive()
                await again.ack()
        assert (again.stream_seq, again.num_delivered) == (first.stream_seq, 2)

    async def test_max_ack_pending_limits_unfinished_deliveries(
        self, clock: Clock, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream()
        consumer = ConsumerSpec(durable=names.durable(), max_ack_pending=2)
        await transport.publish_many(
            [OutMessage(f"{names.space()}.a", b"%d" % i) for i in range(5)]
        )
        with trio.fail_after(20):
            async with transport.consume(spec.name, consumer) as inbox:
                held = [await inbox.receive(), await inbox.receive()]
                with trio.move_on_after(1.0):
                    extra = await inbox.receive()
                    pytest.fail(f"delivered beyond max_ack_pending: {extra!r}")
                await held[0].ack()
                third = await inbox.receive()
                await held[1].ack()
                await third.ack()
        assert [d.stream_seq for d in (*held, third)] == [1, 2, 3]

    async def test_ack_on_a_limits_stream_keeps_the_message_for_other_durables(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream()
        await transport.publish(f"{names.space()}.a", b"shared")
        with trio.fail_after(10):
            async with transport.consume(
                spec.name, ConsumerSpec(durable=names.durable("1"))
            ) as one:
                await (await one.receive()).ack()
            async with transport.consume(
                spec.name, ConsumerSpec(durable=names.durable("2"))
            ) as two:
                again = await two.receive()
        assert (again.stream_seq, again.data, again.num_delivered) == (1, b"shared", 1)

    @pytest.mark.parametrize("buffer", [-1, 0])
    async def test_consume_with_a_buffer_below_one_raises_invalid_spec(
        self, transport: Transport, make_stream: MakeStream, names: Names, buffer: int
    ) -> None:
        spec = await make_stream()
        with trio.fail_after(10), pytest.raises(InvalidSpecError):
            async with transport.consume(
                spec.name, ConsumerSpec(durable=names.durable()), buffer=buffer
            ):
                pytest.fail(f"consumed with a buffer of {buffer}")

    @pytest.mark.parametrize("filters", [("elsewhere.>",), ("{space}.a", "{space}.*")])
    async def test_consume_refuses_filters_outside_the_stream_or_overlapping(
        self, transport: Transport, make_stream: MakeStream, names: Names, filters: tuple[str, ...]
    ) -> None:
        spec = await make_stream()
        consumer = ConsumerSpec(
            durable=names.durable(),
            filter_subjects=tuple(f.format(space=names.space()) for f in filters),
        )
        with trio.fail_after(10), pytest.raises(InvalidSpecError):
            async with transport.consume(spec.name, consumer):
                pytest.fail(f"consumed with filters {consumer.filter_subjects}")

    async def test_a_delivery_handed_back_on_leaving_reaches_the_next_consumer_at_once(
        self, transport: Transport, make_stream: MakeStream, names: Names
    ) -> None:
        spec = await make_stream(retention=Retention.WORK_QUEUE)
        consumer = ConsumerSpec(durable=names.durable(), ack_wait=30.0)
        await transport.publish(f"{names.space()}.a", b"task")
        with trio.fail_after(10):
            for pause in (0.0, 0.0005, 0.001, 0.002, 0.005) * 3:
                # Nak it and leave at once: the redelivery may already be on its
                # way to this consumer's own inbox as it closes.
                async with transport.consume(spec.name, consumer) as inbox:
                    await (await inbox.receive()).nak()
                    await trio.sleep(pause)
            async with transport.consume(spec.name, consumer) as inbox:
                last = await inbox.receive()
                await last.ack()
        assert last.data == b"task"
