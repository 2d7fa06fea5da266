"""Visibility: list and filter instances without reading every state per request.

An :class:`InstanceIndex` keeps one small :class:`InstanceSummary` per
instance in memory, fed by a watch of the states bucket: it reads each
instance's latest state once when it starts, then only the changes. A query
touches only the groups of instances that can match (one sorted list per
type and status) and the slice of each that its time range selects, so it
costs about ``log n`` per group plus the rows it returns, not a scan of all
the instances stored.

Starting it costs one pass over the bucket (every instance's latest state,
decoded once); after that it follows every write. A long-lived process (the
HTTP API) pays that once; a one-shot command pays it per run, which is what
a plain listing would have cost anyway.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, TypedDict

import trio

from transport import KeyValue, KVChange, KVOp

from ..core import InstanceStatus
from ..wire import MessageError, decode_state

__all__ = ["InstanceIndex", "InstanceQuery", "InstanceSummary"]

#: The most rows one query returns.
MAX_LIMIT: Final = 10_000


@dataclass(frozen=True, slots=True)
class InstanceSummary:
    """What a listing shows of an instance: no payloads."""

    id: str
    type: str
    version: int
    status: InstanceStatus
    created_at: float
    updated_at: float


class InstanceQuery(TypedDict, total=False):
    """Which instances :meth:`~actors.Client.list` lists: every key may be left out.

    ``workflow_type`` and ``status`` filter; ``started_after`` and
    ``started_before`` bound the start time (seconds since the epoch;
    inclusive, exclusive); ``limit`` (default 1000, at most
    :data:`MAX_LIMIT`) and ``offset`` (default 0) choose the page.
    """

    workflow_type: str | None
    status: InstanceStatus | str | None
    started_after: float | None
    started_before: float | None
    limit: int
    offset: int


_Group = tuple[str, InstanceStatus]


def _slice(group: list[tuple[float, str]], start: int, stop: int) -> Iterator[tuple[float, str]]:
    """``group[start:stop]`` without copying it."""
    for i in range(start, stop):
        yield group[i]


class InstanceIndex:
    """Every instance's summary, kept current by a watch of the states bucket.

    Run :meth:`run` in a nursery (``await nursery.start(index.run)``): it
    returns from ``start`` once the index holds every instance stored when
    it began, and follows later writes until cancelled. A query reflects
    the writes the watch has delivered (usually within milliseconds);
    :meth:`sync` first waits for every write acknowledged before it.
    """

    def __init__(self, states: KeyValue) -> None:
        self._states = states
        self._summaries: dict[str, InstanceSummary] = {}
        #: Per (type, status): ``(created_at, id)`` in ascending order.
        self._groups: dict[_Group, list[tuple[float, str]]] = {}
        #: The latest revision the watch delivered, and who waits for which.
        self._seen = 0
        self._waiting: list[tuple[int, trio.Event]] = []

    def __len__(self) -> int:
        return len(self._summaries)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # Watched from the start, the bucket yields every record it holds (each
        # key's latest, deletes too) in revision order, then every new write.
        # Once the watch reaches the newest revision held when the index began,
        # the index holds every instance stored before: it has caught up, and
        # without writing anything to the bucket (which holds states only).
        mark = await self._states.latest_revision()
        started = False
        async with self._states.watch(">", since=0) as changes:
            if mark == 0:
                started = True
                task_status.started()
            async for change in changes:
                self._apply(change)
                self._caught_up(change.revision)
                if not started and change.revision >= mark:
                    started = True
                    task_status.started()

    async def sync(self) -> None:
        """Wait until the index reflects every write acknowledged before this call.

        Costs one look at the bucket's latest revision (no write) and, if
        the watch is behind it, the watch's delay.
        """
        mark = await self._states.latest_revision()
        if self._seen >= mark:
            return
        arrived = trio.Event()
        self._waiting.append((mark, arrived))
        await arrived.wait()

    def _caught_up(self, revision: int) -> None:
        self._seen = revision  # the watch yields revisions in increasing order
        if not self._waiting:
            return
        still = []
        for mark, arrived in self._waiting:
            if mark <= revision:
                arrived.set()
            else:
                still.append((mark, arrived))
        self._waiting = still

    def _apply(self, change: KVChange) -> None:
        if "." in change.key:
            # Not an instance (ids have no dots): a watermark key that earlier
            # versions of the engine wrote into the bucket ("_client.watermark",
            # "_index.watermark"), left in stores they used.
            return
        old = self._summaries.pop(change.key, None)
        if old is not None:
            self._unfile(old)
        if change.op is not KVOp.PUT:
            return
        try:
            state = decode_state(change.value)
        except MessageError:
            return  # a damaged state is not listed; the orchestrator reports it
        summary = InstanceSummary(
            state.id, state.type, state.version, state.status, state.created_at, state.updated_at
        )
        self._summaries[change.key] = summary
        group = self._groups.setdefault((summary.type, summary.status), [])
        bisect.insort(group, (summary.created_at, summary.id))

    def _unfile(self, summary: InstanceSummary) -> None:
        group = self._groups[(summary.type, summary.status)]
        entry = (summary.created_at, summary.id)
        del group[bisect.bisect_left(group, entry)]
        if not group:
            del self._groups[(summary.type, summary.status)]

    def get(self, instance_id: str) -> InstanceSummary | None:
        return self._summaries.get(instance_id)

    def query(
        self,
        *,
        workflow_type: str | None = None,
        status: InstanceStatus | str | None = None,
        started_after: float | None = None,
        started_before: float | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> tuple[list[InstanceSummary], int]:
        """One page of the instances that match, oldest first, and how many match.

        The keywords are :class:`InstanceQuery`'s (``started_after`` and
        ``started_before`` bound ``created_at``). Raises ``ValueError`` for
        an unknown status, a ``limit`` over :data:`MAX_LIMIT` or below 0,
        or an ``offset`` below 0.
        """
        if not 0 <= limit <= MAX_LIMIT or offset < 0:
            raise ValueError(f"limit must be from 0 to {MAX_LIMIT} and offset at least 0")
        wanted = None if status is None else InstanceStatus(status)
        low = (-float("inf") if started_after is None else started_after, "")
        high = (float("inf") if started_before is None else started_before, "")
        ranges: list[Iterator[tuple[float, str]]] = []
        total = 0
        for (group_type, group_status), group in self._groups.items():
            if workflow_type is not None and group_type != workflow_type:
                continue
            if wanted is not None and group_status is not wanted:
                continue
            start, stop = bisect.bisect_left(group, low), bisect.bisect_left(group, high)
            total += stop - start
            ranges.append(_slice(group, start, stop))
        page = itertools.islice(heapq.merge(*ranges), offset, offset + limit)
        return [self._summaries[instance_id] for _, instance_id in page], total
