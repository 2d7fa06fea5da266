"""Retention: finished instances are removed (state, history, index entries) after
their type's retention period, or at once with ``delete``; on both transports.

The periods here are seconds long; on memory they pass on the autojump clock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import ledger_activities
import pytest
import trio
import trio.testing
from flow import result_of, terminate_and_retry, wait_for_step

import actors
from actors import InstanceStatus

if TYPE_CHECKING:
    from conftest import Engine

#: The engine fixture's worker serves these (the workflows here run none).
ACTIVITY_MODULE = ledger_activities
pytestmark = pytest.mark.parametrize(
    "orchestrator_options",
    [{"retention": 2.0, "retention_by_type": ("kept=1d",)}],
    ids=["retention=2s"],
)
GATE = {"type": "gate", "steps": [{"id": "w", "wait_signal": "go"}]}
KEPT = {"type": "kept", "steps": [{"id": "w", "wait_signal": "go"}]}


async def removed(engine: Engine, instance: str) -> None:
    with trio.fail_after(60):
        await engine.client.wait_for_removal(instance)


async def test_a_finished_instance_is_removed_after_its_types_retention(
    engine: Engine, clock: trio.testing.MockClock | None
) -> None:
    client = engine.client
    await client.register(GATE)
    await client.register(KEPT)
    for workflow_type, instance in (("gate", "e-1"), ("kept", "e-2")):
        await client.start(workflow_type, None, id=instance)
        await wait_for_step(engine, instance, "w", "waiting")
        await client.signal(instance, "go", instance)
        assert await result_of(engine, instance) == instance
    listed = {summary.id for summary in await client.list()}
    assert {"e-1", "e-2"} <= listed
    assert await client.history("e-1")

    await removed(engine, "e-1")
    assert await client.status("e-1") is None
    assert await client.history("e-1") == []
    assert "e-1" not in {summary.id for summary in await client.list()}
    # Its type keeps it a day.
    kept = await client.status("e-2")
    assert kept is not None
    assert kept.status is InstanceStatus.COMPLETED
    assert await client.history("e-2")


async def test_a_retried_instance_is_not_removed_by_its_first_ends_expiry(
    engine: Engine, clock: trio.testing.MockClock | None
) -> None:
    client = engine.client
    await client.register(GATE)
    await client.start("gate", None, id="e-3")
    await wait_for_step(engine, "e-3", "w", "waiting")
    await terminate_and_retry(engine, "e-3")
    # The expiry of run 1's end comes while run 2 waits: it changes nothing
    # (time itself is under test: sleep past it).
    await trio.sleep(2.5)
    info = await client.status("e-3")
    assert info is not None
    assert (info.run, info.status) == (2, InstanceStatus.RUNNING)
    await client.signal("e-3", "go", 1)
    await removed(engine, "e-3")
    assert await client.history("e-3") == []


async def test_delete_removes_a_finished_instance_now(engine: Engine) -> None:
    client = engine.client
    await client.register(KEPT)
    await client.start("kept", None, id="e-4")
    await wait_for_step(engine, "e-4", "w", "waiting")
    with pytest.raises(actors.OperationRefusedError):
        await client.delete("e-4")
    await client.terminate("e-4")
    with pytest.raises(actors.WorkflowCancelledError):
        await result_of(engine, "e-4")
    await client.delete("e-4")
    await removed(engine, "e-4")
    assert await client.history("e-4") == []
    with pytest.raises(actors.InstanceNotFoundError):
        await client.delete("e-4")


async def test_an_id_deleted_is_refused_again_within_the_duplicate_window(engine: Engine) -> None:
    """A deleted id cannot be started again within the broker's duplicate window
    (2 min): the new instance's messages (tasks, results, timers, history)
    have ids made of the instance id and would be dropped as copies of the
    old one's, so the start is refused with a reason and a remedy, never
    dropped in silence."""
    client = engine.client
    await client.register(GATE)
    await client.start("gate", None, id="e-5")
    await wait_for_step(engine, "e-5", "w", "waiting")
    await client.signal("e-5", "go", 1)
    assert await result_of(engine, "e-5") == 1
    await client.delete("e-5")
    await removed(engine, "e-5")
    with pytest.raises(actors.WorkflowError) as refused:
        await client.start("gate", None, id="e-5")
    assert "deleted or expired since" in str(refused.value)
    assert "duplicate window (2 min)" in str(refused.value)
    assert await client.status("e-5") is None
