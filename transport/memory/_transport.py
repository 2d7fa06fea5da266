"""``MemoryTransport``: an in-process broker with JetStream's semantics, on Trio.

It keeps streams, durable consumers and key-value buckets in memory and
reproduces what the rest of the engine relies on: message-id dedup within the
duplicate window, stream limits with both discard policies, work-queue
retention, ack-wait redelivery, ``nak(delay)``, ``max_deliver``,
``max_ack_pending``, delayed delivery, and compare-and-set revisions.

All state changes are synchronous, so each operation is atomic with respect to
other tasks; every ``async`` method is still a Trio checkpoint. Time is Trio's
clock (``autojump_clock`` works): nothing sleeps on the wall clock, and
:meth:`MemoryTransport.now` is Trio's clock shifted to the epoch.

The only background tasks are one per open consume context and one per open
watch, all in a nursery the transport owns from ``__aenter__`` to ``__aexit__``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, Self

import trio

from .._errors import (
    ConflictError,
    InvalidSpecError,
    NotFoundError,
    TransportClosedError,
    TransportError,
)
from .._interface import Delivery, KeyValue, Transport
from .._specs import (
    DELIVER_AT_HEADER,
    ConnectionEvent,
    ConnectionState,
    ConsumerLag,
    ConsumerSpec,
    KVChange,
    KVEntry,
    KVOp,
    KVSpec,
    OutMessage,
    PubAck,
    StoredMessage,
    StreamSpec,
    check_holds,
    check_key,
    check_purge,
    check_read,
    check_subject,
    subject_matches,
)
from .._subjects import SubjectFilter, any_collide, check_key_pattern
from ._kv import Bucket, Watcher, run_watch
from ._stream import EMPTY_HEADERS, Session, Stream, run_session

__all__ = ["MemoryTransport"]

#: Room in each ``connection_events`` channel; older events make way for newer.
_EVENT_BUFFER = 16
#: Room in each watch channel; the watch task waits (without losing changes) when full.
_WATCH_BUFFER = 64
#: Subjects whose owning stream is remembered; the memo is cleared when full.
_ROUTE_MEMO_LIMIT = 4096


class _Closeable(Protocol):
    def close(self) -> None: ...


class MemoryTransport(Transport):
    """A fresh in-process broker; share the object to share the broker.

    Use it as ``async with MemoryTransport() as transport`` (or through
    ``open_transport("memory://")``): consuming and watching need the
    transport's nursery, which exists only inside the block. After
    :meth:`aclose` every operation raises :class:`TransportClosedError` and
    every open consume or watch channel ends.
    """

    def __init__(self) -> None:
        self._streams: dict[str, Stream] = {}
        self._routes: dict[str, Stream] = {}
        self._buckets: dict[str, Bucket] = {}
        self._state = ConnectionState.CONNECTED
        self._stack: AsyncExitStack | None = None
        self._services: trio.Nursery | None = None
        #: Send sides of open consume and watch channels, closed by aclose.
        self._channels: set[_Closeable] = set()
        self._events: list[
            tuple[
                trio.MemorySendChannel[ConnectionEvent], trio.MemoryReceiveChannel[ConnectionEvent]
            ]
        ] = []
        self._epoch_offset: float | None = None
        # Constructed outside Trio, the clock starts when the transport is entered.
        with contextlib.suppress(RuntimeError):
            self._start_clock()

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._stack is not None or self._state is ConnectionState.CLOSED:
            raise TransportClosedError("a MemoryTransport can be entered once")
        self._start_clock()
        stack = AsyncExitStack()
        outer = await stack.enter_async_context(trio.open_nursery())
        try:
            self._services = await outer.start(self._serve)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.aclose()
        finally:
            stack, self._stack = self._stack, None
            if stack is not None:
                # Not handing the body's exception to the nursery keeps it unwrapped.
                await stack.aclose()

    async def _serve(
        self, *, task_status: trio.TaskStatus[trio.Nursery] = trio.TASK_STATUS_IGNORED
    ) -> None:
        # Background tasks live in this inner nursery so that aclose can cancel
        # them without cancelling the body of the owner's ``async with``.
        async with trio.open_nursery() as services:
            task_status.started(services)
            await trio.sleep_forever()

    async def aclose(self) -> None:
        if self._state is not ConnectionState.CLOSED:
            self._state = ConnectionState.CLOSED
            if self._services is not None:
                self._services.cancel_scope.cancel()
            for channel in self._channels:
                channel.close()
            self._channels.clear()
            for send, receive in self._events:
                self._post(send, receive, ConnectionEvent(ConnectionState.CLOSED, "closed"))
                send.close()
            self._events.clear()
        await trio.lowlevel.cancel_shielded_checkpoint()

    @property
    def state(self) -> ConnectionState:
        """CONNECTED until :meth:`aclose`, then CLOSED (memory never disconnects)."""
        return self._state

    def connection_events(self) -> trio.MemoryReceiveChannel[ConnectionEvent]:
        """Here only CLOSED, sent by :meth:`aclose`."""
        self._check_open()
        send, receive = trio.open_memory_channel[ConnectionEvent](_EVENT_BUFFER)
        self._events.append((send, receive))
        return receive

    @staticmethod
    def _post(
        send: trio.MemorySendChannel[ConnectionEvent],
        receive: trio.MemoryReceiveChannel[ConnectionEvent],
        event: ConnectionEvent,
    ) -> None:
        try:
            send.send_nowait(event)
        except trio.WouldBlock:
            # A slow owner loses the oldest event, never the newest.
            try:
                receive.receive_nowait()
                send.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        except trio.BrokenResourceError:
            pass

    def _check_open(self) -> None:
        if self._state is ConnectionState.CLOSED:
            raise TransportClosedError("the memory transport is closed")

    async def _enter_op(self) -> None:
        # Checkpoint first, then act synchronously: a cancelled call did nothing.
        await trio.lowlevel.checkpoint()
        self._check_open()

    def _stream(self, name: str) -> Stream:
        """The stream ``name``; :class:`NotFoundError` if there is none."""
        found = self._streams.get(name)
        if found is None:
            raise NotFoundError(f"no stream {name!r}")
        return found

    @asynccontextmanager
    async def _feeding(
        self, start: Callable[..., Awaitable[object]], send: _Closeable
    ) -> AsyncIterator[None]:
        """Run ``start``, which feeds ``send``, in the transport's nursery for the block.

        ``start`` hands its cancel scope to ``task_status.started``. On
        leaving (or at :meth:`aclose`) ``send`` is closed, so its channel ends.
        """
        if self._services is None:
            raise TransportClosedError(
                "enter the MemoryTransport (async with) before consuming or watching"
            )
        scope: trio.CancelScope = await self._services.start(start)
        self._channels.add(send)
        try:
            yield
        finally:
            scope.cancel()
            self._channels.discard(send)
            send.close()

    # -- clock -------------------------------------------------------------------

    def _start_clock(self) -> float:
        """The offset from Trio's clock to the epoch, fixed the first time it is needed."""
        if self._epoch_offset is None:
            self._epoch_offset = time.time() - trio.current_time()
        return self._epoch_offset

    def now(self) -> float:
        """Seconds since the epoch, advancing with Trio's clock (fake clocks included)."""
        return trio.current_time() + self._start_clock()

    # -- streams -----------------------------------------------------------------

    async def ensure_stream(self, spec: StreamSpec) -> StreamSpec:
        """Refuses (:class:`InvalidSpecError`) subjects that overlap another
        stream's, and a change of retention or storage."""
        await self._enter_op()
        for other in self._streams.values():
            if other.name != spec.name and any_collide(spec.subjects, other.spec.subjects):
                raise InvalidSpecError(
                    f"stream {spec.name}: subjects overlap those of stream {other.name}"
                )
        stream = self._streams.get(spec.name)
        if stream is None:
            self._streams[spec.name] = Stream(spec, self._start_clock())
        else:
            if stream.spec.partitioning is not None:
                spec = replace(spec, partitioning=stream.spec.partitioning)
            stream.update(spec, trio.current_time())
        self._routes.clear()
        return spec

    def _route(self, subject: str) -> Stream:
        stream = self._routes.get(subject)
        if stream is None:
            check_subject(subject)
            for candidate in self._streams.values():
                if any(subject_matches(p, subject) for p in candidate.spec.subjects):
                    stream = candidate
                    break
            else:
                raise NotFoundError(f"no stream takes subject {subject!r}")
            if len(self._routes) >= _ROUTE_MEMO_LIMIT:
                self._routes.clear()
            self._routes[subject] = stream
        return stream

    def _publish(self, message: OutMessage) -> PubAck:
        stream = self._route(message.subject)
        now = trio.current_time()
        due: float | None = None
        headers, deliver_at = message.headers, message.deliver_at
        if deliver_at is not None:
            if not stream.spec.allow_delayed:
                raise InvalidSpecError(f"stream {stream.name} does not allow delayed delivery")
            if not math.isfinite(deliver_at):
                raise InvalidSpecError(f"deliver_at must be finite, got {deliver_at!r}")
            due = deliver_at - self._start_clock()
            # repr() round-trips the float exactly, in plain decimal for epoch times.
            stored: Mapping[str, str] = MappingProxyType(
                {**(headers or {}), DELIVER_AT_HEADER: repr(float(deliver_at))}
            )
        elif headers:
            # Every delivery of the message shares these: read-only.
            stored = MappingProxyType(dict(headers))
        else:
            stored = EMPTY_HEADERS
        data = message.data
        if type(data) is not bytes:
            data = bytes(data)  # a caller's bytearray must not change under the stream
        subject = message.subject
        if stream.spec.partitioning is not None:
            subject = stream.spec.partitioning.stored_subject(subject)
        return stream.store(subject, data, message.msg_id, stored, due, now)

    async def publish_many(self, messages: Sequence[OutMessage]) -> list[PubAck]:
        await self._enter_op()
        receipts: list[PubAck] = []
        first_error: TransportError | None = None
        for message in messages:
            try:
                receipts.append(self._publish(message))
            except TransportError as exc:
                if first_error is None:
                    first_error = exc
        if first_error is not None:
            raise first_error
        return receipts

    @asynccontextmanager
    async def consume(
        self, stream: str, spec: ConsumerSpec, *, buffer: int = 64
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Delivery]]:
        await self._enter_op()
        if buffer < 1:
            raise InvalidSpecError(f"buffer must be at least 1, got {buffer}")
        owner = self._stream(stream)
        consumer = owner.ensure_consumer(spec)
        send, receive = trio.open_memory_channel[Delivery](buffer)
        session = Session()
        async with self._feeding(partial(run_session, consumer, session, send), send):
            try:
                yield receive
            finally:
                consumer.end_session(session, receive)

    async def consumer_lag(self, stream: str, consumer: str) -> ConsumerLag:
        await self._enter_op()
        owner = self._stream(stream)
        found = owner.consumers.get(consumer)
        if found is None:
            raise NotFoundError(f"no consumer {consumer!r} on stream {stream!r}")
        return found.lag()

    async def read(
        self, stream: str, subject: str, *, start_seq: int = 1, limit: int = 1000
    ) -> list[StoredMessage]:
        """A delayed message is read, once due, at the sequence it was published with."""
        await self._enter_op()
        check_read(stream, subject, start_seq, limit)
        owner = self._stream(stream)
        now = trio.current_time()
        owner.expire(now)
        epoch = self._start_clock()
        return [
            StoredMessage(m.subject, m.data, m.seq, m.stored_at + epoch, m.headers)
            for m in owner.read(SubjectFilter((subject,)), start_seq, limit, now)
        ]

    async def purge(self, stream: str, subject: str) -> int:
        """A scan of the stream (the broker keeps an index of subjects; this does not)."""
        await self._enter_op()
        check_purge(stream, subject)
        return self._stream(stream).purge(subject)

    async def holds(self, stream: str, seq: int) -> bool:
        await self._enter_op()
        check_holds(stream, seq)
        owner = self._stream(stream)
        owner.expire(trio.current_time())
        return owner.holds(seq)

    # -- key-value ---------------------------------------------------------------

    async def ensure_kv(self, spec: KVSpec) -> KeyValue:
        await self._enter_op()
        bucket = self._buckets.get(spec.bucket)
        if bucket is None:
            bucket = self._buckets[spec.bucket] = Bucket(spec)
        else:
            bucket.update(spec, trio.current_time())
        return MemoryKV(self, bucket)

    async def kv(self, bucket: str) -> KeyValue:
        await self._enter_op()
        found = self._buckets.get(bucket)
        if found is None:
            raise NotFoundError(f"no bucket {bucket!r}")
        return MemoryKV(self, found)


