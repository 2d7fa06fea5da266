"""Opening and closing a transport; connection state and events."""

from __future__ import annotations

import contextlib

import pytest
import trio
from natsserver import free_port

from transport import (
    ConnectionEvent,
    ConnectionLostError,
    ConnectionState,
    ConnectOptions,
    ConsumerSpec,
    InvalidSpecError,
    KVSpec,
    OutMessage,
    StreamSpec,
    TransportClosedError,
    open_transport,
)

# Tests that close the transport open their own and check that the block ran to
# its end: aclose() must not cancel the code around it.


async def test_aclose_is_idempotent(transport_url):
    finished = False
    async with open_transport(transport_url) as transport:
        await transport.aclose()
        await transport.aclose()
        assert transport.state is ConnectionState.CLOSED
        finished = True
    assert finished, "aclose() cancelled the block it was called in"


async def test_state_is_connected_while_open_and_closed_after(transport_url):
    async with open_transport(transport_url) as transport:
        assert transport.state is ConnectionState.CONNECTED
    assert transport.state is ConnectionState.CLOSED


async def test_operations_after_aclose_raise_transport_closed(transport_url, names):
    stream = StreamSpec(name=names.stream(), subjects=(f"{names.space()}.>",))
    finished = False
    async with open_transport(transport_url) as transport:
        await transport.ensure_stream(stream)
        kv = await transport.ensure_kv(KVSpec(bucket=names.bucket()))
        await transport.aclose()
        with pytest.raises(TransportClosedError):
            await transport.publish(f"{names.space()}.a", b"")
        with pytest.raises(TransportClosedError):
            await transport.publish_many([OutMessage(f"{names.space()}.a", b"")])
        with pytest.raises(TransportClosedError):
            await transport.ensure_stream(stream)
        with pytest.raises(TransportClosedError):
            await transport.ensure_kv(KVSpec(bucket=names.bucket()))
        with pytest.raises(TransportClosedError):
            await transport.kv(names.bucket())
        with pytest.raises(TransportClosedError):
            await kv.get("k")
        with pytest.raises(TransportClosedError):
            await kv.put("k", b"")
        with pytest.raises(TransportClosedError):
            await kv.keys()
        with pytest.raises(TransportClosedError):
            async with transport.consume(stream.name, ConsumerSpec(durable=names.durable())):
                pytest.fail("consumed from a closed transport")
        with pytest.raises(TransportClosedError):
            async with kv.watch():
                pytest.fail("watched a closed transport")
        finished = True
    assert finished, "aclose() cancelled the block it was called in"


async def test_settling_a_delivery_after_aclose_raises_at_most_transport_closed(
    transport_url, names
):
    # The contract leaves open whether a late ack is ignored (the delivery comes
    # back after its ack wait anyway) or refused; nothing else may escape.
    stream = StreamSpec(name=names.stream(), subjects=(f"{names.space()}.>",))
    finished = False
    with trio.fail_after(10):
        async with open_transport(transport_url) as transport:
            await transport.ensure_stream(stream)
            await transport.publish(f"{names.space()}.a", b"")
            consumer = ConsumerSpec(durable=names.durable())
            async with transport.consume(stream.name, consumer) as inbox:
                deliveries = [await inbox.receive()]
                await transport.publish(f"{names.space()}.a", b"")
                deliveries.append(await inbox.receive())
                await transport.aclose()
                with contextlib.suppress(TransportClosedError):
                    await deliveries[0].ack()
                with contextlib.suppress(TransportClosedError):
                    await deliveries[1].in_progress()
                with contextlib.suppress(TransportClosedError):
                    await deliveries[1].nak(delay=1.0)
            finished = True
    assert finished, "aclose() cancelled the block it was called in"


async def test_consume_channel_ends_when_the_transport_closes(transport_url, names):
    stream = StreamSpec(name=names.stream(), subjects=(f"{names.space()}.>",))
    finished = False
    with trio.fail_after(10):
        async with open_transport(transport_url) as transport:
            await transport.ensure_stream(stream)
            async with (
                transport.consume(stream.name, ConsumerSpec(durable=names.durable())) as inbox,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(transport.aclose)
                with pytest.raises(trio.EndOfChannel):
                    await inbox.receive()
            finished = True
    assert finished, "aclose() cancelled the block it was called in"


async def test_watch_channel_ends_when_the_transport_closes(transport_url, names):
    finished = False
    with trio.fail_after(10):
        async with open_transport(transport_url) as transport:
            kv = await transport.ensure_kv(KVSpec(bucket=names.bucket()))
            async with kv.watch() as watch, trio.open_nursery() as nursery:
                nursery.start_soon(transport.aclose)
                with pytest.raises(trio.EndOfChannel):
                    await watch.receive()
            finished = True
    assert finished, "aclose() cancelled the block it was called in"


async def test_connection_events_report_closed_on_aclose(transport_url):
    async with open_transport(transport_url) as transport:
        events = transport.connection_events()
    with trio.fail_after(10):
        async for event in events:
            assert isinstance(event, ConnectionEvent)
            if event.state is ConnectionState.CLOSED:
                break
        else:
            pytest.fail("the events ended without CLOSED")


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


class OwnersOwnError(Exception):
    """Raised inside a block to see whether it leaves the block unchanged."""


async def test_an_error_in_the_owners_block_leaves_consume_and_watch_unwrapped(transport, names):
    stream = StreamSpec(name=names.stream(), subjects=(f"{names.space()}.>",))
    await transport.ensure_stream(stream)
    kv = await transport.ensure_kv(KVSpec(bucket=names.bucket()))
    with pytest.raises(OwnersOwnError):
        async with transport.consume(stream.name, ConsumerSpec(durable=names.durable())):
            raise OwnersOwnError
    with pytest.raises(OwnersOwnError):
        async with kv.watch():
            raise OwnersOwnError
    with pytest.raises(OwnersOwnError):
        async with open_transport("memory://"):
            raise OwnersOwnError
    # The transport is still usable after both blocks failed.
    assert (await transport.publish(f"{names.space()}.a", b"")).seq == 1
