"""Streams and durable pull consumers of the in-memory broker.

Everything here is synchronous bookkeeping on Trio's clock, except
:func:`run_session`, the task that moves deliveries from a consumer into one
consume context's channel. Time-driven work (ack-wait expiry, delayed
messages, ``nak(delay)``) is not done by timers: it is due work that the next
:meth:`Consumer.take` picks up, and a session sleeps until
:meth:`Consumer.wake_time` when it has nothing to hand out.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

import trio

from .._errors import InvalidSpecError, StorageFullError, TooLargeError
from .._interface import Delivery, Settlement
from .._specs import (
    ConsumerLag,
    ConsumerSpec,
    Discard,
    PubAck,
    Retention,
    StreamSpec,
    subject_matches,
)
from .._subjects import SubjectFilter, any_collide, check_consumer_filters

EMPTY_HEADERS: Mapping[str, str] = MappingProxyType({})

#: A heap entry ordered by due time: ``(due, seq)`` or ``(due, seq, gen)``.
_TimerT = TypeVar("_TimerT", tuple[float, int], tuple[float, int, int])


@dataclass(slots=True, eq=False)
class Message:
    """A stored message. ``due`` (Trio time) holds back a delayed message."""

    seq: int
    subject: str
    data: bytes
    headers: Mapping[str, str]
    size: int
    stored_at: float
    due: float | None


def payload_size(data: bytes, headers: Mapping[str, str]) -> int:
    """The size a stream's ``max_msg_size`` is checked against: data plus headers."""
    return len(data) + sum(len(k) + len(v) for k, v in headers.items())


