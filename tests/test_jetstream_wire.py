"""The JetStream wire helpers that parse what the server sends."""

from __future__ import annotations

import pytest
import trio

from transport import ConnectOptions, StreamSpec, TransportTimeoutError, open_transport
from transport.jscore import reply_meta


def test_reply_meta_reads_both_ack_subject_forms():
    # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
    assert reply_meta("$JS.ACK.S.c.2.41.7.1700000000500000000.3") == (2, 41, 7, 3, 1.7e9 + 0.5)
    # $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>.<r>
    v2 = "$JS.ACK.hub.ACC.S.c.1.42.8.1700000000000000000.0.token"
    assert reply_meta(v2) == (1, 42, 8, 0, 1.7e9)


@pytest.mark.parametrize(
    "reply",
    [None, "", "_INBOX.abc.1", "$JS.ACK.S.c", "$JS.ACK.S.c.x.41.7.1.3", "$JS.API.X.Y.1.2.3.4.5"],
)
def test_reply_meta_refuses_what_is_not_a_delivery(reply):
    assert reply_meta(reply) is None


@pytest.mark.jetstream
async def test_every_request_gets_its_full_timeout(fresh_nats_server) -> None:
    """A request made late in another's timeout window is not failed with it."""
    options = ConnectOptions(request_timeout=1.0)
    async with open_transport(fresh_nats_server.url, options) as transport:
        await transport.ensure_stream(StreamSpec(name="TIMEOUTS", subjects=("timeouts.>",)))
        # It waits (in /proc) until the process is stopped: not on the event loop.
        await trio.to_thread.run_sync(fresh_nats_server.pause)
        failed_after: dict[str, float] = {}

        async def publish(name: str, delay: float) -> None:
            await trio.sleep(delay)
            started = trio.current_time()
            with pytest.raises(TransportTimeoutError):
                await transport.publish(f"timeouts.{name}", b"x")
            failed_after[name] = trio.current_time() - started

        try:
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(publish, "first", 0.0)
                    nursery.start_soon(publish, "second", 0.6)
        finally:
            fresh_nats_server.resume()  # a signal: nothing to wait for
    assert 0.95 <= failed_after["first"] < 2.0, failed_after
    assert 0.95 <= failed_after["second"] < 2.0, failed_after
