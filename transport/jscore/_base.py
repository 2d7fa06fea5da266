"""What both JetStream transports do alike, on top of their connection.

A JetStream transport's connection class provides connecting (``_connect``),
requests (``_request``), publishes nobody waits for (``_publish_raw``), its
state and ``aclose``; its transport class sends a batch of prepared
publishes (``_publish_prepared``) and reads (``read``); its pull consumer
and bucket classes make the subscriptions. This base class does the rest
(``publish`` is :class:`Transport`'s, a batch of one): opening, streams,
buckets, consumers, ``holds``, finding the stream of a delayed message,
telling "no stream" from "no leader yet", the headers of a publish (message
id, delayed delivery) and its receipts, and the background task of a
consume or a watch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, Self, TypeAlias

import trio

from .._errors import (
    ConnectionLostError,
    InvalidSpecError,
    NotFoundError,
    TransportClosedError,
    TransportError,
    TransportTimeoutError,
)
from .._interface import Delivery, KeyValue, Transport
from .._nursery import background_nursery
from .._options import ConnectOptions
from .._specs import (
    DELIVER_AT_HEADER,
    SCHEDULE_PREFIX,
    ConnectionEvent,
    ConsumerLag,
    ConsumerSpec,
    KVSpec,
    OutMessage,
    PubAck,
    Retention,
    StreamSpec,
    check_holds,
    check_name,
    check_purge,
    check_subject,
    schedule_token,
    subject_matches,
)
from ._api import (
    API,
    KV_HEADROOM,
    NO_MESSAGE,
    JetStreamDisabledError,
    NoStreamAnswered,
    WireMsg,
    api_reply,
    new_inbox,
    parse_ack,
    rfc3339,
    wall_clock,
)
from ._config import direct_reads, ensure_stream_config, kv_config, partitioning_of, stream_config
from ._kv import KVCore
from ._pull import PullerCore

__all__ = ["ENSURE_PATIENCE", "JetStreamBase", "Prepared"]

log = logging.getLogger("transport.jetstream")

#: Seconds that creating a stream or bucket keeps trying a cluster that does
#: not answer in time or has JetStream unavailable (see ``ensure_stream``).
ENSURE_PATIENCE: Final = 60.0

#: A message as it is sent: (subject, data, headers).
Prepared: TypeAlias = tuple[str, bytes, dict[str, str] | None]


class JetStreamBase(Transport):
    """The library-independent half of a JetStream transport (see the module)."""

    #: The client's pull consumer and bucket.
    _puller_class: type[PullerCore[Any]]
    _kv_class: type[KVCore]

    def __init__(self, options: ConnectOptions, nursery: trio.Nursery, servers: list[str]) -> None:
        self._options = options
        self._nursery = nursery
        self._servers = servers
        self._listeners: list[trio.MemorySendChannel[ConnectionEvent]] = []
        #: Set (and replaced) at every reconnection.
        self._reconnected = trio.Event()
        #: Consumers and watches to wake when the connection returns or ends.
        self._wakers: set[Callable[[], None]] = set()
        #: The streams this transport ensured, by name.
        self._streams: dict[str, StreamSpec] = {}
        #: The server has message schedules (2.12+) and batched direct gets (2.11+).
        self._supports_schedules = False
        self._supports_batch_get = False

    @classmethod
    @asynccontextmanager
    async def opened(cls, servers: list[str], options: ConnectOptions) -> AsyncIterator[Self]:
        """Connect to ``servers`` and yield the transport; close it on exit.

        :func:`~transport.open_transport` says what it raises. The
        transport's background tasks, its client's included, run in a
        nursery around the owner's block: the block ends only once they have.
        """
        async with background_nursery() as nursery:
            transport = cls(options, nursery, servers)
            try:
                await transport._connect()
                yield transport
            finally:
                await transport._shut()

    # -- the connection's part -------------------------------------------------

    async def _connect(self) -> None:
        """Connect to ``self._servers`` (or raise as :func:`~transport.open_transport` says)."""
        raise NotImplementedError

    async def _shut(self) -> None:
        """Close on leaving :meth:`opened`; a client adds what must stop after that."""
        await self.aclose()

    @property
    def _ended(self) -> bool:
        """Closed: nothing more will be done (consumers and watches end)."""
        raise NotImplementedError

    async def _request(
        self, subject: str, payload: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> WireMsg:
        """One request; its reply."""
        raise NotImplementedError

    def _publish_raw(self, subject: str, payload: bytes = b"") -> None:
        """A publish nobody waits for (acks, flow control replies)."""
        raise NotImplementedError

    # -- shared by the connections -----------------------------------------------

    def _server_is(self, major: int, minor: int) -> None:
        """Note what the server of this version can do."""
        self._supports_schedules = (major, minor) >= (2, 12)
        self._supports_batch_get = (major, minor) >= (2, 11)

    def connection_events(self) -> trio.MemoryReceiveChannel[ConnectionEvent]:
        send, receive = trio.open_memory_channel[ConnectionEvent](16)
        self._listeners.append(send)
        return receive

    def _tell(self, event: ConnectionEvent) -> None:
        """Pass ``event`` to every listener (dropped for one that is behind)."""
        for channel in list(self._listeners):
            try:
                channel.send_nowait(event)
            except trio.WouldBlock:
                pass  # the owner is behind; `state` stays current
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                self._listeners.remove(channel)

    def _wake_all(self) -> None:
        """Wake every consumer and watch: to make their requests again, or to end."""
        for wake in list(self._wakers):
            wake()

    def _came_back(self) -> None:
        """The connection returned: consumers and watches make their requests again."""
        self._reconnected.set()
        self._reconnected = trio.Event()
        self._wake_all()

    def _finished(self) -> None:
        """Closed by the owner: the events end, consumers and watches close their channels."""
        for channel in self._listeners:
            channel.close()
        self._listeners.clear()
        self._wake_all()

    def _check_open(self) -> None:
        """Raise :class:`TransportClosedError` once closed."""
        if self._ended:
            raise TransportClosedError("transport is closed")

    async def _api(self, subject: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One JetStream API call (``$JS.API.<subject>``); its reply's body."""
        payload = json.dumps(body).encode() if body is not None else b""
        reply = await self._request(f"{API}.{subject}", payload)
        return api_reply(reply.status, reply.data)

    def now(self) -> float:
        return wall_clock()

    # -- streams -----------------------------------------------------------

    async def ensure_stream(self, spec: StreamSpec) -> StreamSpec:
        config = stream_config(spec, schedules=self._supports_schedules)
        found = await self._ensure_stream_config(config)
        kept = partitioning_of(found.get("subject_transform"))
        if kept is not None and kept != spec.partitioning:
            spec = dataclasses.replace(spec, partitioning=kept)
        self._streams[spec.name] = spec
        return spec

    async def _ensure_stream_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """:func:`ensure_stream_config`, tried again while the cluster cannot answer.

        A cluster busy creating other streams (every service of a
        deployment provisions at once on start), electing a leader or short
        of a quorum lets a creation time out, or answers that JetStream is
        unavailable. Creating is idempotent, and a creation that timed out
        may have been made: the same call is made again, waiting longer each
        time, for :data:`ENSURE_PATIENCE` seconds before the error is raised.
        A server without JetStream is not asked again: it never will answer.
        """
        deadline = trio.current_time() + ENSURE_PATIENCE
        wait = 0.25
        while True:
            try:
                return await ensure_stream_config(self._api, config)
            except (TransportTimeoutError, ConnectionLostError) as exc:
                if isinstance(exc, JetStreamDisabledError) or trio.current_time() + wait > deadline:
                    raise
                log.warning("creating %s: %s; trying again in %.2fs", config["name"], exc, wait)
                await trio.sleep(wait)
                wait = min(wait * 2, 4.0)

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

    async def purge(self, stream: str, subject: str) -> int:
        """One purge request, filtered: the server finds the subject's messages by its index."""
        self._check_open()
        check_purge(stream, subject)
        reply = await self._api(f"STREAM.PURGE.{stream}", {"filter": subject})
        return int(reply.get("purged", 0))

    async def holds(self, stream: str, seq: int) -> bool:
        """A message get of that one sequence, answered by the stream's leader
        (a direct get may be answered by a replica that lags). The server
        finds a sequence without scanning, whereas a read's "next message
        from here" steps over every removed message: 5 ms a lookup past
        100,000 acked events, measured.
        """
        self._check_open()
        check_holds(stream, seq)
        reply = await self._request(
            f"{API}.STREAM.MSG.GET.{stream}", json.dumps({"seq": seq}).encode()
        )
        try:
            api_reply(reply.status, reply.data)
        except NotFoundError:
            body = json.loads(reply.data or b"{}")
            if int(body.get("error", {}).get("err_code", 0)) == NO_MESSAGE:
                return False
            raise
        return True

    async def consumer_lag(self, stream: str, consumer: str) -> ConsumerLag:
        self._check_open()
        check_name("stream", stream)
        check_name("consumer", consumer)
        info = await self._api(f"CONSUMER.INFO.{stream}.{consumer}")
        return ConsumerLag(int(info.get("num_pending", 0)), int(info.get("num_ack_pending", 0)))

    # -- key-value ---------------------------------------------------------

    async def ensure_kv(self, spec: KVSpec) -> KeyValue:
        stored = await self._ensure_stream_config(kv_config(spec))
        return self._kv_class(
            self, spec.bucket, direct=direct_reads(stored), max_value_size=spec.max_value_size
        )

    async def kv(self, bucket: str) -> KeyValue:
        config = (await self._api(f"STREAM.INFO.KV_{bucket}"))["config"]
        limit = config.get("max_msg_size", -1)
        return self._kv_class(
            self,
            bucket,
            direct=direct_reads(config),
            max_value_size=limit - KV_HEADROOM if limit > KV_HEADROOM else None,
        )

    # -- publishing --------------------------------------------------------

    async def publish_many(self, messages: Sequence[OutMessage]) -> list[PubAck]:
        self._check_open()
        if not messages:
            return []
        return await self._publish_prepared([await self._prepare(m) for m in messages])

    async def _publish_prepared(self, prepared: Sequence[Prepared]) -> list[PubAck]:
        """Make the publishes :meth:`_prepare` gave, pipelined; their :meth:`_receipts`."""
        raise NotImplementedError

    async def _receipts(
        self, prepared: Sequence[Prepared], reply_of: Callable[[int], Awaitable[WireMsg]]
    ) -> list[PubAck]:
        """The receipts of the ``prepared`` publishes, in order.

        ``reply_of(i)`` gives the reply to the ``i``-th publish, or raises
        its :class:`TransportError`. Every reply is read; the first error
        is raised after all were.
        """
        acks: list[PubAck] = []
        first_error: TransportError | None = None
        for index, (subject, _data, _headers) in enumerate(prepared):
            try:
                reply = await reply_of(index)
                acks.append(parse_ack(reply.status, reply.data, subject))
            except NoStreamAnswered as exc:
                first_error = first_error or await self._unanswered(subject, exc)
            except TransportError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return acks

    async def _unanswered(self, subject: str, exc: NoStreamAnswered) -> TransportError:
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

    async def _prepare(self, message: OutMessage) -> Prepared:
        """(subject, data, headers) to publish ``message`` with.

        A delayed message goes to its stream's schedule subject with the
        server's schedule headers; without server schedules it is stored
        now and the consumer hands it back (nak with delay) until it is due.
        """
        check_subject(message.subject)
        headers = dict(message.headers) if message.headers else {}
        if message.msg_id is not None:
            headers["Nats-Msg-Id"] = message.msg_id
        subject = message.subject
        if message.deliver_at is not None:
            spec = await self._stream_for_delayed(subject)
            headers[DELIVER_AT_HEADER] = repr(message.deliver_at)
            if self._supports_schedules:
                token = schedule_token(message.msg_id or new_inbox())
                headers["Nats-Schedule"] = "@at " + rfc3339(max(message.deliver_at, self.now()))
                headers["Nats-Schedule-Target"] = subject
                subject = f"{SCHEDULE_PREFIX}.{spec.name}.{token}"
        return subject, message.data, headers or None

    # -- consuming ---------------------------------------------------------

    @asynccontextmanager
    async def consume(
        self, stream: str, spec: ConsumerSpec, *, buffer: int = 64
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Delivery]]:
        """Refusals (no such stream, a bad spec) raise here. A failover or an
        outage does not: the channel opens, and pulling creates the
        consumer once it can.
        """
        self._check_open()
        if buffer < 1:
            raise InvalidSpecError("buffer must be at least 1")
        puller = self._puller_class(self, stream, spec, buffer)
        await puller.check_filters()
        try:
            await puller.ensure_consumer()
        except (TransportTimeoutError, ConnectionLostError) as exc:
            puller.consumer_missing(exc)
        except NotFoundError as exc:
            if puller.stream not in self._streams:
                raise
            # This transport ensured the stream: on a cluster where several
            # processes create it at once, a server may not know it yet.
            puller.consumer_missing(exc)
        await puller.subscribe()
        async with self._serve(puller.run, puller.hand_back, deadline=5.0):
            yield puller.receive

    # -- background tasks for the owner's block -------------------------------

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
