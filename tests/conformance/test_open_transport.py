"""``open_transport``: the URL picks the implementation; bad URLs and unreachable servers."""

from __future__ import annotations

import pytest
import trio
from natsserver import free_port

from transport import (
    ConnectionLostError,
    ConnectOptions,
    InvalidSpecError,
    StreamSpec,
    open_transport,
)


@pytest.mark.parametrize(
    "url", ["", "http://127.0.0.1:4222", "nats://", "nats://127.0.0.1:port", "nats://h:1,ftp://h"]
)
async def test_open_transport_with_a_bad_url_raises_invalid_spec(url):
    with pytest.raises(InvalidSpecError):
        async with open_transport(url):
            pytest.fail(f"opened {url!r}")


@pytest.mark.jetstream
async def test_open_transport_to_an_unreachable_server_raises_connection_lost():
    options = ConnectOptions(connect_timeout=1.0)
    with trio.fail_after(15), pytest.raises(ConnectionLostError):
        async with open_transport(f"nats://127.0.0.1:{free_port()}", options):
            pytest.fail("connected to nobody")


async def test_memory_transports_do_not_share_a_broker():
    spec = StreamSpec(name="S", subjects=("s.>",))
    async with open_transport("memory://") as one, open_transport("memory://") as two:
        await one.ensure_stream(spec)
        await two.ensure_stream(spec)
        await one.publish("s.a", b"")
        assert (await two.publish("s.a", b"")).seq == 1
