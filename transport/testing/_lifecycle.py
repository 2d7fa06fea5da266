"""Opening and closing a transport; connection state and events."""

from __future__ import annotations

import contextlib

import pytest
import trio

from .. import (
    ConnectionEvent,
    ConnectionState,
    ConsumerSpec,
    KeyValue,
    KVSpec,
    OutMessage,
    StreamSpec,
    Transport,
    TransportClosedError,
)
from ._fixtures import Connect, Names, SuiteBase, own_transport


class OwnersOwnError(Exception):
    """Raised inside a block to see whether it leaves the block unchanged."""


async def stream_and_bucket(transport: Transport, names: Names) -> tuple[StreamSpec, KeyValue]:
    """A new stream and a new bucket, named for the test."""
    stream = await transport.ensure_stream(names.stream_spec())
    kv = await transport.ensure_kv(KVSpec(bucket=names.bucket()))
    return stream, kv


class LifecycleTests(SuiteBase):
    """Opening, closing, connection state and events.

    Tests that close the transport open their own (:func:`own_transport`).
    """

    async def test_aclose_is_idempotent(self, connect: Connect) -> None:
        async with own_transport(connect) as transport:
            await transport.aclose()
            await transport.aclose()
            assert transport.state is ConnectionState.CLOSED

    async def test_state_is_connected_while_open_and_closed_after(self, connect: Connect) -> None:
        async with connect() as transport:
            states = [transport.state]
        states.append(transport.state)
        assert states == [ConnectionState.CONNECTED, ConnectionState.CLOSED]

    async def test_operations_after_aclose_raise_transport_closed(
        self, connect: Connect, names: Names
    ) -> None:
        async with own_transport(connect) as transport:
            stream, kv = await stream_and_bucket(transport, names)
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

    async def test_settling_a_delivery_after_aclose_raises_at_most_transport_closed(
        self, connect: Connect, names: Names
    ) -> None:
        # The contract leaves open whether a late ack is ignored (the delivery comes
        # back after its ack wait anyway) or refused; nothing else may escape.
        async with own_transport(connect) as transport:
            stream = await transport.ensure_stream(names.stream_spec())
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

    async def test_consume_and_watch_channels_end_when_the_transport_closes(
        self, connect: Connect, names: Names
    ) -> None:
        async with own_transport(connect) as transport:
            stream, kv = await stream_and_bucket(transport, names)
            async with (
                transport.consume(stream.name, ConsumerSpec(durable=names.durable())) as inbox,
                kv.watch() as watch,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(transport.aclose)
                with pytest.raises(trio.EndOfChannel):
                    await inbox.receive()
                with pytest.raises(trio.EndOfChannel):
                    await watch.receive()

    async def test_connection_events_report_closed_on_aclose(self, connect: Connect) -> None:
        async with connect() as transport:
            events = transport.connection_events()
        with trio.fail_after(10):
            async for event in events:
                assert isinstance(event, ConnectionEvent)
                if event.state is ConnectionState.CLOSED:
                    break
            else:
                pytest.fail("the events ended without CLOSED")

    async def test_an_error_in_the_owners_block_leaves_consume_and_watch_unwrapped(
        self, transport: Transport, names: Names
    ) -> None:
        stream, kv = await stream_and_bucket(transport, names)
        with pytest.raises(OwnersOwnError):
            async with transport.consume(stream.name, ConsumerSpec(durable=names.durable())):
                raise OwnersOwnError
        with pytest.raises(OwnersOwnError):
            async with kv.watch():
                raise OwnersOwnError
        # The transport is still usable after both blocks failed.
        assert (await transport.publish(f"{names.space()}.a", b"")).seq == 1

    async def test_an_error_in_the_owners_block_leaves_connect_unwrapped(
        self, connect: Connect
    ) -> None:
        with pytest.raises(OwnersOwnError):
            async with connect():
                raise OwnersOwnError
