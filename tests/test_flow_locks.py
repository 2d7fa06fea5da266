"""The per-key lock under which one process changes a slot entry (``actors.runtime._flow``)."""

from __future__ import annotations

import trio
import trio.testing

from actors.runtime._key_locks import KeyLocks


async def test_frees_go_first_then_first_come_first() -> None:
    """Waiting changes get the lock in the order they came, but urgent ones (frees)
    before all the others: a slot is handed on before a burst of starts queues."""
    locks = KeyLocks()
    order: list[str] = []
    release = trio.Event()

    async def change(name: str, urgent: bool = False) -> None:
        async with locks.hold("k", urgent=urgent):
            order.append(name)
            if name == "first":
                await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(change, "first")
        await trio.testing.wait_all_tasks_blocked()
        for name in ("a", "b", "c"):
            nursery.start_soon(change, name)
            await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(change, "free", True)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert order == ["first", "free", "a", "b", "c"]


async def test_a_cancelled_waiter_leaves_the_lock_to_the_next() -> None:
    locks = KeyLocks()
    order: list[str] = []
    release = trio.Event()

    gone = trio.CancelScope()

    async def change(name: str, urgent: bool = False) -> None:
        async with locks.hold("k", urgent=urgent):
            order.append(name)
            await release.wait()

    async def given_up() -> None:
        with gone:
            await change("cancelled", True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(change, "first")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(given_up)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(change, "next")
        await trio.testing.wait_all_tasks_blocked()
        gone.cancel()
        release.set()
    assert order == ["first", "next"]
    # Nobody holds or waits: the key's lock is gone, and it is free again.
    assert not locks.busy("k")
    with trio.fail_after(1):
        async with locks.hold("k"):
            assert locks.busy("k")
    assert not locks.busy("k")
