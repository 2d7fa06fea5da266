"""Schedules: what starts a workflow at given times, and the pure rules of firing.

A :class:`Schedule` names the workflow to start (type, version, input), when
(a :class:`ScheduleSpec`: cron expressions in a time zone, intervals with an
offset, jitter, start and end times, evaluated in ``_schedule_spec.py``),
what to do when the previous run is still going (:class:`Overlap`) and
how far back fires missed during downtime are still run
(``catchup_window``).

:class:`ScheduleState` is a schedule as stored, with its cursor (every
scheduled fire at or before it is dealt with), the runs asked for by hand
(trigger, backfill), the fires waiting for the running instance (buffer
policies), the recent runs and the counts. :func:`advance` is the one rule
that moves it on: given the time and whether the newest run is still going,
it returns the new state and the effects to carry out (start, cancel,
terminate an instance). No I/O here: the scheduler service (``runtime``)
reads and writes the state by compare-and-set and publishes the effects.

Exactly one start per fire time: the instance id is made from the schedule
id and the fire time (:func:`fire_instance_id`), so a start published twice
(after a crash, or by two orchestrators) names one instance, which the
broker's duplicate window or the stored instance absorbs.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

from ._keys import check_name
from ._parse import parse_duration
from ._schedule_spec import (
    _TICK,
    CronSpec,
    IntervalSpec,
    InvalidScheduleError,
    ScheduleSpec,
    _finite,
    _time,
)

__all__ = [
    "Backfill",
    "CancelRun",
    "Fire",
    "FireKind",
    "Overlap",
    "Run",
    "Schedule",
    "ScheduleEffect",
    "ScheduleState",
    "StartRun",
    "TerminateRun",
    "advance",
    "fire_instance_id",
    "parse_time",
    "request_backfill",
    "request_trigger",
    "schedule_from_data",
    "schedule_to_data",
]

#: Recent runs a schedule keeps (for ``describe``), newest last.
RECENT_RUNS: Final = 20
#: Fires a ``buffer_all`` schedule holds at most; past it a fire is skipped.
MAX_BUFFERED: Final = 1000
#: Fires one :func:`advance` deals with at most (a long downtime, a backfill),
#: so that each write stays small; the caller calls it again while ``more``.
FIRES_PER_ROUND: Final = 100
#: The most fires one backfill may ask for.
MAX_BACKFILL_FIRES: Final = 10_000
#: Requested triggers and backfills waiting at once, at most.
MAX_REQUESTS: Final = 100


class Overlap(enum.StrEnum):
    """What a fire does while the schedule's newest run is still going."""

    #: Nothing: the fire is skipped (and counted).
    SKIP = "skip"
    #: It waits for the running one to end; a later fire meanwhile is skipped.
    BUFFER_ONE = "buffer_one"
    #: It waits for the running one to end, behind the fires already waiting.
    BUFFER_ALL = "buffer_all"
    #: The running one is cancelled (its compensations run); the fire starts
    #: once it ended.
    CANCEL_OTHER = "cancel_other"
    #: The running one is terminated; the fire starts at once.
    TERMINATE_OTHER = "terminate_other"
    #: The fire starts at once, whatever runs.
    ALLOW_ALL = "allow_all"


class FireKind(enum.StrEnum):
    """Why a run started."""

    SCHEDULED = "scheduled"
    TRIGGER = "trigger"
    BACKFILL = "backfill"


@dataclass(frozen=True, slots=True)
class Schedule:
    """A schedule as its owner defines it (see the module docstring)."""

    id: str
    workflow_type: str
    spec: ScheduleSpec
    input: Any = None
    #: 0: the newest version registered at each fire.
    version: int = 0
    overlap: Overlap = Overlap.SKIP
    #: How late a scheduled fire may still start after downtime (seconds);
    #: one found later is skipped and counted as missed.
    catchup_window: float = 3600.0

    def __post_init__(self) -> None:
        try:
            check_name("schedule id", self.id)
            check_name("workflow type", self.workflow_type)
        except ValueError as exc:
            raise InvalidScheduleError(str(exc)) from None
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 0:
            raise InvalidScheduleError(f"version must be 0 (newest) or more, got {self.version!r}")
        if not isinstance(self.overlap, Overlap):
            raise InvalidScheduleError(f"unknown overlap policy {self.overlap!r}")
        _finite("catchup_window", self.catchup_window)


