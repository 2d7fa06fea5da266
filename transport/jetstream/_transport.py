"""The NATS JetStream transport: nats-py on asyncio, driven from Trio.

This module and its siblings ``_jetstream_wire.py`` (the bridge and wire
helpers), ``_jetstream_consume.py`` and ``_jetstream_kv.py`` are the only ones
that import asyncio or nats. The rest of the program sees Trio calls that
raise :class:`TransportError` subclasses.

nats-py runs on a stock asyncio loop in a thread of its own
(:class:`_LoopThread`), and every crossing between the two threads is paid
once per batch:

* Outgoing work (publishes, KV writes and reads, acks, pull requests) is queued
  by Trio tasks into :class:`_Bridge`, whose pump hands everything queued in
  *one* crossing. Inside asyncio each operation only writes to nats-py's
  outgoing buffer and, for requests, registers a future on a shared reply
  inbox (:class:`_Replies`); no asyncio task is created per operation.
* Incoming messages (replies, pulled messages, watch updates) arrive in nats-py
  subscription callbacks on the loop thread, which queue them and wake Trio
  once for everything queued since its last wake-up.

Robustness beyond nats-py: reconnection forever with exponential backoff;
pull requests carry idle heartbeats and are re-issued when they go silent (a
restarted server forgets them); KV watches use a self-managed ephemeral
consumer that is recreated from the last seen revision on a gap, a silence or
a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import functools
import json
import math
import random
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
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
    InvalidSpecError,
    NotFoundError,
    TransportClosedError,
    TransportError,
    TransportTimeoutError,
)
from .._interface import Delivery, KeyValue
from .._nursery import background_nursery
from .._options import ConnectOptions
from .._specs import (
    DELIVER_AT_HEADER,
    SCHEDULE_PREFIX,
    ConnectionEvent,
    ConnectionState,
    ConsumerSpec,
    Discard,
    KVSpec,
    OutMessage,
    Partitioning,
    PubAck,
    Retention,
    StoredMessage,
    StreamSpec,
    check_holds,
    check_read,
    check_subject,
    schedule_token,
    subject_matches,
)
from ._consume import _Puller
from ._kv import _JetStreamKV
from ._read import _NO_MESSAGE, _Reader
from ._wire import (
    _API,
    _KV_HEADROOM,
    _api_reply,
    _Bridge,
    _dur,
    _LoopThread,
    _new_inbox,
    _NoStreamAnswered,
    _parse_ack,
    _Replies,
    _rfc3339,
    _StreamExistsError,
    _translate,
    log,
)

# --------------------------------------------------------------------------
# The transport.


def _file_error(exc: OSError) -> str:
    """What is wrong with a TLS file, in a few words (``ssl`` says little for a bad one)."""
    if isinstance(exc, ssl.SSLError):
        return f"not a usable PEM file ({exc.reason or exc})"
    return exc.strerror or str(exc)


def _is_auth_refusal(exc: BaseException | None) -> bool:
    """True for the server's "Authorization Violation", however nats-py wraps it
    (it raises AuthorizationError in some paths and a plain Error in others)."""
    return isinstance(exc, nats.errors.AuthorizationError) or (
        isinstance(exc, nats.errors.Error) and "authorization violation" in str(exc).lower()
    )


class _NoTlsError(nats.errors.Error):
    """A server that must be spoken to over TLS offered none."""


class _TlsOrNothingClient(NatsClient):
    """nats-py's client, refusing to talk in the clear to a server that must use TLS.

    nats-py upgrades a connection to TLS only when the server's INFO says
    ``tls_required``: given ``tls://`` (or a CA bundle) and a server without
    TLS, misconfigured or an impostor, it would go on in the clear and send
    the credentials so. Here the INFO of every connection, first or
    reconnect, is checked before anything is sent: a server that must use
    TLS and requires it is left to nats-py; one that offers it without
    requiring it (``allow_non_tls``) is spoken to over TLS all the same; one
    that offers none fails the attempt with :class:`_NoTlsError`.
    """

    def __init__(self, *, tls_always: bool) -> None:
        super().__init__()
        #: TLS files were given: every server must use TLS, whatever its scheme.
        self._tls_always = tls_always

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        server = self._current_server
        # initial_connection: the INFO that opens a connection (not a later
        # update about the cluster), read before CONNECT is written.
        if initial_connection and server is not None and not info.get("tls_required"):
            scheme = server.uri.scheme
            if self._tls_always or scheme == "tls":
                if not info.get("tls_available"):
                    why = "the URL says tls://" if scheme == "tls" else "TLS files were given"
                    raise _NoTlsError(
                        f"the server at {scheme}://{server.uri.netloc} offers no TLS, and {why}: "
                        "refusing to connect in the clear"
                    )
                info["tls_required"] = True  # what makes nats-py start TLS, read after this
        await super()._process_info(info, initial_connection)


class JetStreamTransport:
    """:class:`Transport` over NATS JetStream. Built by :func:`open_jetstream`."""

    def __init__(self, options: ConnectOptions, nursery: trio.Nursery, thread: _LoopThread) -> None:
        self._options = options
        self._nursery = nursery
        self._thread = thread
        self._nc: NatsClient = _TlsOrNothingClient(
            tls_always=options.tls_ca_file is not None or options.tls_cert_file is not None
        )
        self._bridge = _Bridge(thread, lambda: self._nc.is_connected, self._post_now)
        self._replies: _Replies | None = None
        self._state = ConnectionState.DISCONNECTED
        self._listeners: list[trio.MemorySendChannel[ConnectionEvent]] = []
        self._reconnected = trio.Event()
        self._closing = False
        self._closed = trio.Event()
        # Background tasks run under this scope, not the nursery's: the
        # nursery wraps the owner's block, which aclose must not cancel.
        self._background = trio.CancelScope()
        self._wakers: set[Callable[[], None]] = set()
        self._streams: dict[str, StreamSpec] = {}
        self._supports_schedules = False
        self._supports_batch_get = False
        # Written on the loop thread while connecting, read after by Trio.
        self._connect_task: asyncio.Task[None] | None = None
        self._last_error: Exception | None = None
        # Loop thread only: credential refusals in a row while reconnecting,
        # how many make us give up, and the task closing the connection then.
        self._refusals = 0
        self._refusals_allowed = 3
        self._giving_up: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------

    async def _connect(self, servers: list[str]) -> None:
        opts = self._options
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
        tls = self._tls_context()
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
            if isinstance(refusal, _NoTlsError):
                raise ConnectionLostError(str(refusal)) from None
            if _is_auth_refusal(refusal):
                raise AuthorizationError(f"{servers} refused the credentials") from None
            if isinstance(exc, trio.TooSlowError):
                why = f"; last error: {refusal!r}" if refusal is not None else ""
                raise ConnectionLostError(f"no server of {servers} answered in time{why}") from None
            raise _translate(exc, connected=False) from None
        self._state = ConnectionState.CONNECTED
        version = self._nc.connected_server_version
        self._supports_schedules = (version.major, version.minor) >= (2, 12)
        self._supports_batch_get = (version.major, version.minor) >= (2, 11)
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

    def _tls_context(self) -> ssl.SSLContext | None:
        """The TLS context of the files given; ``None`` for the system's defaults.

        Raises :class:`InvalidSpecError` naming the file that cannot be read
        or is not what it should be (PEM), before anything is sent.
        """
        opts = self._options
        if opts.tls_ca_file is None and opts.tls_cert_file is None:
            return None
        try:
            ctx = ssl.create_default_context(cafile=opts.tls_ca_file)
        except OSError as exc:  # ssl.SSLError is one too
            why = _file_error(exc)
            raise InvalidSpecError(f"TLS CA bundle {opts.tls_ca_file}: {why}") from None
        if opts.tls_cert_file is not None and opts.tls_key_file is not None:
            try:
                ctx.load_cert_chain(opts.tls_cert_file, opts.tls_key_file)
            except OSError as exc:
                raise InvalidSpecError(
                    f"TLS client certificate {opts.tls_cert_file} with key "
                    f"{opts.tls_key_file}: {_file_error(exc)}"
                ) from None
        return ctx

    def _next_server(self, pool: list[Any], _info: dict[str, Any]) -> tuple[Any, float]:
        # Least-tried server first; wait grows exponentially with its failures.
        server = min(pool, key=lambda s: s.reconnects)
        wait = self._options.reconnect_wait * 2 ** min(server.reconnects, 16)
        wait = min(wait, self._options.max_reconnect_wait)
        return server, wait * random.uniform(0.8, 1.0) if server.reconnects else 0.0

    def _emit(self, event: ConnectionEvent) -> None:
        self._state = event.state
        for channel in list(self._listeners):
            try:
                channel.send_nowait(event)
            except trio.WouldBlock:
                pass  # the owner is behind; `state` stays current
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                self._listeners.remove(channel)

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
        self._reconnected.set()
        self._reconnected = trio.Event()
        for wake in list(self._wakers):
            wake()  # pull requests and watches are re-made at once

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
        if isinstance(exc, _NoTlsError):
            if self._connect_task is not None:
                # A server without TLS will not grow it while we retry: fail now.
                self._connect_task.cancel()
            else:
                # Reconnecting: the attempt failed before anything was sent;
                # nats-py goes on to the next server (or this one again),
                # leaving the refused attempt's socket open: close it.
                log.warning("%s", exc)
                self._close_attempt()
        elif _is_auth_refusal(exc) and self._connect_task is not None:
            # nats-py would retry forever; wrong credentials do not get better.
            self._connect_task.cancel()
        elif _is_auth_refusal(exc) and not self._closing:
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

    def connection_events(self) -> trio.MemoryReceiveChannel[ConnectionEvent]:
        send, receive = trio.open_memory_channel[ConnectionEvent](16)
        self._listeners.append(send)
        return receive

    def now(self) -> float:
        return _wall_clock()

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
        for channel in self._listeners:
            channel.close()
        self._listeners.clear()
        for wake in list(self._wakers):
            wake()  # consumers and watches see _closing and end their channels
        self._background.cancel()

    async def __aenter__(self) -> JetStreamTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        if self._closing:
            raise TransportClosedError("transport is closed")

    # -- requests ----------------------------------------------------------

    async def _request(
        self, subject: str, payload: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Msg:
        self._check_open()
        replies = self._replies
        assert replies is not None
        msg: Msg = await self._bridge.call(lambda: replies.start(subject, payload, headers))
        return msg

    async def _api(self, subject: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        payload = json.dumps(body).encode() if body is not None else b""
        return _api_reply(await self._request(f"{_API}.{subject}", payload))

    async def _post_now(self, subject: str, payload: bytes, reply: str) -> None:
        await self._nc.publish(subject, payload, reply=reply)

    def _publish_raw(self, subject: str, payload: bytes = b"") -> None:
        """Publish without waiting for the crossing (acks, flow control replies).

        Deliberately not a checkpoint: an ack per message is the hot path, and
        a Trio schedule point per ack halves the consume rate.
        """
        self._check_open()
        self._bridge.post(subject, payload)

    # -- streams -----------------------------------------------------------

    async def ensure_stream(self, spec: StreamSpec) -> StreamSpec:
        subjects = list(spec.subjects)
        if spec.allow_delayed:
            subjects.append(spec.schedule_subjects)
        config: dict[str, Any] = {
            "name": spec.name,
            "subjects": subjects,
            "retention": spec.retention.value,
            "storage": spec.storage.value,
            "num_replicas": spec.replicas,
            # JetStream refuses a duplicate window longer than the max age.
            "duplicate_window": _dur(min(spec.duplicate_window, spec.max_age or math.inf)),
            "max_msg_size": spec.max_msg_size or -1,
            "max_age": _dur(spec.max_age),
            "max_bytes": spec.max_bytes or -1,
            "max_msgs": spec.max_msgs or -1,
            "discard": spec.discard.value,
            # Lets `read` take a page in one round trip (a batched direct get).
            "allow_direct": True,
        }
        if spec.allow_delayed and self._supports_schedules:
            config["allow_msg_schedules"] = True
        if spec.partitioning is not None:
            config["subject_transform"] = _partition_transform(spec.partitioning)
        found = await self._ensure_stream_config(config)
        kept = _partitioning_of(found.get("subject_transform"))
        if kept is not None and kept != spec.partitioning:
            spec = dataclasses.replace(spec, partitioning=kept)
        self._streams[spec.name] = spec
        return spec

    async def _ensure_stream_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """Create the stream, or bring it to ``config``; its configuration after that.

        An existing stream's replicas are never lowered: a process that
        provisions with fewer (a client or a CLI command left at the default
        of one) would otherwise take every stream of a cluster down to a
        single copy, without a word.
        """
        name = config["name"]
        try:
            resp = await self._api(f"STREAM.CREATE.{name}", config)
        except _StreamExistsError:
            # It exists with another configuration: bring it to this one.
            current = (await self._api(f"STREAM.INFO.{name}"))["config"]
            replicas = max(config["num_replicas"], int(current.get("num_replicas") or 1))
            config = {**config, "num_replicas": replicas}
            if _partitioning_of(current.get("subject_transform")) is not None:
                # The stored messages are filed by the partitions it has.
                config["subject_transform"] = current["subject_transform"]
            resp = await self._api(f"STREAM.UPDATE.{name}", config)
        found: dict[str, Any] = resp.get("config") or config
        return found

    async def _stream_for_delayed(self, subject: str) -> StreamSpec:
        for spec in self._streams.values():
            if spec.allow_delayed and any(subject_matches(f, subject) for f in spec.subjects):
                return spec
        resp = await self._api("STREAM.NAMES", {"subject": subject})
        names = resp.get("streams") or []
        if names:
            info = await self._api(f"STREAM.INFO.{names[0]}")
            cfg = info["config"]
            if cfg.get("allow_msg_schedules") or f"{SCHEDULE_PREFIX}.{names[0]}.>" in cfg.get(
                "subjects", []
            ):
                spec = StreamSpec(
                    name=names[0],
                    subjects=tuple(s for s in cfg["subjects"] if not s.startswith(SCHEDULE_PREFIX)),
                    retention=Retention(cfg["retention"]),
                    allow_delayed=True,
                )
                self._streams[spec.name] = spec
                return spec
        raise InvalidSpecError(f"no stream that allows delayed delivery takes {subject!r}")

    # -- publishing --------------------------------------------------------

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        deliver_at: float | None = None,
    ) -> PubAck:
        (ack,) = await self.publish_many([OutMessage(subject, data, msg_id, headers, deliver_at)])
        return ack

    async def publish_many(self, messages: Sequence[OutMessage]) -> list[PubAck]:
        self._check_open()
        if not messages:
            return []
        prepared: list[tuple[str, bytes, dict[str, str] | None]] = []
        for message in messages:
            prepared.append(await self._prepare(message))
        replies = self._replies
        assert replies is not None

        async def start_all() -> asyncio.Future[list[Msg | BaseException]]:
            futures: list[asyncio.Future[Msg]] = []
            for subject, data, headers in prepared:
                try:
                    futures.append(await replies.start(subject, data, headers))
                except Exception as exc:  # this one failed; the others go on
                    failed = asyncio.get_running_loop().create_future()
                    failed.set_exception(exc)
                    futures.append(failed)
            return asyncio.gather(*futures, return_exceptions=True)

        outcomes: list[Msg | BaseException] = await self._bridge.call(start_all)
        acks: list[PubAck] = []
        first_error: TransportError | None = None
        for (subject, _d, _h), outcome in zip(prepared, outcomes, strict=True):
            try:
                if isinstance(outcome, BaseException):
                    raise _translate(outcome, connected=self._nc.is_connected)
                acks.append(_parse_ack(outcome, subject))
            except _NoStreamAnswered as exc:
                first_error = first_error or await self._unanswered(subject, exc)
            except TransportError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return acks

    async def _unanswered(self, subject: str, exc: _NoStreamAnswered) -> TransportError:
        """What a publish to ``subject`` that no stream answered means.

        ``exc`` (a :class:`NotFoundError`) if no stream takes the subject.
        If one does, it has no leader for the moment (a cluster electing one,
        a server still recovering its streams): nothing was stored, and the
        same publish will succeed shortly, so it is a :class:`ConnectionLostError`.
        """
        try:
            found = await self._api("STREAM.NAMES", {"subject": subject})
        except TransportError:
            # The meta leader is away too: a missing stream is the unlikely case.
            return ConnectionLostError(f"no stream answered for {subject!r}; nothing stored")
        names = found.get("streams") or []
        if not names:
            return exc
        return ConnectionLostError(
            f"stream {names[0]} did not answer for {subject!r} (no leader yet?); nothing stored"
        )

    async def _prepare(self, message: OutMessage) -> tuple[str, bytes, dict[str, str] | None]:
        check_subject(message.subject)
        headers = dict(message.headers) if message.headers else {}
        if message.msg_id is not None:
            headers["Nats-Msg-Id"] = message.msg_id
        subject = message.subject
        if message.deliver_at is not None:
            spec = await self._stream_for_delayed(subject)
            headers[DELIVER_AT_HEADER] = repr(message.deliver_at)
            if self._supports_schedules:
                token = schedule_token(message.msg_id or _new_inbox())
                headers["Nats-Schedule"] = "@at " + _rfc3339(max(message.deliver_at, self.now()))
                headers["Nats-Schedule-Target"] = subject
                subject = f"{SCHEDULE_PREFIX}.{spec.name}.{token}"
            # Without server schedules the message is stored now and the
            # consumer hands it back (nak with delay) until it is due.
        return subject, message.data, headers or None

    # -- reading -----------------------------------------------------------

    async def read(
        self, stream: str, subject: str, *, start_seq: int = 1, limit: int = 1000
    ) -> list[StoredMessage]:
        """Up to ``limit`` stored messages of ``stream`` matching ``subject``, in order.

        See :meth:`Transport.read`. One crossing to the loop thread and back
        per call; on the server, one round trip per page by batched direct
        get, or one per message on servers before 2.11 and on streams without
        direct get (see ``_jetstream_read.py``). Every replica of a stream
        answers direct gets, so on a cluster a read may lag the latest writes
        by the replication delay. On servers without message schedules
        (before 2.12) a delayed message is stored, and read, at once.
        """
        self._check_open()
        check_read(stream, subject, start_seq, limit)
        replies = self._replies
        assert replies is not None
        reader = _Reader(
            replies, stream, subject, start_seq, limit, direct=self._supports_batch_get
        )
        try:
            found: list[StoredMessage] = await self._bridge.call(reader.run, spawn=True)
        except BaseException:
            reader.abandoned = True  # the task stops before its next request
            raise
        return found

    async def holds(self, stream: str, seq: int) -> bool:
        """Whether ``stream`` still stores sequence ``seq``; see :meth:`Transport.holds`.

        A message get of that one sequence, answered by the stream's leader
        (a direct get may be answered by a replica that lags). The server
        finds a sequence without scanning, whereas a read's "next message
        from here" steps over every removed message: 5 ms a lookup past
        100,000 acked events, measured.
        """
        self._check_open()
        check_holds(stream, seq)
        reply = await self._request(
            f"{_API}.STREAM.MSG.GET.{stream}", json.dumps({"seq": seq}).encode()
        )
        try:
            _api_reply(reply)
        except NotFoundError:
            body = json.loads(reply.data or b"{}")
            if int(body.get("error", {}).get("err_code", 0)) == _NO_MESSAGE:
                return False
            raise
        return True

    # -- consuming ---------------------------------------------------------

    @asynccontextmanager
    async def consume(
        self, stream: str, spec: ConsumerSpec, *, buffer: int = 64
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Delivery]]:
        self._check_open()
        if buffer < 1:
            raise InvalidSpecError("buffer must be at least 1")
        puller = _Puller(self, stream, spec, buffer)
        await puller.check_filters()
        try:
            await puller.ensure_consumer()
        except (TransportTimeoutError, ConnectionLostError) as exc:
            # A failover or an outage: pulling will create it once it can.
            # Refusals (no such stream, a bad spec) still raise here.
            log.debug("consumer %s not created yet: %r", spec.durable, exc)
            puller.needs_consumer = True
        except NotFoundError as exc:
            if stream not in self._streams:
                raise
            # This transport ensured the stream: on a cluster where several
            # processes create it at once, a server may not know it yet.
            log.debug("consumer %s not created yet: %r", spec.durable, exc)
            puller.needs_consumer = True
        await puller.subscribe()
        async with self._serve(puller.run, puller.hand_back, deadline=5.0):
            yield puller.receive

    @asynccontextmanager
    async def _serve(
        self,
        run: Callable[[trio.TaskStatus[None]], Awaitable[None]],
        cleanup: Callable[[], Awaitable[None]],
        *,
        deadline: float,
    ) -> AsyncIterator[None]:
        """Run ``run`` in the background for the owner's block, then ``cleanup``.

        The task lives in the transport's nursery rather than in one opened
        around the block, so an exception raised by the owner's block leaves
        it unwrapped (no exception group). ``cleanup`` runs shielded, within
        ``deadline`` seconds, however the block ends.
        """
        scope = trio.CancelScope()

        async def guarded(task_status: trio.TaskStatus[None]) -> None:
            with scope:
                await run(task_status)

        try:
            await self._nursery.start(guarded)
            yield
        finally:
            scope.cancel()
            with trio.CancelScope(shield=True), trio.move_on_after(deadline):
                await cleanup()

    # -- key-value ---------------------------------------------------------

    async def ensure_kv(self, spec: KVSpec) -> KeyValue:
        config: dict[str, Any] = {
            "name": f"KV_{spec.bucket}",
            "subjects": [f"$KV.{spec.bucket}.>"],
            "retention": "limits",
            "storage": spec.storage.value,
            "num_replicas": spec.replicas,
            "max_msgs_per_subject": spec.history,
            # The server counts headers too; the value limit is checked here.
            "max_msg_size": spec.max_value_size + _KV_HEADROOM if spec.max_value_size else -1,
            "max_bytes": spec.max_bytes or -1,
            "max_age": _dur(spec.ttl),
            "discard": Discard.NEW.value,
            "allow_rollup_hdrs": True,
            "deny_delete": True,
            "allow_direct": True,
            "duplicate_window": _dur(min(spec.ttl or 120.0, 120.0)),
        }
        stored = await self._ensure_stream_config(config)
        return _JetStreamKV(
            self, spec.bucket, direct=_direct_reads(stored), max_value_size=spec.max_value_size
        )

    async def kv(self, bucket: str) -> KeyValue:
        config = (await self._api(f"STREAM.INFO.KV_{bucket}"))["config"]
        limit = config.get("max_msg_size", -1)
        return _JetStreamKV(
            self,
            bucket,
            direct=_direct_reads(config),
            max_value_size=limit - _KV_HEADROOM if limit > _KV_HEADROOM else None,
        )


def _direct_reads(config: Mapping[str, Any]) -> bool:
    """Whether a bucket's ``get`` may be a direct get: only on a single replica.

    Every replica answers direct gets, and a follower may not have applied
    the latest acknowledged write yet: on a healthy 3-node cluster about one
    read in 40 right after a write returned the revision before it. A
    compare-and-set user (the orchestrator deciding from a fresh read) must
    see what was written, so a replicated bucket is read from its leader.
    """
    return bool(config.get("allow_direct")) and int(config.get("num_replicas") or 1) <= 1


def _wall_clock() -> float:
    """Seconds since the epoch: JetStream schedules run on the servers' wall clocks."""
    return datetime.datetime.now(tz=datetime.UTC).timestamp()