class Stream:
    """An append-only log with limits, message-id dedup and its durable consumers.

    Messages are kept in sequence order; removal happens at the head (limits,
    age) or anywhere (work-queue acks), so an ``OrderedDict`` keyed by sequence
    gives O(1) for all of them.
    """

    def __init__(self, spec: StreamSpec, epoch: float) -> None:
        self.spec = spec
        #: Seconds from Trio's clock to the epoch (the transport's ``now``).
        self.epoch = epoch
        self.messages: OrderedDict[int, Message] = OrderedDict()
        self.last_seq = 0
        self.bytes = 0
        self.consumers: dict[str, Consumer] = {}
        # msg_id -> (seq, stored_at); the deque holds the same ids oldest first
        # so that expiring the window is O(1) per id.
        self._ids: dict[str, tuple[int, float]] = {}
        self._id_order: deque[tuple[float, str]] = deque()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def first_seq(self) -> int:
        """The oldest stored sequence, or ``last_seq + 1`` when the stream is empty."""
        for seq in self.messages:
            return seq
        return self.last_seq + 1

    def update(self, spec: StreamSpec, now: float) -> None:
        """Bring the stream to ``spec``; retention and storage cannot change."""
        if spec.retention is not self.spec.retention:
            raise InvalidSpecError(f"stream {spec.name}: retention cannot change")
        if spec.storage is not self.spec.storage:
            raise InvalidSpecError(f"stream {spec.name}: storage cannot change")
        self.spec = spec
        # New limits apply to what is already stored, whatever the discard policy.
        self.expire(now)
        self._drop_oldest_over_limits()
        for consumer in self.consumers.values():
            consumer.wake()

    def store(
        self,
        subject: str,
        data: bytes,
        msg_id: str | None,
        headers: Mapping[str, str],
        due: float | None,
        now: float,
    ) -> PubAck:
        """Append one message (or recognise a duplicate ``msg_id``) and return its receipt.

        Raises :class:`TooLargeError` past ``max_msg_size`` (or a message bigger
        than ``max_bytes`` itself) and :class:`StorageFullError` when a limit is
        reached under ``Discard.NEW``.
        """
        spec = self.spec
        size = payload_size(data, headers)
        if spec.max_msg_size is not None and size > spec.max_msg_size:
            raise TooLargeError(
                f"stream {spec.name}: message of {size} bytes exceeds max_msg_size "
                f"{spec.max_msg_size}"
            )
        if msg_id is not None:
            self._forget_ids(now)
            seen = self._ids.get(msg_id)
            if seen is not None:
                return PubAck(spec.name, seen[0], duplicate=True)
        self.expire(now)
        size += len(subject)
        if spec.max_bytes is not None and size > spec.max_bytes:
            raise TooLargeError(f"stream {spec.name}: message larger than max_bytes")
        if spec.discard is Discard.NEW:
            if spec.max_msgs is not None and len(self.messages) >= spec.max_msgs:
                raise StorageFullError(f"stream {spec.name}: max_msgs reached")
            if spec.max_bytes is not None and self.bytes + size > spec.max_bytes:
                raise StorageFullError(f"stream {spec.name}: max_bytes reached")
        self.last_seq = seq = self.last_seq + 1
        self.messages[seq] = Message(seq, subject, data, headers, size, now, due)
        self.bytes += size
        if spec.discard is Discard.OLD:
            self._drop_oldest_over_limits()
        if msg_id is not None:
            self._ids[msg_id] = (seq, now)
            self._id_order.append((now, msg_id))
        for consumer in self.consumers.values():
            consumer.on_publish()
        return PubAck(spec.name, seq)

    def remove(self, seq: int) -> None:
        """Forget message ``seq`` if it is still stored."""
        message = self.messages.pop(seq, None)
        if message is not None:
            self.bytes -= message.size

    def purge(self, subject: str) -> int:
        """Forget every message on a subject matching ``subject``; how many."""
        matching = [
            seq
            for seq, message in self.messages.items()
            if subject_matches(subject, message.subject)
        ]
        for seq in matching:
            self.remove(seq)
        return len(matching)

    def expire(self, now: float) -> None:
        """Drop messages older than ``max_age`` (they sit at the head: oldest first)."""
        max_age = self.spec.max_age
        if max_age is None:
            return
        messages = self.messages
        horizon = now - max_age
        while messages:
            seq, message = next(iter(messages.items()))
            if message.stored_at > horizon:
                break
            self.remove(seq)

    def _drop_oldest_over_limits(self) -> None:
        spec = self.spec
        messages = self.messages
        if spec.max_msgs is not None:
            while len(messages) > spec.max_msgs:
                self.remove(next(iter(messages)))
        if spec.max_bytes is not None:
            while self.bytes > spec.max_bytes and messages:
                self.remove(next(iter(messages)))

    def _forget_ids(self, now: float) -> None:
        horizon = now - self.spec.duplicate_window
        order = self._id_order
        while order and order[0][0] <= horizon:
            stored_at, msg_id = order.popleft()
            seen = self._ids.get(msg_id)
            # The id may have been recorded again after an earlier expiry.
            if seen is not None and seen[1] == stored_at:
                del self._ids[msg_id]

    def read(self, matches: SubjectFilter, start_seq: int, limit: int, now: float) -> list[Message]:
        """Up to ``limit`` stored messages from ``start_seq`` on that ``matches`` takes.

        Delayed messages not yet due are left out, as a consumer leaves them.
        The cost is the smaller of the sequences from ``start_seq`` on and the
        messages stored, whichever way is cheaper to walk.
        """
        messages = self.messages
        first = max(start_seq, self.first_seq)
        candidates: Iterable[Message | None]
        if self.last_seq - first + 1 < len(messages):
            candidates = map(messages.get, range(first, self.last_seq + 1))
        else:
            candidates = messages.values()
        found: list[Message] = []
        for message in candidates:
            if message is None or message.seq < first or not matches(message.subject):
                continue
            if message.due is not None and message.due > now:
                continue
            found.append(message)
            if len(found) == limit:
                break
        return found

    def holds(self, seq: int) -> bool:
        """Whether the message at ``seq`` is still stored (due or not)."""
        return seq in self.messages

    def ensure_consumer(self, spec: ConsumerSpec) -> Consumer:
        """Create the durable consumer, or update it to ``spec``, and return it.

        Raises :class:`InvalidSpecError` for filters that repeat themselves,
        lie outside the stream, or (on a work-queue stream) overlap another
        consumer's.
        """
        filters = spec.filter_subjects
        check_consumer_filters(spec.durable, filters, self.name, self.spec.subjects)
        if self.spec.retention is Retention.WORK_QUEUE:
            mine = filters or self.spec.subjects
            for other in self.consumers.values():
                if other.name != spec.durable and any_collide(
                    mine, other.spec.filter_subjects or self.spec.subjects
                ):
                    raise InvalidSpecError(
                        f"consumer {spec.durable}: filters overlap consumer {other.name} "
                        f"on work-queue stream {self.name}"
                    )
        consumer = self.consumers.get(spec.durable)
        if consumer is None:
            consumer = self.consumers[spec.durable] = Consumer(self, spec)
        else:
            consumer.update(spec)
        return consumer


