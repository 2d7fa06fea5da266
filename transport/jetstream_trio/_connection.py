"""The connection half of the Trio JetStream transport: connect, state and
events, close, and the requests everything else is made of.

The Trio client (:mod:`transport.natsproto`) runs as a task of the
transport's nursery: no thread, no second event loop. It reconnects by
itself; this half turns its state changes into the transport's connection
events and wakes the consumers and watches that must make their requests
again after a reconnect.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Self

import trio

from .._errors import TransportClosedError
from .._options import ConnectOptions
from .._specs import ConnectionEvent, ConnectionState, StreamSpec
from ..jscore import API, JetStreamBase, api_reply
from ..natsproto import Client, Msg

log = logging.getLogger("transport.jetstream")


class Connection(JetStreamBase):
    """Connecting, closing, the state and its events, and requests."""

    def __init__(self, options: ConnectOptions, nursery: trio.Nursery, servers: list[str]) -> None:
        self._options = options
        self._nursery = nursery
        self._client = Client(servers, options, self._on_event)
        self._listeners: list[trio.MemorySendChannel[ConnectionEvent]] = []
        #: Set (and replaced) at every reconnection.
        self._reconnected = trio.Event()
        self._closing = False
        self._closed = trio.Event()
        #: Consumers and watches to wake when the connection returns or ends.
        self._wakers: set[Callable[[], None]] = set()
        self._streams: dict[str, StreamSpec] = {}
        self._supports_schedules = False
        self._supports_batch_get = False

    async def _connect(self) -> None:
        await self._nursery.start(self._client.run)
        version = self._client.server_version
        self._supports_schedules = version[:2] >= (2, 12)
        self._supports_batch_get = version[:2] >= (2, 11)

    def _on_event(self, event: ConnectionEvent) -> None:
        if event.state is ConnectionState.CONNECTED:
            self._reconnected.set()
            self._reconnected = trio.Event()
        for channel in list(self._listeners):
            try:
                channel.send_nowait(event)
            except trio.WouldBlock:
                pass  # the owner is behind; `state` stays current
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                self._listeners.remove(channel)
        if event.state is not ConnectionState.DISCONNECTED:
            for wake in list(self._wakers):
                wake()  # pull requests and watches are re-made at once, or end

    @property
    def state(self) -> ConnectionState:
        return self._client.state

    def connection_events(self) -> trio.MemoryReceiveChannel[ConnectionEvent]:
        send, receive = trio.open_memory_channel[ConnectionEvent](16)
        self._listeners.append(send)
        return receive

    @property
    def _ended(self) -> bool:
        """Closed by the owner, or for good by the client: nothing more will be done."""
        return self._closing or self._client.is_closed

    async def aclose(self) -> None:
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            await self._client.aclose()  # writes out queued acks, says CLOSED
        finally:
            self._closed.set()
            for channel in self._listeners:
                channel.close()
            self._listeners.clear()
            for wake in list(self._wakers):
                wake()  # consumers and watches see the end and close their channels

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        if self._ended:
            raise TransportClosedError("transport is closed")

    # -- requests ----------------------------------------------------------

    async def _request(
        self, subject: str, payload: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Msg:
        self._check_open()
        return await self._client.requests.request(subject, payload, headers)

    async def _api(self, subject: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        payload = json.dumps(body).encode() if body is not None else b""
        reply = await self._request(f"{API}.{subject}", payload)
        return api_reply(reply.status, reply.data)

    def _publish_raw(self, subject: str, payload: bytes = b"") -> None:
        """Queue a publish nobody waits for (acks, flow control replies).

        Not a checkpoint: an ack per message is the hot path. Held while
        disconnected and sent once reconnected. Raises
        :class:`TransportClosedError` once closed.
        """
        self._check_open()
        self._client.post(subject, payload)