# --------------------------------------------------------------------------
# Opening.


@asynccontextmanager
async def open_jetstream(
    servers: list[str], options: ConnectOptions
) -> AsyncIterator[JetStreamTransport]:
    """Connect to NATS and yield the transport; close it on exit.

    Raises :class:`ConnectionLostError` if no server answers within the
    connect timeout, or if one that must use TLS (a ``tls://`` URL, or any
    with TLS files given) offers none; :class:`InvalidSpecError` for TLS
    files that cannot be read or used.
    """
    async with background_nursery() as nursery:
        thread = _LoopThread(trio.lowlevel.current_trio_token())
        # The loop's thread is a task of this nursery: the block cannot end
        # before the thread has.
        nursery.start_soon(
            functools.partial(trio.to_thread.run_sync, thread.run_forever, thread_name="nats-py")
        )
        transport = JetStreamTransport(options, nursery, thread)
        try:
            await transport._connect(servers)
            yield transport
        finally:
            try:
                await transport.aclose()
            finally:
                thread.stop()


def _partition_transform(parts: Partitioning) -> dict[str, str]:
    """The server's subject transform that files messages as ``parts`` says (2.10+)."""
    return {
        "src": f"{parts.prefix}.*.>",
        "dest": f"{parts.prefix}.{{{{partition({parts.count},1)}}}}.{{{{wildcard(1)}}}}.>",
    }


_PARTITION_DEST = re.compile(r"(.+)\.\{\{partition\((\d+),1\)\}\}\.\{\{wildcard\(1\)\}\}\.>")


def _partitioning_of(transform: object) -> Partitioning | None:
    """The partitioning a stream's subject transform makes, if it is one of ours."""
    if not isinstance(transform, dict):
        return None
    found = _PARTITION_DEST.fullmatch(str(transform.get("dest", "")))
    if found is None or transform.get("src") != f"{found[1]}.*.>":
        return None
    return Partitioning(prefix=found[1], count=int(found[2]))


__all__ = ["JetStreamTransport", "open_jetstream"]
