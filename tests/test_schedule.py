"""Schedules, the pure part: specs, fire times across daylight-saving changes, and ``advance``."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.core import (
    CancelRun,
    CronSpec,
    FireKind,
    IntervalSpec,
    InvalidScheduleError,
    Overlap,
    Schedule,
    ScheduleSpec,
    ScheduleState,
    StartRun,
    TerminateRun,
    advance,
    fire_instance_id,
    request_backfill,
    request_trigger,
    schedule_from_data,
    schedule_to_data,
)
from actors.wire import KIND_SCHEDULE, MessageError, decode_schedule, encode, encode_schedule

BERLIN = ZoneInfo("Europe/Berlin")
YEAR_START = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
YEAR_END = datetime(2027, 1, 1, tzinfo=UTC).timestamp()


def _local(t: float) -> datetime:
    return datetime.fromtimestamp(t, BERLIN)


def test_a_daily_cron_in_berlin_fires_once_a_day_for_a_year_across_both_dst_changes() -> None:
    spec = ScheduleSpec(cron=(CronSpec("30 2 * * *", "Europe/Berlin"),))
    fires = list(spec.fires(YEAR_START, YEAR_END))
    assert len(fires) == 365
    days = [_local(t).date() for t in fires]
    assert len(set(days)) == 365
    # 29 March 2026: 02:00-03:00 does not exist; the fire comes at the first
    # minute after the gap, once.
    spring = [t for t in fires if _local(t).date().isoformat() == "2026-03-29"]
    assert [_local(t).strftime("%H:%M %Z") for t in spring] == ["03:00 CEST"]
    # 25 October 2026: 02:30 happens twice; a fixed hour fires at the first only.
    autumn = [t for t in fires if _local(t).date().isoformat() == "2026-10-25"]
    assert [_local(t).strftime("%H:%M %Z") for t in autumn] == ["02:30 CEST"]
    ordinary = [t for t in fires if _local(t).date().isoformat() not in ("2026-03-29",)]
    assert all(_local(t).strftime("%H:%M") == "02:30" for t in ordinary)


def test_an_hourly_cron_in_berlin_fires_every_real_hour_of_the_year() -> None:
    spec = ScheduleSpec(cron=(CronSpec("0 * * * *", "Europe/Berlin"),))
    fires = list(spec.fires(YEAR_START - 1, YEAR_END - 1))
    # Berlin is whole hours off UTC: every UTC hour is a local :00 once.
    assert len(fires) == 365 * 24
    assert fires == [YEAR_START + 3600 * i for i in range(365 * 24)]
    # The clock set back: 02:00 happens twice, and both fire; set forward:
    # there is no 02:00.
    day = [
        _local(t).strftime("%H %Z") for t in fires if _local(t).date().isoformat() == "2026-10-25"
    ]
    assert len(day) == 25
    assert day.count("02 CEST") == 1
    assert day.count("02 CET") == 1
    spring = [_local(t).hour for t in fires if _local(t).date().isoformat() == "2026-03-29"]
    assert len(spring) == 23
    assert 2 not in spring


@given(
    every=st.integers(1, 10**6),
    offset_fraction=st.floats(0, 1, exclude_max=True),
    t=st.floats(-(10**10), 10**10),
)
def test_an_interval_fires_at_offset_plus_multiples_strictly_after(
    every: int, offset_fraction: float, t: float
) -> None:
    offset = math.floor(every * offset_fraction)
    fire = IntervalSpec(every, offset).next_after(t)
    assert fire > t
    assert fire - every <= t
    assert (fire - offset) % every == 0


@given(
    start=st.integers(0, 2 * 10**9),
    crons=st.lists(st.sampled_from(["*/7 * * * *", "0 3 * * MON", "15 */5 * * *"]), max_size=2),
    intervals=st.lists(st.integers(60, 10**5), max_size=2),
)
def test_the_fires_of_a_spec_are_its_crons_and_intervals_merged_in_order(
    start: int, crons: list[str], intervals: list[int]
) -> None:
    if not crons and not intervals:
        intervals = [600]
    spec = ScheduleSpec(
        cron=tuple(CronSpec(c, "America/New_York") for c in crons),
        intervals=tuple(IntervalSpec(i) for i in intervals),
    )
    fires = spec.upcoming(start, 30)
    assert fires == sorted(set(fires))
    assert all(t > start for t in fires)
    # Nothing in between was left out: each part's own next fire is a fire.
    for part in [ScheduleSpec(cron=(c,)) for c in spec.cron] + [
        ScheduleSpec(intervals=(i,)) for i in spec.intervals
    ]:
        nxt = part.next_after(start)
        assert nxt is not None
        assert nxt in fires or nxt > fires[-1]


def test_start_and_end_times_bound_the_fires() -> None:
    spec = ScheduleSpec(intervals=(IntervalSpec(60),), start_at=600, end_at=780)
    assert list(spec.fires(0, 10_000)) == [600, 660, 720, 780]
    assert spec.next_after(780) is None


def test_jitter_is_the_same_for_a_fire_every_time_and_within_bounds() -> None:
    spec = ScheduleSpec(intervals=(IntervalSpec(60),), jitter=30)
    delays = [spec.delay("s", 60.0 * i) for i in range(200)]
    assert delays == [spec.delay("s", 60.0 * i) for i in range(200)]
    assert all(0 <= d < 30 for d in delays)
    assert len(set(delays)) > 100


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"id": "s", "workflow": "w", "spec": {}}, "cron expression or an interval"),
        ({"id": "s", "workflow": "w", "spec": {"cron": "61 * * * *"}}, "61 * * * *"),
        ({"id": "s", "workflow": "w", "spec": {"cron": "0 * * * *", "timezone": "Mars/X"}}, "Mars"),
        ({"id": "s", "workflow": "w", "spec": {"intervals": [{"every": 0}]}}, "at least 1"),
        (
            {"id": "s", "workflow": "w", "spec": {"intervals": [{"every": 60, "offset": 60}]}},
            "less",
        ),
        ({"id": "1s", "workflow": "w", "spec": {"intervals": [60]}}, "schedule id"),
        ({"id": "s", "workflow": "w", "spec": {"intervals": [60]}, "overlap": "x"}, "overlap"),
        ({"id": "s", "workflow": "w", "spec": {"intervals": [60]}, "when": 1}, "unknown field"),
        ({"id": "s", "workflow": "w", "spec": {"intervals": [60], "jitter": "soon"}}, "jitter"),
        ({"id": "s", "spec": {"intervals": [60]}}, "workflow: required"),
        (
            {"id": "s", "workflow": "w", "spec": {"intervals": [60], "start_at": 5, "end_at": 1}},
            "before",
        ),
    ],
)
def test_a_schedule_that_is_not_valid_is_refused_naming_what(
    data: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidScheduleError, match=message.replace("*", r"\*")):
        schedule_from_data(data)


def test_a_schedule_reads_back_as_it_was_written() -> None:
    schedule = schedule_from_data(
        {
            "id": "nightly",
            "workflow": "order",
            "version": 2,
            "input": {"a": [1, 2]},
            "spec": {
                "cron": ["0 2 * * *", {"expression": "0 12 * * SAT", "timezone": "UTC"}],
                "timezone": "Europe/Berlin",
                "intervals": [{"every": "1h", "offset": "5m"}],
                "jitter": "30s",
                "start_at": "2026-01-01T00:00:00Z",
            },
            "overlap": "buffer_all",
            "catchup_window": "10m",
        }
    )
    assert schedule.spec.intervals == (IntervalSpec(3600, 300),)
    assert schedule.spec.cron[0].timezone == "Europe/Berlin"
    assert schedule.spec.cron[1].timezone == "UTC"
    assert schedule.spec.start_at == YEAR_START
    assert schedule.catchup_window == 600
    assert schedule_from_data(schedule_to_data(schedule)) == schedule


@given(
    ids=st.tuples(
        st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,20}", fullmatch=True),
        st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,20}", fullmatch=True),
    ),
    times=st.tuples(st.integers(0, 4 * 10**9), st.integers(0, 4 * 10**9)),
    kinds=st.tuples(st.sampled_from(FireKind), st.sampled_from(FireKind)),
)
def test_fire_instance_ids_name_one_schedule_and_fire_time(
    ids: tuple[str, str], times: tuple[int, int], kinds: tuple[FireKind, FireKind]
) -> None:
    a = fire_instance_id(ids[0], times[0], kinds[0])
    b = fire_instance_id(ids[1], times[1], kinds[1])
    same = ids[0] == ids[1] and times[0] == times[1]
    same = same and (kinds[0] is FireKind.TRIGGER) == (kinds[1] is FireKind.TRIGGER)
    assert (a == b) == same


# -- advance ------------------------------------------------------------------------


def _state(overlap: Overlap = Overlap.SKIP, *, catchup: float = 3600.0) -> ScheduleState:
    schedule = Schedule(
        id="every-minute",
        workflow_type="job",
        spec=ScheduleSpec(intervals=(IntervalSpec(60),)),
        overlap=overlap,
        catchup_window=catchup,
    )
    return ScheduleState(schedule=schedule, cursor=0.0, created_at=0.0)


def _starts(effects: list[object]) -> list[float]:
    return [e.fire.at for e in effects if isinstance(e, StartRun)]


def test_advance_starts_each_due_fire_once_and_moves_the_cursor() -> None:
    state, effects, more = advance(_state(Overlap.ALLOW_ALL), 185.0, active=False)
    assert _starts(effects) == [60.0, 120.0, 180.0]
    assert (state.cursor, state.started, more) == (180.0, 3, False)
    assert state.outbox == tuple(effects)
    again, effects, _ = advance(replace(state, outbox=()), 185.0, active=True)
    assert effects == []
    assert again.cursor == 180.0


def test_fires_later_than_the_catch_up_window_are_counted_as_missed() -> None:
    state, effects, _ = advance(_state(Overlap.ALLOW_ALL, catchup=150.0), 600.0, active=False)
    assert _starts(effects) == [480.0, 540.0, 600.0]
    assert (state.missed, state.started, state.cursor) == (7, 3, 600.0)


def test_a_long_downtime_is_dealt_with_in_bounded_rounds() -> None:
    state = _state(Overlap.SKIP, catchup=0.0)
    rounds = 0
    more = True
    while more:
        state, _, more = advance(state, 60.0 * 1000, active=False)
        rounds += 1
    assert rounds == 10
    assert (state.missed, state.started) == (999, 1)


@pytest.mark.parametrize(
    ("overlap", "starts", "buffered", "skipped", "others"),
    [
        (Overlap.SKIP, [], [], 2, []),
        (Overlap.BUFFER_ONE, [], [60.0], 1, []),
        (Overlap.BUFFER_ALL, [], [60.0, 120.0], 0, []),
        (Overlap.CANCEL_OTHER, [], [120.0], 1, [CancelRun, CancelRun]),
        (Overlap.TERMINATE_OTHER, [60.0, 120.0], [], 0, [TerminateRun, TerminateRun]),
        (Overlap.ALLOW_ALL, [60.0, 120.0], [], 0, []),
    ],
)
def test_each_overlap_policy_while_the_newest_run_is_going(
    overlap: Overlap,
    starts: list[float],
    buffered: list[float],
    skipped: int,
    others: list[type],
) -> None:
    state, effects, _ = advance(_state(overlap), 30.0, active=False)
    state, effects, _ = advance(replace(state, triggers=(10.0,), outbox=()), 30.0, active=False)
    assert _starts(effects) == [10.0]
    running = state.newest
    assert running is not None
    state, effects, _ = advance(replace(state, outbox=()), 121.0, active=True)
    assert _starts(effects) == starts
    assert [f.at for f in state.buffered] == buffered
    assert state.skipped == skipped
    assert [type(e) for e in effects if not isinstance(e, StartRun)] == others
    if others:
        targets = {e.instance_id for e in effects if not isinstance(e, StartRun)}
        if overlap is Overlap.CANCEL_OTHER:
            assert targets == {running.instance_id}
    # Once the newest run ended, the first buffered fire starts (and only it).
    state, effects, _ = advance(replace(state, outbox=()), 122.0, active=False)
    assert _starts(effects) == buffered[:1]
    assert [f.at for f in state.buffered] == buffered[1:]


def test_a_paused_schedule_does_not_fire_but_runs_triggers_and_backfills() -> None:
    state = replace(_state(Overlap.ALLOW_ALL), paused=True)
    state = request_trigger(state, 99.2)
    state, count = request_backfill(state, 60.0, 180.0)
    assert count == 3
    new, effects, more = advance(state, 1000.0, active=False)
    assert [(e.fire.at, e.fire.kind) for e in effects if isinstance(e, StartRun)] == [
        (100.0, FireKind.TRIGGER),
        (60.0, FireKind.BACKFILL),
        (120.0, FireKind.BACKFILL),
        (180.0, FireKind.BACKFILL),
    ]
    assert (new.cursor, new.triggers, new.backfills, more) == (0.0, (), (), False)
    assert replace(new, outbox=()).due_at() is None


def test_a_backfill_of_too_many_fires_or_a_reversed_range_is_refused() -> None:
    with pytest.raises(InvalidScheduleError, match="in parts"):
        request_backfill(_state(), 0.0, 60.0 * 20_000)
    with pytest.raises(InvalidScheduleError, match="before its start"):
        request_backfill(_state(), 100.0, 0.0)


def test_a_stored_schedule_reads_back_the_same_and_a_damaged_one_is_refused() -> None:
    state, _, _ = advance(_state(Overlap.CANCEL_OTHER), 30.0, active=False)
    state = request_trigger(state, 5.0)
    state, _, _ = advance(state, 200.0, active=True)
    state, _ = request_backfill(replace(state, note="why"), 0.0, 600.0)
    assert state.outbox
    assert state.buffered
    assert state.backfills
    assert decode_schedule(encode_schedule(state)) == state
    damaged = encode(KIND_SCHEDULE, {"schedule": schedule_to_data(state.schedule)})
    with pytest.raises(MessageError, match="cursor"):
        decode_schedule(damaged)


@pytest.mark.parametrize("t", [-5e-324, -1e-300, 5e-324, -0.0])
def test_an_interval_is_exact_next_to_zero(t: float) -> None:
    """Regression: a tiny negative time divided to -0.0, and the fire after it came one
    interval late (2 instead of 0)."""
    fire = IntervalSpec(2, 0).next_after(t)
    assert fire == (0 if t < 0 else 2)
