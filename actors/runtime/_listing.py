"""The client's listings: an instance's history, the concurrency slots, the
live workers, and the instances that match a query, with their counts.

They only read: the history stream (in pages, with no consumer), the
``FLOW_SLOTS`` bucket, and the client's instance index, built on the first
listing from every stored state and kept current by a watch of the states
bucket in the client's nursery. The workers are read from ``WORKER_PRESENCE``.
:class:`Listing` is a part of :class:`~actors.Client` (which inherits it).
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any, Unpack

from ..core import InstanceStatus, check_instance_id
from ..wire import PRESENCE_BUCKET, SLOTS_BUCKET, WorkerPresence
from ._flow import SlotInfo, slot_infos
from ._history import HISTORY_LIMIT, read_history
from ._presence import live_workers
from ._visibility import InstanceFilters, InstanceIndex, InstanceQuery, InstanceSummary

if TYPE_CHECKING:
    import trio

    from transport import KeyValue, Transport

__all__ = ["Listing"]


class Listing:
    """The listings of :class:`~actors.Client` (which inherits them)."""

    if TYPE_CHECKING:
        # What they use of the client.
        _transport: Transport
        _nursery: trio.Nursery | None
        _index: InstanceIndex | None

        def _kv(self) -> KeyValue: ...

    async def history(
        self, instance_id: str, *, limit: int = HISTORY_LIMIT
    ) -> builtins.list[dict[str, Any]]:
        """The instance's history records, oldest first: at most ``limit`` of them.

        Each record is a dict with ``instance``, ``seq`` (numbered from 1),
        ``kind``, ``at`` (seconds since the epoch) and ``detail``, as
        docs/wire.md describes; each ``seq`` appears once. ``[]`` for an
        instance that does not exist (or has no record yet).

        The records are read from the history stream in pages, with no
        consumer: nothing is left behind on the broker, and calling it again
        reads the same records (and any written since). The orchestrator
        stores an instance's state before it publishes the history records of
        that change, so right after :meth:`wait` returns the last records may
        not be readable yet: a finished instance's history is complete once
        it holds the ``workflow.completed`` (``failed``, ``cancelled``,
        ``terminated``) record.
        Records the stream no longer holds (``history_max_age``) are not
        there. Raises ``InvalidNameError`` for a bad id, ``ValueError`` for a
        ``limit`` below 1, and the transport's errors.
        """
        return await read_history(self._transport, check_instance_id(instance_id), limit)

    async def slots(self) -> builtins.list[SlotInfo]:
        """Every key value of every concurrency limit in use: its holders and its queue.

        Workflow limits and step limits alike (see :class:`SlotInfo`), read
        from ``FLOW_SLOTS`` now; a key value no instance holds or waits for
        is not there. Costs one read per key value.
        """
        return await slot_infos(await self._transport.kv(SLOTS_BUCKET))

    async def workers(self) -> builtins.list[WorkerPresence]:
        """The live worker processes, sorted by id: what each serves, when it was last seen.

        Live: its entry in ``WORKER_PRESENCE`` was rewritten within its
        ``ttl`` (a few seconds) of this client's clock; a worker that stopped
        cleanly deleted its entry. An entry that does not decode (a foreign
        writer's mistake) is skipped and logged, never raised. Costs one read
        per entry.
        """
        return await live_workers(self._transport, await self._transport.kv(PRESENCE_BUCKET))

    async def list(self, **query: Unpack[InstanceQuery]) -> builtins.list[InstanceSummary]:
        """Summaries of the instances that match ``query``, oldest first (one page of them).

        The query's keys (filters, start times, page) are :class:`InstanceQuery`'s.
        The first call reads every stored instance once to build the
        client's index (see ``actors/runtime/_visibility.py``); later calls
        are answered from it, and it follows every change. Every change
        stored before the call is reflected (at the cost of one write and the
        watch's delay). Raises ``ValueError`` for an unknown status or a
        limit over 10,000.
        """
        page, _ = await self.count_and_list(**query)
        return page

    async def count_and_list(
        self, **query: Unpack[InstanceQuery]
    ) -> tuple[builtins.list[InstanceSummary], int]:
        """As :meth:`list`, with the number of instances that match in all."""
        index = await self._index_ready()
        # Read-your-writes: whatever was stored before this call is listed.
        await index.sync()
        return index.query(**query)

    async def count_by_status(
        self, **filters: Unpack[InstanceFilters]
    ) -> dict[InstanceStatus, int]:
        """How many instances of each status match ``filters`` (:class:`InstanceFilters`).

        Statuses no instance has are left out. Answered from the client's
        index, as :meth:`list` is.
        """
        index = await self._index_ready()
        await index.sync()
        return index.counts(**filters)

    async def _index_ready(self) -> InstanceIndex:
        """The client's instance index, started (and caught up) on first use."""
        if self._index is None:
            if self._nursery is None:
                raise RuntimeError("use the client inside 'async with'")
            index = InstanceIndex(self._kv())
            await self._nursery.start(index.run)
            self._index = index
        return self._index
