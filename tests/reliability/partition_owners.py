"""Who owns which partition, as a test sees it: a watch on ``WORKFLOW_PARTITIONS``.

Orchestrators hold the partitions of the instances through keys of that
bucket (``actors/runtime/_partitions.py``): ``member.{id}`` for each live
process, ``owner.{p}`` naming the process that owns partition ``p``. A key's
value names the member, not the time: :class:`Owners` records each change
with the moment this process saw it, on its Trio clock and on the wall
clock (to compare with the services' log lines). On loopback a change
reaches the watch within milliseconds of its write, so a time measured
from it is the write's time plus that much.

A member id is ``{host}-{pid}-{random}``: :func:`pid_of` gives the process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import trio

from transport import KeyValue, KVOp

__all__ = ["Change", "Handover", "Owners", "logged", "now", "pid_of"]

OWNER = "owner."
MEMBER = "member."


@dataclass(frozen=True)
class Change:
    """One change of a key, as seen."""

    #: When this process saw it: Trio clock, and wall clock (``time.time()``).
    at: float
    wall: float
    key: str
    #: The member the value names; ``None`` for a delete.
    member: str | None

    @property
    def partition(self) -> int | None:
        return int(self.key[len(OWNER) :]) if self.key.startswith(OWNER) else None


@dataclass(frozen=True)
class Handover:
    """Partitions moving away from a process (or to one), and when each arrived."""

    what: str
    #: When the move began (Trio clock, and wall clock).
    began: float
    began_wall: float
    #: partition -> the change that gave it its new owner.
    taken: dict[int, Change]

    @property
    def seconds(self) -> float:
        """From the start of the move to the last partition taken."""
        return max(change.at for change in self.taken.values()) - self.began

    @property
    def ended_wall(self) -> float:
        return max(change.wall for change in self.taken.values())

    def __str__(self) -> str:
        spread = sorted(change.at - self.began for change in self.taken.values())
        return (
            f"{self.what}: {len(self.taken)} partitions taken {spread[0]:.2f}-{spread[-1]:.2f}s "
            "after it began"
        )


def pid_of(member: str) -> int:
    """The process id in a member id (``{host}-{pid}-{random}``)."""
    return int(member.rsplit("-", 2)[1])


class Owners:
    """The owners and members of the partitions, kept current by :meth:`follow`."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        #: partition -> its owner's member id.
        self.owner: dict[int, str] = {}
        self.members: set[str] = set()
        self._changed = trio.Event()

    async def follow(
        self, bucket: KeyValue, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Watch ``bucket`` until cancelled; ready once the watch is open."""
        async with bucket.watch(">") as changes:
            task_status.started()
            async for change in changes:
                member: str | None = None
                if change.op is KVOp.PUT:
                    member = json.loads(change.value)["member"]
                seen = Change(trio.current_time(), time.time(), change.key, member)
                self.changes.append(seen)
                if seen.partition is not None:
                    if member is None:
                        self.owner.pop(seen.partition, None)
                    else:
                        self.owner[seen.partition] = member
                elif change.key.startswith(MEMBER):
                    name = change.key[len(MEMBER) :]
                    if member is None:
                        self.members.discard(name)
                    else:
                        self.members.add(name)
                self._changed.set()
                self._changed = trio.Event()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds, checked at each change (bound it with
        ``trio.fail_after``)."""
        while not condition():
            await self._changed.wait()

    def of(self, member: str) -> frozenset[int]:
        """The partitions ``member`` owns now."""
        return frozenset(p for p, owner in self.owner.items() if owner == member)

    def member_of(self, pid: int) -> str:
        """The member id of process ``pid`` (it must have announced itself)."""
        (member,) = {m for m in (*self.members, *self.owner.values()) if pid_of(m) == pid}
        return member

    def shares(self) -> list[int]:
        """Partitions per owner, largest first."""
        counts: dict[str, int] = {}
        for owner in self.owner.values():
            counts[owner] = counts.get(owner, 0) + 1
        return sorted(counts.values(), reverse=True)

    def held_by(self, members: Iterable[str], count: int) -> bool:
        """Whether all ``count`` partitions are owned, each by one of ``members``."""
        allowed = set(members)
        return len(self.owner) == count and set(self.owner.values()) <= allowed

    def since(self, at: float) -> list[Change]:
        """The changes seen at or after ``at`` (Trio clock)."""
        return [change for change in self.changes if change.at >= at]

    def moved(
        self,
        what: str,
        began: tuple[float, float],
        partitions: frozenset[int],
        to: Callable[[str], bool],
    ) -> Handover:
        """When each of ``partitions`` was first put under a member ``to`` accepts, from
        ``began`` (Trio clock, wall clock) on; fails if one never was."""
        taken: dict[int, Change] = {}
        for change in self.since(began[0]):
            partition = change.partition
            if (
                partition is not None
                and partition in partitions
                and partition not in taken
                and change.member is not None
                and to(change.member)
            ):
                taken[partition] = change
        missing = partitions - set(taken)
        assert not missing, f"{what}: partitions {sorted(missing)} never moved"
        return Handover(what, began[0], began[1], taken)


def now() -> tuple[float, float]:
    """This moment on the Trio clock and on the wall clock, as :meth:`Owners.moved` takes it."""
    return trio.current_time(), time.time()


def logged(text: str, needle: str) -> list[float]:
    """The wall-clock times of the lines of a service's log (text format) that contain
    ``needle``."""
    # A line begins with the local time, to the millisecond: 2026-11-25 12:00:00,123.
    return [
        datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for line in text.splitlines()
        if needle in line and not line.startswith("===")
    ]
