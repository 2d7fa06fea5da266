"""Pausing and resuming an instance, and a workflow type, on both transports.

While paused nothing new is dispatched: a result, a timer that comes due and
a signal are held (in the state, with a history record) and act on resume.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from flow import result_of, wait_for_step
from records import Records

import actors
from actors import InstanceInfo, InstanceStatus

if TYPE_CHECKING:
    from conftest import Engine


@dataclass
class Gates:
    """Per instance: the gated activity began; the test lets it finish; what ran."""

    began: defaultdict[str, trio.Event] = field(default_factory=lambda: defaultdict(trio.Event))
    release: defaultdict[str, trio.Event] = field(default_factory=lambda: defaultdict(trio.Event))
    ran: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


GATES = Records("gates", Gates)


gates = GATES.fixture("gates", autouse=True)


@actors.activity
async def gated(value: Any) -> Any:
    """Runs until the test releases it."""
    info = actors.activity_info()
    records = GATES.get()
    records.ran[info.instance_id].append(info.step)
    records.began[info.instance_id].set()
    await records.release[info.instance_id].wait()
    return value


@actors.activity
async def step(value: Any) -> Any:
    info = actors.activity_info()
    GATES.get().ran[info.instance_id].append(info.step)
    return value


@actors.activity
async def undo(value: Any) -> Any:
    info = actors.activity_info()
    GATES.get().ran[info.instance_id].append(info.step)
    return None


#: A task that runs while the instance is paused, then one more.
TWO = {
    "type": "two",
    "steps": [
        {"id": "first", "activity": "gated", "compensate": {"activity": "undo"}},
        {"id": "second", "activity": "step"},
    ],
}
#: A timer and a signal that come while paused.
WAITS = {
    "type": "waits",
    "steps": [{"id": "nap", "sleep": 2}, {"id": "go", "wait_signal": "go"}],
}


async def until(engine: Engine, instance: str, check: Any) -> InstanceInfo:
    with trio.fail_after(60):
        return await engine.client.wait_for(instance, check)


async def paused(
    engine: Engine, instance: str, reason: str = "", by: str | None = None
) -> InstanceInfo:
    """Pause ``instance`` and return its state once the pause has been applied."""
    await engine.client.pause(instance, reason, by=by)
    return await until(engine, instance, lambda info: info.paused is not None)


async def start_gated(engine: Engine, gates: Gates, instance: str, n: int) -> str:
    """Start ``two`` as ``instance``; return once its first (gated) activity runs."""
    await engine.client.start("two", {"n": n}, id=instance)
    with trio.fail_after(60):
        await gates.began[instance].wait()
    return instance


async def test_a_result_that_comes_while_paused_is_held_and_nothing_new_goes_out(
    engine: Engine, gates: Gates
) -> None:
    client = engine.client
    await client.register(TWO)
    instance = await start_gated(engine, gates, "p-1", 1)
    state = await paused(engine, instance, "downstream is down", by="ann")
    assert state.paused is not None
    assert (state.paused["by"], state.paused["reason"]) == ("ann", "downstream is down")
    assert state.status is InstanceStatus.RUNNING

    gates.release[instance].set()
    held = await until(engine, instance, lambda info: info.held == 1)
    # The result is kept, the step not advanced, the next task not sent.
    assert held.steps["first"]["status"] == "scheduled"
    assert "second" not in held.steps
    assert gates.ran[instance] == ["first"]

    await client.resume(instance, "fixed", by="bob")
    assert await result_of(engine, instance) == {"n": 1}
    assert gates.ran[instance] == ["first", "second"]
    records = await engine.history(instance)
    kinds = [record["kind"] for record in records]
    assert kinds.index("instance.paused") < kinds.index("instance.event_held")
    assert kinds.index("instance.event_held") < kinds.index("instance.resumed")
    assert kinds.index("instance.resumed") < kinds.index("activity.completed")
    resumed = next(record for record in records if record["kind"] == "instance.resumed")
    assert resumed["detail"] == {"by": "bob", "reason": "fixed"}


async def test_a_timer_and_a_signal_that_come_while_paused_act_on_resume(
    engine: Engine, clock: trio.testing.MockClock | None
) -> None:
    client = engine.client
    await client.register(WAITS)
    instance = await client.start("waits", None, id="p-2")
    await wait_for_step(engine, instance, "nap", "waiting")
    await paused(engine, instance, by="ann")
    await client.signal(instance, "go", "ready")
    # The sleep's timer comes due while paused: held with the signal.
    held = await until(engine, instance, lambda info: info.held == 2)
    assert held.steps["nap"]["status"] == "waiting"
    assert "go" not in held.steps
    await client.resume(instance)
    assert await result_of(engine, instance) == "ready"


async def test_a_cancel_resumes_and_compensates_a_terminate_drops_what_was_held(
    engine: Engine, gates: Gates
) -> None:
    client = engine.client
    await client.register(TWO)
    for instance in ("p-3", "p-4"):
        await start_gated(engine, gates, instance, 2)
        await paused(engine, instance)
        gates.release[instance].set()
        await until(engine, instance, lambda info: info.held == 1)
    await client.cancel("p-3", "not needed")
    await client.terminate("p-4", "not needed")
    with pytest.raises(actors.WorkflowCancelledError):
        await result_of(engine, "p-3")
    with pytest.raises(actors.WorkflowCancelledError):
        await result_of(engine, "p-4")
    cancelled = await client.status("p-3")
    assert cancelled is not None
    assert (cancelled.status, cancelled.compensation) == (InstanceStatus.CANCELLED, "completed")
    assert gates.ran["p-3"] == ["first", "first~undo"]
    terminated = await client.status("p-4")
    assert terminated is not None
    assert (terminated.paused, terminated.held) == (None, 0)
    assert gates.ran["p-4"] == ["first"]


async def test_pausing_a_finished_instance_is_refused(engine: Engine) -> None:
    await engine.client.register({"type": "one", "steps": [{"id": "s", "activity": "step"}]})
    instance = await engine.client.start("one", 1, id="p-5")
    assert await result_of(engine, instance) == 1
    with pytest.raises(actors.OperationRefusedError):
        await engine.client.pause(instance)
    with pytest.raises(actors.InstanceNotFoundError):
        await engine.client.pause("nobody")


async def test_a_paused_type_stores_its_starts_and_begins_them_on_resume(
    engine: Engine, gates: Gates
) -> None:
    client = engine.client
    await client.register(TWO)
    running = await start_gated(engine, gates, "t-0", 0)
    alone = await start_gated(engine, gates, "t-9", 9)
    await paused(engine, alone, "on its own")

    assert await client.pause_type("two", "maintenance", by="ops", running=True) == 2
    assert set(await client.paused_types()) == {"two"}
    await until(engine, running, lambda info: info.paused is not None)
    # The orchestrator has seen the type paused once a running instance is
    # paused with it; a start from now on is stored paused, not begun.
    started = await client.start("two", {"n": 1}, id="t-1")
    stored = await until(engine, started, lambda info: info.paused is not None)
    assert stored.paused is not None
    assert stored.paused["by_type"]
    assert stored.steps == {}
    for instance in (running, alone):
        gates.release[instance].set()
    gates.release[started].set()

    assert await client.resume_type("two", by="ops") >= 3
    assert await client.paused_types() == {}
    assert await result_of(engine, started) == {"n": 1}
    assert await result_of(engine, running) == {"n": 0}
    # Paused on its own, it stays paused when its type is resumed.
    still = await until(engine, alone, lambda info: info.held == 1)
    assert still.paused is not None
    assert still.paused["reason"] == "on its own"
    await client.resume(alone)
    assert await result_of(engine, alone) == {"n": 9}
