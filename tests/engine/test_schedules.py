"""Schedules fired by the orchestrator, on the memory transport (autojump clock) and on NATS.

A year of a cron schedule runs in seconds on the memory transport's fake
clock: every fire starts once, on the right local times across both
daylight-saving changes. The overlap policies each meet a running instance
(one waiting for a signal) and fires brought by a backfill; the started
instances record which schedule and fire time started them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest
import trio

import actors

if TYPE_CHECKING:
    from conftest import Engine
from actors.core import FireKind, ScheduleState, fire_instance_id
from actors.runtime._counters import Counters
from actors.runtime._scheduler import Scheduler
from actors.wire import (
    EVENTS_STREAM,
    SCHEDULES_BUCKET,
    STATES_BUCKET,
    Layout,
    decode_schedule,
    decode_start,
)
from transport import KVOp, Transport, open_transport

WAITER = """
type: waiter
version: 1
steps:
  - {id: wait, wait_signal: go}
"""
QUICK = """
type: quick
version: 1
steps:
  - {id: nap, sleep: 1}
"""
DAY = 86400.0


@actors.activity
async def unused_here(value: object) -> object:
    """The engine fixture's worker needs an activity to serve."""
    return value


BERLIN = ZoneInfo("Europe/Berlin")


async def wait_schedule(
    transport: Transport, schedule_id: str, condition: Callable[[ScheduleState], bool]
) -> ScheduleState:
    """The schedule's stored state once ``condition`` holds (a watch of its key)."""
    kv = await transport.kv(SCHEDULES_BUCKET)
    with trio.fail_after(60):
        async with kv.watch(schedule_id) as changes:
            async for change in changes:
                if change.op is KVOp.PUT:
                    state = decode_schedule(change.value)
                    if condition(state):
                        return state
    raise AssertionError("the watch ended")


async def _run_a_year(transport: Transport) -> tuple[ScheduleState, list[tuple[str, Any]]]:
    layout = Layout()
    assets = await layout.provision(transport)
    stats = Counters(("schedule_starts", "schedule_skips", "schedule_missed"))
    scheduler = Scheduler(
        transport,
        assets.buckets[SCHEDULES_BUCKET],
        assets.buckets[STATES_BUCKET],
        owns=lambda _: True,
        stats=stats,
    )
    async with actors.Client(transport) as client, trio.open_nursery() as nursery:
        await client.register(QUICK)
        now = transport.now()
        state = await client.schedules.create(
            {
                "id": "nightly",
                "workflow": "quick",
                "spec": {
                    "cron": "30 2 * * *",
                    "timezone": "Europe/Berlin",
                    "end_at": now + 365 * DAY,
                },
                "overlap": "allow_all",
            }
        )
        await nursery.start(scheduler.run)
        expected = list(state.schedule.spec.fires(now, now + 365 * DAY))
        with trio.fail_after(400 * DAY):
            await stats.wait_until(lambda: stats["schedule_starts"] >= len(expected))
            # A year and a day later, nothing more.
            await trio.sleep(2 * DAY)
        final = await client.schedules.get("nightly")
        nursery.cancel_scope.cancel()
    starts = await transport.read(EVENTS_STREAM, "instance.>", limit=10_000)
    return final, [(m.subject, decode_start(m.data)) for m in starts]


async def test_a_year_of_a_cron_schedule_fires_every_time_once_on_the_autojump_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_transport("memory://") as transport:
        start = transport.now()
        final, starts = await _run_a_year(transport)
    spec = final.schedule.spec
    expected = list(spec.fires(start, start + 365 * DAY))
    assert len(expected) == 365
    assert final.started == 365
    assert (final.skipped, final.missed) == (0, 0)
    ids = [message.instance_id for _, message in starts]
    assert sorted(ids) == sorted(
        fire_instance_id("nightly", t, FireKind.SCHEDULED) for t in expected
    )
    assert len(set(ids)) == len(ids)
    fires = sorted(message.schedule.fire for _, message in starts if message.schedule)
    assert fires == expected
    local = [datetime.fromtimestamp(t, BERLIN) for t in fires]
    # One fire a local day, at 02:30, except the day the clocks go forward
    # (02:30 does not exist: 03:00); the day they go back, one fire (02:30 CEST).
    assert len({d.date() for d in local}) == 365
    shifted = [d for d in local if d.strftime("%H:%M") != "02:30"]
    assert [d.strftime("%m-%d %H:%M %Z") for d in shifted] == [
        f"{_spring_forward(local).strftime('%m-%d')} 03:00 CEST"
    ]
    back = _fall_back(local)
    assert [d.strftime("%H:%M %Z") for d in local if d.date() == back] == ["02:30 CEST"]