class MemoryKV:
    """A handle to one bucket of a :class:`MemoryTransport`."""

    __slots__ = ("_bucket", "_transport")

    def __init__(self, transport: MemoryTransport, bucket: Bucket) -> None:
        self._transport = transport
        self._bucket = bucket

    @property
    def bucket(self) -> str:
        return self._bucket.spec.bucket

    async def _enter(self, key: str) -> Bucket:
        await self._transport._enter_op()
        check_key(key)
        bucket = self._bucket
        bucket.expire(trio.current_time())
        return bucket

    async def get(self, key: str) -> KVEntry | None:
        record = (await self._enter(key)).latest(key)
        if record is None or record.op is not KVOp.PUT:
            return None
        return record.entry()

    async def create(self, key: str, value: bytes) -> int:
        bucket = await self._enter(key)
        record = bucket.latest(key)
        if record is not None and record.op is KVOp.PUT:
            raise ConflictError(f"key {key!r} exists at revision {record.revision}")
        return bucket.write(key, bytes(value), KVOp.PUT, trio.current_time())

    async def update(self, key: str, value: bytes, revision: int) -> int:
        bucket = await self._enter(key)
        record = bucket.latest(key)
        if record is None or record.revision != revision:
            current = None if record is None else record.revision
            raise ConflictError(f"key {key!r} is at revision {current}, not {revision}")
        return bucket.write(key, bytes(value), KVOp.PUT, trio.current_time())

    async def put(self, key: str, value: bytes) -> int:
        bucket = await self._enter(key)
        return bucket.write(key, bytes(value), KVOp.PUT, trio.current_time())

    async def delete(self, key: str, *, revision: int | None = None) -> None:
        """A delete marker is written only over a live value."""
        bucket = await self._enter(key)
        record = bucket.latest(key)
        if revision is not None and (record is None or record.revision != revision):
            current = None if record is None else record.revision
            raise ConflictError(f"key {key!r} is at revision {current}, not {revision}")
        if record is None or record.op is not KVOp.PUT:
            return
        bucket.write(key, b"", KVOp.DELETE, trio.current_time())

    async def keys(self, pattern: str = ">") -> list[str]:
        """Sorted."""
        await self._transport._enter_op()
        check_key_pattern(pattern)
        bucket = self._bucket
        bucket.expire(trio.current_time())
        return bucket.live_keys(SubjectFilter((pattern,)))

    async def latest_revision(self) -> int:
        await self._transport._enter_op()
        bucket = self._bucket
        bucket.expire(trio.current_time())
        # Expiry takes the oldest first: while anything is retained, the newest is.
        return bucket.revision if bucket.log else 0

    @asynccontextmanager
    async def watch(
        self, pattern: str = ">", *, since: int | None = None
    ) -> AsyncIterator[trio.MemoryReceiveChannel[KVChange]]:
        """The snapshot (``since=None``) or the starting revision is fixed on entering."""
        transport = self._transport
        await transport._enter_op()
        check_key_pattern(pattern)
        bucket = self._bucket
        bucket.expire(trio.current_time())
        matches = SubjectFilter((pattern,))
        if since is None:
            snapshot, cursor = bucket.snapshot(matches), bucket.revision
        else:
            snapshot, cursor = [], since
        send, receive = trio.open_memory_channel[KVChange](_WATCH_BUFFER)
        watcher = Watcher(matches, cursor, send)
        async with transport._feeding(partial(run_watch, bucket, watcher, snapshot), send):
            yield receive


if TYPE_CHECKING:

    def _conforms(kv: MemoryKV) -> KeyValue:
        return kv
