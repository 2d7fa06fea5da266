"""``max_idle_actors``: however many instances wait, only so many actors stay in memory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio
from flow import result_of

import actors
from actors import InstanceInfo, InstanceStatus

if TYPE_CHECKING:
    from conftest import Engine

WAITER = {
    "type": "capped",
    "version": 1,
    "steps": [{"id": "wait", "wait_signal": "go"}],
    "output": "steps.wait.output",
}
CAP = 5


@actors.activity
async def idle_cap_unused(value: Any) -> Any:
    """Never called: the engine fixture's worker needs an activity to serve."""
    return value


@pytest.fixture
def orchestrator_options() -> dict[str, Any]:
    # Idle actors would otherwise stay for the whole test.
    return {"max_idle_actors": CAP, "passivate_after": 600.0}


def waiting(info: InstanceInfo) -> bool:
    return info.status is InstanceStatus.RUNNING and "wait" in info.steps


async def test_idle_actors_past_the_cap_exit_and_their_instances_go_on(engine: Engine) -> None:
    await engine.client.register(WAITER)
    ids = [f"capped-{i}" for i in range(40)]
    for instance in ids:
        await engine.client.start("capped", None, id=instance)
    with trio.fail_after(30):
        for instance in ids:
            await engine.client.wait_for(instance, waiting)
    # Every instance is stored and waiting; at most CAP of them still have an
    # actor (one may be finishing its event when this is read).
    orchestrator = engine.orchestrator
    with trio.fail_after(10):
        await orchestrator.wait_until(lambda: orchestrator.active_actors <= CAP)
    for i, instance in enumerate(ids):
        await engine.client.signal(instance, "go", {"i": i})
    for i, instance in enumerate(ids):
        assert await result_of(engine, instance) == {"i": i}