def _spring_forward(days: list[datetime]) -> datetime:
    """The local day (in ``days``' year span) when Berlin's clocks go forward."""
    for d in days:
        noon = d.replace(hour=12, minute=0)
        if noon.utcoffset() != noon.replace(hour=0).utcoffset() and noon.month < 7:
            return noon
    raise AssertionError("no spring-forward day in the span")


def _fall_back(days: list[datetime]) -> Any:
    for d in days:
        noon = d.replace(hour=12, minute=0)
        if noon.utcoffset() != noon.replace(hour=0).utcoffset() and noon.month > 7:
            return noon.date()
    raise AssertionError("no fall-back day in the span")


# -- with a whole engine ------------------------------------------------------------


async def test_a_scheduled_start_records_its_schedule_and_fire_time(
    engine: Engine, clock: object
) -> None:
    client = engine.client
    await client.register(QUICK)
    await client.schedules.create(
        {"id": "often", "workflow": "quick", "spec": {"intervals": [{"every": 2}]}}
    )
    state = await wait_schedule(engine.transport, "often", lambda s: s.started >= 2)
    first = state.runs[0]
    info = await client.wait(first.instance_id)
    assert info.status is actors.InstanceStatus.COMPLETED
    history = await engine.history(first.instance_id)
    started = history[0]
    assert started["kind"] == "workflow.started"
    assert started["detail"]["schedule"] == {
        "id": "often",
        "fire": first.fire.at,
        "kind": "scheduled",
    }
    assert first.fire.at % 2 == 0
    assert first.instance_id == fire_instance_id("often", first.fire.at, FireKind.SCHEDULED)
    await client.schedules.delete("often")


#: For each policy: the instances that run (by index: 0 the trigger's, 1
#: and 2 the two backfilled fires), which end cancelled or terminated, and
#: the skipped count.
POLICIES = {
    "skip": ({0}, set(), 2),
    "buffer_one": ({0, 1}, set(), 1),
    "buffer_all": ({0, 1, 2}, set(), 0),
    "cancel_other": ({0, 2}, {0}, 1),
    "terminate_other": ({0, 1, 2}, {0, 1}, 0),
    "allow_all": ({0, 1, 2}, set(), 0),
}


@pytest.mark.parametrize("policy", list(POLICIES))
async def test_each_overlap_policy_meets_a_running_instance(
    engine: Engine, clock: object, policy: str
) -> None:
    with trio.fail_after(120):
        client, transport = engine.client, engine.transport
        await client.register(WAITER)
        schedule_id = f"s-{policy}".replace("_", "-")
        now = transport.now()
        # A daily fire at 00:00 UTC: none comes during the test by itself.
        await client.schedules.create(
            {
                "id": schedule_id,
                "workflow": "waiter",
                "spec": {"cron": "0 0 * * *"},
                "overlap": policy,
            }
        )
        first = await client.schedules.trigger(schedule_id)
        await client.wait_for(first, lambda info: info.status is actors.InstanceStatus.RUNNING)
        # Two fires of the past two days, while the first run waits for its signal.
        midnight = (
            datetime.fromtimestamp(now, UTC)
            .replace(hour=0, minute=0, second=0, microsecond=0)
            .timestamp()
        )
        count = await client.schedules.backfill(schedule_id, midnight - 2 * DAY, midnight - DAY)
        assert count == 2
        backfilled = [
            fire_instance_id(schedule_id, midnight - 2 * DAY, FireKind.BACKFILL),
            fire_instance_id(schedule_id, midnight - DAY, FireKind.BACKFILL),
        ]
        ids = [first, *backfilled]
        runs, stopped, skipped = POLICIES[policy]
        state = await wait_schedule(
            transport, schedule_id, lambda s: not s.backfills and not s.outbox
        )
        assert state.skipped == skipped
        # Let each running one end; a buffered one then starts (and is let end).
        for index in sorted(runs):
            info = await client.wait_for(ids[index], lambda info: True)
            if not info.status.terminal:
                await client.signal(ids[index], "go")
            with trio.fail_after(60):
                final = await client.wait(ids[index])
            expected = (
                {actors.InstanceStatus.CANCELLED, actors.InstanceStatus.TERMINATED}
                if index in stopped
                else {actors.InstanceStatus.COMPLETED}
            )
            assert final.status in expected, (index, final.status)
        state = await wait_schedule(transport, schedule_id, lambda s: not s.buffered)
        assert {run.instance_id for run in state.runs} == {ids[i] for i in runs}
        for index in set(range(3)) - runs:
            assert await client.status(ids[index]) is None
        description = await client.schedules.describe(schedule_id)
        assert [r.run.instance_id for r in description.runs] == [r.instance_id for r in state.runs]
        assert all(r.status is not None and r.status.terminal for r in description.runs)
        assert len(description.next_fires) == 5


