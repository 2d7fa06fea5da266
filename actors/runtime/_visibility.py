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
    ``version`` and ``id_prefix`` filter too, but are not indexed: a query
    with either reads every instance its other filters select.
    ``newest_first`` lists the latest started first.
    """

    workflow_type: str | None
    status: InstanceStatus | str | None
    started_after: float | None
    started_before: float | None
    limit: int
    offset: int
    version: int | None
    id_prefix: str | None
    newest_first: bool


_Group = tuple[str, InstanceStatus]


def _slice(
    group: list[tuple[float, str]], start: int, stop: int, backwards: bool = False
) -> Iterator[tuple[float, str]]:
    """``group[start:stop]`` (reversed if ``backwards``) without copying it."""
    for i in range(stop - 1, start - 1, -1) if backwards else range(start, stop):
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
        version: int | None = None,
        id_prefix: str | None = None,
        newest_first: bool = False,
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
        ranges: list[Iterator[tuple[float, str]]] = []
        total = 0
        for (group_type, group_status), group in self._groups.items():
            if wanted is not None and group_status is not wanted:
                continue
            start, stop = self._bounds(
                group_type, group, workflow_type, started_after, started_before
            )
            total += stop - start
            ranges.append(_slice(group, start, stop, newest_first))
        entries = heapq.merge(*ranges, reverse=newest_first)
        if version is None and not id_prefix:
            page = itertools.islice(entries, offset, offset + limit)
            return [self._summaries[instance_id] for _, instance_id in page], total
        # Not indexed: every entry the indexed filters selected is looked at.
        found: list[InstanceSummary] = []
        total = 0
        for _, instance_id in entries:
            summary = self._summaries[instance_id]
            if self._matches(summary, version, id_prefix):
                if offset <= total < offset + limit:
                    found.append(summary)
                total += 1
        return found, total

    def counts(
        self,
        *,
        workflow_type: str | None = None,
        started_after: float | None = None,
        started_before: float | None = None,
        version: int | None = None,
        id_prefix: str | None = None,
    ) -> dict[InstanceStatus, int]:
        """How many instances of each status match these filters (:meth:`query`'s).

        Statuses no instance has are left out. Costs ``log n`` per group of
        the index unless ``version`` or ``id_prefix`` is given; then every
        instance the other filters select is looked at.
        """
        counts: dict[InstanceStatus, int] = {}
        for (group_type, group_status), group in self._groups.items():
            start, stop = self._bounds(
                group_type, group, workflow_type, started_after, started_before
            )
            if version is None and not id_prefix:
                number = stop - start
            else:
                number = sum(
                    self._matches(self._summaries[instance_id], version, id_prefix)
                    for _, instance_id in _slice(group, start, stop)
                )
            if number:
                counts[group_status] = counts.get(group_status, 0) + number
        return counts

    @staticmethod
    def _bounds(
        group_type: str,
        group: list[tuple[float, str]],
        workflow_type: str | None,
        started_after: float | None,
        started_before: float | None,
    ) -> tuple[int, int]:
        """The slice of ``group`` within the time range; empty for another type."""
        if workflow_type is not None and group_type != workflow_type:
            return 0, 0
        low = (-float("inf") if started_after is None else started_after, "")
        high = (float("inf") if started_before is None else started_before, "")
        return bisect.bisect_left(group, low), bisect.bisect_left(group, high)

    @staticmethod
    def _matches(summary: InstanceSummary, version: int | None, id_prefix: str | None) -> bool:
        if version is not None and summary.version != version:
            return False
        return not id_prefix or summary.id.startswith(id_prefix)