_STAMP: Final = "%Y%m%dT%H%M%SZ"


def fire_instance_id(schedule_id: str, fire: float, kind: FireKind) -> str:
    """The id of the instance a fire starts: one id per schedule and fire time.

    ``{schedule}-{YYYYMMDDTHHMMSSZ}`` (the fire time in UTC, to the second)
    for a scheduled or backfilled fire, so that a backfill of a time that
    already ran starts nothing new; ``{schedule}-{YYYYMMDDTHHMMSSZ}-now``
    for a trigger. The stamp has a fixed length and the two forms end
    differently, so no two schedules and times share an id.
    """
    stamp = datetime.fromtimestamp(math.floor(fire), UTC).strftime(_STAMP)
    suffix = "-now" if kind is FireKind.TRIGGER else ""
    return f"{schedule_id}-{stamp}{suffix}"


@dataclass(frozen=True, slots=True)
class Fire:
    """One fire time and why it happened."""

    at: float
    kind: FireKind


@dataclass(frozen=True, slots=True)
class Run:
    """A run a schedule started."""

    instance_id: str
    fire: Fire
    #: When the scheduler published its start.
    started_at: float


@dataclass(frozen=True, slots=True)
class Backfill:
    """A requested range of fires: every fire of the spec after ``cursor`` up to ``end``."""

    start: float
    end: float
    #: Every fire of the range at or before it is dealt with.
    cursor: float


@dataclass(frozen=True, slots=True)
class StartRun:
    instance_id: str
    fire: Fire


@dataclass(frozen=True, slots=True)
class CancelRun:
    instance_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class TerminateRun:
    instance_id: str
    reason: str


ScheduleEffect = StartRun | CancelRun | TerminateRun


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """A schedule as stored: its definition and where its firing stands."""

    schedule: Schedule
    #: Every scheduled fire at or before this time is dealt with (started,
    #: buffered, skipped or missed).
    cursor: float
    created_at: float
    paused: bool = False
    #: Why it was last paused or unpaused.
    note: str = ""
    #: Fires that wait for the running instance to end (buffer, cancel other).
    buffered: tuple[Fire, ...] = ()
    #: Runs asked for by hand, not started yet (their times).
    triggers: tuple[float, ...] = ()
    backfills: tuple[Backfill, ...] = ()
    #: The latest runs, newest last.
    runs: tuple[Run, ...] = ()
    #: Effects decided and maybe not carried out yet: the scheduler carries
    #: them out (again) before it decides anything else (each is idempotent).
    outbox: tuple[ScheduleEffect, ...] = ()
    started: int = 0
    #: Fires skipped by the overlap policy.
    skipped: int = 0
    #: Scheduled fires found later than the catch-up window, not run.
    missed: int = 0

    @property
    def newest(self) -> Run | None:
        return self.runs[-1] if self.runs else None

    def next_fire(self) -> float | None:
        """The next scheduled fire (nominal time), or ``None`` if the spec has no more."""
        return self.schedule.spec.next_after(self.cursor)

    def due_at(self) -> float | None:
        """When :func:`advance` has something to do next, if ``paused`` and ``running`` allow.

        Triggers and backfills are due at once, paused or not; scheduled
        fires at their time plus jitter, unless paused. Buffered fires wait
        for the running instance, which the caller watches.
        """
        if self.outbox or self.triggers or self.backfills:
            return -math.inf
        if self.paused:
            return None
        fire = self.next_fire()
        if fire is None:
            return None
        return fire + self.schedule.spec.delay(self.schedule.id, fire)


