"""The scheduler: fires the schedules of ``WORKFLOW_SCHEDULES`` inside each orchestrator.

Each orchestrator runs one. A schedule is fired by the orchestrator that owns
the partition its id falls in (the partitions of instance ids, leased through
``WORKFLOW_PARTITIONS``), so that with several orchestrators each schedule has
one firing process at a time, and a crashed one's schedules are taken over
with its partitions.

Where a schedule stands is its stored :class:`~actors.core.ScheduleState`:
its cursor (every scheduled fire at or before it is dealt with), the runs
asked for by hand, the fires buffered behind a running instance, and an
outbox. That is the durable "next fire time": the scheduler holds nothing
that is not derived from it, and a process that starts (or takes a
partition over) reads it and carries on, running the fires it missed within
the catch-up window. One fire is dealt with in three steps:

1. decide (:func:`~actors.core.advance`) and write the new state by
   compare-and-set, the effects in its outbox;
2. carry the effects out: publish the starts (the instance id made from
   schedule id and fire time, the message id from the instance id), cancels
   and terminates;
3. write the state again with the outbox emptied.

A crash after 1 leaves the outbox, which whoever deals with the schedule
next carries out before deciding anything (each effect is idempotent: a
start of an existing instance is dropped by the broker within its duplicate
window and by the orchestrator after it). Two processes that both think
they own a schedule (a lease taken over from a frozen owner) conflict on the
compare-and-set: one decision is stored, and their starts name the same
instances. So no fire time starts twice and none is lost.

Waking: a timer for the earliest due schedule, the watch of the bucket (a
schedule created, paused, triggered), a change of the partitions owned, and
a watch on the newest run of each schedule whose fires wait for it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Final

import trio

from transport import (
    ConflictError,
    KeyValue,
    KVOp,
    Transport,
    TransportClosedError,
    TransportError,
)

from ..core import (
    CancelRun,
    ScheduleEffect,
    ScheduleRef,
    ScheduleState,
    StartRun,
    TerminateRun,
    advance,
)
from ..wire import (
    EVENTS_STREAM,
    MessageError,
    StartMessage,
    cancel_subject,
    decode_schedule,
    decode_status,
    encode_cancel,
    encode_schedule,
    encode_start,
    start_msg_id,
    start_subject,
    stored_start_filter,
    terminate_subject,
)
from ._counters import Counters

__all__ = ["Scheduler"]

log = logging.getLogger("actors.scheduler")

#: The longest the scheduler sleeps before it looks again. The transport's
#: clock (the wall clock on a broker) and Trio's may drift apart over a long
#: sleep; waking now and then bounds how late a fire can be for it.
_LONGEST_SLEEP: Final = 3600.0
#: How long a schedule whose effects could not be published waits to try again.
_RETRY_DELAY: Final = 1.0
#: Rounds of one schedule in a row (each deals with up to 100 fires) before
#: the others get their turn.
_ROUNDS: Final = 10


class Scheduler:
    """Fires the schedules this orchestrator owns (see the module docstring).

    ``owns(schedule_id)`` says whether this process fires that schedule now;
    ``stats`` are the orchestrator's counters: a change of them (a partition
    taken or lost) makes the scheduler look again, and it counts in them
    ``schedule_starts``, ``schedule_skips`` and ``schedule_missed``.
    """

    def __init__(
        self,
        transport: Transport,
        schedules: KeyValue,
        states: KeyValue,
        *,
        owns: Callable[[str], bool],
        stats: Counters,
    ) -> None:
        self._transport = transport
        self._schedules = schedules
        self._states = states
        self._owns = owns
        self._stats = stats
        #: Every schedule stored, as the watch last saw it.
        self._known: dict[str, ScheduleState] = {}
        #: Schedules that must wait before they are tried again, until when.
        self._backoff: dict[str, float] = {}
        #: Instances watched until they end (the newest run of a schedule
        #: with fires buffered behind it), with the scope that stops the watch.
        self._watched: dict[str, trio.CancelScope] = {}
        #: Watched instances seen ended: their schedules' buffered fires are due.
        self._ended: set[str] = set()
        self._wake = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fire schedules until cancelled. Ready once the watch of the bucket is open."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self._follow)
            nursery.start_soon(self._follow_ownership)
            task_status.started()
            await self._loop(nursery)

    def _poke(self) -> None:
        self._wake.set()

    async def _follow(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep :attr:`_known` as the bucket holds it (the current entries, then each change)."""
        async with self._schedules.watch(">", since=None) as changes:
            task_status.started()
            async for change in changes:
                if change.op is not KVOp.PUT:
                    self._known.pop(change.key, None)
                else:
                    try:
                        self._known[change.key] = decode_schedule(change.value)
                    except MessageError as exc:
                        log.error("schedule %s cannot be read, not fired: %s", change.key, exc)
                        self._known.pop(change.key, None)
                self._backoff.pop(change.key, None)
                self._poke()
        raise TransportClosedError("the connection to the broker closed for good")

    async def _follow_ownership(self) -> None:
        while True:
            await self._stats.wait_until(partial(_differs, self._owned, self._owned()))
            self._poke()

    def _owned(self) -> frozenset[str]:
        return frozenset(key for key in self._known if self._owns(key))

    async def _loop(self, nursery: trio.Nursery) -> None:
        while True:
            self._wake = trio.Event()
            earliest = math.inf
            for schedule_id, state in list(self._known.items()):
                if not self._owns(schedule_id):
                    continue
                now = self._transport.now()
                retry_at = self._backoff.get(schedule_id)
                if retry_at is not None and retry_at > now:
                    earliest = min(earliest, retry_at)
                    continue
                due = self._due(state)
                if due is not None and due <= now:
                    await self._deal_with(schedule_id, now)
                    state = self._known.get(schedule_id, state)
                    due = self._backoff.get(schedule_id, self._due(state))
                if due is not None:
                    earliest = min(earliest, due)
                self._watch_newest(nursery, state)
            delay = min(earliest - self._transport.now(), _LONGEST_SLEEP)
            with trio.move_on_after(max(delay, 0.0)):
                await self._wake.wait()

    def _due(self, state: ScheduleState) -> float | None:
        """When the schedule has something to do next (see ``ScheduleState.due_at``)."""
        newest = state.newest
        if state.buffered and newest is not None and newest.instance_id in self._ended:
            return -math.inf  # what it waited for ended
        return state.due_at()

    def _watch_newest(self, nursery: trio.Nursery, state: ScheduleState) -> None:
        """Watch the newest run if fires wait for it to end (and it is not watched yet)."""
        newest = state.newest
        if not state.buffered or newest is None:
            return
        instance_id = newest.instance_id
        if instance_id in self._watched or instance_id in self._ended:
            return
        scope = trio.CancelScope()
        self._watched[instance_id] = scope
        nursery.start_soon(self._await_end, instance_id, scope)

    async def _await_end(self, instance_id: str, scope: trio.CancelScope) -> None:
        try:
            with scope:
                async with self._states.watch(instance_id) as changes:
                    async for change in changes:
                        if change.op is not KVOp.PUT or _terminal(change.value):
                            self._ended.add(instance_id)
                            break
        except TransportClosedError:
            raise
        except TransportError as exc:
            log.warning("could not watch instance %s (%s); looking again", instance_id, exc)
        finally:
            if self._watched.get(instance_id) is scope:
                del self._watched[instance_id]
            self._poke()

    async def _deal_with(self, schedule_id: str, now: float) -> None:
        """Advance one schedule as far as is due; on a broker error, try again later."""
        known = self._known.get(schedule_id)
        if known is not None and known.newest is not None:
            # Read again in the round: no need to remember it ended.
            self._ended.discard(known.newest.instance_id)
        try:
            for _ in range(_ROUNDS):
                if not await self._round(schedule_id, now):
                    return
                now = self._transport.now()
        except TransportClosedError:
            raise
        except TransportError as exc:
            log.warning("schedule %s: %s; trying again in %ss", schedule_id, exc, _RETRY_DELAY)
            self._backoff[schedule_id] = self._transport.now() + _RETRY_DELAY

    async def _round(self, schedule_id: str, now: float) -> bool:
        """One decide-write-publish-clear round; whether another is due at once."""
        entry = await self._schedules.get(schedule_id)
        if entry is None:
            self._known.pop(schedule_id, None)
            return False
        try:
            state = decode_schedule(entry.value)
        except MessageError:
            return False  # the watch logged it
        revision = entry.revision
        if state.outbox:
            # Decided before and maybe not carried out (a crash): first that.
            await self._carry_out(state, state.outbox)
            state = replace(state, outbox=())
            try:
                revision = await self._schedules.update(
                    schedule_id, encode_schedule(state), revision
                )
            except ConflictError:
                return True  # someone else moved it on: read it again
        active = await self._active(state)
        new, effects, more = advance(state, now, active=active)
        if new == state:
            self._known[schedule_id] = state
            return False
        try:
            revision = await self._schedules.update(schedule_id, encode_schedule(new), revision)
        except ConflictError:
            return True
        self._count(state, new)
        await self._carry_out(new, effects)
        cleared = replace(new, outbox=())
        try:
            await self._schedules.update(schedule_id, encode_schedule(cleared), revision)
        except ConflictError:
            return True
        self._known[schedule_id] = cleared
        return more

    def _count(self, old: ScheduleState, new: ScheduleState) -> None:
        stats = self._stats
        stats["schedule_starts"] += new.started - old.started
        stats["schedule_skips"] += new.skipped - old.skipped
        stats["schedule_missed"] += new.missed - old.missed

    async def _active(self, state: ScheduleState) -> bool:
        """Whether the schedule's newest run is still going, or its start waits to be taken.

        A run without a state is either not taken yet (its start is still in
        the events stream) or never will be again: retention removed it after
        it ended (a schedule that fires less often than its type's runs are
        kept), or its start was refused (a dead letter). Only the first is
        going: counting the others as going would make every policy but
        ``allow_all`` skip or buffer the schedule's fires for ever.
        """
        newest = state.newest
        if newest is None:
            return False
        instance_id = newest.instance_id
        entry = await self._states.get(instance_id)
        if entry is None:
            if await self._transport.read(EVENTS_STREAM, stored_start_filter(instance_id), limit=1):
                return True
            # An orchestrator stores the state, then acks (removes) the start:
            # one taken between the two reads is stored by now.
            entry = await self._states.get(instance_id)
            if entry is None:
                return False
        return not _terminal(entry.value)

    async def _carry_out(
        self, state: ScheduleState, effects: tuple[ScheduleEffect, ...] | list[ScheduleEffect]
    ) -> None:
        """Publish the effects; each is idempotent, so carrying them out again is safe."""
        schedule = state.schedule
        for effect in effects:
            match effect:
                case StartRun(instance_id, fire):
                    message = StartMessage(
                        instance_id,
                        schedule.input,
                        schedule.version,
                        schedule=ScheduleRef(schedule.id, fire.at, fire.kind.value),
                    )
                    await self._transport.publish(
                        start_subject(instance_id, schedule.workflow_type),
                        encode_start(message),
                        msg_id=start_msg_id(instance_id),
                    )
                case CancelRun(instance_id, reason):
                    await self._transport.publish(
                        cancel_subject(instance_id), encode_cancel(reason)
                    )
                case TerminateRun(instance_id, reason):
                    await self._transport.publish(
                        terminate_subject(instance_id), encode_cancel(reason, terminate=True)
                    )


def _differs(now: Callable[[], object], seen: object) -> bool:
    return now() != seen


def _terminal(value: bytes) -> bool:
    try:
        return decode_status(value).terminal
    except MessageError:
        return True  # a state that cannot be read runs nothing more
