"""The one interface every transport implements.

A transport adapts a broker's durable streams and key-value buckets to Trio:
consumers deliver into bounded Trio receive channels (an actor's mailbox), and
every operation is an ``async`` call that raises only :class:`TransportError`
subclasses (or Trio's own cancellation).

The docstrings here are the contract; an implementation's own docstrings say
only what is particular to it.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol, Self

import trio

from ._specs import (
    ConnectionEvent,
    ConnectionState,
    ConsumerLag,
    ConsumerSpec,
    KVChange,
    KVEntry,
    KVSpec,
    OutMessage,
    PubAck,
    StoredMessage,
    StreamSpec,
)


class Settlement(enum.Enum):
    """How a delivery was finished."""

    ACK = "ack"
    NAK = "nak"
    TERM = "term"


@dataclass(slots=True, eq=False, repr=False)
class Delivery(abc.ABC):
    """One delivery of a stream message to a consumer.

    Finish it with exactly one of :meth:`ack`, :meth:`nak` or :meth:`term`; the
    first one counts and later ones do nothing. A delivery left unfinished is
    redelivered after the consumer's ack wait, or at once (nak) when the consume
    context it came from exits.
    """

    subject: str
    data: bytes
    headers: Mapping[str, str]
    #: 1 on the first delivery, 2 on the first redelivery, and so on.
    num_delivered: int
    stream_seq: int
    #: When the broker stored the message, in seconds since the epoch, as
    #: :meth:`Transport.now` counts them; a delayed message counts from when
    #: it became due (on JetStream servers without message schedules, from
    #: its publish). On a cluster this is the storing server's clock.
    stored_at: float
    #: How the delivery was finished, or ``None`` while it is in hand.
    settled: Settlement | None = field(default=None, init=False)

    async def ack(self) -> None:
        """Done with it: the broker forgets the message (on a work-queue stream)."""
        if self.settled is None:
            self.settled = Settlement.ACK
            await self._settle(Settlement.ACK, None)

    async def nak(self, delay: float | None = None) -> None:
        """Hand it back, to be redelivered at once or after ``delay`` seconds."""
        if self.settled is None:
            self.settled = Settlement.NAK
            await self._settle(Settlement.NAK, delay)

    async def term(self) -> None:
        """Give up on it: it is never delivered again to this consumer."""
        if self.settled is None:
            self.settled = Settlement.TERM
            await self._settle(Settlement.TERM, None)

    async def in_progress(self) -> None:
        """Still working on it: restart the ack-wait clock (a heartbeat)."""
        if self.settled is None:
            await self._touch()

    @abc.abstractmethod
    async def _settle(self, how: Settlement, delay: float | None) -> None: ...

    @abc.abstractmethod
    async def _touch(self) -> None: ...

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.subject} seq={self.stream_seq} "
            f"delivered={self.num_delivered} settled={self.settled}>"
        )


class KeyValue(Protocol):
    """A key-value bucket with a revision per write (compare-and-set)."""

    @property
    def bucket(self) -> str: ...

    async def get(self, key: str) -> KVEntry | None:
        """The key's current entry, or ``None`` if it is absent, deleted or expired (TTL).

        Current: a write acknowledged before the call is seen (on a cluster
        too, where a replicated bucket is read from its leader).
        """

    async def create(self, key: str, value: bytes) -> int:
        """Write ``key`` only if it is absent (or deleted); return the new revision.

        Raises :class:`ConflictError` if it exists.
        """

    async def update(self, key: str, value: bytes, revision: int) -> int:
        """Write ``key`` only if its last revision is ``revision``; return the new one.

        Raises :class:`ConflictError` otherwise.
        """

    async def put(self, key: str, value: bytes) -> int:
        """Write ``key`` unconditionally; return the new revision."""

    async def delete(self, key: str, *, revision: int | None = None) -> None:
        """Delete ``key`` (a no-op if absent); with ``revision``, only at that revision."""

    async def keys(self, pattern: str = ">") -> list[str]:
        """The keys currently present that match ``pattern`` (``*``/``>`` wildcards)."""

    async def latest_revision(self) -> int:
        """The revision of the newest write the bucket holds (a delete too); 0 if none.

        Every write acknowledged before the call has this revision or an
        earlier one, so a watch ``since`` it yields the changes made after
        the call; and a watch ``since=0`` yields the change at this revision,
        last of those the bucket held at the call. Reads nothing else and
        writes nothing: a way to learn "now" in a bucket without a marker key.
        """

    def watch(
        self, pattern: str = ">", *, since: int | None = None
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[KVChange]]:
        """Watch keys matching ``pattern``.

        With ``since=None`` the channel first yields the current entry of every
        matching key, then every later change. With ``since=r`` it yields every
        change after revision ``r`` that the bucket's history still holds, then
        every later change. Changes come in revision order, each once, and the
        watch resumes by itself after the broker restarts or the connection
        returns.
        """


class Transport(Protocol):
    """Durable streams, consumers and key-value buckets behind one face.

    An implementation satisfies it structurally, or subclasses it to inherit
    :meth:`publish` (a batch of one, through :meth:`publish_many`) and
    ``async with`` (entering gives the transport, leaving closes it); mypy
    then also checks that it has every other method.
    """

    @property
    def state(self) -> ConnectionState:
        """The connection's current state."""

    def now(self) -> float:
        """The current time on the clock ``deliver_at`` is measured on (seconds)."""

    async def ensure_stream(self, spec: StreamSpec) -> StreamSpec:
        """Create the stream, or bring an existing one to ``spec``; idempotent.

        An existing stream's replicas are never lowered (that is an
        operator's decision, not a side effect of provisioning), and its
        partitioning, if it has one, is kept: the messages it holds are filed
        by it. Returns ``spec`` as it is in effect, with those kept.

        A broker that does not answer in time, or answers that it cannot
        serve streams for now (a cluster electing a leader, short of a
        quorum, busy with other creations), is asked again for up to a
        minute, waiting longer each time; then the
        :class:`TransportTimeoutError` or :class:`ConnectionLostError` is
        raised. Raises :class:`InvalidSpecError` if the broker refuses the
        change.
        """

    async def ensure_kv(self, spec: KVSpec) -> KeyValue:
        """Create the bucket or bring an existing one to ``spec`` (idempotent); its handle.

        A broker that cannot answer for now is asked again as by :meth:`ensure_stream`.
        """

    async def kv(self, bucket: str) -> KeyValue:
        """A handle to an existing bucket. Raises :class:`NotFoundError`."""

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        deliver_at: float | None = None,
    ) -> PubAck:
        """Store one message in the stream that owns ``subject``; return its receipt.

        Returns only once the broker has stored the message (or recognised it
        as a duplicate of ``msg_id``). Raises :class:`NotFoundError` if no
        stream takes the subject, :class:`TooLargeError` if the stream refuses
        the size, :class:`StorageFullError` if a ``Discard.NEW`` stream is at
        its limits (or the broker's store is full), :class:`InvalidSpecError`
        for a bad subject or a ``deliver_at`` the stream does not allow,
        :class:`ConnectionLostError` if the stream has no leader for the
        moment (a cluster electing one): publish again.
        """
        (ack,) = await self.publish_many([OutMessage(subject, data, msg_id, headers, deliver_at)])
        return ack

    async def publish_many(self, messages: Sequence[OutMessage]) -> list[PubAck]:
        """Publish every message, pipelined; return the receipts in order.

        All are attempted; if any failed, the first error is raised after the
        others finished (publishing again with the same ids is safe).
        """

    def consume(
        self, stream: str, spec: ConsumerSpec, *, buffer: int = 64
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Delivery]]:
        """Create (or update) the durable consumer and deliver into a channel.

        Several contexts on one durable share its messages, each delivered to
        one of them at a time. At most ``buffer`` (at least 1) deliveries are
        fetched ahead of the owner: the broker is asked for more only when
        there is room. When the context exits, deliveries still in the
        channel or received but unfinished are handed back (nak) at once.
        Raises :class:`NotFoundError` if the stream does not exist,
        :class:`InvalidSpecError` for a buffer below 1 or a consumer the
        broker refuses.
        """

    async def consumer_lag(self, stream: str, consumer: str) -> ConsumerLag:
        """How far durable ``consumer`` of ``stream`` is behind, as the broker counts it now.

        One request to the broker, for monitoring. Raises :class:`NotFoundError`
        if the stream or the consumer does not exist.
        """

    async def read(
        self, stream: str, subject: str, *, start_seq: int = 1, limit: int = 1000
    ) -> list[StoredMessage]:
        """Up to ``limit`` messages of ``stream`` on subjects matching ``subject``.

        Returns the messages stored at sequence ``start_seq`` or later whose
        subject matches ``subject`` (``*`` and ``>`` wildcards allowed), in
        stream order; ``[]`` if there are none. Messages already removed (limits,
        acks on a work queue) are not there, and a delayed message is read only
        once it is due. A page shorter than ``limit`` means nothing more was
        stored when it was read; read the next page from the last message's
        ``stream_seq + 1``.

        Reading creates no consumer and changes nothing: neither the messages
        nor any consumer's progress. Raises :class:`NotFoundError` if the
        stream does not exist, :class:`InvalidSpecError` for a bad stream name
        or subject, a ``start_seq`` or a ``limit`` below 1.
        """

    async def holds(self, stream: str, seq: int) -> bool:
        """Whether ``stream`` still stores the message at sequence ``seq``.

        One lookup of that sequence, however many messages before it were
        removed (a work queue's acked messages): unlike :meth:`read`, which
        looks for the next match and may step over every removed one. On a
        cluster the stream's leader answers, so a message it removed is not
        reported as held, nor one it holds as removed. Raises
        :class:`NotFoundError` if the stream does not exist,
        :class:`InvalidSpecError` for a bad name or a ``seq`` below 1.
        """

    async def purge(self, stream: str, subject: str) -> int:
        """Remove every message of ``stream`` on a subject matching ``subject``; how many.

        ``subject`` may hold wildcards. What is removed is gone for every
        reader and consumer. Raises :class:`NotFoundError` if the stream
        does not exist, :class:`InvalidSpecError` for a bad name or subject.
        """

    def connection_events(self) -> trio.MemoryReceiveChannel[ConnectionEvent]:
        """A channel of connection state changes from now on, for the owner.

        If the owner falls more than a few events behind, older events are
        dropped; :attr:`state` is always current.
        """

    async def aclose(self) -> None:
        """Close everything; idempotent. Pending operations raise TransportClosedError."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