def _check_requests(state: ScheduleState) -> None:
    if len(state.triggers) + len(state.backfills) >= MAX_REQUESTS:
        raise InvalidScheduleError(
            f"schedule {state.schedule.id!r} has {MAX_REQUESTS} triggers and backfills "
            "waiting already; send this one once they ran"
        )


def request_trigger(state: ScheduleState, now: float) -> ScheduleState:
    """``state`` with a run asked for now (at ``now``, to the whole second after)."""
    _check_requests(state)
    return replace(state, triggers=(*state.triggers, float(math.ceil(now))))


def request_backfill(state: ScheduleState, start: float, end: float) -> tuple[ScheduleState, int]:
    """``state`` with the fires of its spec from ``start`` to ``end`` (included) asked for.

    Returns the new state and how many fires the range holds. Raises
    :class:`InvalidScheduleError` for an empty or reversed range, or one of
    more than :data:`MAX_BACKFILL_FIRES` fires.
    """
    _time("backfill start", start)
    _time("backfill end", end)
    if end < start:
        raise InvalidScheduleError("a backfill's end is before its start")
    _check_requests(state)
    after = start - _TICK
    count = 0
    for _ in state.schedule.spec.fires(after, end):
        count += 1
        if count > MAX_BACKFILL_FIRES:
            raise InvalidScheduleError(
                f"the range holds more than {MAX_BACKFILL_FIRES} fires: backfill it in parts"
            )
    return replace(state, backfills=(*state.backfills, Backfill(start, end, after))), count


@dataclass
class _Round:
    """What one :func:`advance` builds up."""

    state: ScheduleState
    now: float
    #: Whether the newest run is going (as read, then as this round changes it).
    active: bool
    effects: list[ScheduleEffect] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    buffered: list[Fire] = field(default_factory=list)
    started: int = 0
    skipped: int = 0
    missed: int = 0

    def start(self, fire: Fire) -> None:
        instance_id = fire_instance_id(self.state.schedule.id, fire.at, fire.kind)
        self.effects.append(StartRun(instance_id, fire))
        self.runs.append(Run(instance_id, fire, self.now))
        self.started += 1
        self.active = True

    def newest(self) -> str | None:
        if self.runs:
            return self.runs[-1].instance_id
        newest = self.state.newest
        return None if newest is None else newest.instance_id

    def fire(self, fire: Fire) -> None:
        """Start ``fire``, or do what the overlap policy says while a run is going."""
        overlap = self.state.schedule.overlap
        running = self.newest() if self.active else None
        if running is None or overlap is Overlap.ALLOW_ALL:
            self.start(fire)
            return
        reason = f"schedule {self.state.schedule.id}: a newer fire came"
        match overlap:
            case Overlap.SKIP:
                self.skipped += 1
            case Overlap.BUFFER_ONE:
                if self.buffered:
                    self.skipped += 1
                else:
                    self.buffered.append(fire)
            case Overlap.BUFFER_ALL:
                if len(self.buffered) >= MAX_BUFFERED:
                    self.skipped += 1
                else:
                    self.buffered.append(fire)
            case Overlap.CANCEL_OTHER:
                # The newest fire replaces any waiting one; the running one
                # is asked to cancel (again: a repeated request is a no-op).
                self.skipped += len(self.buffered)
                self.buffered[:] = [fire]
                self.effects.append(CancelRun(running, reason))
            case Overlap.TERMINATE_OTHER:
                self.effects.append(TerminateRun(running, reason))
                self.start(fire)
            case Overlap.ALLOW_ALL:  # pragma: no cover - handled above
                self.start(fire)


