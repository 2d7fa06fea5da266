"""``Orchestrator.wait_until`` and ``Worker.wait_until``: waits that wake on change.

A condition is checked once, then again after each change of what it may
read (the counters, the actors, the partitions), never on a timer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio
import trio.testing
from flow import result_of

import actors

if TYPE_CHECKING:
    from conftest import Engine


@actors.activity
async def echo(value: Any) -> Any:
    return value


ECHO = {"type": "echo", "steps": [{"id": "once", "activity": "echo"}]}


async def test_a_condition_is_checked_again_on_each_change_until_it_holds(engine: Engine) -> None:
    await engine.client.register(ECHO)
    orchestrator = engine.orchestrator
    seen = orchestrator.stats["events"]
    checks: list[tuple[int, int]] = []

    def decided_and_gone() -> bool:
        checks.append((orchestrator.stats["events"], orchestrator.active_actors))
        return orchestrator.stats["events"] >= seen + 2 and not orchestrator.active_actors

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(orchestrator.wait_until, decided_and_gone)
            instance = await engine.client.start("echo", {"n": 1})
    # Two events (the start, the result); the actor of an instance that
    # finished is gone at once. The changes woke the waiter until it held.
    assert await result_of(engine, instance) == {"n": 1}
    assert len(checks) > 1
    assert checks[-1] == (seen + 2, 0)


async def test_a_condition_that_holds_returns_at_once(engine: Engine) -> None:
    with trio.testing.assert_checkpoints():
        await engine.orchestrator.wait_until(lambda: True)
    with trio.testing.assert_checkpoints():
        await engine.worker.wait_until(lambda: True)


async def test_nothing_changing_checks_a_condition_once_and_the_callers_deadline_ends_it(
    engine: Engine, clock: trio.testing.MockClock | None
) -> None:
    # 600 s of the autojump clock on memory; a real half second on NATS, in
    # which the leases are renewed (no partition changes hands) and nothing
    # else happens.
    seconds = 600 if clock is not None else 0.5
    orchestrator = engine.orchestrator
    with trio.fail_after(60):
        await orchestrator.wait_until(lambda: len(orchestrator.partitions) == 16)
    checks = 0

    def never() -> bool:
        nonlocal checks
        checks += 1
        return False

    with trio.move_on_after(seconds) as waited:
        await orchestrator.wait_until(never)
    assert waited.cancelled_caught
    assert checks == 1


async def test_the_worker_wakes_a_waiter_when_a_task_is_reported(engine: Engine) -> None:
    await engine.client.register(ECHO)
    worker = engine.worker
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.wait_until, lambda: worker.stats["completed"] == 3)
            for n in range(3):
                await engine.client.start("echo", n)
    assert worker.stats == {"completed": 3, "failed": 0, "handed_back": 0, "cancelled": 0}


async def test_the_partitions_a_second_orchestrator_takes_wake_a_waiter(engine: Engine) -> None:
    first = engine.orchestrator
    second = actors.Orchestrator(engine.transport)
    engine.nursery.start_soon(second.run)
    with trio.fail_after(60):
        await first.wait_until(lambda: len(first.partitions) == 8)
        await second.wait_until(lambda: len(second.partitions) == 8)
    assert first.partitions.isdisjoint(second.partitions)
    second.shutdown()
    with trio.fail_after(60):
        await first.wait_until(lambda: len(first.partitions) == 16)