async def test_two_schedulers_that_both_think_they_own_a_schedule_fire_each_time_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """As when a frozen owner wakes after its lease was taken over: CAS decides."""
    async with open_transport("memory://") as transport:
        assets = await Layout().provision(transport)
        stats = [Counters(("schedule_starts", "schedule_skips", "schedule_missed")) for _ in "ab"]
        schedulers = [
            Scheduler(
                transport,
                assets.buckets[SCHEDULES_BUCKET],
                assets.buckets[STATES_BUCKET],
                owns=lambda _: True,
                stats=counters,
            )
            for counters in stats
        ]
        async with actors.Client(transport) as client, trio.open_nursery() as nursery:
            await client.register(QUICK)
            now = transport.now()
            await client.schedules.create(
                {
                    "id": "shared",
                    "workflow": "quick",
                    "spec": {"intervals": [{"every": 7}], "end_at": now + 700},
                    "overlap": "allow_all",
                }
            )
            for scheduler in schedulers:
                await nursery.start(scheduler.run)
            with trio.fail_after(1000):
                await trio.sleep(710)
            final = await client.schedules.get("shared")
            nursery.cancel_scope.cancel()
        starts = await transport.read(EVENTS_STREAM, "instance.>", limit=10_000)
    expected = list(final.schedule.spec.fires(now, now + 700))
    ids = [decode_start(m.data).instance_id for m in starts]
    assert sorted(ids) == sorted(
        fire_instance_id("shared", t, FireKind.SCHEDULED) for t in expected
    )
    assert final.started == len(expected) == 100
    # Each fire was decided by one of them: the counts add up to the fires.
    assert sum(counters["schedule_starts"] for counters in stats) == len(expected)


@asynccontextmanager
async def schedule_alone(
    config: actors.OrchestratorConfig,
    schedule: dict[str, Any],
    *,
    every: float,
    lasting: float,
    run_for: float,
) -> AsyncIterator[tuple[actors.Client, ScheduleState, list[float]]]:
    """An orchestrator of ``config`` on the memory transport firing ``schedule``
    (of the QUICK workflow) ``every`` seconds for ``lasting`` seconds, run for
    ``run_for`` seconds of the fake clock; then the client, the schedule's
    state and the fire times it had."""
    async with open_transport("memory://") as transport, trio.open_nursery() as nursery:
        orchestrator = actors.Orchestrator(transport, config)
        await nursery.start(orchestrator.run)
        async with actors.Client(transport) as client:
            await client.register(QUICK)
            now = transport.now()
            spec = {"intervals": [{"every": every}], "end_at": now + lasting}
            await client.schedules.create({"workflow": "quick", "spec": spec, **schedule})
            with trio.fail_after(run_for + 240):
                await trio.sleep(run_for)
            final = await client.schedules.get(schedule["id"])
            yield client, final, list(final.schedule.spec.fires(now, now + lasting))
        orchestrator.shutdown()


async def test_a_run_removed_by_retention_does_not_hold_back_the_next_fire(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A schedule that fires less often than its runs are kept (a monthly job,
    finished runs kept a week): by the next fire, the last run's state is gone.
    A missing state must not count as a run still going, or the default policy
    (skip) would skip every fire after the first, for ever."""
    # Minutes stand for days: a whole orchestrator on the fake clock wakes
    # every few seconds (leases, sweeps), so weeks would take minutes.
    config = actors.OrchestratorConfig(retention=60.0, drain_timeout=2.0)
    schedule = {"id": "every-few-minutes"}
    async with schedule_alone(config, schedule, every=180, lasting=900, run_for=960) as (
        client,
        final,
        fires,
    ):
        assert len(fires) == 5
        assert (final.started, final.skipped) == (5, 0), final
        # What the test is about: each earlier run was removed before the next fire.
        for run in final.runs[:4]:
            assert await client.status(run.instance_id) is None


async def test_fires_over_the_orchestrators_input_limit_each_fail_and_none_is_skipped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A schedule's input over the orchestrator's own limit (which the client
    that made the schedule did not know) fails each run at its start, saying
    why; a failed run is not going, so every fire starts, none is skipped."""
    config = actors.OrchestratorConfig(limits=actors.Limits(max_input=1024), drain_timeout=2.0)
    schedule = {"id": "too-big", "input": {"blob": "x" * 2000}}
    async with schedule_alone(config, schedule, every=60, lasting=300, run_for=330) as (
        client,
        final,
        fires,
    ):
        assert (final.started, final.skipped) == (len(fires), 0), final
        for run in final.runs:
            info = await client.status(run.instance_id)
            assert info is not None
            assert info.status is actors.InstanceStatus.FAILED
            assert info.error is not None
            assert "over the 1024-byte limit" in info.error.message
