"""The plumbing of the JetStream transport on nats-py: the Trio -> asyncio
bridge, pipelined requests on one reply inbox, the translation of nats-py's
errors, and nats-py's messages as the shared core reads them.

Part of the JetStream transport on nats-py (see ``_transport.py``); like the
rest of this package, the only place where asyncio and nats-py are spoken.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
import trio
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from .._errors import (
    ConnectionLostError,
    TooLargeError,
    TransportClosedError,
    TransportError,
    TransportTimeoutError,
)
from .._specs import PubAck
from ..jscore import api_error, parse_ack

log = logging.getLogger("transport.jetstream")

T = TypeVar("T")


# --------------------------------------------------------------------------
# Error translation: nothing from nats-py or asyncio leaves this module.


def _translate(exc: BaseException, *, connected: bool) -> TransportError:
    """Map any exception raised on the asyncio side to our hierarchy."""
    if isinstance(exc, TransportError):
        return exc
    if isinstance(exc, nats.js.errors.APIError):
        return api_error(
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


class _LoopThread:
    """A stock asyncio event loop on a thread of its own, talking to Trio.

    nats-py runs here. Trio -> asyncio: :meth:`run` submits a coroutine (one
    per batch on hot paths). asyncio -> Trio: :meth:`to_trio` queues a plain
    function and wakes Trio once for everything queued since the last wake,
    so a burst of incoming messages costs one wake-up, not one each.

    A thread, not trio-asyncio: the same nats-py program ran 2 to 4 times
    slower on trio-asyncio's loop than on a stock one, and that loop, not the
    crossings, capped the transport (see docs/transport.md).
    """

    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        # A stock loop by name, not asyncio.new_event_loop(): in a process
        # that imported trio-asyncio (a worker serving asyncio activities)
        # that function refuses to run in Trio.
        self.loop: asyncio.AbstractEventLoop = asyncio.SelectorEventLoop()
        self._token = token
        self._lock = threading.Lock()
        self._pending: list[Callable[[], object]] = []
        self._scheduled = False

    def run_forever(self) -> None:
        """The thread's body: run the loop until :meth:`stop`, then clean up."""
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()

    def stop(self) -> None:
        """Ask the loop to stop (from any thread); idempotent."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)

    def to_trio(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` soon in the Trio thread (callable from any thread)."""
        with self._lock:
            self._pending.append(fn)
            if self._scheduled:
                return
            self._scheduled = True
        with contextlib.suppress(trio.RunFinishedError):  # Trio is gone: nobody to tell
            self._token.run_sync_soon(self._drain)

    def _drain(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            self._scheduled = False
        for fn in pending:
            fn()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and return its result (exceptions unchanged).

        If the Trio caller is cancelled, the coroutine is cancelled too.
        """
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        done = trio.Event()
        future.add_done_callback(lambda _f: self.to_trio(done.set))
        try:
            await done.wait()
        except BaseException:
            future.cancel()
            raise
        return future.result()

    def call_soon(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` soon on the loop (from the Trio thread)."""
        self.loop.call_soon_threadsafe(fn)


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
        thread: _LoopThread,
        is_connected: Callable[[], bool],
        publish: Callable[[str, bytes, str], Awaitable[None]],
    ) -> None:
        self._thread = thread
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
                await self._thread.run(self._run_batch(batch, posts))

    async def flush_posts(self) -> None:
        """Write out the posts still queued (at close, so acks are not lost)."""
        posts, self._posts = self._posts, []
        if posts:
            await self._thread.run(self._run_batch([], posts))

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
                self._thread.to_trio(op.done.set)

    def _finish(self, op: _Op, fut: asyncio.Future[Any]) -> None:
        self._tasks.discard(fut)
        if fut.cancelled():
            self._fail(op, asyncio.CancelledError())
        elif (exc := fut.exception()) is not None:
            self._fail(op, exc)
        else:
            op.result = fut.result()
            self._thread.to_trio(op.done.set)

    def _fail(self, op: _Op, exc: BaseException) -> None:
        if self._closed and isinstance(exc, (asyncio.CancelledError, nats.errors.Error)):
            op.error = TransportClosedError("transport closed during the operation")
        else:
            op.error = _translate(exc, connected=self._is_connected())
        self._thread.to_trio(op.done.set)

    def close(self) -> None:
        """Fail every queued and in-flight operation with TransportClosedError."""
        self._closed = True
        for op in self._queue:
            op.error = TransportClosedError("transport closed")
            op.done.set()
        self._queue.clear()
        for task in list(self._tasks):
            self._thread.call_soon(task.cancel)


