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
from typing import Final, TypedDict, Unpack

import trio

from transport import KeyValue, KVChange, KVOp

from ..core import InstanceStatus
from ..wire import MessageError, decode_state

__all__ = ["InstanceFilters", "InstanceIndex", "InstanceQuery", "InstanceSummary"]

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


class InstanceFilters(TypedDict, total=False):
    """Which instances :meth:`~actors.Client.count_by_status` counts: any key may be left out.

    ``workflow_type`` and ``version`` filter; ``started_after`` and
    ``started_before`` bound the start time (seconds since the epoch;
    inclusive, exclusive); ``id_prefix`` keeps the ids that start with it
    (looked up in the ids in order: it costs the number of ids that have it).
    """

    workflow_type: str | None
    version: int | None
    started_after: float | None
    started_before: float | None
    id_prefix: str | None


class InstanceQuery(InstanceFilters, total=False):
    """Which instances :meth:`~actors.Client.list` lists: every key may be left out.

    :class:`InstanceFilters`' keys, and ``status``; ``limit`` (default
    1000, at most :data:`MAX_LIMIT`) and ``offset`` (default 0) choose the
    page; ``newest_first`` lists the latest started first.
    """

    status: InstanceStatus | str | None
    limit: int
    offset: int
    newest_first: bool


_Group = tuple[str, int, InstanceStatus]
#: Above every character an id may hold: the end of the range of ids with a prefix.
_PAST_IDS: Final = "\U0010ffff"


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
        #: Per (type, version, status): ``(created_at, id)`` in ascending order.
        self._groups: dict[_Group, list[tuple[float, str]]] = {}
        #: Every id in order, for prefixes; made again when an id came or went.
        self._ids: list[str] | None = None
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
            self._ids = None
            return
        try:
            state = decode_state(change.value)
        except MessageError:
            return  # a damaged state is not listed; the orchestrator reports it
        summary = InstanceSummary(
            state.id, state.type, state.version, state.status, state.created_at, state.updated_at
        )
        self._summaries[change.key] = summary
        if old is None:
            self._ids = None
        group = self._groups.setdefault((summary.type, summary.version, summary.status), [])
        bisect.insort(group, (summary.created_at, summary.id))

    def _unfile(self, summary: InstanceSummary) -> None:
        key = (summary.type, summary.version, summary.status)
        group = self._groups[key]
        entry = (summary.created_at, summary.id)
        del group[bisect.bisect_left(group, entry)]
        if not group:
            del self._groups[key]

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
        if id_prefix:
            found = [
                summary
                for summary in self._prefixed(id_prefix, workflow_type, version)
                if (wanted is None or summary.status is wanted)
                and _within(summary.created_at, started_after, started_before)
            ]
            found.sort(key=lambda summary: (summary.created_at, summary.id), reverse=newest_first)
            return found[offset : offset + limit], len(found)
        slices: list[tuple[list[tuple[float, str]], int, int]] = []
        total = 0
        for group_key, group in self._groups.items():
            if wanted is not None and group_key[2] is not wanted:
                continue
            start, stop = self._bounds(
                group_key, group, workflow_type, version, started_after, started_before
            )
            total += stop - start
            slices.append((group, start, stop))
        # A page past the middle is counted from the other end: the merge
        # walks up to the page, so the last page costs what the first does.
        backwards = offset > total // 2
        if backwards:
            offset, limit = max(0, total - offset - limit), max(0, min(limit, total - offset))
        reverse = newest_first != backwards
        ranges = [_slice(group, start, stop, reverse) for group, start, stop in slices]
        page = [
            self._summaries[instance_id]
            for _, instance_id in itertools.islice(
                heapq.merge(*ranges, reverse=reverse), offset, offset + limit
            )
        ]
        return (page[::-1] if backwards else page), total

    def counts(self, **filters: Unpack[InstanceFilters]) -> dict[InstanceStatus, int]:
        """How many instances of each status match ``filters``.

        Statuses no instance has are left out. Costs ``log n`` per group of
        the index, or, with ``id_prefix``, a look at each id that has it.
        """
        workflow_type = filters.get("workflow_type")
        version = filters.get("version")
        started_after = filters.get("started_after")
        started_before = filters.get("started_before")
        id_prefix = filters.get("id_prefix")
        counts: dict[InstanceStatus, int] = {}
        if id_prefix:
            for summary in self._prefixed(id_prefix, workflow_type, version):
                if _within(summary.created_at, started_after, started_before):
                    counts[summary.status] = counts.get(summary.status, 0) + 1
            return counts
        for group_key, group in self._groups.items():
            start, stop = self._bounds(
                group_key, group, workflow_type, version, started_after, started_before
            )
            if stop > start:
                counts[group_key[2]] = counts.get(group_key[2], 0) + stop - start
        return counts

    def _prefixed(
        self, prefix: str, workflow_type: str | None, version: int | None
    ) -> Iterator[InstanceSummary]:
        """The instances whose id starts with ``prefix``, of the type and version if given."""
        if self._ids is None:
            self._ids = sorted(self._summaries)
        ids = self._ids
        start, stop = bisect.bisect_left(ids, prefix), bisect.bisect_left(ids, prefix + _PAST_IDS)
        for i in range(start, stop):
            summary = self._summaries[ids[i]]
            if workflow_type is not None and summary.type != workflow_type:
                continue
            if version is not None and summary.version != version:
                continue
            yield summary

    @staticmethod
    def _bounds(
        group_key: _Group,
        group: list[tuple[float, str]],
        workflow_type: str | None,
        version: int | None,
        started_after: float | None,
        started_before: float | None,
    ) -> tuple[int, int]:
        """The slice of ``group`` within the time range; empty for another type or version."""
        if workflow_type is not None and group_key[0] != workflow_type:
            return 0, 0
        if version is not None and group_key[1] != version:
            return 0, 0
        low = (-float("inf") if started_after is None else started_after, "")
        high = (float("inf") if started_before is None else started_before, "")
        return bisect.bisect_left(group, low), bisect.bisect_left(group, high)


def _within(created_at: float, after: float | None, before: float | None) -> bool:
    """Whether ``created_at`` is in ``[after, before)`` (either end may be open)."""
    return (after is None or created_at >= after) and (before is None or created_at < before)
