"""One lock per key, for the changes one process makes to a key's entry in a bucket.

Compare-and-set keeps an entry right whoever writes it, but many tasks of
one process changing one entry at once each lose to the others, read
again and try again: n changes cost about n²/2 writes. The flow control's
slot entries meet this when a burst of starts queues for one key value
(``_flow.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

__all__ = ["KeyLocks"]


class KeyLocks:
    """A lock per slot key, for the changes this process makes to that key's entry.

    Every change is a read and a compare-and-set. Made concurrently by many
    tasks of one process (a burst of starts queueing for one key value, and
    the end that frees its slot), all but one meet a conflict and read
    again, round after round: n changes cost about n²/2 writes, and the
    free that hands the slot on waits its turn among them (seconds, for a
    few hundred). One at a time, each change is one read and one write.

    Frees are urgent: they go before the other changes waiting, so that a
    slot is handed on without waiting for a burst of starts to queue
    behind it. Otherwise first come first. Other processes can still
    conflict: the compare-and-set keeps the entry right, the lock only
    keeps this process from racing itself. A key's lock is dropped once
    nobody holds it or waits for it.
    """

    def __init__(self) -> None:
        self._locks: dict[str, _KeyLock] = {}

    @asynccontextmanager
    async def hold(self, key: str, *, urgent: bool = False) -> AsyncIterator[None]:
        """Hold ``key``'s lock for the block, waiting while another task of this process does.

        ``urgent``: go before the waiters that are not.
        """
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = _KeyLock()
        lock.users += 1
        try:
            await lock.acquire(urgent)
            try:
                yield
            finally:
                lock.release()
        finally:
            lock.users -= 1
            if not lock.users:
                del self._locks[key]

    def busy(self, key: str) -> bool:
        """Whether a task of this process holds ``key``'s lock (or waits for it)."""
        return key in self._locks


class _KeyLock:
    """A lock handed straight to its next waiter, urgent ones first, each kind in order."""

    __slots__ = ("held", "others", "urgent", "users")

    def __init__(self) -> None:
        self.held = False
        self.urgent = trio.lowlevel.ParkingLot()
        self.others = trio.lowlevel.ParkingLot()
        #: Tasks holding the lock or waiting for it.
        self.users = 0

    async def acquire(self, urgent: bool) -> None:
        if not self.held:
            await trio.lowlevel.checkpoint()
            # The checkpoint let others run: one may have taken it meanwhile.
            if not self.held:
                self.held = True
                return
        # Unparked by release with the lock already ours; cancelled while
        # parked, the lot forgets us and the lock stays where it is.
        await (self.urgent if urgent else self.others).park()

    def release(self) -> None:
        for lot in (self.urgent, self.others):
            if lot:
                lot.unpark()
                return
        self.held = False
