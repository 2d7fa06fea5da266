"""Leases on the partitions of the instances: one orchestrator owns each at a time.

The events stream files every event of an instance under the instance's
partition, and the partition's owner alone pulls its consumer, so the events
of one instance are decided by one process, in the order they were stored.
Ownership is held in the ``WORKFLOW_PARTITIONS`` bucket:

``member.{id}``
    a live orchestrator process, rewritten every ``lease / 4`` seconds;
``owner.{p}``
    partition ``p``'s owner, renewed by compare-and-set on its revision at the
    same pace, so that a process that lost it (its lease ran out and another
    took it) learns so at its next renewal and cannot renew it back.

Each process watches the bucket. A key that has not changed for ``lease``
seconds, as this process's own clock counts them, belongs to a process taken
for dead: no wall clocks are compared across machines. The live members,
sorted, share the partitions evenly (the first ``count % n`` take one more);
a process under its share takes free or stale partitions, lowest first, one
over it hands its highest ones back (after its orchestrator has stopped
deciding their events). A process that stops deletes its keys, so that the
others take its partitions at once; a crashed one's are taken ``lease``
seconds after its last renewal, and its member key is deleted then by
those that take it for dead.

A process takes events of a partition only while :meth:`Leases.valid`:
its last renewal is less than ``lease`` seconds old on its own clock. One
that was frozen past its lease therefore takes no new event before it learns
it lost the partition; the events its actors already held are still
decided, and compare-and-set on the instance state is the fence behind that.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from typing import Final

import trio

from transport import ConflictError, KeyValue, KVChange, KVOp, NotFoundError, TransportError

__all__ = ["Leases", "Ownership"]

log = logging.getLogger("actors.orchestrator")

_MEMBER: Final = "member."
_OWNER: Final = "owner."
#: Renewals per lease time: a lease survives three lost renewals in a row.
_RENEWALS: Final = 4


class Ownership(enum.Enum):
    """What happened to a partition of this process."""

    #: Taken: start deciding its events.
    ACQUIRED = "acquired"
    #: Over this process's share: stop deciding, then :meth:`Leases.release` it.
    RELEASE = "release"
    #: Taken by another (this process's lease ran out): stop at once.
    LOST = "lost"


@dataclass(slots=True)
class _Held:
    revision: int
    #: When it was last renewed (this process's Trio clock).
    renewed: float
    releasing: bool = False


@dataclass(slots=True)
class _Seen:
    """A key as this process last saw it change."""

    member: str
    revision: int
    at: float


def member_id() -> str:
    """A name for this process among the orchestrators and the workers: host, pid and
    a random part, a single key token (ASCII: a key with other letters is refused)."""
    host = "".join(
        c if (c.isascii() and c.isalnum()) or c in "-_" else "-" for c in socket.gethostname()
    )[:40]
    return f"{host or 'host'}-{os.getpid()}-{secrets.token_hex(3)}"


class Leases:
    """This process's leases on the partitions, kept in ``bucket``.

    Run :meth:`run` in a nursery (``await nursery.start(leases.run)``); read
    what happens to partitions from :attr:`changes`; call :meth:`release` for
    each partition handed back once its events are no longer decided, and
    :meth:`close` when the process stops deciding any.
    """

    def __init__(
        self, bucket: KeyValue, count: int, *, lease: float, member: str | None = None
    ) -> None:
        if lease <= 0:
            raise ValueError(f"lease must be positive, got {lease!r}")
        self._kv = bucket
        self._count = count
        self._lease = lease
        self.member = member or member_id()
        self._held: dict[int, _Held] = {}
        self._members: dict[str, _Seen] = {}
        self._owners: dict[int, _Seen] = {}
        self._wake = trio.Event()
        #: Set after each round of renewals (replaced for the next).
        self._renewed = trio.Event()
        #: Set once the watch has shown this process's own member key: the
        #: view then holds every key written before it.
        self._seen_self = trio.Event()
        #: Writes of owner keys one at a time: a renewal racing a release
        #: would otherwise write back a key the release just deleted.
        self._lock = trio.Lock()
        self._closed = False
        send, self.changes = trio.open_memory_channel[tuple[Ownership, int]](float("inf"))
        self._send = send
        #: Counters for tests and operators.
        self.stats: dict[str, int] = {"acquired": 0, "released": 0, "lost": 0}

    @property
    def owned(self) -> frozenset[int]:
        """The partitions this process holds a lease on (some may be being handed back)."""
        return frozenset(self._held)

    async def renewed(self) -> None:
        """Wait for the next round of renewals (after which :meth:`valid` may change)."""
        await self._renewed.wait()

    def valid(self, partition: int) -> bool:
        """Whether this process may decide the partition's events now."""
        held = self._held.get(partition)
        return held is not None and trio.current_time() - held.renewed < self._lease

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the leases until cancelled (then :meth:`close`).

        Ready once this process has taken its first share: the partitions no
        live process holds, up to its share of them.
        """
        async with self._kv.watch(">") as changes, trio.open_nursery() as nursery:
            nursery.start_soon(self._follow, changes)
            await self._put_member()
            with trio.move_on_after(self._lease):
                await self._seen_self.wait()
            await self._balance()
            task_status.started()
            next_renewal = trio.current_time() + self._lease / _RENEWALS
            while True:
                await self._balance()
                with trio.move_on_at(next_renewal):
                    await self._wake.wait()
                self._wake = trio.Event()
                if trio.current_time() >= next_renewal:
                    next_renewal = trio.current_time() + self._lease / _RENEWALS
                    await self._renew()

    async def release(self, partition: int) -> None:
        """Give up ``partition`` (its events are no longer decided here)."""
        async with self._lock:
            held = self._held.pop(partition, None)
            if held is None:
                return
            self.stats["released"] += 1
            try:
                await self._kv.delete(f"{_OWNER}{partition}", revision=held.revision)
            except (ConflictError, NotFoundError):
                pass  # taken meanwhile: nothing of ours to delete
            except TransportError as exc:
                # The key stays until it goes stale; the others wait a lease.
                log.warning("partition %d: could not hand it back (%s)", partition, exc)
        self._wake.set()

    async def close(self) -> None:
        """Hand back every partition and leave the members (idempotent).

        Call it only once no partition's events are decided any more.
        """
        if self._closed:
            return
        self._closed = True
        for partition in sorted(self._held):
            await self.release(partition)
        try:
            await self._kv.delete(f"{_MEMBER}{self.member}")
        except TransportError as exc:
            log.warning("could not leave the orchestrators (%s)", exc)
        self._send.close()

    # -- the view of the bucket -------------------------------------------------

    async def _follow(self, changes: trio.MemoryReceiveChannel[KVChange]) -> None:
        async for change in changes:
            now = trio.current_time()
            put = change.op is KVOp.PUT
            if change.key.startswith(_MEMBER):
                member = change.key[len(_MEMBER) :]
                if put:
                    self._members[member] = _Seen(member, change.revision, now)
                    if member == self.member:
                        self._seen_self.set()
                else:
                    self._members.pop(member, None)
            elif change.key.startswith(_OWNER):
                partition = _partition(change.key, self._count)
                if partition is None:
                    continue
                owner = _owner_of(change.value) if put else None
                if owner is None:
                    self._owners.pop(partition, None)
                else:
                    self._owners[partition] = _Seen(owner, change.revision, now)
            self._wake.set()

    def _live(self, now: float) -> list[str]:
        horizon = now - self._lease
        live = {member for member, seen in self._members.items() if seen.at >= horizon}
        live.add(self.member)
        return sorted(live)

    def _share(self, live: list[str]) -> int:
        count, place = len(live), live.index(self.member)
        return self._count // count + (1 if place < self._count % count else 0)

    async def _forget_dead(self, now: float) -> None:
        """Delete the member keys of the processes taken for dead.

        A crashed process cannot delete its own, and the bucket keeps it for
        an hour: a process starting meanwhile would see it as just written
        and count the dead one among the live for a whole lease, taking less
        than its share while the others hand it theirs, which would have no
        owner for that long. The delete is a compare-and-set on the revision
        seen, so that a member that wrote again (it was only frozen) stays.
        """
        horizon = now - self._lease
        for member, seen in list(self._members.items()):
            if member == self.member or seen.at >= horizon:
                continue
            del self._members[member]
            try:
                await self._kv.delete(f"{_MEMBER}{member}", revision=seen.revision)
            except (ConflictError, NotFoundError):
                pass  # written again (it lives), or deleted by another process
            except TransportError as exc:
                log.warning("could not delete the key of orchestrator %s (%s)", member, exc)

    # -- taking, keeping and handing back ------------------------------------------

    async def _balance(self) -> None:
        if self._closed:
            return
        now = trio.current_time()
        await self._forget_dead(now)
        live = self._live(now)
        share = self._share(live)
        keeping = [p for p, held in sorted(self._held.items()) if not held.releasing]
        for partition in keeping[share:]:
            self._held[partition].releasing = True
            self._send.send_nowait((Ownership.RELEASE, partition))
        if keeping[share:]:
            log.info(
                "%s hands back partitions %s (%d orchestrators)",
                self.member,
                _ranges(keeping[share:]),
                len(live),
            )
        missing = share - len(keeping)
        if missing <= 0:
            return
        alive = set(live)
        taken: list[int] = []
        for partition in range(self._count):
            if len(taken) >= missing:
                break
            if partition in self._held:
                continue
            seen = self._owners.get(partition)
            if seen is not None and seen.member in alive and seen.at >= now - self._lease:
                continue
            if await self._take(partition, seen):
                taken.append(partition)
        if taken:
            log.info(
                "%s took partitions %s (%d of %d, %d orchestrators)",
                self.member,
                _ranges(taken),
                len(self._held),
                self._count,
                len(live),
            )

    async def _take(self, partition: int, seen: _Seen | None) -> bool:
        key = f"{_OWNER}{partition}"
        value = _owner_value(self.member)
        started = trio.current_time()
        try:
            async with self._lock:
                if seen is None:
                    revision = await self._kv.create(key, value)
                else:
                    revision = await self._kv.update(key, value, seen.revision)
        except ConflictError:
            return False  # another took it first, or its owner renewed it
        except TransportError as exc:
            log.warning("partition %d: could not take it (%s)", partition, exc)
            return False
        self._held[partition] = _Held(revision, started)
        self.stats["acquired"] += 1
        self._send.send_nowait((Ownership.ACQUIRED, partition))
        return True

    async def _renew(self) -> None:
        if self._closed:
            return
        await self._put_member()
        for partition, held in list(self._held.items()):
            started = trio.current_time()
            try:
                async with self._lock:
                    if self._held.get(partition) is not held:
                        continue  # handed back meanwhile
                    held.revision = await self._kv.update(
                        f"{_OWNER}{partition}", _owner_value(self.member), held.revision
                    )
            except ConflictError:
                if self._held.get(partition) is held:
                    del self._held[partition]
                    self.stats["lost"] += 1
                    log.warning("partition %d: lost to another orchestrator", partition)
                    self._send.send_nowait((Ownership.LOST, partition))
                continue
            except TransportError as exc:
                log.warning("partition %d: lease not renewed (%s)", partition, exc)
                continue
            # Valid from when the renewal was sent: it was not yet lost then.
            held.renewed = started
        self._renewed.set()
        self._renewed = trio.Event()

    async def _put_member(self) -> None:
        try:
            await self._kv.put(f"{_MEMBER}{self.member}", _owner_value(self.member))
        except TransportError as exc:
            log.warning("could not announce this orchestrator (%s)", exc)


def _ranges(numbers: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``0-2, 5``."""
    spans: list[list[int]] = []
    for number in sorted(numbers):
        if spans and spans[-1][1] == number - 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _owner_value(member: str) -> bytes:
    return json.dumps({"member": member}).encode()


def _owner_of(value: bytes) -> str | None:
    try:
        member = json.loads(value).get("member")
    except (ValueError, AttributeError):
        return None
    return member if isinstance(member, str) else None


def _partition(key: str, count: int) -> int | None:
    number = key[len(_OWNER) :]
    if not number.isdigit() or int(number) >= count:
        return None
    return int(number)
