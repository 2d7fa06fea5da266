"""Orchestrators share the partitions of the instances through leases.

One orchestrator owns every partition; one that joins takes its share; one
that stops hands its partitions back before it ends; a crashed one's
partitions move once its lease has run out. Work in flight through any of
these finishes, decided once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from flow import result_of, wait_until

import actors
from actors.wire import PARTITIONS_BUCKET

if TYPE_CHECKING:
    from conftest import Engine

#: Short enough that a takeover is quick, long against the tests' pauses.
LEASE = 2.0
PARTITIONS = frozenset(range(16))


@pytest.fixture
def orchestrator_options() -> dict[str, Any]:
    return {"lease": LEASE}


@actors.activity
async def bump(value: dict[str, Any]) -> dict[str, Any]:
    return {"n": value["n"] + 1}


FLOW = {
    "type": "bumps",
    "steps": [
        {"id": "one", "activity": "bump"},
        {"id": "gate", "wait_signal": "go"},
        {"id": "two", "activity": "bump", "input": "steps.one.output"},
    ],
}


async def served(orchestrators: list[actors.Orchestrator], shares: list[int]) -> None:
    """Wait until the orchestrators serve these numbers of partitions, all 16 between them."""

    def shared() -> bool:
        owned = [o.partitions for o in orchestrators]
        covered = frozenset().union(*owned) == PARTITIONS
        return covered and sorted(map(len, owned)) == sorted(shares)

    with trio.fail_after(60):
        await wait_until(orchestrators, shared)


async def run_flows(engine: Engine, prefix: str, count: int) -> None:
    """``count`` flows, each signalled right after its start, all completing."""
    ids = [f"{prefix}-{n}" for n in range(count)]
    for n, instance in enumerate(ids):
        await engine.client.start("bumps", {"n": n}, id=instance)
        await engine.client.signal(instance, "go")
    for n, instance in enumerate(ids):
        assert await result_of(engine, instance, 60) == {"n": n + 2}


async def test_one_orchestrator_owns_every_partition(engine: Engine) -> None:
    assert engine.orchestrator.partitions == PARTITIONS
    leases = engine.orchestrator.leases
    assert leases is not None
    assert leases.owned == PARTITIONS


async def test_a_joining_orchestrator_takes_its_share_and_hands_it_back_when_it_stops(
    engine: Engine, clock: trio.testing.MockClock | None
) -> None:
    await engine.client.register(FLOW)
    first = engine.orchestrator
    second = _join(engine, trio.CancelScope())
    await served([first, second], [8, 8])
    await run_flows(engine, "shared", 40)
    assert min(first.stats["events"], second.stats["events"]) > 0
    # A stop hands the partitions over at once, not a lease later.
    began = trio.current_time()
    second.shutdown()
    await served([first, second], [16, 0])
    handover = trio.current_time() - began
    assert handover < LEASE, handover
    await run_flows(engine, "after", 10)
    second_leases = second.leases
    assert second_leases is not None
    assert second_leases.stats["released"] == 8


async def test_a_crashed_orchestrators_partitions_move_after_its_lease(
    engine: Engine, clock: trio.testing.MockClock | None
) -> None:
    await engine.client.register(FLOW)
    first = engine.orchestrator
    crash = trio.CancelScope()
    second = _join(engine, crash)
    await served([first, second], [8, 8])
    # Started on both, the second's share waiting for a signal...
    ids = [f"crash-{n}" for n in range(20)]
    for n, instance in enumerate(ids):
        await engine.client.start("bumps", {"n": n}, id=instance)
    with trio.fail_after(60):
        for instance in ids:
            await engine.client.wait_for(
                instance, lambda info: info.steps.get("gate", {}).get("status") == "waiting"
            )
    # ...when it dies without a word: its leases stay until they run out.
    crash.cancel()
    began = trio.current_time()
    for instance in ids:
        await engine.client.signal(instance, "go")
    await served([first], [16])
    took = trio.current_time() - began
    assert LEASE * 0.75 <= took < 3 * LEASE, took
    for n, instance in enumerate(ids):
        assert await result_of(engine, instance, 60) == {"n": n + 2}


def _join(engine: Engine, crash: trio.CancelScope) -> actors.Orchestrator:
    """Another orchestrator on the engine's transport, running in the engine's
    nursery until it is shut down or ``crash`` is cancelled."""
    orchestrator = actors.Orchestrator(engine.transport, actors.OrchestratorConfig(lease=LEASE))
    engine.nursery.start_soon(_run_until_cancelled, orchestrator, crash)
    return orchestrator


async def _run_until_cancelled(orchestrator: actors.Orchestrator, scope: trio.CancelScope) -> None:
    """Run ``orchestrator`` until ``scope`` is cancelled (a crash: no hand-over)."""
    with scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(orchestrator.run)


async def test_one_that_joins_after_a_crash_takes_its_whole_share_at_once(
    engine: Engine, clock: trio.testing.MockClock | None
) -> None:
    """A process that joins long after another crashed does not count the dead one.

    Found by scenario 15 (``tests/reliability/test_scale_out.py``): a crashed
    process cannot delete its ``member.{id}`` key, and the bucket kept it for
    an hour. A process starting later saw the key as just written and counted
    the dead one among the live for a whole lease: it took 5 of 16 partitions
    while the other handed it 8, and 3 partitions had no owner for that lease.
    The survivors now delete a dead member's key once they take it for dead.
    """
    first = engine.orchestrator
    crash = trio.CancelScope()
    second = _join(engine, crash)
    await served([first, second], [8, 8])
    second_leases = second.leases
    assert second_leases is not None
    crash.cancel()
    await served([first], [16])
    # After the takeover (for as long as the bucket would keep the key), a third joins.
    bucket = await engine.transport.kv(PARTITIONS_BUCKET)
    assert f"member.{second_leases.member}" not in await bucket.keys()
    began = trio.current_time()
    third = _join(engine, trio.CancelScope())
    await served([first, third], [8, 8])
    took = trio.current_time() - began
    third.shutdown()
    assert took < LEASE / 2, took