def advance(
    state: ScheduleState, now: float, *, active: bool
) -> tuple[ScheduleState, list[ScheduleEffect], bool]:
    """Deal with what is due at ``now``; the new state, the effects, and whether more is due.

    ``active`` says whether the newest run is still going (its instance not
    terminal, or not stored yet). In order: a buffered fire starts if
    nothing runs; then requested triggers, backfill fires and the scheduled
    fires due (their time plus jitter at or before ``now``; not while
    paused) each start or meet the overlap policy. A scheduled fire more
    than ``catchup_window`` seconds late is skipped and counted as missed.
    At most :data:`FIRES_PER_ROUND` fires are dealt with; ``more`` is true
    if some are left that are due already. The effects are also in the new
    state's ``outbox`` (the caller clears it once it carried them out); an
    ``outbox`` left from before must be carried out first: it is not
    returned again.
    """
    build = _Round(state, now, active, buffered=list(state.buffered))
    schedule = state.schedule
    if build.buffered and not build.active and not state.paused:
        build.start(build.buffered.pop(0))
    budget = FIRES_PER_ROUND
    triggers = list(state.triggers)
    while triggers and budget:
        build.fire(Fire(triggers.pop(0), FireKind.TRIGGER))
        budget -= 1
    backfills: list[Backfill] = []
    for backfill in state.backfills:
        cursor = backfill.cursor
        for at in schedule.spec.fires(cursor, backfill.end):
            if not budget:
                break
            build.fire(Fire(at, FireKind.BACKFILL))
            cursor = at
            budget -= 1
        else:
            continue  # the range is done
        backfills.append(replace(backfill, cursor=cursor))
    cursor = state.cursor
    more = bool(triggers or backfills)
    if not state.paused:
        while True:
            due = schedule.spec.next_after(cursor)
            if due is None:
                break
            late = now - due - schedule.spec.delay(schedule.id, due)
            if late < 0:
                break
            if not budget:
                more = True
                break
            budget -= 1
            cursor = due
            if late > schedule.catchup_window:
                build.missed += 1
            else:
                build.fire(Fire(due, FireKind.SCHEDULED))
    runs = (*state.runs, *build.runs)[-RECENT_RUNS:]
    new = replace(
        state,
        cursor=cursor,
        buffered=tuple(build.buffered),
        triggers=tuple(triggers),
        backfills=tuple(backfills),
        runs=runs,
        outbox=tuple(build.effects),
        started=state.started + build.started,
        skipped=state.skipped + build.skipped,
        missed=state.missed + build.missed,
    )
    return new, build.effects, more


# -- plain data (JSON, YAML) ------------------------------------------------------

_SCHEDULE_KEYS: Final = frozenset(
    {"id", "workflow", "version", "input", "spec", "overlap", "catchup_window"}
)
_SPEC_KEYS: Final = frozenset({"cron", "timezone", "intervals", "jitter", "start_at", "end_at"})


