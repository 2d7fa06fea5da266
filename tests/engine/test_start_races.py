"""Events sent right after (or before) a start: they wait for their instance.

With several orchestrators sharing the events consumer, a signal or cancel
sent just after ``Client.start`` can reach a process that has no state for
the instance yet, while another still holds the start. Such an event must
wait for its instance (``OrchestratorConfig.start_wait``), not go to dead
letters: a lost signal leaves its instance waiting for ever, a lost cancel
lets it run on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from flow import result_of, wait_until

import actors
from actors import InstanceStatus

if TYPE_CHECKING:
    from conftest import Engine


@actors.activity
async def pair(value: list[Any]) -> list[Any]:
    return value


#: Waits for a signal, then for a second one, and returns both payloads.
WAITER = {
    "type": "waiter",
    "steps": [
        {"id": "first", "wait_signal": "go"},
        {"id": "second", "wait_signal": "go"},
        {"id": "both", "activity": "pair", "input": "[steps.first.output, steps.second.output]"},
    ],
}


async def test_a_signal_sent_before_its_start_is_applied(
    engine: Engine, clock: trio.testing.MockClock | None
) -> None:
    await engine.client.register(WAITER)
    await engine.client.signal("early", "go", "one")
    orchestrator = engine.orchestrator
    with trio.fail_after(30):
        # The signal is stored, and tried, before the start: it waits for it.
        await orchestrator.wait_until(lambda: orchestrator.stats["waits_for_start"] == 1)
    await engine.client.start("waiter", None, id="early")
    await engine.client.signal("early", "go", "two")
    assert await result_of(engine, "early") == ["one", "two"]
    assert engine.orchestrator.stats["deadletters"] == 0


async def test_a_cancel_sent_before_its_start_is_applied(
    engine: Engine, clock: trio.testing.MockClock | None
) -> None:
    await engine.client.register(WAITER)
    await engine.client.cancel("doomed", "changed my mind")
    orchestrator = engine.orchestrator
    with trio.fail_after(30):
        await orchestrator.wait_until(lambda: orchestrator.stats["waits_for_start"] == 1)
    await engine.client.start("waiter", None, id="doomed")
    with trio.fail_after(60):
        info = await engine.client.wait("doomed")
    assert info.status is InstanceStatus.CANCELLED
    assert engine.orchestrator.stats["deadletters"] == 0


@pytest.mark.parametrize("orchestrator_options", [{"start_wait": 1.0}], ids=["start_wait=1s"])
async def test_an_event_whose_start_never_comes_goes_to_dead_letters_after_start_wait(
    engine: Engine, clock: trio.testing.MockClock | None
) -> None:
    wait = engine.orchestrator._config.start_wait
    assert wait is not None
    before = engine.transport.now()
    await engine.client.signal("nobody-here", "ok", 1)
    [letter] = await engine.deadletters(1)
    assert engine.transport.now() - before >= wait
    assert letter["subject"] == "instance.nobody-here.signal.ok"
    assert "no instance 'nobody-here'" in letter["reason"]
    assert "did not come within" in letter["reason"]
    assert engine.orchestrator.stats["waits_for_start"] == 1


@pytest.mark.parametrize("orchestrators", [2, 3])
async def test_events_right_after_start_are_decided_in_order_by_several_orchestrators(
    engine: Engine, orchestrators: int
) -> None:
    """1,000 instances: each signalled twice, or cancelled, right after its start.

    Every signal is applied, in the order sent; every cancel too; nothing
    goes to dead letters; and the instances really are spread over the
    processes, which share the partitions evenly.
    """
    others = [actors.Orchestrator(engine.transport) for _ in range(orchestrators - 1)]
    for other in others:
        await engine.nursery.start(other.run)
    everyone = [engine.orchestrator, *others]
    with trio.fail_after(60):
        await wait_for_shares(everyone)
    await engine.client.register(WAITER)
    count = 1000
    ids = [f"race-{orchestrators}-{n}" for n in range(count)]
    cancelled = {instance for n, instance in enumerate(ids) if n % 4 == 3}
    outcomes: dict[str, Any] = {}

    async def one(instance: str, limiter: trio.CapacityLimiter) -> None:
        async with limiter:
            await engine.client.start("waiter", None, id=instance)
            if instance in cancelled:
                await engine.client.cancel(instance, "right away")
            else:
                await engine.client.signal(instance, "go", f"{instance}/1")
                await engine.client.signal(instance, "go", f"{instance}/2")
            info = await engine.client.wait(instance)
            outcomes[instance] = (info.status, info.output)

    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            limiter = trio.CapacityLimiter(64)
            for instance in ids:
                nursery.start_soon(one, instance, limiter)
    expected = {
        instance: (InstanceStatus.CANCELLED, None)
        if instance in cancelled
        else (InstanceStatus.COMPLETED, [f"{instance}/1", f"{instance}/2"])
        for instance in ids
    }
    wrong = {i: outcome for i, outcome in outcomes.items() if outcome != expected[i]}
    assert not wrong, f"{len(wrong)} of {count} wrong, e.g. {list(wrong.items())[:3]}"
    assert sum(o.stats["deadletters"] for o in everyone) == 0
    assert min(o.stats["events"] for o in everyone) > 0
    for other in others:
        other.shutdown()


async def wait_for_shares(orchestrators: list[actors.Orchestrator]) -> None:
    """Wait until the orchestrators serve every partition between them, evenly."""

    def even() -> bool:
        served = [o.partitions for o in orchestrators]
        sizes = sorted(len(s) for s in served)
        return (
            sum(sizes) == 16 and len(frozenset().union(*served)) == 16 and sizes[-1] - sizes[0] <= 1
        )

    await wait_until(orchestrators, even)
