"""Worker presence: a worker announces itself in ``WORKER_PRESENCE``; clients read it.

:class:`Announcer` runs in a worker's nursery: it writes the worker's entry
once before the worker counts as started, rewrites it every ``interval``
seconds (one put), and deletes it on a clean shutdown. A broker error while
announcing is logged and the write tried again at the next interval: who
serves what is for people to read, never a reason to stop serving.
:func:`live_workers` is the client's read of it.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import trio

from transport import KeyValue, Transport, TransportClosedError, TransportError

from ..wire import MessageError, WorkerPresence, decode_presence, encode_presence, presence_key

if TYPE_CHECKING:
    from ._worker import WorkerConfig

__all__ = ["Announcer", "WorkerPresence", "actors_version", "live_workers"]

log = logging.getLogger("actors.worker")

#: The longest a clean shutdown waits for its entry to be deleted.
_DELETE_TIMEOUT = 5.0


def actors_version() -> str:
    """The installed engine's version, ``""`` when it runs from a tree not installed."""
    try:
        return importlib.metadata.version("actors")
    except importlib.metadata.PackageNotFoundError:
        return ""


class Announcer:
    """Keeps one worker's entry in the presence bucket while it runs.

    The entry is made afresh for every write: ``seen`` is ``transport.now()``
    and ``running`` what ``running()`` says then. Start :meth:`run` with
    ``nursery.start``; call :meth:`close` on a clean shutdown, which deletes
    the entry. Raises ``MessageError`` for a ``worker_id`` that is no key.
    """

    def __init__(
        self,
        transport: Transport,
        bucket: KeyValue,
        worker_id: str,
        activities: Sequence[str],
        config: WorkerConfig,
        *,
        running: Callable[[], int],
    ) -> None:
        self._transport = transport
        self._bucket = bucket
        self._key = presence_key(worker_id)
        self._interval = config.presence_interval
        self._running = running
        started_at = transport.now()
        #: What does not change between writes (``running`` and ``seen`` do).
        self._base = WorkerPresence(
            id=self._key,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=started_at,
            activities=tuple(sorted(activities)),
            concurrency=config.concurrency,
            running=0,
            version=actors_version(),
            seen=started_at,
            # Three intervals: a live worker survives two lost writes.
            ttl=3 * config.presence_interval,
        )
        #: Held by a write, so that the delete comes after it, never before:
        #: a put landing after the delete would bring a stopped worker back.
        self._lock = trio.Lock()
        self._closed = False
        self._wake = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write the entry, then say started, then rewrite it every interval until closed.

        Started after the first write was tried, whether or not it worked.
        Returns on :meth:`close`, or when the transport closed for good.
        """
        started = False
        while not self._closed:
            async with self._lock:
                if self._closed:
                    return
                try:
                    await self._bucket.put(self._key, encode_presence(self.entry()))
                except TransportClosedError:
                    return
                except TransportError as exc:
                    log.warning("could not announce this worker (%s); trying again", exc)
            if not started:
                started = True
                task_status.started()
            with trio.move_on_after(self._interval):
                await self._wake.wait()

    def entry(self) -> WorkerPresence:
        """The entry as the next write would write it."""
        return replace(self._base, running=self._running(), seen=self._transport.now())

    async def close(self) -> None:
        """Stop rewriting the entry and delete it (within a few seconds; errors logged)."""
        self._closed = True
        self._wake.set()
        with trio.CancelScope(shield=True), trio.move_on_after(_DELETE_TIMEOUT) as bounded:
            async with self._lock:
                try:
                    await self._bucket.delete(self._key)
                except TransportError as exc:
                    log.warning("could not withdraw this worker's entry (%s)", exc)
        if bounded.cancelled_caught:
            log.warning("could not withdraw this worker's entry within %ss", _DELETE_TIMEOUT)


async def live_workers(transport: Transport, bucket: KeyValue) -> list[WorkerPresence]:
    """The workers whose entries are live on ``transport``'s clock, sorted by id.

    An entry that does not decode is skipped with a warning, never raised:
    one bad writer must not hide the others. Costs one read per entry.
    """
    found: list[WorkerPresence] = []
    now = transport.now()
    for key in await bucket.keys():
        entry = await bucket.get(key)
        if entry is None:  # gone since it was listed
            continue
        try:
            presence = decode_presence(key, entry.value)
        except MessageError as exc:
            log.warning("skipping a malformed worker entry: %s", exc)
            continue
        if presence.live(now):
            found.append(presence)
    return sorted(found, key=lambda p: p.id)
