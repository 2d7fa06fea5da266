"""Workflow-level concurrency limits, held on the broker.

Each value of each limit's key has one entry in ``FLOW_SLOTS`` (see
``actors.wire._flow``): the instances holding its slots and those queued
for one, first come first. Every change is a compare-and-set of that one
entry, so taking, queueing and handing on never race, whichever
orchestrators do them. What holds and what frees a slot
(``docs/engine.md``, "Flow control"):

* an instance's start takes a slot of each of its limits, in the order the
  definition lists them, or queues in the first that is full (keeping those
  it took: a fixed order cannot deadlock);
* the decision that ends an instance (completed, failed, cancelled,
  terminated, queued or running) frees every slot it holds and its place in
  any queue; a freed slot goes to the first instance queued for it, which
  is sent an admission event (``instance.{id}.admit``) that takes its next
  limits and starts it;
* within one process, the changes to one entry are made one at a time
  (:class:`~._key_locks.KeyLocks`): compare-and-set alone would let every start
  queueing at once race every other, and the end that frees the slot
  with them, each losing and reading again;
* every step is idempotent (an instance holding or queued already is left
  as it is; a free re-sends the admissions it made), so that the event
  that did it, redelivered after a crash, does it again harmlessly;
* :meth:`WorkflowSlots.sweep` frees the slots of holders that cannot free
  them (an instance that ended, or never came to be stored), should any be
  left by a path that skipped the free.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from transport import ConflictError, KeyValue, OutMessage, Transport, TransportError

from ..core import (
    ConcurrencyLimit,
    Definition,
    InstanceState,
    InstanceStatus,
    ScheduleActivity,
    StepStatus,
    attempt_key_value,
    key_values,
    step_key_value,
    step_limit,
)
from ..wire import (
    MessageError,
    PayloadTooLargeError,
    Slot,
    SlotHolder,
    activity_slot_key,
    admit_msg_id,
    admit_subject,
    decode_pace,
    decode_slot,
    decode_state,
    encode_admit,
    encode_pace,
    encode_slot,
    rate_slot_key,
    workflow_slot_key,
)
from ._key_locks import KeyLocks

__all__ = ["MAX_QUEUE", "Admission", "Pacer", "SlotInfo", "WorkflowSlots", "describe", "slot_infos"]

log = logging.getLogger("actors.orchestrator")

#: Entries created for one holder whose revision is remembered, at most.
_ALONE_REMEMBERED: Final = 100_000
#: Instances one key value's queue holds at most (its entry is one message):
#: a start beyond it fails with ``QueueFull``.
MAX_QUEUE: Final = 10_000


class QueueFullError(TransportError):
    """A key value's queue holds :data:`MAX_QUEUE` waiting already (or as much as its entry can).

    A transport error, so that an attempt's task that cannot wait is handed
    back and tried again later rather than lost.
    """


def describe(index: int, limit: ConcurrencyLimit, value: str | int | float) -> str:
    """How ``status`` names a limit an instance waits behind."""
    shown = f'"{value}"' if isinstance(value, str) else repr(value)
    return f"concurrency[{index}]: {limit.key.source} = {shown} (limit {limit.limit})"


@dataclass(frozen=True, slots=True)
class SlotInfo:
    """One key value of one concurrency limit: who holds its slots, who waits, in order.

    ``scope``: ``"workflow"`` (holders are instances) or ``"activity"`` (a
    step's limit: holders are attempts, ``{instance}.{step key}.{attempt}``).
    """

    slot: str
    scope: str
    #: The workflow type, or the activity.
    name: str
    key: str
    value: str | int | float
    limit: int
    holders: tuple[str, ...]
    queue: tuple[str, ...]

    def to_data(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "scope": self.scope,
            "name": self.name,
            "key": self.key,
            "value": self.value,
            "limit": self.limit,
            "holders": list(self.holders),
            "queue": list(self.queue),
        }


async def slot_infos(bucket: KeyValue) -> list[SlotInfo]:
    """Every key value of every concurrency limit in use, by slot key."""
    found: list[SlotInfo] = []
    for key in sorted(await bucket.keys()):
        entry = await bucket.get(key)
        if entry is None:
            continue
        try:
            slot = decode_slot(entry.value)
        except MessageError as exc:
            log.warning("slot %s is damaged: %s", key, exc)
            continue
        found.append(
            SlotInfo(
                key,
                key.partition(".")[0],
                slot.type,
                slot.key,
                slot.value,
                slot.limit,
                tuple(holder.id for holder in slot.holders),
                tuple(waiter.id for waiter in slot.queue),
            )
        )
    return found


class Admission:
    """Where an instance stands with its limits: held all (``behind is None``), or queued."""

    __slots__ = ("behind",)

    def __init__(self, behind: str | None) -> None:
        self.behind = behind


class WorkflowSlots:
    """The slots of workflow-level concurrency limits, in one bucket shared by all processes."""

    def __init__(self, transport: Transport, bucket: KeyValue) -> None:
        self._transport = transport
        self._bucket = bucket
        self._locks = KeyLocks()
        #: (key, holder) -> the revision of the entry this process created
        #: for that holder alone: if the entry is still at it when the holder
        #: frees its slot, nobody else came, and one delete frees it.
        self._alone: OrderedDict[tuple[str, str], int] = OrderedDict()
        #: Instance -> the slot keys its start took here, so that its end
        #: need not compute its keys again (the same data gives the same keys).
        self._taken: OrderedDict[str, list[str]] = OrderedDict()

    @property
    def bucket(self) -> KeyValue:
        return self._bucket

    def keys_of(
        self, definition: Definition, instance_id: str, input: object
    ) -> list[tuple[int, ConcurrencyLimit, str | int | float, str]]:
        """Each limit of ``definition`` with its key's value and slot key, in order.

        Raises :class:`~actors.core.ExpressionError` if a key does not give a value.
        """
        values = key_values(definition, instance_id, input)
        return [
            (i, limit, value, workflow_slot_key(definition.type, limit.key.source, value))
            for i, (limit, value) in enumerate(zip(definition.concurrency, values, strict=True))
        ]

    async def admit(
        self, definition: Definition, instance_id: str, input: object, seq: int = 0
    ) -> Admission:
        """Take a slot of every limit, in order, or queue in the first that is full.

        ``seq``: the stream sequence of the instance's start (0: unknown),
        by which the queues are ordered. Idempotent: slots held are kept, a
        place in a queue too. Raises
        :class:`~actors.core.ExpressionError` for a key without a value and
        :class:`QueueFullError` for a queue that is full.
        """
        keys = self.keys_of(definition, instance_id, input)
        for index, limit, value, key in keys:
            if not await self._take(key, definition.type, limit, value, instance_id, seq):
                return Admission(describe(index, limit, value))
        self._taken[instance_id] = [key for _, _, _, key in keys]
        while len(self._taken) > _ALONE_REMEMBERED:
            self._taken.popitem(last=False)
        return Admission(None)

    async def _take(
        self,
        key: str,
        workflow_type: str,
        limit: ConcurrencyLimit,
        value: str | int | float,
        instance_id: str,
        seq: int,
    ) -> bool:
        """Hold a slot of ``key`` (``True``) or wait in its queue (``False``)."""
        fresh = Slot(workflow_type, limit.key.source, value, limit.limit)
        me = SlotHolder(instance_id, self._transport.now(), seq=seq)
        return await self._hold(key, fresh, me)

    async def take_attempt(
        self, definition: Definition, instance_id: str, command: ScheduleActivity, task: OutMessage
    ) -> bool:
        """Hold a slot for an attempt of a limited activity step, or queue its ``task``.

        ``True``: the task may be published now. ``False``: it waits in its
        key value's queue and is published by whoever frees the slot it
        gets. Steps without a limit always get ``True``. Idempotent.
        """
        found = step_limit(definition, command.step)
        if found is None:
            return True
        activity, limit = found
        value = step_key_value(limit, definition, instance_id, command.input)
        key = activity_slot_key(activity, limit.source, value)
        holder = SlotHolder(
            attempt_id(instance_id, command.step, command.attempt),
            self._transport.now(),
            task=(task.subject, task.data),
        )
        return await self._hold(key, Slot(activity, limit.source, value, limit.limit), holder)

    async def free_attempt(
        self, definition: Definition, state: InstanceState, step: str, attempt: int
    ) -> None:
        """Free the slot (or the place in a queue) of an attempt of a limited step."""
        found = attempt_key_value(definition, state, step)
        if found is not None:
            activity, limit, value = found
            key = activity_slot_key(activity, limit.source, value)
            await self.free(key, attempt_id(state.id, step, attempt))

    async def _hold(self, key: str, fresh: Slot, me: SlotHolder) -> bool:
        """Hold a slot of ``key`` as ``me`` (``True``) or wait in its queue (``False``).

        ``fresh``: the entry as it is written if nobody holds the key value
        (its holders and queue are ignored). Waits for this process's other
        changes to ``key`` first (:class:`~._key_locks.KeyLocks`).
        """
        # A holder keeps no task: it is published at once.
        holding = replace(me, task=None)
        fresh = replace(fresh, holders=(holding,), queue=())
        try:
            # The common case when a limit does not bind: nobody holds this value.
            self._remember(key, me.id, await self._bucket.create(key, encode_slot(fresh)))
            return True
        except ConflictError:
            pass
        if self._locks.busy(key):
            # Held or queued already (an admitted instance taking what it
            # was given, a redelivered start): a look answers, with no need
            # to wait for the changes ahead. Worth a read only when some wait.
            entry = await self._bucket.get(key)
            if entry is not None:
                standing = _standing(self._decode(key, entry.value), me.id)
                if standing is not None:
                    return standing
        async with self._locks.hold(key):
            return await self._hold_locked(key, fresh, me)

    async def _hold_locked(self, key: str, fresh: Slot, me: SlotHolder) -> bool:
        """:meth:`_hold`'s changes, made with ``key``'s lock held; ``fresh`` holds ``me``."""
        holding = fresh.holders[0]
        limit = fresh.limit
        bucket = self._bucket
        while True:
            entry = await bucket.get(key)
            if entry is None:
                try:
                    await bucket.create(key, encode_slot(fresh))
                    return True
                except ConflictError:
                    continue
            slot = self._decode(key, entry.value)
            standing = _standing(slot, me.id)
            if standing is not None:
                return standing
            slot = replace(slot, limit=limit)
            # First come first: with others queued, a newcomer goes behind them.
            taken = len(slot.holders) < slot.limit and not slot.queue
            if taken:
                slot = replace(slot, holders=(*slot.holders, holding))
            elif len(slot.queue) >= MAX_QUEUE:
                raise QueueFullError(f"slot {key}: {MAX_QUEUE} are queued already")
            else:
                slot = replace(slot, queue=_in_order(slot.queue, me))
            try:
                data = encode_slot(slot)
            except PayloadTooLargeError:
                raise QueueFullError(
                    f"slot {key}: its queue is as large as an entry can be"
                ) from None
            try:
                await bucket.update(key, data, entry.revision)
            except ConflictError:
                continue
            return taken

    async def release(self, definition: Definition, state: InstanceState) -> None:
        """Free every slot ``state``'s instance holds and its place in every queue.

        The freed slots go to the first instances queued for them, which are
        sent their admission (again, for those this instance admitted
        before: the broker drops copies). A key that cannot be computed
        (the instance failed on it) holds nothing.
        """
        keys = self._taken.pop(state.id, None)
        if keys is None:
            try:
                keys = [key for _, _, _, key in self.keys_of(definition, state.id, state.input)]
            except ValueError:
                return
        for key in keys:
            await self.free(key, state.id)

    async def free(self, key: str, instance_id: str) -> list[str]:
        """Free ``instance_id``'s slot of ``key`` (or its place in the queue); who got it.

        ``instance_id`` is an attempt for a step's limit. Returns the holders
        admitted, now or before, by it: instances are sent their admission,
        attempts' tasks are published. Waits for this process's other
        changes to ``key`` first (:class:`~._key_locks.KeyLocks`), not for the publishing.
        """
        async with self._locks.hold(key, urgent=True):
            given = await self._free_locked(key, instance_id)
        await self._send_admissions(key, given)
        return [holder.id for holder in given]

    async def _free_locked(self, key: str, instance_id: str) -> list[SlotHolder]:
        """Free as :meth:`free` does; who holds a slot given by ``instance_id``, to be told."""
        bucket = self._bucket
        alone = self._alone.pop((key, instance_id), None)
        if alone is not None:
            try:
                await bucket.delete(key, revision=alone)
                return []
            except ConflictError:
                pass  # others came since: free it the long way
        while True:
            entry = await bucket.get(key)
            if entry is None:
                return []
            slot = self._decode(key, entry.value)
            holders = [h for h in slot.holders if h.id != instance_id]
            queue = [w for w in slot.queue if w.id != instance_id]
            changed = len(holders) != len(slot.holders) or len(queue) != len(slot.queue)
            if changed:
                now = self._transport.now()
                while queue and len(holders) < slot.limit:
                    waiter = queue.pop(0)
                    holders.append(replace(waiter, at=now, by=instance_id))
            given = [h for h in holders if h.by == instance_id]
            try:
                if changed and not holders and not queue:
                    # An empty entry is deleted, so that the bucket holds
                    # only the key values in use, however many there are.
                    await bucket.delete(key, revision=entry.revision)
                elif changed:
                    updated = replace(slot, holders=tuple(holders), queue=tuple(queue))
                    await bucket.update(key, encode_slot(updated), entry.revision)
            except ConflictError:
                continue
            return given

    def _remember(self, key: str, holder: str, revision: int) -> None:
        self._alone[(key, holder)] = revision
        while len(self._alone) > _ALONE_REMEMBERED:
            self._alone.popitem(last=False)

    async def _send_admissions(self, key: str, given: Sequence[SlotHolder]) -> None:
        messages = [
            OutMessage(
                admit_subject(holder.id),
                encode_admit(holder.id, key),
                msg_id=admit_msg_id(holder.id, key),
            )
            if holder.task is None
            # An attempt's own task, under its own message id (rule 2).
            else OutMessage(holder.task[0], holder.task[1], msg_id=f"task.{holder.id}")
            for holder in given
        ]
        if messages:
            await self._transport.publish_many(messages)

    async def slots(self) -> list[tuple[str, Slot]]:
        """Every key value in use, with its holders and queue (for listing)."""
        found: list[tuple[str, Slot]] = []
        for key in sorted(await self._bucket.keys()):
            entry = await self._bucket.get(key)
            if entry is not None:
                try:
                    found.append((key, decode_slot(entry.value)))
                except MessageError as exc:
                    log.warning("slot %s is damaged: %s", key, exc)
        return found

    async def sweep(self, states: KeyValue, grace: float) -> int:
        """Free the slots of holders that will never free them; how many were freed.

        A holder whose instance has ended, or has not been stored ``grace``
        seconds after it took its slot (its start went to dead letters), frees
        nothing by itself; nor does an attempt its step is no longer waiting
        for. An instance given a slot ``grace`` seconds ago and still queued
        is sent its admission again. Only entries with instances queued are looked at: elsewhere a
        stale holder keeps nobody waiting.
        """
        freed = 0
        now = self._transport.now()
        for key, slot in await self.slots():
            if not slot.queue:
                continue
            for holder in slot.holders:
                instance_id, _, rest = holder.id.partition(".")
                entry = await states.get(instance_id)
                if entry is None:
                    stale = now - holder.at >= grace
                else:
                    try:
                        state = decode_state(entry.value)
                    except MessageError:
                        continue
                    stale = state.status.terminal or (bool(rest) and _settled(state, rest))
                    if (
                        not stale
                        and state.status is InstanceStatus.QUEUED
                        and holder.by is not None
                        and now - holder.at >= grace
                    ):
                        # Given a slot long ago and still queued: its
                        # admission was lost (dead-lettered). Send it again.
                        await self._send_admissions(key, [holder])
                if stale:
                    log.warning("freeing the slot of %s in %s: it ended without", holder.id, key)
                    await self.free(key, holder.id)
                    freed += 1
        return freed

    @staticmethod
    def _decode(key: str, data: bytes) -> Slot:
        try:
            return decode_slot(data)
        except MessageError as exc:
            raise MessageError(f"the slot entry {key!r} is damaged: {exc}") from None


class Pacer:
    """Rate limits, paced by the workers through one bucket (``FLOW_RATES``).

    Each key value of a rate limit has an entry holding when its next
    attempt is due if attempts came steadily (the "theoretical arrival
    time" of the generic cell rate algorithm). A worker about to run an
    attempt reserves its start by compare-and-set: it may start at the
    later of now and that time less the burst's allowance, and moves the
    time on by one interval (``period / limit``). Reservations are handed
    out in the order the workers make them, whichever workers they are, so
    that attempts start in order and never faster than the rate; a worker
    that dies after reserving wastes its turn and nothing else.
    """

    def __init__(self, transport: Transport, bucket: KeyValue) -> None:
        self._transport = transport
        self._bucket = bucket

    async def reserve(self, rate: Mapping[str, Any]) -> float:
        """Reserve a start for an attempt paced by ``rate`` (``ScheduleActivity.rate``).

        Returns when it may start, on the transport's clock.
        """
        key = rate_slot_key(rate["activity"], rate["key"], rate["value"])
        interval = rate["period"] / rate["limit"]
        allowance = (rate["burst"] - 1) * interval
        bucket = self._bucket
        while True:
            now = self._transport.now()
            entry = await bucket.get(key)
            due = now
            if entry is not None:
                try:
                    due = decode_pace(entry.value)
                except MessageError as exc:
                    log.warning("rate %s is damaged (%s); starting it afresh", key, exc)
            start: float = max(now, due - allowance)
            data = encode_pace(rate, max(due, now) + interval)
            try:
                if entry is None:
                    await bucket.create(key, data)
                else:
                    await bucket.update(key, data, entry.revision)
            except ConflictError:
                continue
            return start


def _standing(slot: Slot, holder: str) -> bool | None:
    """``True`` if ``holder`` holds a slot of ``slot``, ``False`` if it is queued, else ``None``."""
    if slot.holds(holder):
        return True
    if slot.place(holder):
        return False
    return None


def _in_order(queue: tuple[SlotHolder, ...], me: SlotHolder) -> tuple[SlotHolder, ...]:
    """``queue`` with ``me`` in its place: before the first queued by a later start."""
    if me.seq:
        for index, waiter in enumerate(queue):
            if waiter.seq > me.seq:
                return (*queue[:index], me, *queue[index:])
    return (*queue, me)


def _settled(state: InstanceState, attempt: str) -> bool:
    """Whether ``attempt`` (``{step key}.{attempt}``) of ``state`` is out no more."""
    step, _, number = attempt.rpartition(".")
    current = state.steps.get(step)
    return (
        current is None
        or str(current.attempt) != number
        or current.status is not StepStatus.SCHEDULED
    )


def attempt_id(instance_id: str, step: str, attempt: int) -> str:
    """How an attempt holds a slot: ``{instance}.{step key}.{attempt}``.

    One string per attempt and never one for two: an instance id holds no
    ``.``, and the attempt is the last token. Its task's message id is this
    with ``task.`` before it.
    """
    return f"{instance_id}.{step}.{attempt}"
