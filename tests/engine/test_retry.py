"""Retry from the failed step, rerun, and retry in bulk, on both transports."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
import trio
from flow import result_of, terminate_and_retry, wait_for_step
from records import Records

import actors
from actors import InstanceStatus
from actors.wire import HISTORY_STREAM, decode_history
from transport import ConsumerSpec

if TYPE_CHECKING:
    from conftest import Engine


@dataclass
class Runs:
    """What ran, per instance and step; whether the bug is fixed."""

    ran: Counter[tuple[str, str]] = field(default_factory=Counter)
    fixed: bool = False


RUNS = Records("runs", Runs)


runs = RUNS.fixture("runs", autouse=True)


@actors.activity
async def work(value: Any) -> Any:
    info = actors.activity_info()
    RUNS.get().ran[(info.instance_id, info.step)] += 1
    return {"done": info.step}


@actors.activity
async def buggy(value: Any) -> Any:
    """Fails for good until the test fixes it."""
    info = actors.activity_info()
    records = RUNS.get()
    records.ran[(info.instance_id, info.step)] += 1
    if not records.fixed:
        raise actors.ActivityError("the bug", type="Bug", non_retryable=True)
    return {"done": info.step}


#: Reserve (undone on failure), then the buggy step, then ship.
ORDER = {
    "type": "order",
    "steps": [
        {"id": "reserve", "activity": "work", "compensate": {"activity": "work"}},
        {"id": "charge", "activity": "buggy"},
        {"id": "ship", "activity": "work"},
    ],
    "output": "[steps.reserve.output, steps.charge.output, steps.ship.output]",
}
KID = {"type": "kid", "steps": [{"id": "k", "activity": "buggy"}]}
PARENT = {
    "type": "parent",
    "steps": [{"id": "first", "activity": "work"}, {"id": "child", "workflow": "kid"}],
}


async def history_through(engine: Engine, instance: str, last: str) -> list[dict[str, Any]]:
    """The instance's records up to the first of kind ``last`` after a retry (a consumer's)."""
    records: list[dict[str, Any]] = []
    spec = ConsumerSpec(durable=f"retry-{instance}", filter_subjects=(f"history.{instance}",))
    with trio.fail_after(30):
        async with engine.transport.consume(HISTORY_STREAM, spec) as deliveries:
            async for delivery in deliveries:
                await delivery.ack()
                records.extend(decode_history(delivery.data))
                kinds = [record["kind"] for record in records]
                if "instance.retried" in kinds and last in kinds[kinds.index("instance.retried") :]:
                    return records
    raise AssertionError("the history ended")


async def outcome_of_run(engine: Engine, instance: str, run: int = 2) -> Any:
    """The output of run ``run`` of the instance once it ends (its earlier run ended already)."""
    with trio.fail_after(60):
        await engine.client.wait_for(
            instance, lambda info: info.run == run and info.status.terminal
        )
    return await result_of(engine, instance)


async def failed(engine: Engine, instance: str) -> actors.InstanceInfo:
    with pytest.raises(actors.WorkflowFailedError):
        await result_of(engine, instance)
    info = await engine.client.status(instance)
    assert info is not None
    return info


async def test_a_failed_instance_runs_again_from_its_failed_step(
    engine: Engine, runs: Runs
) -> None:
    client = engine.client
    await client.register(ORDER)
    await client.start("order", {"n": 1}, id="r-1")
    before = await failed(engine, "r-1")
    assert (before.run, before.compensation) == (1, "completed")
    assert runs.ran == Counter(
        {("r-1", "reserve"): 1, ("r-1", "charge"): 1, ("r-1", "reserve~undo"): 1}
    )

    runs.fixed = True
    assert await client.retry("r-1", reason="bug fixed", by="ann") == 2
    output = await outcome_of_run(engine, "r-1")
    assert output == [{"done": "reserve"}, {"done": "charge"}, {"done": "ship"}]
    after = await client.status("r-1")
    assert after is not None
    assert (after.status, after.run, after.error) == (InstanceStatus.COMPLETED, 2, None)
    # The step before the failed one kept its output and did not run again;
    # its compensation is not run twice.
    assert runs.ran[("r-1", "reserve")] == 1
    assert runs.ran[("r-1", "reserve~undo")] == 1
    assert runs.ran[("r-1", "charge")] == 2
    records = await history_through(engine, "r-1", "workflow.completed")
    kinds = [record["kind"] for record in records]
    # The earlier run stays readable, in the same history, numbered on.
    assert kinds.index("workflow.failed") < kinds.index("instance.retried")
    assert [record["seq"] for record in records] == list(range(1, len(records) + 1))
    retried = records[kinds.index("instance.retried")]["detail"]
    assert retried == {
        "run": 2, "step": "charge", "previous": "failed", "by": "ann", "reason": "bug fixed",
    }  # fmt: skip


async def test_a_retry_from_a_named_step_runs_it_and_those_after_it(
    engine: Engine, runs: Runs
) -> None:
    client = engine.client
    await client.register(ORDER)
    await client.start("order", None, id="r-2")
    await failed(engine, "r-2")
    runs.fixed = True
    with pytest.raises(ValueError, match="not a top-level step"):
        await client.retry("r-2", step="nowhere")
    await client.retry("r-2", step="reserve")
    await outcome_of_run(engine, "r-2")
    assert runs.ran[("r-2", "reserve")] == 2
    assert runs.ran[("r-2", "ship")] == 1


async def test_a_terminated_instance_retried_waits_again_where_it_stopped(
    engine: Engine, runs: Runs
) -> None:
    client = engine.client
    await client.register(
        {
            "type": "gate",
            "steps": [{"id": "a", "activity": "work"}, {"id": "w", "wait_signal": "go"}],
        }
    )
    await client.start("gate", None, id="r-3")
    await wait_for_step(engine, "r-3", "w", "waiting")
    with pytest.raises(actors.OperationRefusedError):
        await client.retry("r-3")  # running
    await terminate_and_retry(engine, "r-3")
    await wait_for_step(engine, "r-3", "w", "waiting")
    await client.signal("r-3", "go", "now")
    assert await outcome_of_run(engine, "r-3") == "now"
    assert runs.ran[("r-3", "a")] == 1


async def test_a_retried_parent_starts_a_child_of_its_own(engine: Engine, runs: Runs) -> None:
    client = engine.client
    await client.register(KID)
    await client.register(PARENT)
    await client.start("parent", None, id="r-4")
    await failed(engine, "r-4")
    runs.fixed = True
    await client.retry("r-4")
    assert await outcome_of_run(engine, "r-4") == {"done": "k"}
    # Run 2's child is another instance; run 1's stays as it ended.
    first = await client.status("r-4-child")
    second = await client.status("r-4-child-r2")
    assert first is not None
    assert second is not None
    assert (first.status, second.status) == (InstanceStatus.FAILED, InstanceStatus.COMPLETED)


async def test_rerun_starts_a_new_instance_with_the_same_input(engine: Engine) -> None:
    client = engine.client
    await client.register(ORDER)
    await client.start("order", {"n": 7}, id="r-5")
    await failed(engine, "r-5")
    RUNS.get().fixed = True
    assert await client.rerun("r-5", id="r-5-again") == "r-5-again"
    await result_of(engine, "r-5-again")
    again = await client.status("r-5-again")
    assert again is not None
    assert (again.type, again.input) == ("order", {"n": 7})
    [started] = [r for r in await client.history("r-5-again") if r["kind"] == "workflow.started"]
    assert started["detail"]["rerun_of"] == "r-5"


async def test_retry_in_bulk_with_a_filter_a_count_and_a_confirmation(
    engine: Engine, runs: Runs
) -> None:
    client = engine.client
    await client.register(ORDER)
    await client.register({"type": "other", "steps": [{"id": "x", "activity": "buggy"}]})
    for n in range(3):
        await client.start("order", None, id=f"b-{n}")
    await client.start("other", None, id="b-other")
    for instance in ("b-0", "b-1", "b-2", "b-other"):
        await failed(engine, instance)
    counts: list[int] = []
    declined = await client.retry_matching(
        workflow_type="order", chosen=lambda count: counts.append(count) is not None
    )
    assert (declined, counts) == ([], [3])
    runs.fixed = True
    retried = await client.retry_matching(workflow_type="order", since=3600, rate=100)
    assert sorted(retried) == ["b-0", "b-1", "b-2"]
    for instance in retried:
        await outcome_of_run(engine, instance)
    other = await client.status("b-other")
    assert other is not None
    assert other.status is InstanceStatus.FAILED
    assert await client.retry_matching(workflow_type="order", since=3600) == []
