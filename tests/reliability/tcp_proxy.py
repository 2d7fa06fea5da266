"""A small TCP proxy on loopback, for network faults between services and nats-server.

:class:`FaultProxy` listens on a free port of 127.0.0.1 and forwards every
connection to a target (a nats-server's client port). A test points the
services at :attr:`FaultProxy.url` instead of the server and then breaks the
network on purpose:

* :meth:`FaultProxy.cut` resets every connection at once (both ends see the
  reset) and refuses new ones (accepted, then reset before a byte is
  forwarded, as a load balancer with no backend does) until :meth:`FaultProxy.heal`;
* :meth:`FaultProxy.blackhole` drops every byte of the open connections from
  then on without closing them (a firewall or NAT that forgot them: neither end
  hears anything, not even a reset) and refuses new ones until healed; the
  blackholed connections stay silent for good;
* :attr:`FaultProxy.latency` delays every chunk, each way, by that many seconds
  (bytes keep their order; throughput is not limited).

It runs on Trio in the test process: ``await nursery.start(proxy.run)``.
"""

from __future__ import annotations

import contextlib
import math
import socket
import struct
from collections.abc import Callable

import trio

HOST = "127.0.0.1"
#: Bytes read from a socket at once.
_CHUNK = 64 * 1024


class _Link:
    """One forwarded connection: its two sockets and how it is to end."""

    def __init__(self, client: trio.SocketStream, upstream: trio.SocketStream) -> None:
        self.client = client
        self.upstream = upstream
        self.scope = trio.CancelScope()
        #: Set by a cut: close with a reset, not a polite FIN.
        self.reset = False
        #: Set by a blackhole: drop whatever comes from now on.
        self.silent = False


class FaultProxy:
    """Forwards ``127.0.0.1:port`` to ``target_host:target_port``, with faults on demand."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        #: Seconds every chunk is held, in each direction.
        self.latency = 0.0
        #: Connections accepted so far; those forwarded; those refused while cut.
        self.accepted = 0
        self.forwarded = 0
        self.refused = 0
        #: Bytes forwarded from clients to the target so far (what the clients said).
        self.bytes_up = 0
        #: Occurrences so far of each byte string in what clients sent (see ``count``).
        self.seen_up: dict[bytes, int] = {}
        self._port: int | None = None
        self._refusing = False
        self._links: set[_Link] = set()
        self._scope = trio.CancelScope()
        #: Set (and replaced) when ``forwarded`` or ``seen_up`` changes.
        self._changed = trio.Event()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the proxy is not listening yet: nursery.start(proxy.run) first")
        return self._port

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    @property
    def open_links(self) -> int:
        """Connections being forwarded now (blackholed ones included)."""
        return len(self._links)

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds, checked again each time a connection is
        forwarded or a counted pattern is seen (never on a timer). Bound it."""
        while not condition():
            await self._changed.wait()

    def _touch(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def count(self, pattern: bytes) -> None:
        """Count from now on how often ``pattern`` appears in what clients send
        (``seen_up[pattern]``), also across chunk boundaries."""
        self.seen_up.setdefault(pattern, 0)

    def cut(self) -> int:
        """Reset every connection and refuse new ones until :meth:`heal`; how many were cut."""
        self._refusing = True
        links = list(self._links)
        for link in links:
            link.reset = True
            link.scope.cancel()
        return len(links)

    def blackhole(self) -> int:
        """Drop every byte of the open connections from now on, keeping them open, and
        refuse new ones until :meth:`heal`; how many connections went silent."""
        self._refusing = True
        for link in self._links:
            link.silent = True
        return len(self._links)

    def heal(self) -> None:
        """Accept and forward new connections again (blackholed ones stay silent)."""
        self._refusing = False

    def close(self) -> None:
        """Stop listening and drop every connection (``run`` returns)."""
        self._scope.cancel()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and forward until :meth:`close` or cancellation."""
        with self._scope:
            listeners = await trio.open_tcp_listeners(0, host=HOST)
            self._port = listeners[0].socket.getsockname()[1]
            async with trio.open_nursery() as nursery:
                task_status.started()
                await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        if self._refusing:
            self.refused += 1
            _reset(client)
            await client.aclose()
            return
        try:
            upstream = await trio.open_tcp_stream(*self.target)
        except OSError:
            # The server is down: the client sees its connection reset at once.
            _reset(client)
            await client.aclose()
            return
        self.forwarded += 1
        self._touch()
        link = _Link(client, upstream)
        self._links.add(link)
        try:
            with link.scope:
                async with trio.open_nursery() as both:
                    both.start_soon(self._direction, link, client, upstream, both.cancel_scope)
                    both.start_soon(self._direction, link, upstream, client, both.cancel_scope)
        finally:
            self._links.discard(link)
            for stream in (client, upstream):
                if link.reset:
                    _reset(stream)
                with trio.CancelScope(shield=True):
                    await stream.aclose()

    async def _direction(
        self,
        link: _Link,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        both: trio.CancelScope,
    ) -> None:
        """Forward ``source`` to ``sink`` until either fails or ends, then end ``both``."""
        # Chunks wait in an unbounded queue until due, so latency delays every
        # byte by the same amount without limiting how many are in flight.
        send, receive = trio.open_memory_channel[tuple[float, bytes]](math.inf)

        async def read() -> None:
            try:
                while chunk := await source.receive_some(_CHUNK):
                    send.send_nowait((trio.current_time() + self.latency, chunk))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                send.close()

        tail = b""  # the end of the previous chunk, for patterns split across two

        async def write() -> None:
            nonlocal tail
            try:
                async for due, chunk in receive:
                    await trio.sleep_until(due)
                    if not link.silent:
                        await sink.send_all(chunk)
                        if sink is link.upstream:
                            self.bytes_up += len(chunk)
                            tail = self._seen(tail, chunk)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            if not link.silent:
                both.cancel()
            # A silent link never ends by itself: its peers must give up on it.

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            nursery.start_soon(write)

    def _seen(self, tail: bytes, chunk: bytes) -> bytes:
        """Count the patterns in ``tail + chunk``; the new tail."""
        longest = max((len(p) for p in self.seen_up), default=1)
        data = tail + chunk
        for pattern in self.seen_up:
            # Those wholly inside the tail were counted with the previous chunk.
            self.seen_up[pattern] += data.count(pattern) - tail.count(pattern)
        self._touch()
        return data[-(longest - 1) :] if longest > 1 else b""


def _reset(stream: trio.SocketStream) -> None:
    """Make the coming close send RST rather than FIN (an abrupt cut)."""
    with contextlib.suppress(OSError):  # already closed by the peer
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


__all__ = ["HOST", "FaultProxy"]