def parse_time(value: object, what: str) -> float:
    """Seconds since the epoch from a number or an ISO 8601 text (UTC if it names no zone)."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidScheduleError(
                f"{what}: {value!r} is not an ISO 8601 time (2026-01-31T02:00:00Z)"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return _time(what, parsed.timestamp())
    return _time(what, value)


def _seconds(value: object, what: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise InvalidScheduleError(f"{what}: {exc}") from None


def _unknown_keys(data: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    unknown = sorted(str(key) for key in data if key not in known)
    if unknown:
        raise InvalidScheduleError(
            f"{where}unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )


def _spec_from_data(data: object) -> ScheduleSpec:
    if not isinstance(data, Mapping):
        raise InvalidScheduleError("spec: must be a map (cron, timezone, intervals, jitter...)")
    _unknown_keys(data, _SPEC_KEYS, "spec: ")
    zone = data.get("timezone", "UTC")
    if not isinstance(zone, str):
        raise InvalidScheduleError("spec.timezone: must be a time zone name (Europe/Berlin)")
    crons = data.get("cron") or []
    if isinstance(crons, str):
        crons = [crons]
    if not isinstance(crons, list):
        raise InvalidScheduleError("spec.cron: must be a cron expression or a list of them")
    cron: list[CronSpec] = []
    for i, item in enumerate(crons):
        if isinstance(item, Mapping):
            _unknown_keys(item, frozenset({"expression", "timezone"}), f"spec.cron[{i}]: ")
            expression, item_zone = item.get("expression"), item.get("timezone", zone)
        else:
            expression, item_zone = item, zone
        if not isinstance(expression, str) or not isinstance(item_zone, str):
            raise InvalidScheduleError(f"spec.cron[{i}]: must be a cron expression")
        cron.append(CronSpec(expression, item_zone))
    raw_intervals = data.get("intervals") or []
    if not isinstance(raw_intervals, list):
        raise InvalidScheduleError("spec.intervals: must be a list of {every, offset}")
    intervals: list[IntervalSpec] = []
    for i, item in enumerate(raw_intervals):
        if not isinstance(item, Mapping):
            item = {"every": item}
        _unknown_keys(item, frozenset({"every", "offset"}), f"spec.intervals[{i}]: ")
        intervals.append(
            IntervalSpec(
                _seconds(item.get("every"), f"spec.intervals[{i}].every"),
                _seconds(item.get("offset", 0), f"spec.intervals[{i}].offset"),
            )
        )
    start_at, end_at = data.get("start_at"), data.get("end_at")
    return ScheduleSpec(
        cron=tuple(cron),
        intervals=tuple(intervals),
        jitter=_seconds(data.get("jitter", 0), "spec.jitter"),
        start_at=None if start_at is None else parse_time(start_at, "spec.start_at"),
        end_at=None if end_at is None else parse_time(end_at, "spec.end_at"),
    )


def schedule_from_data(data: object) -> Schedule:
    """A :class:`Schedule` from plain data (as :func:`schedule_to_data` writes it).

    ``{id, workflow, version?, input?, spec: {cron?, timezone?, intervals?,
    jitter?, start_at?, end_at?}, overlap?, catchup_window?}``; durations are
    seconds or texts (``30s``, ``1h``), times seconds since the epoch or ISO
    8601 texts. Raises :class:`InvalidScheduleError` naming the field at fault.
    """
    if not isinstance(data, Mapping):
        raise InvalidScheduleError("a schedule must be a map (id, workflow, spec...)")
    _unknown_keys(data, _SCHEDULE_KEYS, "")
    for key in ("id", "workflow", "spec"):
        if data.get(key) is None:
            raise InvalidScheduleError(f"{key}: required")
    overlap = data.get("overlap", Overlap.SKIP.value)
    try:
        policy = Overlap(overlap)
    except ValueError:
        raise InvalidScheduleError(
            f"overlap: {overlap!r} is not one of {', '.join(member.value for member in Overlap)}"
        ) from None
    return Schedule(
        id=data["id"],
        workflow_type=data["workflow"],
        spec=_spec_from_data(data["spec"]),
        input=data.get("input"),
        version=data.get("version", 0),
        overlap=policy,
        catchup_window=_seconds(data.get("catchup_window", 3600.0), "catchup_window"),
    )


def schedule_to_data(schedule: Schedule) -> dict[str, Any]:
    """Plain data (JSON-ready) that :func:`schedule_from_data` reads back as ``schedule``."""
    spec = schedule.spec
    data: dict[str, Any] = {
        "id": schedule.id,
        "workflow": schedule.workflow_type,
        "version": schedule.version,
        "input": schedule.input,
        "spec": {
            "cron": [{"expression": c.expression, "timezone": c.timezone} for c in spec.cron],
            "intervals": [{"every": i.every, "offset": i.offset} for i in spec.intervals],
            "jitter": spec.jitter,
            "start_at": spec.start_at,
            "end_at": spec.end_at,
        },
        "overlap": schedule.overlap.value,
        "catchup_window": schedule.catchup_window,
    }
    return data