class Session:
    """One consume context: the deliveries handed to it and not yet settled."""

    __slots__ = ("ended", "outstanding")

    def __init__(self) -> None:
        #: stream seq -> the delivery of it this context currently holds
        self.outstanding: dict[int, MemoryDelivery] = {}
        #: Set when the context exits; an ended session takes nothing more.
        self.ended = False


class _Pending:
    """A message the consumer has delivered and not yet seen acked (ack pending).

    ``gen`` changes on every hand-out, touch and nak, so heap entries made
    before the change are recognised as stale and skipped.
    """

    __slots__ = ("deadline", "delivery", "gen", "num_delivered", "seq", "session")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.num_delivered = 0
        self.gen = 0
        self.deadline = math.inf
        #: The delivery in someone's hands, or None while waiting for redelivery.
        self.delivery: MemoryDelivery | None = None
        self.session: Session | None = None


class MemoryDelivery(Delivery):
    """A delivery whose settlement goes straight to its consumer's bookkeeping."""

    __slots__ = ("_consumer",)

    def __init__(
        self, consumer: Consumer, message: Message, num_delivered: int, epoch: float
    ) -> None:
        stored_at = (message.stored_at if message.due is None else message.due) + epoch
        super().__init__(
            message.subject, message.data, message.headers, num_delivered, message.seq, stored_at
        )
        self._consumer = consumer

    # Settling is a few dict operations that never wait, and deliberately not a
    # schedule point: the consumer's next ``receive`` is one, and yielding here
    # too costs about a third of the consume-and-ack rate. It cannot be
    # cancelled half-way either, so an ack that returned was applied.

    async def _settle(self, how: Settlement, delay: float | None) -> None:
        self._consumer.settle(self, how, delay)

    async def _touch(self) -> None:
        self._consumer.touch(self)


