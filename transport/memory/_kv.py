"""Key-value buckets of the in-memory broker.

A bucket is a log of revisions, like the stream behind a JetStream bucket:
every write gets the next revision, each key keeps its last ``history``
records, and a watch is a cursor walking that log.
"""

from __future__ import annotations

from collections import OrderedDict, deque

import trio

from .._errors import InvalidSpecError, StorageFullError, TooLargeError
from .._specs import KVChange, KVEntry, KVOp, KVSpec
from .._subjects import SubjectFilter


class Record:
    """One revision of one key: a value, or a delete marker."""

    __slots__ = ("key", "op", "revision", "size", "stored_at", "value")

    def __init__(self, key: str, value: bytes, revision: int, op: KVOp, stored_at: float) -> None:
        self.key = key
        self.value = value
        self.revision = revision
        self.op = op
        self.stored_at = stored_at
        self.size = len(key) + len(value)

    def entry(self) -> KVEntry:
        return KVEntry(self.key, self.value, self.revision)

    def change(self) -> KVChange:
        return KVChange(self.key, self.value, self.revision, self.op)


class Bucket:
    """The records of one bucket, with per-key history and a revision counter.

    ``log`` holds every retained record in revision order (oldest first), so
    TTL expiry pops from its head; ``_history[key]`` holds the same records of
    one key, newest last, so the current value and history eviction are O(1).
    """

    def __init__(self, spec: KVSpec) -> None:
        self.spec = spec
        self.revision = 0
        self.bytes = 0
        self.log: OrderedDict[int, Record] = OrderedDict()
        self._history: dict[str, deque[Record]] = {}
        #: Watches that have caught up wait here for the next write.
        self.changed = trio.lowlevel.ParkingLot()
        self.watchers: set[Watcher] = set()

    def update(self, spec: KVSpec, now: float) -> None:
        """Bring the bucket to ``spec``; the storage kind cannot change."""
        if spec.storage is not self.spec.storage:
            raise InvalidSpecError(f"bucket {spec.bucket}: storage cannot change")
        self.spec = spec
        for history in self._history.values():
            while len(history) > spec.history:
                self._evict(history)
        self.expire(now)

    def latest(self, key: str) -> Record | None:
        """The key's newest retained record (maybe a delete marker), or None."""
        history = self._history.get(key)
        return history[-1] if history else None

    def live_keys(self, matches: SubjectFilter) -> list[str]:
        return sorted(
            key
            for key, history in self._history.items()
            if history[-1].op is KVOp.PUT and matches(key)
        )

    def snapshot(self, matches: SubjectFilter) -> list[Record]:
        """The current value of every live matching key, in revision order."""
        records = [
            history[-1]
            for key, history in self._history.items()
            if history[-1].op is KVOp.PUT and matches(key)
        ]
        records.sort(key=lambda r: r.revision)
        return records

    def write(self, key: str, value: bytes, op: KVOp, now: float) -> int:
        """Append a record for ``key`` and return its revision.

        Raises :class:`TooLargeError` past ``max_value_size`` and
        :class:`StorageFullError` when ``max_bytes`` would be exceeded (buckets
        discard new writes, as JetStream's do).
        """
        spec = self.spec
        if spec.max_value_size is not None and len(value) > spec.max_value_size:
            raise TooLargeError(
                f"bucket {spec.bucket}: value of {len(value)} bytes exceeds max_value_size "
                f"{spec.max_value_size}"
            )
        history = self._history.get(key)
        size = len(key) + len(value)
        if spec.max_bytes is not None:
            if size > spec.max_bytes:
                raise TooLargeError(f"bucket {spec.bucket}: value larger than max_bytes")
            freed = history[0].size if history and len(history) >= spec.history else 0
            if self.bytes - freed + size > spec.max_bytes:
                raise StorageFullError(f"bucket {spec.bucket}: max_bytes reached")
        self.revision += 1
        record = Record(key, value, self.revision, op, now)
        if history is None:
            history = self._history[key] = deque()
        history.append(record)
        self.log[record.revision] = record
        self.bytes += record.size
        # Offer the change to the watchers before the next write can evict it
        # (history 1): a watcher that keeps up sees every change, as on JetStream.
        behind = False
        for watcher in self.watchers:
            if not watcher.offer(record):
                behind = True
        if len(history) > spec.history:
            self._evict(history)
        if behind and self.changed:
            self.changed.unpark_all()
        return record.revision

    def expire(self, now: float) -> None:
        """Drop records older than the bucket's TTL (oldest first, from the log head)."""
        ttl = self.spec.ttl
        if ttl is None:
            return
        horizon = now - ttl
        log = self.log
        while log:
            record = next(iter(log.values()))
            if record.stored_at > horizon:
                break
            history = self._history[record.key]
            self._evict(history)
            if not history:
                del self._history[record.key]

    def next_change(self, cursor: int, matches: SubjectFilter) -> tuple[Record | None, int]:
        """The first retained matching record after revision ``cursor``, and the new cursor.

        Returns ``(None, self.revision)`` when there is none yet. Revisions
        already evicted are skipped; everything before the log head is jumped.
        """
        log = self.log
        for oldest in log:
            cursor = max(cursor, oldest - 1)
            break
        else:
            return None, max(cursor, self.revision)
        while cursor < self.revision:
            cursor += 1
            record = log.get(cursor)
            if record is not None and matches(record.key):
                return record, cursor
        return None, cursor

    def _evict(self, history: deque[Record]) -> None:
        record = history.popleft()
        del self.log[record.revision]
        self.bytes -= record.size


class Watcher:
    """One watch: a cursor into the bucket's log and the channel it feeds.

    Changes reach the channel two ways, in revision order either way: the
    bucket hands a new change over at once (:meth:`offer`) when the watcher is
    caught up and its channel has room; otherwise the watch task walks the log
    from the cursor, waiting for room, so a slow reader holds the cursor back
    instead of growing a buffer.
    """

    __slots__ = ("cursor", "live", "matches", "send")

    def __init__(
        self, matches: SubjectFilter, cursor: int, send: trio.MemorySendChannel[KVChange]
    ) -> None:
        self.matches = matches
        #: Every change up to this revision has been sent or skipped.
        self.cursor = cursor
        #: False while the initial snapshot is still being sent.
        self.live = False
        self.send = send

    def offer(self, record: Record) -> bool:
        """Pass on a change just written; False if the watch task must do it."""
        if not self.live or self.cursor != record.revision - 1:
            return False  # changes before it are still queued in the log
        if self.matches(record.key):
            try:
                self.send.send_nowait(record.change())
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                return False
        self.cursor = record.revision
        return True


async def run_watch(
    bucket: Bucket,
    watcher: Watcher,
    snapshot: list[Record],
    *,
    task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Send ``snapshot``, then every matching change after the watcher's cursor.

    Nothing is buffered beyond the channel and nothing is lost, unless the
    bucket's history evicts a change before a slow reader gets to it.
    """
    send = watcher.send
    with trio.CancelScope() as scope, send:
        task_status.started(scope)
        bucket.watchers.add(watcher)
        try:
            for record in snapshot:
                await send.send(record.change())
            watcher.live = True
            while True:
                found, watcher.cursor = bucket.next_change(watcher.cursor, watcher.matches)
                if found is None:
                    await bucket.changed.park()
                else:
                    await send.send(found.change())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the reader went away, or the watch / transport closed
        finally:
            bucket.watchers.discard(watcher)
