"""Listing instances through the client's index, on both transports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio
from flow import result_of, wait_for_step

import actors
from actors import InstanceStatus
from actors.wire import STATES_BUCKET

if TYPE_CHECKING:
    from conftest import Engine


@actors.activity
async def noop(value: Any) -> Any:
    return value


async def test_list_filters_by_type_status_and_start_time_and_pages(engine: Engine) -> None:
    await engine.client.register({"type": "quick", "steps": [{"id": "a", "activity": "noop"}]})
    await engine.client.register({"type": "held", "steps": [{"id": "w", "wait_signal": "go"}]})
    quick = [await engine.client.start("quick", i, id=f"q{i:02d}") for i in range(12)]
    for instance in quick:
        await result_of(engine, instance)
    middle = engine.transport.now()
    # Time itself is the point: the held ones are created after ``middle``.
    await trio.sleep(0.01)
    held = [await engine.client.start("held", None, id=f"h{i}") for i in range(3)]
    for instance in held:
        await wait_for_step(engine, instance, "w", "waiting")

    everything = await engine.client.list()
    # Oldest first: by the time each start was handled, which need not be
    # the order they were sent in.
    assert [(s.created_at, s.id) for s in everything] == sorted(
        (s.created_at, s.id) for s in everything
    )
    assert {s.id for s in everything} == {*quick, *held}
    completed = await engine.client.list(workflow_type="quick", status="completed")
    quick = [s.id for s in completed]
    assert sorted(quick) == [f"q{i:02d}" for i in range(12)]
    assert {s.status for s in await engine.client.list(workflow_type="held")} == {
        InstanceStatus.RUNNING
    }
    assert {s.id for s in await engine.client.list(started_after=middle)} == set(held)
    assert [s.id for s in await engine.client.list(started_before=middle)] == quick
    page, total = await engine.client.count_and_list(workflow_type="quick", limit=5, offset=10)
    assert ([s.id for s in page], total) == (quick[10:], 12)
    assert await engine.client.list(workflow_type="nope") == []
    with pytest.raises(ValueError, match="is not a valid"):
        await engine.client.list(status="sleepy")

    # A change is listed as soon as the call after it: a held instance moves
    # from running to completed.
    await engine.client.signal(held[0], "go", 1)
    await result_of(engine, held[0])
    done = await engine.client.list(workflow_type="held", status="completed")
    assert [s.id for s in done] == [held[0]]
    summary = done[0]
    assert (summary.type, summary.version) == ("held", 1)
    assert summary.updated_at >= summary.created_at


async def test_the_states_bucket_holds_instance_states_only(engine: Engine) -> None:
    states = await engine.transport.kv(STATES_BUCKET)
    await engine.client.register({"type": "quick", "steps": [{"id": "a", "activity": "noop"}]})
    ids = [await engine.client.start("quick", i, id=f"s{i}") for i in range(3)]
    for instance in ids:
        await result_of(engine, instance)  # through the client's watch
    assert {s.id for s in await engine.client.list()} == set(ids)  # through its index
    # Regression: the client's watch and the index wrote watermark keys here.
    assert set(await states.keys()) == set(ids)

    # A store an earlier version used keeps its watermarks, here the newest
    # records of the bucket: a new index catches up past them, and the
    # clients list, wait and start as ever, without writing them again.
    left = {key: await states.put(key, b"") for key in ("_client.watermark", "_index.watermark")}
    with trio.fail_after(30):
        async with actors.Client(engine.transport) as fresh:
            assert {s.id for s in await fresh.list()} == set(ids)
            assert await fresh.result(ids[0]) == 0
            later = await fresh.start("quick", 3, id="s3")
            assert await fresh.result(later) == 3
            assert {s.id for s in await fresh.list(status="completed")} == {*ids, later}
    for key, revision in left.items():
        entry = await states.get(key)
        assert entry is not None
        assert entry.revision == revision
    assert set(await states.keys()) == {*ids, later, *left}
