"""The one writer of dead letters, ``actors.runtime._deadletters.deadletter``.

Orchestrators and workers both record what they cannot process through it:
the letter names where the message was published, keeps a bounded reason
and sample, is stored once however often it is written, and the message is
acked only once the letter is stored (else handed back, never lost). On the
memory transport, with Trio's autojump clock for the redelivery delay.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from actors.runtime._deadletters import DEADLETTER_SAMPLE, MAX_REASON, deadletter
from actors.wire import Layout, decode_deadletter
from actors.wire._names import DEADLETTER_STREAM
from transport import ConsumerSpec, Retention, StreamSpec, Transport, open_transport

log = logging.getLogger("tests.deadletters")

#: A work-queue stream of its own, standing for the events or the tasks.
WORK = StreamSpec(name="WORK", subjects=("work.>",), retention=Retention.WORK_QUEUE)


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture
async def transport() -> AsyncIterator[Transport]:
    async with open_transport("memory://") as opened:
        await opened.ensure_stream(WORK)
        yield opened


async def test_a_letter_keeps_the_subject_given_a_bounded_reason_and_sample(
    transport: Transport,
) -> None:
    await Layout().provision(transport)
    data = bytes(range(256)) * (DEADLETTER_SAMPLE // 256 + 10)  # over the sample
    ack = await transport.publish("work.one", data)
    async with transport.consume("WORK", ConsumerSpec(durable="reader")) as deliveries:
        delivery = await deliveries.receive()
        reason = "r" * (MAX_REASON + 500)
        # Written twice (as after a crash before the ack): the broker keeps one letter.
        for _ in range(2):
            await deadletter(
                transport,
                delivery,
                reason,
                source="tasks",
                subject="published.here",
                retry_delay=1.0,
                log=log,
            )
    [stored] = await transport.read(DEADLETTER_STREAM, "deadletter.>")
    assert stored.subject == "deadletter.tasks"
    letter = decode_deadletter(stored.data)
    assert letter["subject"] == "published.here"
    assert letter["reason"] == reason[:MAX_REASON]
    assert letter["data"] == data[:DEADLETTER_SAMPLE]
    assert letter["num_delivered"] == 1
    # Acked: the work queue no longer holds the message.
    assert not await transport.holds("WORK", ack.seq)


async def test_a_letter_the_broker_refuses_hands_the_message_back(
    transport: Transport, autojump_clock: trio.testing.MockClock
) -> None:
    # No dead-letter stream: the broker refuses the letter (no stream takes its subject).
    await transport.publish("work.two", b"payload")
    async with transport.consume("WORK", ConsumerSpec(durable="reader")) as deliveries:
        delivery = await deliveries.receive()
        refused_at = trio.current_time()
        await deadletter(
            transport,
            delivery,
            "why",
            source="events",
            subject="work.two",
            retry_delay=7.0,
            log=log,
        )
        again = await deliveries.receive()
    assert trio.current_time() - refused_at >= 7.0
    assert (again.data, again.num_delivered) == (b"payload", 2)
