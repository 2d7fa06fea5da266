"""A NATS client for Trio: one connection at a time to one server of a pool,
kept up forever, and the requests made on it.

The client is a task (:meth:`Client.run`) of its owner's nursery. Each
connection is a *session*: a nursery of three tasks, the reader (parses the
server's bytes and hands messages to subscriptions), the writer (sends what
was queued, everything queued since its last send in one write) and the
pinger (drops a connection that leaves two pings unanswered). When a
session ends, the client reconnects, least-tried server first, with a
capped exponential backoff, forever, until its owner closes it or the
server refuses its credentials for good.

While disconnected, *posts* (writes nobody waits for: acks, pull requests)
are held, up to 64 MiB, and sent once reconnected; *requests* fail at once
with :class:`ConnectionLostError` ("nothing was sent"), and those under way
when a connection is lost fail at once ("the outcome is unknown"), so that
nothing is sent late, after its caller retried or moved on.

Every outgoing write is a plain method (no checkpoint): queueing an ack is
the hot path. Subscriptions are callbacks run by the reader task; they must
neither block nor raise.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import trio

from .._errors import (
    AuthorizationError,
    ConnectionLostError,
    InvalidSpecError,
    TooLargeError,
    TransportClosedError,
    TransportError,
)
from .._options import ConnectOptions
from .._specs import ConnectionEvent, ConnectionState
from .._tlsfiles import tls_context, wants_tls
from ._handshake import (
    AuthRefusedError,
    Handshake,
    NoTlsError,
    handshake,
    is_auth_error,
    server_version,
)
from ._protocol import (
    PING,
    PING_FRAME,
    PONG,
    PONG_FRAME,
    Err,
    Event,
    Info,
    Msg,
    ProtocolError,
    encode_headers,
    pub_frame,
    sub_frame,
    unsub_frame,
)
from ._requests import Requests
from ._servers import ServerPool

__all__ = ["Client", "Subscription"]

log = logging.getLogger("transport.jetstream.trio")

_RECEIVE = 65536
#: Posts held while disconnected, at most (bytes).
_HELD_LIMIT = 64 * 1024 * 1024
#: Scheduling rounds the writer waits at most for more to write, while each adds some.
_COALESCE_ROUNDS = 16
#: Bytes that end the wait at once.
_COALESCE_BYTES = 64 * 1024
#: Queued and not yet written, at most, before a request is refused.
_QUEUED_LIMIT = 64 * 1024 * 1024


class _SessionLost(Exception):
    """The session's connection is gone (why is the message)."""


class Subscription:
    """Messages on ``subject`` handed to ``callback`` by the reader task.

    ``callback`` runs in the reader task: it must return at once and not
    raise (an exception ends the client, as a bug should).
    """

    __slots__ = ("callback", "sid", "subject")

    def __init__(self, subject: str, sid: int, callback: Callable[[Msg], None]) -> None:
        self.subject = subject
        self.sid = sid
        self.callback = callback