class _Replies:
    """A shared reply inbox for pipelined requests (asyncio side).

    ``start`` writes a request and returns a future for its reply. Each
    request gets the full timeout: deadlines queue up in the order requests
    are made, and a single timer is armed for the oldest, so a request never
    inherits an earlier one's deadline and no request needs a timer of its own.
    """

    def __init__(self, nc: NatsClient, timeout: float) -> None:
        self._nc = nc
        self._timeout = timeout
        self._prefix = nc.new_inbox()
        self._futures: dict[str, asyncio.Future[Msg]] = {}
        #: The messages of batched replies so far, by token (see ``start``).
        self._batches: dict[str, list[Msg]] = {}
        self._ids = itertools.count()
        self._sub: Subscription | None = None
        self._deadlines: collections.deque[tuple[float, str]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    async def open(self) -> None:
        self._sub = await self._nc.subscribe(self._prefix + ".*", cb=self._on_reply)

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[len(self._prefix) + 1 :]
        batch = self._batches.get(token)
        if batch is not None:
            if _status(msg) is None:
                batch.append(msg)  # a batch's messages come in order, then its status
                return
            del self._batches[token]
        fut = self._futures.pop(token, None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    async def start(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        collect: list[Msg] | None = None,
    ) -> asyncio.Future[Msg]:
        """Write a request; return a future for its reply.

        With ``collect`` the reply is a batch (a batched direct get): its
        messages are appended to ``collect`` as they come, and the future's
        result is the status message that ends it. The whole batch must arrive
        within the request's deadline.
        """
        # nats-py checks only the data against the server's max_payload, but the
        # server counts the headers too, and answers a message over it by
        # closing the connection for good (nats-py does not reconnect after
        # an -ERR): refuse it here, so that the connection stays up.
        size = _wire_size(payload, headers)
        if size > self._nc.max_payload:
            raise TooLargeError(
                f"message of {size} bytes (data and headers) is over the server's "
                f"max_payload of {self._nc.max_payload} bytes"
            )
        if not self._nc.is_connected and not self._nc.is_closed:
            # (Closed for good, nats-py's own error says so.) Reconnecting:
            # nats-py would buffer it and send it once reconnected, however
            # late: long after its caller timed out and retried or moved on.
            # Past the streams' duplicate window, that stale copy is stored
            # again (a task runs twice, a history record is doubled, long
            # after the workflow ended). Fail now instead: nothing was sent.
            raise ConnectionLostError("not connected to the broker: nothing was sent")
        token = str(next(self._ids))
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Msg] = loop.create_future()
        self._futures[token] = fut
        if collect is not None:
            self._batches[token] = collect
        deadline = loop.time() + self._timeout
        self._deadlines.append((deadline, token))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)
        try:
            await self._nc.publish(
                subject,
                payload,
                reply=f"{self._prefix}.{token}",
                headers=dict(headers or {}) or None,
            )
        except BaseException:
            self._futures.pop(token, None)  # nobody will wait for this reply
            self._batches.pop(token, None)
            raise
        return fut

    def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = None
        now = loop.time()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, token = self._deadlines.popleft()
            self._batches.pop(token, None)
            fut = self._futures.pop(token, None)
            if fut is not None and not fut.done():
                fut.set_exception(TimeoutError())
        if self._deadlines:
            self._timer = loop.call_at(self._deadlines[0][0], self._expire)

    def fail_all(self, exc: BaseException) -> None:
        for fut in self._futures.values():
            if not fut.done():
                fut.set_exception(exc)
        self._futures.clear()
        self._batches.clear()


def _wire_size(payload: bytes, headers: Mapping[str, str] | None) -> int:
    """What the server checks against its max_payload: the header block and the data.

    The header block as nats-py writes it: ``NATS/1.0``, one ``Key: value``
    line per header with a non-empty key (both stripped), and an empty line.
    """
    if not headers:
        return len(payload)
    block = len(b"NATS/1.0\r\n\r\n")
    for key, value in headers.items():
        name = key.strip()
        if name:
            block += len(name.encode()) + len(value.strip().encode()) + len(b": \r\n")
    return block + len(payload)


def _status(msg: Msg) -> str | None:
    """The status code of a control message (heartbeat, timeout...), else None.

    Stored messages never carry a ``Status`` header of their own: the server's
    ``NATS/1.0 <code>`` line is what nats-py turns into it.
    """
    headers = msg.headers
    return headers.get("Status") if headers else None


class _Received:
    """A nats-py message as the JetStream core reads messages (``WireMsg``).

    nats-py puts a control message's status line in its headers, as
    ``Status`` and ``Description``; they are read from there.
    """

    __slots__ = ("data", "description", "headers", "reply", "status", "subject")

    def __init__(self, msg: Msg) -> None:
        self.subject = msg.subject
        self.reply = msg.reply or None
        self.data = msg.data
        self.headers = msg.headers
        headers = msg.headers
        self.status = headers.get("Status") if headers else None
        self.description = headers.get("Description") if headers else None


def _parse_ack(msg: Msg, subject: str) -> PubAck:
    return parse_ack(_status(msg), msg.data, subject)
