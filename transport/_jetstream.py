"""The NATS JetStream transport: nats-py on asyncio, driven from Trio.

This is the only module that imports asyncio, nats or trio_asyncio. The rest of
the program sees Trio calls that raise :class:`TransportError` subclasses.

How the two worlds meet (each crossing from Trio into asyncio costs ~45 us):

* Outgoing work (publishes, KV writes and reads, acks, pull requests) is queued
  by Trio tasks into :class:`_Bridge`, whose pump hands everything queued in
  *one* crossing. Inside asyncio each operation only writes to nats-py's
  outgoing buffer and, for requests, registers a future on a shared reply
  inbox (:class:`_Replies`); no asyncio task is created per operation.
* Incoming messages (replies, pulled messages, watch updates) arrive in nats-py
  subscription callbacks, which run inside the Trio run (trio-asyncio executes
  asyncio callbacks in Trio context) and set Trio events directly: receiving
  needs no crossing at all.

Robustness beyond nats-py: reconnection forever with exponential backoff;
pull requests carry idle heartbeats and are re-issued when they go silent (a
restarted server forgets them); KV watches use a self-managed ephemeral
consumer that is recreated from the last seen revision on a gap, a silence or
a reconnect.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import functools
import itertools
import json
import logging
import math
import random
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
import trio
import trio_asyncio
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ._errors import (
    ConflictError,
    ConnectionLostError,
    InvalidSpecError,
    NotFoundError,
    StorageFullError,
    TooLargeError,
    TransportClosedError,
    TransportError,
    TransportTimeoutError,
)
from ._interface import Delivery, KeyValue, Settlement
from ._nursery import background_nursery
from ._options import ConnectOptions
from ._specs import (
    DELIVER_AT_HEADER,
    SCHEDULE_PREFIX,
    ConnectionEvent,
    ConnectionState,
    ConsumerSpec,
    Discard,
    KVChange,
    KVEntry,
    KVOp,
    KVSpec,
    OutMessage,
    PubAck,
    Retention,
    StreamSpec,
    check_key,
    check_subject,
    subject_matches,
)

log = logging.getLogger("transport.jetstream")

T = TypeVar("T")

_NS = 1_000_000_000
#: Idle heartbeat of pull requests and watches; twice this without a word and
#: the request or watch is presumed lost and re-issued.
_HEARTBEAT = 1.0
#: Lifetime of one pull request.
_PULL_EXPIRES = 10.0
_API = "$JS.API"
#: Bytes a KV bucket's messages may carry beyond the value: subject and headers.
_KV_HEADROOM = 1024

# JetStream API error codes (nats-server's errors.json) that map to our types.
_CONFLICT_CODES = {10071, 10164}
_TOO_LARGE_CODES = {10054}
_NOT_FOUND_CODES = {10059, 10014, 10037}
_FULL_CODES = {10023, 10047, 10077, 10028}
_STREAM_EXISTS = 10058
_SPEC_CODES = {10065, 10052, 10099, 10100, 10105, 10012, 10013, 10025, 10148}


# --------------------------------------------------------------------------
# Error translation: nothing from nats-py or asyncio leaves this module.


class _StreamExistsError(InvalidSpecError):
    """A stream of that name exists with another configuration."""


def _api_error(err: Mapping[str, Any]) -> TransportError:
    code = int(err.get("code", 0))
    err_code = int(err.get("err_code", 0))
    text = f"{err.get('description', 'JetStream error')} (code {code}/{err_code})"
    if err_code == _STREAM_EXISTS:
        return _StreamExistsError(text)
    if err_code in _CONFLICT_CODES:
        return ConflictError(text)
    if err_code in _TOO_LARGE_CODES or code == 413:
        return TooLargeError(text)
    if err_code in _FULL_CODES or ("maximum" in text and "exceeded" in text):
        return StorageFullError(text)
    if err_code in _NOT_FOUND_CODES or code == 404:
        return NotFoundError(text)
    if err_code in _SPEC_CODES or code == 400:
        return InvalidSpecError(text)
    if code == 503:
        return ConnectionLostError(text)
    return TransportError(text)


def _translate(exc: BaseException, *, connected: bool) -> TransportError:
    """Map any exception raised on the asyncio side to our hierarchy."""
    if isinstance(exc, TransportError):
        return exc
    if isinstance(exc, nats.js.errors.APIError):
        return _api_error(
            {"code": exc.code or 0, "err_code": exc.err_code or 0, "description": exc.description}
        )
    if isinstance(exc, nats.errors.MaxPayloadError):
        return TooLargeError("payload exceeds the server's max_payload")
    if isinstance(exc, nats.errors.ConnectionClosedError):
        return TransportClosedError("connection closed")
    if isinstance(exc, (nats.errors.TimeoutError, asyncio.TimeoutError, TimeoutError)):
        if connected:
            return TransportTimeoutError("the server did not answer in time")
        return ConnectionLostError("disconnected: the outcome is unknown")
    if isinstance(exc, nats.errors.NoRespondersError):
        return ConnectionLostError("JetStream is not available on this server")
    if isinstance(exc, asyncio.CancelledError):
        return TransportClosedError("operation abandoned at close")
    if isinstance(
        exc,
        (
            OSError,
            nats.errors.NoServersError,
            nats.errors.StaleConnectionError,
            nats.errors.ConnectionReconnectingError,
            nats.errors.OutboundBufferLimitError,
        ),
    ):
        return ConnectionLostError(f"connection lost: {exc!r}")
    if isinstance(exc, nats.errors.Error):
        return TransportError(f"nats: {exc!r}")
    return TransportError(f"unexpected {type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------
# The Trio -> asyncio bridge.


class _Op:
    """One queued asyncio operation and, once done, its outcome."""

    __slots__ = ("done", "error", "fn", "result", "spawn")

    def __init__(self, fn: Callable[[], Awaitable[Any]], spawn: bool) -> None:
        self.fn = fn
        self.spawn = spawn
        self.done = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class _Bridge:
    """Runs asyncio work for Trio callers, crossing once per batch.

    An operation's coroutine is awaited inline inside the batch, so it must not
    block: it may return an ``asyncio.Future`` whose outcome becomes the
    operation's outcome (a request waiting for its reply). Slow operations
    (administration calls) are queued with ``spawn=True`` and get a task.
    """

    def __init__(
        self,
        is_connected: Callable[[], bool],
        publish: Callable[[str, bytes, str], Awaitable[None]],
    ) -> None:
        self._queue: list[_Op] = []
        self._posts: list[tuple[str, bytes, str]] = []
        self._publish = publish
        self._wake = trio.Event()
        self._closed = False
        self._is_connected = is_connected
        self._tasks: set[asyncio.Future[Any]] = set()

    async def call(self, fn: Callable[[], Awaitable[Any]], *, spawn: bool = False) -> Any:
        """Run ``fn`` on the asyncio side; return its (or its future's) result.

        Raises :class:`TransportError`; :class:`TransportClosedError` once closed.
        """
        if self._closed:
            raise TransportClosedError("transport is closed")
        op = _Op(fn, spawn)
        self._queue.append(op)
        self._wake.set()
        await op.done.wait()
        if op.error is not None:
            raise op.error
        return op.result

    def post(self, subject: str, payload: bytes, reply: str = "") -> None:
        """Queue a plain publish that nobody waits for (acks and the like).

        Raises :class:`TransportClosedError` once closed.
        """
        if self._closed:
            raise TransportClosedError("transport is closed")
        self._posts.append((subject, payload, reply))
        self._wake.set()

    async def pump(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hand queued operations to asyncio until cancelled."""
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            batch, self._queue = self._queue, []
            posts, self._posts = self._posts, []
            if batch or posts:
                await trio_asyncio.aio_as_trio(self._run_batch)(batch, posts)

    async def flush_posts(self) -> None:
        """Write out the posts still queued (at close, so acks are not lost)."""
        posts, self._posts = self._posts, []
        if posts:
            await trio_asyncio.aio_as_trio(self._run_batch)([], posts)

    async def _run_batch(self, batch: list[_Op], posts: list[tuple[str, bytes, str]]) -> None:
        for subject, payload, reply in posts:
            try:
                await self._publish(subject, payload, reply)
            except Exception as exc:
                # An ack that is lost makes the server redeliver: harmless.
                log.debug("post to %s failed: %r", subject, exc)
        for op in batch:
            if op.spawn:
                task = asyncio.ensure_future(op.fn())
                self._tasks.add(task)
                task.add_done_callback(functools.partial(self._finish, op))
                continue
            try:
                result = await op.fn()
            except BaseException as exc:
                self._fail(op, exc)
                continue
            if isinstance(result, asyncio.Future):
                result.add_done_callback(functools.partial(self._finish, op))
            else:
                op.result = result
                op.done.set()

    def _finish(self, op: _Op, fut: asyncio.Future[Any]) -> None:
        self._tasks.discard(fut)
        if fut.cancelled():
            self._fail(op, asyncio.CancelledError())
        elif (exc := fut.exception()) is not None:
            self._fail(op, exc)
        else:
            op.result = fut.result()
            op.done.set()

    def _fail(self, op: _Op, exc: BaseException) -> None:
        if self._closed and isinstance(exc, (asyncio.CancelledError, nats.errors.Error)):
            op.error = TransportClosedError("transport closed during the operation")
        else:
            op.error = _translate(exc, connected=self._is_connected())
        op.done.set()

    def close(self) -> None:
        """Fail every queued and in-flight operation with TransportClosedError."""
        self._closed = True
        for op in self._queue:
            op.error = TransportClosedError("transport closed")
            op.done.set()
        self._queue.clear()
        for task in list(self._tasks):
            task.cancel()


class _Replies:
    """A shared reply inbox for pipelined requests (asyncio side).

    ``start`` writes a request and returns a future for its reply; futures are
    failed with a timeout by a per-batch timer rather than one timer each.
    """

    def __init__(self, nc: NatsClient, timeout: float) -> None:
        self._nc = nc
        self._timeout = timeout
        self._prefix = nc.new_inbox()
        self._futures: dict[str, asyncio.Future[Msg]] = {}
        self._ids = itertools.count()
        self._sub: Subscription | None = None
        self._expiring: list[str] = []

    async def open(self) -> None:
        self._sub = await self._nc.subscribe(self._prefix + ".*", cb=self._on_reply)

    async def _on_reply(self, msg: Msg) -> None:
        fut = self._futures.pop(msg.subject[len(self._prefix) + 1 :], None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    async def start(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> asyncio.Future[Msg]:
        token = str(next(self._ids))
        fut: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._futures[token] = fut
        if not self._expiring:
            asyncio.get_running_loop().call_later(self._timeout, self._expire, self._expiring)
        self._expiring.append(token)
        try:
            await self._nc.publish(
                subject,
                payload,
                reply=f"{self._prefix}.{token}",
                headers=dict(headers or {}) or None,
            )
        except BaseException:
            self._futures.pop(token, None)  # nobody will wait for this reply
            raise
        return fut

    def _expire(self, tokens: list[str]) -> None:
        if tokens is self._expiring:
            self._expiring = []
        for token in tokens:
            fut = self._futures.pop(token, None)
            if fut is not None and not fut.done():
                fut.set_exception(TimeoutError())

    def fail_all(self, exc: BaseException) -> None:
        for fut in self._futures.values():
            if not fut.done():
                fut.set_exception(exc)
        self._futures.clear()


def _status(msg: Msg) -> str | None:
    headers = msg.headers
    if headers and not msg.data:
        return headers.get("Status")
    return None


def _parse_ack(msg: Msg, subject: str) -> PubAck:
    status = _status(msg)
    if status == "503":
        raise NotFoundError(f"no stream stores subject {subject!r}")
    if status is not None:
        raise TransportError(f"unexpected status {status} in reply")
    resp = json.loads(msg.data)
    if "error" in resp:
        raise _api_error(resp["error"])
    return PubAck(resp["stream"], int(resp["seq"]), bool(resp.get("duplicate", False)))


def _api_reply(msg: Msg) -> dict[str, Any]:
    status = _status(msg)
    if status == "503":
        raise ConnectionLostError("JetStream is not available")
    resp: dict[str, Any] = json.loads(msg.data)
    if "error" in resp:
        raise _api_error(resp["error"])
    return resp


def _reply_meta(reply: str) -> tuple[int, int, int, int]:
    """(num_delivered, stream_seq, consumer_seq, pending) from a ``$JS.ACK`` subject."""
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[4]), int(tokens[5]), int(tokens[6]), int(tokens[8])
    return int(tokens[6]), int(tokens[7]), int(tokens[8]), int(tokens[10])


def _rfc3339(epoch: float) -> str:
    when = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dur(seconds: float | None) -> int:
    return 0 if seconds is None else int(seconds * _NS)


# --------------------------------------------------------------------------
# The transport.


class JetStreamTransport:
    """:class:`Transport` over NATS JetStream. Built by :func:`open_jetstream`."""

    def __init__(self, options: ConnectOptions, nursery: trio.Nursery) -> None:
        self._options = options
        self._nursery = nursery
        self._nc: NatsClient = NatsClient()
        self._bridge = _Bridge(lambda: self._nc.is_connected, self._post_now)
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
        self._delayed_streams: dict[str, str] = {}
        self._supports_schedules = False

    # -- lifecycle ---------------------------------------------------------

    async def _connect(self, servers: list[str]) -> None:
        opts = self._options
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
        tls = self._tls_context(servers)
        if tls is not None:
            kwargs["tls"] = tls

        async def connect() -> None:
            await self._nc.connect(**kwargs)
            self._replies = _Replies(self._nc, opts.request_timeout)
            await self._replies.open()

        try:
            with trio.fail_after(opts.connect_timeout * max(2, len(servers)) + 1):
                await trio_asyncio.aio_as_trio(connect)()
        except trio.TooSlowError:
            await self._abandon_connect()
            raise ConnectionLostError(f"no server of {servers} answered in time") from None
        except Exception as exc:
            await self._abandon_connect()
            raise _translate(exc, connected=False) from None
        self._state = ConnectionState.CONNECTED
        version = self._nc.connected_server_version
        self._supports_schedules = (version.major, version.minor) >= (2, 12)
        await self._nursery.start(self._run_background)

    async def _run_background(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with self._background:
            await self._bridge.pump(task_status)

    async def _abandon_connect(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await trio_asyncio.aio_as_trio(self._nc.close)()

    def _tls_context(self, servers: list[str]) -> ssl.SSLContext | None:
        opts = self._options
        if opts.tls_ca_file is None and opts.tls_cert_file is None:
            return None
        ctx = ssl.create_default_context(cafile=opts.tls_ca_file)
        if opts.tls_cert_file is not None and opts.tls_key_file is not None:
            ctx.load_cert_chain(opts.tls_cert_file, opts.tls_key_file)
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

    async def _on_disconnected(self) -> None:
        if not self._closing:
            self._emit(ConnectionEvent(ConnectionState.DISCONNECTED, "connection lost"))

    async def _on_reconnected(self) -> None:
        url = self._nc.connected_url
        self._emit(ConnectionEvent(ConnectionState.CONNECTED, url.netloc if url else ""))
        self._reconnected.set()
        self._reconnected = trio.Event()
        for wake in list(self._wakers):
            wake()  # pull requests and watches are re-made at once

    async def _on_closed(self) -> None:
        if not self._closing:
            # nats-py gave up (for example, an authorization failure): say so.
            self._emit(ConnectionEvent(ConnectionState.CLOSED, "connection closed by the client"))
        self._closed.set()

    async def _on_error(self, exc: Exception) -> None:
        log.debug("nats client error: %r", exc)

    @property
    def state(self) -> ConnectionState:
        return self._state

    def connection_events(self) -> trio.MemoryReceiveChannel[ConnectionEvent]:
        send, receive = trio.open_memory_channel[ConnectionEvent](16)
        self._listeners.append(send)
        return receive

    def now(self) -> float:
        return trio_wall_clock()

    async def aclose(self) -> None:
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await self._bridge.flush_posts()
        self._bridge.close()
        if self._replies is not None:
            self._replies.fail_all(nats.errors.ConnectionClosedError())
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            try:
                await trio_asyncio.aio_as_trio(self._nc.close)()
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

    async def ensure_stream(self, spec: StreamSpec) -> None:
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
        }
        if spec.allow_delayed and self._supports_schedules:
            config["allow_msg_schedules"] = True
        await self._ensure_stream_config(config)
        self._streams[spec.name] = spec

    async def _ensure_stream_config(self, config: dict[str, Any]) -> None:
        name = config["name"]
        try:
            await self._api(f"STREAM.CREATE.{name}", config)
        except _StreamExistsError:
            # It exists with another configuration: bring it to this one.
            await self._api(f"STREAM.UPDATE.{name}", config)

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
            except TransportError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return acks

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
                token = (message.msg_id or self._nc.new_inbox()).replace(".", "_")
                token = "".join(c if c.isalnum() or c in "-_" else "_" for c in token)
                headers["Nats-Schedule"] = "@at " + _rfc3339(max(message.deliver_at, self.now()))
                headers["Nats-Schedule-Target"] = subject
                subject = f"{SCHEDULE_PREFIX}.{spec.name}.{token}"
            # Without server schedules the message is stored now and the
            # consumer hands it back (nak with delay) until it is due.
        return subject, message.data, headers or None

    # -- consuming ---------------------------------------------------------

    @asynccontextmanager
    async def consume(
        self, stream: str, spec: ConsumerSpec, *, buffer: int = 64
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Delivery]]:
        self._check_open()
        if buffer < 1:
            raise InvalidSpecError("buffer must be at least 1")
        puller = _Puller(self, stream, spec, buffer)
        await puller.ensure_consumer()
        await puller.subscribe()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(puller.run)
                try:
                    yield puller.receive
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await puller.hand_back()

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
        await self._ensure_stream_config(config)
        return _JetStreamKV(self, spec.bucket, direct=True, max_value_size=spec.max_value_size)

    async def kv(self, bucket: str) -> KeyValue:
        config = (await self._api(f"STREAM.INFO.KV_{bucket}"))["config"]
        limit = config.get("max_msg_size", -1)
        return _JetStreamKV(
            self,
            bucket,
            direct=bool(config.get("allow_direct")),
            max_value_size=limit - _KV_HEADROOM if limit > _KV_HEADROOM else None,
        )


def trio_wall_clock() -> float:
    """Seconds since the epoch: JetStream schedules run on the servers' wall clocks."""
    return datetime.datetime.now(tz=datetime.UTC).timestamp()


# --------------------------------------------------------------------------
# Pull consumers.


class _JetStreamDelivery(Delivery):
    __slots__ = ("_puller", "_reply", "_transport")

    def __init__(
        self,
        transport: JetStreamTransport,
        msg: Msg,
        delivered: int,
        stream_seq: int,
        puller: _Puller | None = None,
    ) -> None:
        super().__init__(msg.subject, msg.data, msg.headers or {}, delivered, stream_seq)
        self._transport = transport
        self._reply = msg.reply
        self._puller = puller

    async def _settle(self, how: Settlement, delay: float | None) -> None:
        if how is Settlement.ACK:
            payload = b"+ACK"
        elif how is Settlement.TERM:
            payload = b"+TERM"
        elif delay:
            payload = b"-NAK " + json.dumps({"delay": _dur(delay)}).encode()
        else:
            payload = b"-NAK"
        if self._puller is not None:
            self._puller.settled(self)
        await self._settle_raw(payload)

    async def _settle_raw(self, payload: bytes) -> None:
        # After close, unsettled deliveries return by themselves after ack_wait.
        with suppress(TransportClosedError):
            self._transport._publish_raw(self._reply, payload)

    async def _touch(self) -> None:
        await self._settle_raw(b"+WPI")


class _Puller:
    """Keeps pull requests open for a durable consumer and feeds a channel.

    Credit-based: messages requested but not yet arrived plus those arrived
    but not yet taken add up to at most ``buffer``. The channel itself has no
    buffer: handing each delivery over is a rendezvous with the owner, which is
    what tells this task that credit came free (a buffered Trio channel gives
    no signal when its owner receives). A new request is made once half the
    credit is free. Requests carry idle heartbeats; silence for two
    heartbeats, or a reconnect, means the server may have forgotten them,
    and they are made again (after re-creating the consumer if need be).
    """

    def __init__(
        self, transport: JetStreamTransport, stream: str, spec: ConsumerSpec, buffer: int
    ) -> None:
        self._t = transport
        self._stream = stream
        self._spec = spec
        self._buffer = buffer
        self.send, self.receive = trio.open_memory_channel[Delivery](0)
        self._inbox = transport._nc.new_inbox()
        self._next_subject = f"{_API}.CONSUMER.MSG.NEXT.{stream}.{spec.durable}"
        self._sub: Subscription | None = None
        self._arrived: deque[Msg] = deque()
        self._wake = trio.Event()
        # Requests made before a reset belong to an older epoch: their status
        # replies are ignored (their messages, if any still come, are real).
        self._epoch = 0
        self._requests = 0
        self._outstanding = 0
        self._unsettled: set[_JetStreamDelivery] = set()

    def _config(self) -> dict[str, Any]:
        spec = self._spec
        config: dict[str, Any] = {
            "durable_name": spec.durable,
            "ack_policy": "explicit",
            "deliver_policy": "all",
            "ack_wait": _dur(spec.ack_wait),
            "max_deliver": spec.max_deliver or -1,
            "max_ack_pending": spec.max_ack_pending,
            "max_waiting": 512,
        }
        filters = list(spec.filter_subjects)
        delayed = self._t._streams.get(self._stream)
        if not filters and delayed is not None and delayed.allow_delayed:
            filters = list(delayed.subjects)  # never the schedule subjects
        if len(filters) == 1:
            config["filter_subject"] = filters[0]
        elif filters:
            config["filter_subjects"] = filters
        return config

    async def ensure_consumer(self) -> None:
        body = {"stream_name": self._stream, "config": self._config()}
        await self._t._api(f"CONSUMER.CREATE.{self._stream}.{self._spec.durable}", body)

    async def subscribe(self) -> None:
        nc = self._t._nc

        async def sub() -> Subscription:
            return await nc.subscribe(self._inbox + ".>", cb=self._on_msg)

        self._sub = await self._t._bridge.call(sub)

    async def _on_msg(self, msg: Msg) -> None:
        # Runs in an asyncio callback, inside the Trio run: no crossing needed.
        self._arrived.append(msg)
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def settled(self, delivery: _JetStreamDelivery) -> None:
        self._unsettled.discard(delivery)

    def _room(self) -> int:
        return self._buffer - len(self._arrived) - self._outstanding

    def _request(self) -> None:
        room = self._room()
        if room <= 0 or (self._outstanding and room < max(1, self._buffer // 2)):
            return
        self._requests += 1
        self._outstanding += room
        request = {
            "batch": room,
            "expires": _dur(_PULL_EXPIRES),
            "idle_heartbeat": _dur(_HEARTBEAT),
        }
        reply = f"{self._inbox}.{self._epoch}.{self._requests}"
        self._t._bridge.post(self._next_subject, json.dumps(request).encode(), reply)

    def _reset(self) -> None:
        self._epoch += 1
        self._outstanding = 0

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        self._t._wakers.add(self.wake)
        try:
            await self._loop()
        except TransportClosedError:
            pass
        finally:
            self._t._wakers.discard(self.wake)
            self.send.close()

    async def _loop(self) -> None:
        heard = trio.current_time()
        reconnected = self._t._reconnected
        while not self._t._closing:
            if self._outstanding == 0:
                heard = trio.current_time()  # the silence clock starts now
            self._request()
            with trio.move_on_after(_HEARTBEAT):
                await self._wake.wait()
            self._wake = trio.Event()
            while self._arrived:
                await self._handle(self._arrived.popleft())
                self._request()
                heard = trio.current_time()
            if reconnected.is_set() or trio.current_time() - heard > 2 * _HEARTBEAT + 0.5:
                # The server may have restarted and forgotten the requests.
                reconnected = self._t._reconnected
                self._reset()
                await self._ensure_quietly()

    async def _ensure_quietly(self) -> None:
        try:
            await self.ensure_consumer()
        except TransportClosedError:
            raise
        except TransportError as exc:
            log.debug("re-creating consumer %s failed: %r", self._spec.durable, exc)

    async def _handle(self, msg: Msg) -> None:
        status = _status(msg)
        if status is not None:
            if not msg.subject.startswith(f"{self._inbox}.{self._epoch}."):
                return  # about a request from before a reset
            headers = msg.headers or {}
            if status in ("408", "409"):
                # The request ended; what it still owed will not come.
                owed = int(headers.get("Nats-Pending-Messages", "0"))
                self._outstanding = max(0, self._outstanding - owed)
                if "Consumer Deleted" in headers.get("Description", ""):
                    self._reset()
                    await self._ensure_quietly()
            return  # 100: an idle heartbeat
        self._outstanding = max(0, self._outstanding - 1)
        delivered, stream_seq, _cseq, _pending = _reply_meta(msg.reply)
        due = (msg.headers or {}).get(DELIVER_AT_HEADER)
        if due is not None:
            wait = float(due) - self._t.now()
            if wait > 0.001:
                # Not yet due (a server without schedules): hand it back.
                early = _JetStreamDelivery(self._t, msg, delivered, stream_seq)
                await early.nak(wait)
                return
        delivery = _JetStreamDelivery(self._t, msg, delivered, stream_seq, self)
        self._unsettled.add(delivery)
        await self.send.send(delivery)

    async def hand_back(self) -> None:
        """Nak what is buffered or in hand, and stop receiving."""
        self.send.close()
        if self._sub is not None:
            sub = self._sub
            with suppress(TransportError):
                await self._t._bridge.call(sub.unsubscribe)
        pending: list[_JetStreamDelivery] = list(self._unsettled)
        for msg in self._arrived:
            if _status(msg) is None:
                delivered, seq, _c, _p = _reply_meta(msg.reply)
                pending.append(_JetStreamDelivery(self._t, msg, delivered, seq))
        self._arrived.clear()
        for delivery in pending:
            await delivery.nak()
        self.receive.close()


# --------------------------------------------------------------------------
# Key-value.


class _JetStreamKV:
    """A KV bucket stored as stream ``KV_<bucket>``, one subject per key."""

    def __init__(
        self,
        transport: JetStreamTransport,
        bucket: str,
        *,
        direct: bool,
        max_value_size: int | None,
    ) -> None:
        self._t = transport
        self._max_value_size = max_value_size
        self._bucket = bucket
        self._stream = f"KV_{bucket}"
        self._prefix = f"$KV.{bucket}."
        self._direct = direct

    @property
    def bucket(self) -> str:
        return self._bucket

    async def get(self, key: str) -> KVEntry | None:
        subject = self._prefix + check_key(key)
        if self._direct:
            msg = await self._t._request(f"{_API}.DIRECT.GET.{self._stream}.{subject}")
            status = _status(msg)
            if status == "404":
                return None
            if status is not None:
                raise _api_error({"code": int(status), "description": "direct get failed"})
            headers = msg.headers or {}
            if headers.get("KV-Operation") in ("DEL", "PURGE"):
                return None
            return KVEntry(key, msg.data, int(headers["Nats-Sequence"]))
        try:
            resp = await self._t._api(f"STREAM.MSG.GET.{self._stream}", {"last_by_subj": subject})
        except NotFoundError:
            return None
        message = resp["message"]
        raw_headers = base64.b64decode(message.get("hdrs") or b"")
        if b"KV-Operation: DEL" in raw_headers or b"KV-Operation: PURGE" in raw_headers:
            return None
        return KVEntry(key, base64.b64decode(message.get("data") or b""), int(message["seq"]))

    async def _write(self, key: str, value: bytes, headers: dict[str, str]) -> int:
        if self._max_value_size is not None and len(value) > self._max_value_size:
            raise TooLargeError(f"value of {len(value)} bytes exceeds {self._max_value_size}")
        msg = await self._t._request(self._prefix + check_key(key), value, headers)
        return _parse_ack(msg, key).seq

    async def create(self, key: str, value: bytes) -> int:
        try:
            return await self._write(key, value, {"Nats-Expected-Last-Subject-Sequence": "0"})
        except ConflictError:
            # A deleted key can be created again, at the delete marker's revision.
            marker = await self._last_raw(key)
            if marker is None or marker[1] is None:
                raise ConflictError(f"key {key!r} exists") from None
            return await self.update(key, value, marker[0])

    async def _last_raw(self, key: str) -> tuple[int, str | None] | None:
        """(revision, operation) of the key's last message, even a delete marker."""
        subject = self._prefix + key
        msg = await self._t._request(f"{_API}.DIRECT.GET.{self._stream}.{subject}")
        if _status(msg) is not None:
            return None
        headers = msg.headers or {}
        return int(headers["Nats-Sequence"]), headers.get("KV-Operation")

    async def update(self, key: str, value: bytes, revision: int) -> int:
        if revision < 1:
            # The server reads "expected revision 0" as "absent": that is create.
            raise ConflictError(f"no revision {revision} of key {key!r}")
        return await self._write(key, value, {"Nats-Expected-Last-Subject-Sequence": str(revision)})

    async def put(self, key: str, value: bytes) -> int:
        return await self._write(key, value, {})

    async def delete(self, key: str, *, revision: int | None = None) -> None:
        headers = {"KV-Operation": "DEL"}
        if revision is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(revision)
        elif await self.get(key) is None:
            return
        await self._write(key, b"", headers)

    async def keys(self, pattern: str = ">") -> list[str]:
        watcher = _Watcher(self._t, self, pattern, since=None, headers_only=True)
        return await watcher.snapshot_keys()

    @asynccontextmanager
    async def watch(
        self, pattern: str = ">", *, since: int | None = None
    ) -> AsyncIterator[trio.MemoryReceiveChannel[KVChange]]:
        self._t._check_open()
        watcher = _Watcher(self._t, self, pattern, since=since)
        async with trio.open_nursery() as nursery:
            await nursery.start(watcher.run)
            try:
                yield watcher.receive
            finally:
                nursery.cancel_scope.cancel()
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await watcher.stop()


class _Watcher:
    """An ordered view of a bucket's changes, on an ephemeral push consumer.

    The consumer is ours to recreate: on a gap in its sequence, two missed
    heartbeats or a reconnect, it is deleted and made again starting after the
    last revision delivered, so nothing is skipped and nothing repeats. Flow
    control replies are withheld while our channel is full, which pauses the
    server instead of buffering here.
    """

    def __init__(
        self,
        transport: JetStreamTransport,
        kv: _JetStreamKV,
        pattern: str,
        *,
        since: int | None,
        headers_only: bool = False,
        buffer: int = 256,
    ) -> None:
        check_subject(pattern, wildcards=True)
        self._t = transport
        self._kv = kv
        self._filter = kv._prefix + pattern
        self._last_rev = since
        # Replaying current values: deleted keys are not "current", skip them.
        self._replaying = since is None
        self._headers_only = headers_only
        self.send, self.receive = trio.open_memory_channel[KVChange](buffer)
        self._arrived: deque[Msg] = deque()
        self._wake = trio.Event()
        self._consumer: str | None = None
        self._sub: Subscription | None = None
        self._cseq = 0
        self._generation = 0
        self._flow_reply: str | None = None

    async def _create(self) -> int:
        """(Re)create the consumer; return the number of messages it will replay."""
        await self.stop()
        self._generation += 1
        self._cseq = 0
        inbox = self._t._nc.new_inbox()
        generation = self._generation
        config: dict[str, Any] = {
            "deliver_subject": inbox,
            "ack_policy": "none",
            "max_deliver": 1,
            "flow_control": True,
            "idle_heartbeat": _dur(_HEARTBEAT),
            "mem_storage": True,
            "num_replicas": 1,
            "inactive_threshold": _dur(30.0),
            "filter_subject": self._filter,
            "headers_only": self._headers_only,
        }
        if self._last_rev is None:
            config["deliver_policy"] = "last_per_subject"
        else:
            config["deliver_policy"] = "by_start_sequence"
            config["opt_start_seq"] = self._last_rev + 1

        async def on_msg(msg: Msg) -> None:
            if generation == self._generation:
                self._arrived.append(msg)
                self._wake.set()

        nc = self._t._nc

        async def sub() -> Subscription:
            return await nc.subscribe(inbox, cb=on_msg)

        self._sub = await self._t._bridge.call(sub)
        resp = await self._t._api(
            f"CONSUMER.CREATE.{self._kv._stream}",
            {"stream_name": self._kv._stream, "config": config},
        )
        self._consumer = resp["name"]
        pending = int(resp.get("num_pending", 0))
        if pending == 0:
            self._replaying = False
        return pending

    async def stop(self) -> None:
        """Delete the consumer and its subscription (best effort)."""
        sub, self._sub = self._sub, None
        consumer, self._consumer = self._consumer, None
        self._arrived.clear()
        try:
            if sub is not None:
                await self._t._bridge.call(sub.unsubscribe)
            if consumer is not None:
                await self._t._api(f"CONSUMER.DELETE.{self._kv._stream}.{consumer}")
        except TransportError as exc:
            log.debug("watch cleanup: %r", exc)

    def _change(self, msg: Msg) -> KVChange:
        headers = msg.headers or {}
        op = headers.get("KV-Operation")
        kind = KVOp.DELETE if op == "DEL" else KVOp.PURGE if op == "PURGE" else KVOp.PUT
        _d, stream_seq, _c, _p = _reply_meta(msg.reply)
        return KVChange(msg.subject[len(self._kv._prefix) :], msg.data, stream_seq, kind)

    async def _drain(self) -> bool:
        """Deliver what arrived; False if the consumer must be recreated."""
        while self._arrived:
            msg = self._arrived.popleft()
            status = _status(msg)
            if status == "100":
                headers = msg.headers or {}
                if msg.reply:  # flow control: answer once we have room
                    self._flow_reply = msg.reply
                elif int(headers.get("Nats-Last-Consumer", "0")) > self._cseq:
                    return False  # a heartbeat says we missed something
                continue
            if status is not None:
                return False
            _d, stream_seq, cseq, pending = _reply_meta(msg.reply)
            if cseq != self._cseq + 1:
                return False
            self._cseq = cseq
            if self._last_rev is not None and stream_seq <= self._last_rev:
                continue
            change = self._change(msg)
            if not (self._replaying and change.op is not KVOp.PUT):
                await self.send.send(change)
            self._last_rev = stream_seq
            if pending == 0:
                self._replaying = False
        if self._flow_reply is not None and self.send.statistics().current_buffer_used < 64:
            reply, self._flow_reply = self._flow_reply, None
            self._t._publish_raw(reply)
        return True

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._create()
        task_status.started()
        heard = trio.current_time()
        reconnected = self._t._reconnected
        self._t._wakers.add(self.wake)
        try:
            while not self._t._closing:
                with trio.move_on_after(_HEARTBEAT):
                    await self._wake.wait()
                self._wake = trio.Event()
                if self._arrived:
                    heard = trio.current_time()
                healthy = await self._drain()
                silent = trio.current_time() - heard > 2 * _HEARTBEAT + 0.5
                if reconnected.is_set() or not healthy or silent:
                    reconnected = self._t._reconnected
                    try:
                        await self._create()
                    except TransportClosedError:
                        return
                    except TransportError as exc:
                        log.debug("watch re-create failed: %r", exc)
                    heard = trio.current_time()
        except TransportClosedError:
            pass
        finally:
            self._t._wakers.discard(self.wake)
            self.send.close()

    def wake(self) -> None:
        self._wake.set()

    async def snapshot_keys(self) -> list[str]:
        """The live keys matching the filter, read once."""
        pending = await self._create()
        keys: dict[str, bool] = {}
        try:
            with trio.fail_after(self._t._options.request_timeout * 4):
                while pending > 0:
                    await self._wake.wait()
                    self._wake = trio.Event()
                    while self._arrived:
                        msg = self._arrived.popleft()
                        if _status(msg) is not None:
                            if msg.reply:
                                self._t._publish_raw(msg.reply)
                            continue
                        change = self._change(msg)
                        keys[change.key] = change.op is KVOp.PUT
                        pending = _reply_meta(msg.reply)[3]
                        if pending == 0:
                            break
        except trio.TooSlowError:
            raise TransportTimeoutError("listing keys took too long") from None
        finally:
            with trio.CancelScope(shield=True):
                await self.stop()
        return sorted(k for k, live in keys.items() if live)


# --------------------------------------------------------------------------
# Opening.


@asynccontextmanager
async def open_jetstream(
    servers: list[str], options: ConnectOptions
) -> AsyncIterator[JetStreamTransport]:
    """Connect to NATS and yield the transport; close it on exit.

    Raises :class:`ConnectionLostError` if no server answers within the
    connect timeout.
    """
    async with background_nursery() as nursery, trio_asyncio.open_loop():
        transport = JetStreamTransport(options, nursery)
        try:
            await transport._connect(servers)
            yield transport
        finally:
            await transport.aclose()


__all__ = ["JetStreamTransport", "open_jetstream"]