class Client:
    """A connection to a NATS cluster, kept up until closed. Run by :meth:`run`."""

    def __init__(
        self,
        servers: list[str],
        options: ConnectOptions,
        on_event: Callable[[ConnectionEvent], None] = lambda _e: None,
    ) -> None:
        self._options = options
        self._on_event = on_event
        self._pool = ServerPool(
            servers,
            reconnect_wait=options.reconnect_wait,
            max_reconnect_wait=options.max_reconnect_wait,
        )
        self._tls = tls_context(options)  # unusable files are refused before connecting
        self._tls_always = wants_tls(options)
        self.state = ConnectionState.DISCONNECTED
        #: The INFO of the server connected to (the last one while disconnected).
        self.info: dict[str, Any] = {}
        self.server_version = (0, 0, 0)
        self._out = bytearray()
        self._held = bytearray()
        self._wake_writer = trio.Event()
        #: Something a caller waits for is queued: the writer sends without waiting for more.
        self._waited_for = False
        self._subs: dict[int, Subscription] = {}
        self._next_sid = 1
        #: One entry per PING sent, answered in order: a flush's event, or None.
        self._pongs: deque[trio.Event | None] = deque()
        self._unanswered = 0
        self._session: trio.CancelScope | None = None
        self._run_scope = trio.CancelScope()
        self._closing = False
        self._finished = trio.Event()
        # Credential refusals in a row while reconnecting, and how many end it.
        self._refusals = 0
        self._refusals_allowed = max(3, len(servers))
        self.requests = Requests(self, options.request_timeout)

    # -- state -------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self.state is ConnectionState.CONNECTED

    @property
    def is_closed(self) -> bool:
        return self.state is ConnectionState.CLOSED

    @property
    def max_payload(self) -> int:
        return int(self.info.get("max_payload", 1024 * 1024))

    def _set_state(self, state: ConnectionState, detail: str, *, quiet: bool = False) -> None:
        self.state = state
        if not quiet:
            self._on_event(ConnectionEvent(state, detail))

    def _check_usable(self) -> None:
        if self._closing or self.state is ConnectionState.CLOSED:
            raise TransportClosedError("the connection is closed")

    # -- running -----------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, report ready, then keep a connection up until closed.

        The first connection is tried for ``connect_timeout`` times the
        number of servers (at least twice) plus a second. Raises
        :class:`AuthorizationError` if the credentials are refused,
        :class:`ConnectionLostError` if no server answered in time or one
        that must use TLS offers none, :class:`InvalidSpecError` for
        unusable credential files; before ``task_status.started``.
        """
        try:
            with self._run_scope:
                first = await self._connect_first()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.requests.expire)
                    task_status.started()
                    await self._serve(first)
                    nursery.cancel_scope.cancel()
        finally:
            self._finished.set()

    async def _connect_first(self) -> Handshake:
        opts = self._options
        budget = opts.connect_timeout * max(2, len(self._pool.servers)) + 1
        last: BaseException | None = None
        with trio.move_on_after(budget):
            while True:
                server, wait = self._pool.next()
                await trio.sleep(wait)
                try:
                    with trio.fail_after(opts.connect_timeout):
                        shake = await handshake(
                            server, opts, self._tls, tls_always=self._tls_always
                        )
                except AuthRefusedError:
                    names = [s.netloc for s in self._pool.servers]
                    raise AuthorizationError(f"{names} refused the credentials") from None
                except NoTlsError as exc:
                    raise ConnectionLostError(str(exc)) from None
                except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
                    last = exc
                except (ConnectionLostError, ProtocolError) as exc:
                    last = exc
                else:
                    self._connected(shake, announce=False)
                    return shake
                self._pool.failed(server)
        names = [s.netloc for s in self._pool.servers]
        why = f"; last error: {last!r}" if last is not None else ""
        raise ConnectionLostError(f"no server of {names} answered in time{why}")

    def _connected(self, shake: Handshake, *, announce: bool) -> None:
        self._pool.connected(shake.server)
        self._pool.learn(shake.info.get("connect_urls"))
        self.info = shake.info
        self.server_version = server_version(shake.info)
        self._refusals = 0
        self._unanswered = 0
        self._pongs.clear()
        # Subscriptions first, then what was held: what is held may be
        # answered on them (pull requests).
        out = bytearray()
        for sub in self._subs.values():
            out += sub_frame(sub.subject, sub.sid)
        out += self._held
        out += self._out  # nothing, unless written in this very step
        self._held = bytearray()
        self._out = out
        # The first connection is not news: the owner is waiting for it.
        self._set_state(ConnectionState.CONNECTED, shake.server.netloc, quiet=not announce)

    async def _serve(self, shake: Handshake | None) -> None:
        while shake is not None:
            try:
                why = await self._session_for(shake)
            finally:
                await trio.aclose_forcefully(shake.stream)
            if self._closing:
                return
            self._lost(why)
            shake = await self._reconnect()

    async def _session_for(self, shake: Handshake) -> str:
        """Run the connection's tasks until it is lost; why it was."""
        why = "closed"
        try:
            async with trio.open_nursery() as session:
                self._session = session.cancel_scope
                session.start_soon(self._reader, shake)
                session.start_soon(self._writer, shake.stream)
                session.start_soon(self._pinger)
        except _SessionLost as exc:
            why = str(exc)
        except BaseExceptionGroup as group:
            lost, rest = group.split(_SessionLost)
            if rest is not None:
                raise rest from None
            assert lost is not None
            why = str(lost.exceptions[0])
        finally:
            self._session = None
        return why

    def _lost(self, why: str) -> None:
        log.debug("connection lost: %s", why)
        self._out = bytearray()
        self._fail_waiters(ConnectionLostError(f"connection lost ({why}): outcome unknown"))
        if self.state is ConnectionState.CONNECTED:
            self._set_state(ConnectionState.DISCONNECTED, "connection lost")

    def _fail_waiters(self, error: TransportError) -> None:
        self.requests.fail_all(error)
        while self._pongs:
            waiter = self._pongs.popleft()
            if waiter is not None:
                waiter.set()  # a flush has nothing more to wait for

    async def _reconnect(self) -> Handshake | None:
        """A new connection, or None once closed for good."""
        opts = self._options
        while not self._closing:
            server, wait = self._pool.next()
            await trio.sleep(wait)
            try:
                with trio.fail_after(opts.connect_timeout):
                    shake = await handshake(server, opts, self._tls, tls_always=self._tls_always)
            except AuthRefusedError as exc:
                self._pool.failed(server)
                self._refusals += 1
                log.debug("%s", exc)
                if self._refusals >= self._refusals_allowed:
                    self._close_for_good(
                        f"the server refused the credentials {self._refusals} times"
                    )
                    return None
            except NoTlsError as exc:
                log.warning("%s", exc)
                self._pool.failed(server)
            except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
                log.debug("reconnecting to %s: %r", server.netloc, exc)
                self._pool.failed(server)
            except (ConnectionLostError, ProtocolError, InvalidSpecError) as exc:
                log.warning("reconnecting to %s: %s", server.netloc, exc)
                self._pool.failed(server)
            else:
                self._connected(shake, announce=True)
                return shake
        return None

    def _close_for_good(self, why: str) -> None:
        log.warning("the connection is closed for good: %s", why)
        self._fail_waiters(TransportClosedError(f"the connection closed for good: {why}"))
        self._set_state(ConnectionState.CLOSED, "connection closed by the client")
        if self._session is not None:
            self._session.cancel()
        self._run_scope.cancel()

    # -- the session's tasks -------------------------------------------------

    async def _reader(self, shake: Handshake) -> None:
        for event in shake.leftover:
            self._dispatch(event)
        stream, parser = shake.stream, shake.parser
        while True:
            try:
                data = await stream.receive_some(_RECEIVE)
            except (OSError, trio.BrokenResourceError) as exc:
                raise _SessionLost(f"reading failed: {exc!r}") from None
            if not data:
                raise _SessionLost("the server closed the connection")
            try:
                events = parser.feed(data)
            except ProtocolError as exc:
                raise _SessionLost(str(exc)) from None
            for event in events:
                self._dispatch(event)

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, Msg):
            sub = self._subs.get(event.sid)
            if sub is not None:
                sub.callback(event)
        elif event is PING:
            self._write(PONG_FRAME)
        elif event is PONG:
            self._unanswered = 0
            if self._pongs:
                waiter = self._pongs.popleft()
                if waiter is not None:
                    waiter.set()
        elif isinstance(event, Info):
            self.info = {**self.info, **event.fields}
            self._pool.learn(event.fields.get("connect_urls"))
        elif isinstance(event, Err):
            self._server_error(event.text)

    def _server_error(self, text: str) -> None:
        if "permissions violation" in text.lower():
            log.warning("the server refused an operation: %s", text)
            return
        if is_auth_error(text):
            # Credentials revoked or expired: retrying them does not help.
            self._close_for_good(f"the server said {text!r}")
            return
        # Every other -ERR (stale connection, slow consumer, payload...)
        # comes with the server closing the connection: make a new one.
        raise _SessionLost(f"the server said {text!r}")

    async def _writer(self, stream: trio.abc.Stream) -> None:
        while True:
            if not self._out:
                await self._wake_writer.wait()
                self._wake_writer = trio.Event()
                continue
            if not self._waited_for:
                await self._coalesce()
            data, self._out = self._out, bytearray()
            self._waited_for = False
            try:
                await stream.send_all(data)
            except (OSError, trio.BrokenResourceError) as exc:
                raise _SessionLost(f"writing failed: {exc!r}") from None

    async def _coalesce(self) -> None:
        """Let the tasks that are ready add their writes to the one queued.

        A consumer acks one delivery per scheduling round, and a write (a
        system call, and a wake-up of the server) per ack costs more than
        the acks: while only posts are queued, the writer waits while rounds
        add to the buffer, until two rounds in a row add nothing (everybody
        is waiting: for a reply, for the next delivery), or it has waited
        enough rounds or bytes. Something a caller waits for (a request, a
        flush) goes out at once, with what is queued before it (the writer
        runs in the round after the one that woke it: the tasks made ready
        together have all written by then).
        """
        size = len(self._out)
        idle = 0
        for _ in range(_COALESCE_ROUNDS):
            await trio.lowlevel.checkpoint()
            grown = len(self._out)
            if self._waited_for or grown >= _COALESCE_BYTES:
                return
            idle = idle + 1 if grown == size else 0
            if idle == 2:
                return
            size = grown

    async def _pinger(self) -> None:
        while True:
            await trio.sleep(self._options.ping_interval)
            if self._unanswered >= 2:
                raise _SessionLost("two pings went unanswered")
            self._unanswered += 1
            self._pongs.append(None)
            self._write(PING_FRAME)

    # -- writing -------------------------------------------------------------

    def _write(self, frame: bytes) -> None:
        self._out += frame
        self._wake_writer.set()

    def _frame(
        self, subject: str, data: bytes, reply: str | None, headers: Mapping[str, str] | None
    ) -> bytes:
        block = encode_headers(headers) if headers else None
        size = len(data) + (len(block) if block is not None else 0)
        if size > self.max_payload:
            # The server would answer it by closing the connection.
            raise TooLargeError(
                f"message of {size} bytes (data and headers) is over the server's "
                f"max_payload of {self.max_payload} bytes"
            )
        return pub_frame(subject, reply, data, block)

    def publish(
        self,
        subject: str,
        data: bytes,
        *,
        reply: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Queue a message that somebody waits for (a request); sent only now.

        Raises :class:`ConnectionLostError` while disconnected (nothing is
        sent, ever), :class:`TransportClosedError` once closed,
        :class:`TooLargeError` over the server's ``max_payload`` and
        :class:`InvalidSpecError` for a subject or header that cannot be sent.
        """
        self._check_usable()
        frame = self._frame(subject, data, reply, headers)
        if not self.is_connected:
            raise ConnectionLostError("not connected to the broker: nothing was sent")
        if len(self._out) > _QUEUED_LIMIT:
            raise ConnectionLostError("the connection is not taking writes: nothing was sent")
        self._waited_for = True
        self._write(frame)

    def post(self, subject: str, data: bytes = b"", *, reply: str | None = None) -> None:
        """Queue a message nobody waits for (an ack, a pull request).

        While disconnected it is held (up to 64 MiB; beyond that dropped,
        which the protocol tolerates: an ack lost is a redelivery) and sent
        once reconnected. Raises :class:`TransportClosedError` once closed.
        """
        self._check_usable()
        frame = self._frame(subject, data, reply, None)
        if self.is_connected:
            self._write(frame)
        elif len(self._held) + len(frame) <= _HELD_LIMIT:
            self._held += frame
        else:
            log.debug("dropped a post to %s: the held buffer is full", subject)

    def subscribe(self, subject: str, callback: Callable[[Msg], None]) -> Subscription:
        """Deliver messages on ``subject`` to ``callback``, on this connection and every later one.

        Raises :class:`TransportClosedError` once closed.
        """
        self._check_usable()
        sid = self._next_sid
        self._next_sid += 1
        sub = Subscription(subject, sid, callback)
        frame = sub_frame(subject, sid)
        self._subs[sid] = sub
        if self.is_connected:
            self._write(frame)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop delivering ``sub`` (at once: what arrives later is dropped)."""
        if self._subs.pop(sub.sid, None) is not None and self.is_connected:
            self._write(unsub_frame(sub.sid))

    async def drain(self, sub: Subscription) -> None:
        """Stop ``sub`` and wait until the server has sent all it sent it before.

        ``sub``'s callback still sees those messages. Returns at once while
        disconnected; if cancelled, ``sub`` is stopped all the same.
        """
        if sub.sid not in self._subs:
            return
        try:
            if self.is_connected:
                self._write(unsub_frame(sub.sid))
                await self.flush()
        finally:
            self._subs.pop(sub.sid, None)

    async def flush(self) -> None:
        """Wait until the server has read everything queued before (a PING's PONG).

        Returns at once while disconnected, or if the connection is lost first.
        """
        if not self.is_connected:
            return
        done = trio.Event()
        self._pongs.append(done)
        self._waited_for = True
        self._write(PING_FRAME)
        await done.wait()

    # -- closing ---------------------------------------------------------------

    async def aclose(self) -> None:
        """Write out what is queued (acks first of all), then close; idempotent.

        Requests still waiting raise :class:`TransportClosedError`. Bounded by
        five seconds however the server behaves.
        """
        if self._closing:
            await self._finished.wait()
            return
        if self.is_connected:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self.flush()
        self._closing = True
        self._fail_waiters(TransportClosedError("the connection was closed"))
        if self.state is not ConnectionState.CLOSED:
            self._set_state(ConnectionState.CLOSED, "closed by its owner")
        self._run_scope.cancel()
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await self._finished.wait()
