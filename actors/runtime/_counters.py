"""The counters of a service, and waiting until a condition of them holds.

A test (ours, or one of a user's own) that needs an orchestrator or a worker
to reach some state (an event decided, the last actor gone, a partition
taken) waits for it with ``wait_until``, which wakes on each change, never
on a timer: no sleep loop, no guess of how long is enough.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import trio

__all__ = ["Counters"]


class Counters(dict[str, int]):
    """Named counters, read as a plain ``dict``; each assignment wakes the waiters.

    Only item assignment (``counters[name] += 1``) wakes them: the services
    change their counters in no other way.
    """

    def __init__(self, names: Iterable[str]) -> None:
        super().__init__(dict.fromkeys(names, 0))
        self._changed = trio.Event()

    def __setitem__(self, name: str, value: int) -> None:
        super().__setitem__(name, value)
        self.changed()

    def changed(self) -> None:
        """Wake every waiter to test its condition again.

        The owner calls it too when something else that a condition may
        read changed (an actor started or ended, a partition moved).
        """
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, condition: Callable[[], object]) -> None:
        """Return once ``condition()`` is true; see the services' ``wait_until``.

        A checkpoint even if it is true at once, as every Trio wait is.
        """
        if condition():
            await trio.lowlevel.checkpoint()
            return
        # No checkpoint between a test of the condition and taking the event
        # it waits on, so no change can slip in between unseen.
        while True:
            await self._changed.wait()
            if condition():
                return
