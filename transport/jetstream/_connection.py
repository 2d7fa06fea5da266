"""The NATS connection under the JetStream transport: connect, reconnect, close, request.

nats-py's client runs on an asyncio loop in a thread of its own; this half of
the transport drives it from Trio: it connects (TLS or nothing when asked
for), reconnects forever with a capped exponential backoff, gives up when the
server keeps refusing the credentials, reports the connection's state as
events, and makes the requests the rest of the transport is built on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections.abc import Mapping
from typing import Any

import nats
import nats.errors
import nats.js.errors
import trio
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from .._errors import (
    AuthorizationError,
    ConnectionLostError,
)
from .._options import ConnectOptions
from .._specs import (
    ConnectionEvent,
    ConnectionState,
)
from .._tlsfiles import wants_tls
from ..jscore import JetStreamBase
from ._tls import NoTlsError, TlsOrNothingClient, is_auth_refusal, tls_context
from ._wire import (
    _Bridge,
    _LoopThread,
    _Received,
    _Replies,
    _translate,
    log,
)


class Connection(JetStreamBase):
    """The connection half of :class:`JetStreamTransport`: connecting, reconnecting,
    closing, its state and events, and the requests everything else is made of."""

    def __init__(self, options: ConnectOptions, nursery: trio.Nursery, servers: list[str]) -> None:
        super().__init__(options, nursery, servers)
        thread = self._thread = _LoopThread(trio.lowlevel.current_trio_token())
        self._nc: NatsClient = TlsOrNothingClient(tls_always=wants_tls(options))
        self._bridge = _Bridge(thread, lambda: self._nc.is_connected, self._post_now)
        self._replies: _Replies | None = None
        self._state = ConnectionState.DISCONNECTED
        self._closing = False
        self._closed = trio.Event()
        # Background tasks run under this scope, not the nursery's: the
        # nursery wraps the owner's block, which aclose must not cancel.
        self._background = trio.CancelScope()
        # Written on the loop thread while connecting, read after by Trio.
        self._connect_task: asyncio.Task[None] | None = None
        self._last_error: Exception | None = None
        # Loop thread only: credential refusals in a row while reconnecting,
        # how many make us give up, and the task closing the connection then.
        self._refusals = 0
        self._refusals_allowed = 3
        self._giving_up: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------

    async def _connect(self) -> None:
        # The loop's thread is a task of the nursery around the owner's
        # block: the block cannot end before the thread has (see _shut).
        self._nursery.start_soon(
            functools.partial(
                trio.to_thread.run_sync, self._thread.run_forever, thread_name="nats-py"
            )
        )
        servers, opts = self._servers, self._options
        # Every server of a cluster gets its chance to accept the credentials.
        self._refusals_allowed = max(3, len(servers))
        kwargs: dict[str, Any] = {
            "servers": servers,
            "name": opts.name,
            "connect_timeout": opts.connect_timeout,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": opts.reconnect_wait,
            "reconnect_to_server_handler": self._next_server,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "closed_cb": self._on_closed,
            "error_cb": self._on_error,
            # Keep everything buffered while reconnecting rather than failing.
            "pending_size": 64 * 1024 * 1024,
            # A silent connection is only noticed by its pings going unanswered.
            "ping_interval": opts.ping_interval,
            "max_outstanding_pings": 2,
        }
        if opts.user is not None:
            kwargs["user"] = opts.user
            kwargs["password"] = opts.password
        if opts.token is not None:
            kwargs["token"] = opts.token
        if opts.nkey_seed_file is not None:
            kwargs["nkeys_seed"] = opts.nkey_seed_file
        if opts.credentials_file is not None:
            kwargs["user_credentials"] = opts.credentials_file
        tls = tls_context(self._options)
        if tls is not None:
            kwargs["tls"] = tls

        async def connect() -> None:
            self._connect_task = asyncio.current_task()
            try:
                await self._nc.connect(**kwargs)
            finally:
                self._connect_task = None
            self._replies = _Replies(self._nc, opts.request_timeout)
            await self._replies.open()

        try:
            with trio.fail_after(opts.connect_timeout * max(2, len(servers)) + 1):
                await self._thread.run(connect())
        except (trio.TooSlowError, Exception) as exc:
            await self._abandon_connect()
            refusal = self._last_error
            if isinstance(refusal, NoTlsError):
                raise ConnectionLostError(str(refusal)) from None
            if is_auth_refusal(refusal):
                raise AuthorizationError(f"{servers} refused the credentials") from None
            if isinstance(exc, trio.TooSlowError):
                why = f"; last error: {refusal!r}" if refusal is not None else ""
                raise ConnectionLostError(f"no server of {servers} answered in time{why}") from None
            raise _translate(exc, connected=False) from None
        self._state = ConnectionState.CONNECTED
        version = self._nc.connected_server_version
        self._server_is(version.major, version.minor)
        await self._nursery.start(self._run_background)

    async def _run_background(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with self._background:
            await self._bridge.pump(task_status)

    async def _abandon_connect(self) -> None:
        nc = self._nc

        async def close_fully() -> None:
            await nc.close()
            # A connect cut short (wrong credentials) can leave nats-py closed
            # in name with its socket still open: close that socket too.
            leftover = getattr(nc, "_transport", None)
            if leftover is not None:
                leftover.close()
                with contextlib.suppress(Exception):
                    await leftover.wait_closed()

        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await self._thread.run(close_fully())

    def _next_server(self, pool: list[Any], _info: dict[str, Any]) -> tuple[Any, float]:
        # Least-tried server first; wait grows exponentially with its failures.
        server = min(pool, key=lambda s: s.reconnects)
        wait = self._options.reconnect_wait * 2 ** min(server.reconnects, 16)
        wait = min(wait, self._options.max_reconnect_wait)
        return server, wait * random.uniform(0.8, 1.0) if server.reconnects else 0.0

    def _emit(self, event: ConnectionEvent) -> None:
        self._state = event.state
        self._tell(event)

    # nats-py calls these on the loop thread; the work is done in Trio's.

    async def _on_disconnected(self) -> None:
        self._thread.to_trio(self._disconnected)

    async def _on_reconnected(self) -> None:
        self._refusals = 0
        url = self._nc.connected_url
        self._thread.to_trio(functools.partial(self._reconnected_to, url.netloc if url else ""))

    async def _on_closed(self) -> None:
        self._thread.to_trio(self._client_closed)

    def _disconnected(self) -> None:
        if not self._closing:
            self._emit(ConnectionEvent(ConnectionState.DISCONNECTED, "connection lost"))

    def _reconnected_to(self, server: str) -> None:
        self._emit(ConnectionEvent(ConnectionState.CONNECTED, server))
        self._came_back()  # pull requests and watches are re-made at once

    def _client_closed(self) -> None:
        if not self._closing:
            # nats-py gave up (for example, an authorization failure): say so.
            if self._replies is not None:  # it was up: not a failed first connect
                log.warning("the connection is closed for good: %r", self._nc.last_error)
            self._emit(ConnectionEvent(ConnectionState.CLOSED, "connection closed by the client"))
        self._closed.set()

    async def _on_error(self, exc: Exception) -> None:
        log.debug("nats client error: %r", exc)
        self._last_error = exc
        if isinstance(exc, NoTlsError):
            if self._connect_task is not None:
                # A server without TLS will not grow it while we retry: fail now.
                self._connect_task.cancel()
            else:
                # Reconnecting: the attempt failed before anything was sent;
                # nats-py goes on to the next server (or this one again),
                # leaving the refused attempt's socket open: close it.
                log.warning("%s", exc)
                self._close_attempt()
        elif is_auth_refusal(exc) and self._connect_task is not None:
            # nats-py would retry forever; wrong credentials do not get better.
            self._connect_task.cancel()
        elif is_auth_refusal(exc) and not self._closing:
            # Refused on reconnecting (credentials revoked or rotated): nats-py
            # would retry forever, a service would look alive and serve
            # nothing. Close instead, as at the first connect: the owner sees
            # the transport closed (a service exits 2, to be restarted).
            self._refusals += 1
            self._close_attempt()
            if self._refusals >= self._refusals_allowed and self._giving_up is None:
                log.warning("the server refused the credentials %d times: closing", self._refusals)
                self._giving_up = asyncio.get_running_loop().create_task(self._give_up())

    def _close_attempt(self) -> None:
        """Close the socket of a connection attempt that was refused (nats-py leaves it open)."""
        attempt = getattr(self._nc, "_transport", None)
        if attempt is not None:
            attempt.close()

    async def _give_up(self) -> None:
        """Close the connection for good (on the loop thread), however broken it is."""
        try:
            await self._nc.close()
        except Exception as exc:
            # Flushing to a dead socket failed halfway: nats-py is closed but
            # did not call back. Close its socket, and tell Trio ourselves.
            log.debug("closing after refusals: %r", exc)
            leftover = getattr(self._nc, "_transport", None)
            if leftover is not None:
                leftover.close()
                with contextlib.suppress(Exception):
                    await leftover.wait_closed()
            await self._on_closed()

    @property
    def state(self) -> ConnectionState:
        return self._state

    async def aclose(self) -> None:
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await self._bridge.flush_posts()
        self._bridge.close()
        if self._replies is not None:
            replies = self._replies
            self._thread.call_soon(lambda: replies.fail_all(nats.errors.ConnectionClosedError()))
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            try:
                await self._thread.run(self._nc.close())
            except Exception as exc:
                log.debug("error while closing: %r", exc)
        self._closed.set()
        self._emit(ConnectionEvent(ConnectionState.CLOSED, "closed by its owner"))
        self._finished()  # consumers and watches see _closing and end their channels
        self._background.cancel()

    async def _shut(self) -> None:
        try:
            await super()._shut()
        finally:
            self._thread.stop()

    @property
    def _ended(self) -> bool:
        return self._closing

    # -- requests ----------------------------------------------------------

    async def _request(
        self, subject: str, payload: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> _Received:
        self._check_open()
        replies = self._replies
        assert replies is not None
        msg: Msg = await self._bridge.call(lambda: replies.start(subject, payload, headers))
        return _Received(msg)

    async def _post_now(self, subject: str, payload: bytes, reply: str) -> None:
        await self._nc.publish(subject, payload, reply=reply)

    def _publish_raw(self, subject: str, payload: bytes = b"") -> None:
        """Publish without waiting for the crossing (acks, flow control replies).

        Deliberately not a checkpoint: an ack per message is the hot path, and
        a Trio schedule point per ack halves the consume rate.
        """
        self._check_open()
        self._bridge.post(subject, payload)
