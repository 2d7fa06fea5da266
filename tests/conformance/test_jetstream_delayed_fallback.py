"""JetStream only: delayed delivery on a server without message schedules.

nats-server before 2.12 has no message schedules. The transport then stores a
delayed message at once and its consumers hand it back (nak with the remaining
delay) until it is due. The server here is newer, so the test switches the
transport's feature flag off before declaring anything.
"""

from __future__ import annotations

import pytest
import trio

from transport import ConsumerSpec, Retention, StreamSpec, open_transport
from transport._specs import DELIVER_AT_HEADER

pytestmark = pytest.mark.jetstream


async def test_delayed_message_waits_for_its_time_without_server_schedules(nats_url, names):
    space = names.space()
    spec = StreamSpec(
        name=names.stream(), subjects=(f"{space}.>",), retention=Retention.WORK_QUEUE,
        allow_delayed=True,
    )  # fmt: skip
    async with open_transport(nats_url) as transport:
        transport._supports_schedules = False  # type: ignore[attr-defined]
        await transport.ensure_stream(spec)
        due = transport.now() + 1.5
        await transport.publish(f"{space}.later", b"later", msg_id="later", deliver_at=due)
        await transport.publish(f"{space}.now", b"now")
        with trio.fail_after(15):
            async with transport.consume(spec.name, ConsumerSpec(durable=names.durable())) as inbox:
                first = await inbox.receive()
                await first.ack()
                second = await inbox.receive()
                arrived = transport.now()
                await second.ack()
    # Stored first, yet delivered after the undelayed message, and not early.
    assert (first.data, second.data) == (b"now", b"later")
    assert second.stream_seq < first.stream_seq
    assert arrived >= due
    assert float(second.headers[DELIVER_AT_HEADER]) == pytest.approx(due, abs=1e-3)
