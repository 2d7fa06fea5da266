"""The connection half of the Trio JetStream transport: connect, state and
events, close, and the requests everything else is made of.

The Trio client (:mod:`transport.natsproto`) runs as a task of the
transport's nursery: no thread, no second event loop. It reconnects by
itself; this half turns its state changes into the transport's connection
events and wakes the consumers and watches that must make their requests
again after a reconnect.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import trio

from .._options import ConnectOptions
from .._specs import ConnectionEvent, ConnectionState
from ..jscore import JetStreamBase
from ..natsproto import Client, Msg

log = logging.getLogger("transport.jetstream")


class Connection(JetStreamBase):
    """Connecting, closing, the state and its events, and requests."""

    def __init__(self, options: ConnectOptions, nursery: trio.Nursery, servers: list[str]) -> None:
        super().__init__(options, nursery, servers)
        self._client = Client(servers, options, self._on_event)
        self._closing = False
        self._closed = trio.Event()

    async def _connect(self) -> None:
        await self._nursery.start(self._client.run)
        self._server_is(*self._client.server_version[:2])

    def _on_event(self, event: ConnectionEvent) -> None:
        self._tell(event)
        if event.state is ConnectionState.CONNECTED:
            self._came_back()
        elif event.state is ConnectionState.CLOSED:
            self._wake_all()  # closed for good: consumers and watches end

    @property
    def state(self) -> ConnectionState:
        return self._client.state

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
            self._finished()

    # -- requests ----------------------------------------------------------

    async def _request(
        self, subject: str, payload: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Msg:
        self._check_open()
        return await self._client.requests.request(subject, payload, headers)

    def _publish_raw(self, subject: str, payload: bytes = b"") -> None:
        """Queue a publish nobody waits for (acks, flow control replies).

        Not a checkpoint: an ack per message is the hot path. Held while
        disconnected and sent once reconnected. Raises
        :class:`TransportClosedError` once closed.
        """
        self._check_open()
        self._client.post(subject, payload)