class Consumer:
    """A durable pull consumer: a cursor into its stream plus its ack-pending set.

    New messages come from the cursor in stream order; redeliveries (ack wait
    expired, nak) and delayed messages wait in heaps keyed by due time and go
    first once due. Heaps are cleaned lazily: an entry whose ``gen`` no longer
    matches is skipped, and a heap much bigger than what it tracks is rebuilt.
    """

    def __init__(self, stream: Stream, spec: ConsumerSpec) -> None:
        self.stream = stream
        self.spec = spec
        self._matches = SubjectFilter(spec.filter_subjects)
        #: The next stream sequence the cursor has not looked at.
        self._next_seq = stream.first_seq
        self._pending: dict[int, _Pending] = {}
        self._redeliver: list[tuple[float, int, int]] = []  # (due, seq, gen)
        self._deadlines: list[tuple[float, int, int]] = []  # (ack deadline, seq, gen)
        self._delayed: list[tuple[float, int]] = []  # (due, seq), never delivered yet
        #: Sessions with nothing to hand out wait here.
        self.parked = trio.lowlevel.ParkingLot()

    @property
    def name(self) -> str:
        return self.spec.durable

    def update(self, spec: ConsumerSpec) -> None:
        self.spec = spec
        self._matches = SubjectFilter(spec.filter_subjects)
        self.wake()

    def wake(self) -> None:
        """Let waiting sessions look again (something may have become deliverable)."""
        if self.parked:
            self.parked.unpark_all()

    def on_publish(self) -> None:
        if self.parked and len(self._pending) < self.spec.max_ack_pending:
            self.parked.unpark_all()

    def wake_time(self) -> float:
        """When the next time-driven delivery becomes possible (Trio time)."""
        t = math.inf
        if self._redeliver:
            t = self._redeliver[0][0]
        if self._deadlines:
            t = min(t, self._deadlines[0][0])
        if self._delayed and len(self._pending) < self.spec.max_ack_pending:
            t = min(t, self._delayed[0][0])
        return t

    def take(self, session: Session) -> MemoryDelivery | None:
        """Hand the next deliverable message to ``session``, or return None.

        Order: due redeliveries, then (if ``max_ack_pending`` allows) due
        delayed messages, then new messages at the cursor.
        """
        if session.ended:
            # Its task may run once more after the context exits (a completed
            # send wins over the cancellation); nothing must land there.
            return None
        now = trio.current_time()
        stream = self.stream
        stream.expire(now)
        if self._deadlines and self._deadlines[0][0] <= now:
            self._expire_deliveries(now)
        messages = stream.messages
        pending = self._pending
        while (due := self._pop_due(self._redeliver, now)) is not None:
            _, p = due
            message = messages.get(p.seq)
            if message is None:  # removed by a limit meanwhile
                del pending[p.seq]
                continue
            return self._hand_out(p, message, session, now)
        if len(pending) >= self.spec.max_ack_pending:
            return None
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            _, seq = heapq.heappop(delayed)
            message = messages.get(seq)
            if message is not None and seq not in pending:
                return self._hand_out(self._track(seq), message, session, now)
        if self._next_seq < (first := stream.first_seq):
            self._next_seq = first
        matches = self._matches
        while self._next_seq <= stream.last_seq:
            seq = self._next_seq
            self._next_seq = seq + 1
            message = messages.get(seq)
            if message is None or not matches(message.subject):
                continue
            if message.due is not None and message.due > now:
                self._push_timer(delayed, (message.due, seq))
                continue
            return self._hand_out(self._track(seq), message, session, now)
        return None

    def lag(self) -> ConsumerLag:
        """Its backlog (matching messages past the cursor, delayed ones not yet
        handed out) and its deliveries awaiting an ack, as JetStream counts them."""
        stream = self.stream
        matches = self._matches
        ahead = sum(
            1
            for seq in range(max(self._next_seq, stream.first_seq), stream.last_seq + 1)
            if (message := stream.messages.get(seq)) is not None and matches(message.subject)
        )
        delayed = sum(1 for _, seq in set(self._delayed) if seq not in self._pending)
        out = sum(1 for p in self._pending.values() if p.delivery is not None)
        return ConsumerLag(ahead + delayed, out)

    def settle(self, delivery: MemoryDelivery, how: Settlement, delay: float | None) -> None:
        """Apply ack, nak or term.

        An ack or term counts even from a delivery that was since redelivered
        (the work was done, as JetStream accepts it); a nak only from the
        delivery currently out, so a stale copy cannot disturb the live one.
        """
        p = self._pending.get(delivery.stream_seq)
        if p is None:
            return
        if how is Settlement.NAK:
            if p.delivery is not delivery:
                return
            self._release(p)
            if self._exhausted(p):
                self._forget(p)
                return
            due = trio.current_time()
            if delay is not None and delay > 0:
                due += delay
            heapq.heappush(self._redeliver, (due, p.seq, p.gen))
            self._compact(self._redeliver)
            # Even a delayed nak may move the next wake-up earlier.
            self.wake()
            return
        if p.delivery is not None:
            self._release(p)
        self._forget(p)
        if self.stream.spec.retention is Retention.WORK_QUEUE:
            self.stream.remove(p.seq)

    def touch(self, delivery: MemoryDelivery) -> None:
        """Restart the ack-wait clock of ``delivery`` if it is the one out."""
        p = self._pending.get(delivery.stream_seq)
        if p is None or p.delivery is not delivery:
            return
        p.gen += 1
        p.deadline = trio.current_time() + self.spec.ack_wait
        heapq.heappush(self._deadlines, (p.deadline, p.seq, p.gen))
        self._compact(self._deadlines)

    def end_session(self, session: Session, channel: trio.MemoryReceiveChannel[Delivery]) -> None:
        """Hand back (nak at once) everything ``session`` holds, read or not."""
        session.ended = True
        while True:
            try:
                unread = channel.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            # Its consumer-side nak (if it is still the live copy) follows below.
            if unread.settled is None:
                unread.settled = Settlement.NAK
        for delivery in list(session.outstanding.values()):
            if delivery.settled is None:
                delivery.settled = Settlement.NAK
            self.settle(delivery, Settlement.NAK, None)

    def _track(self, seq: int) -> _Pending:
        p = self._pending[seq] = _Pending(seq)
        return p

    def _hand_out(
        self, p: _Pending, message: Message, session: Session, now: float
    ) -> MemoryDelivery:
        p.num_delivered += 1
        p.gen += 1
        delivery = MemoryDelivery(self, message, p.num_delivered, self.stream.epoch)
        p.delivery = delivery
        p.session = session
        p.deadline = now + self.spec.ack_wait
        session.outstanding[p.seq] = delivery
        self._push_timer(self._deadlines, (p.deadline, p.seq, p.gen))
        self._compact(self._deadlines)
        return delivery

    def _release(self, p: _Pending) -> None:
        """Take the delivery out of its holder's hands (it stays ack pending)."""
        if p.session is not None:
            p.session.outstanding.pop(p.seq, None)
        p.delivery = None
        p.session = None
        p.gen += 1

    def _forget(self, p: _Pending) -> None:
        del self._pending[p.seq]
        if len(self._pending) + 1 == self.spec.max_ack_pending:
            self.wake()  # a session may be waiting for this slot

    def _exhausted(self, p: _Pending) -> bool:
        max_deliver = self.spec.max_deliver
        return max_deliver is not None and p.num_delivered >= max_deliver

    def _expire_deliveries(self, now: float) -> None:
        while (due := self._pop_due(self._deadlines, now)) is not None:
            deadline, p = due
            self._release(p)
            if self._exhausted(p):
                self._forget(p)  # JetStream gives up; the message stays stored
            else:
                heapq.heappush(self._redeliver, (deadline, p.seq, p.gen))

    def _pop_due(
        self, heap: list[tuple[float, int, int]], now: float
    ) -> tuple[float, _Pending] | None:
        """Take ``heap``'s first entry due by ``now`` that is not stale: (due, its pending)."""
        pending = self._pending
        while heap and heap[0][0] <= now:
            due, seq, gen = heapq.heappop(heap)
            p = pending.get(seq)
            if p is not None and p.gen == gen:
                return due, p
        return None

    def _push_timer(self, heap: list[_TimerT], entry: _TimerT) -> None:
        heapq.heappush(heap, entry)
        # Parked sessions sleep until the earliest timer they saw; a new
        # earliest one must wake them, or an idle context could sleep past it
        # while the busy one that made it waits for room in its channel.
        if heap[0] is entry and self.parked:
            self.parked.unpark_all()

    def _compact(self, heap: list[tuple[float, int, int]]) -> None:
        # Stale entries pile up when deliveries are acked long before their
        # deadline; rebuild once they dominate, keeping memory O(ack pending).
        if len(heap) <= 2 * len(self._pending) + 64:
            return
        pending = self._pending
        heap[:] = [e for e in heap if (p := pending.get(e[1])) is not None and p.gen == e[2]]
        heapq.heapify(heap)


async def run_session(
    consumer: Consumer,
    session: Session,
    send: trio.MemorySendChannel[Delivery],
    *,
    task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Feed ``consumer``'s deliveries into ``send`` until cancelled or the channel closes.

    A delivery is taken only when it can be handed on: if the channel is full
    the task holds that one delivery (it belongs to the session, so it is
    handed back with the rest) and waits for room.
    """
    with trio.CancelScope() as scope, send:
        task_status.started(scope)
        while True:
            delivery = consumer.take(session)
            if delivery is None:
                with trio.move_on_at(consumer.wake_time()):
                    await consumer.parked.park()
                continue
            try:
                try:
                    send.send_nowait(delivery)
                except trio.WouldBlock:
                    await send.send(delivery)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # The reader closed its end, or the context or transport closed
                # ours: nobody will see this one, so hand it back now.
                if delivery.settled is None:
                    delivery.settled = Settlement.NAK
                consumer.settle(delivery, Settlement.NAK, None)
                return
