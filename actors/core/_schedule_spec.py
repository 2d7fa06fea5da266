"""When a schedule fires: cron expressions in a time zone, intervals, jitter.

The evaluation of a :class:`ScheduleSpec`, apart from what is done with its
fires (``_schedule.py``: the firing rule, overlap policies, catch-up): given
a time, the next fire strictly after it (:meth:`ScheduleSpec.next_after`),
the fires in a range, and how long a fire's start is put off
(:meth:`ScheduleSpec.delay`, the same for the same schedule and fire).
Times are float seconds since the epoch, from the epoch to the end of year
9999; a spec past its ``end_at`` (or a cron expression with no more
matching day) has no next fire (``None``). The specs check themselves when
built and raise :class:`InvalidScheduleError` naming the field at fault.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import cronsim

from ..errors import RequestError

__all__ = ["CronSpec", "IntervalSpec", "InvalidScheduleError", "ScheduleSpec"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: Less than the gap between two fires (which are on whole seconds): "just
#: before ``t``" is ``t - _TICK``, so that a fire at ``t`` counts.
_TICK: Final = 0.001
#: The times a schedule deals in: from the epoch to the end of year 9999
#: (what ``datetime`` can hold), in seconds.
_LAST_TIME: Final = 253402214400.0


class InvalidScheduleError(RequestError, ValueError, http_type="InvalidSchedule"):
    """A schedule (or a request on one) is not valid: the message says which field."""


def _check_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidScheduleError(f"unknown time zone {name!r}") from exc


def _finite(what: str, value: object, *, least: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidScheduleError(f"{what} must be a number of seconds, got {value!r}")
    if value < least:
        raise InvalidScheduleError(f"{what} must be at least {least:g} seconds, got {value!r}")
    return float(value)


def _time(what: str, value: object) -> float:
    t = _finite(what, value)
    if t > _LAST_TIME:
        raise InvalidScheduleError(f"{what} must be a time before the year 10000, got {value!r}")
    return t


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A cron expression (minute, hour, day of month, month, day of week) in a time zone.

    ``timezone`` is an IANA name (``Europe/Berlin``); the fields take what
    cron takes (``*/15``, ``1-5``, ``MON``, ``L``, ``@daily``...).

    Daylight-saving changes follow cron's rule: a time that does not exist
    that day (skipped forward) fires once at the first minute after the gap;
    a time that happens twice (the clock set back) fires once, at its first
    occurrence, unless the expression names every hour (``*`` or a step),
    which fires in both.
    """

    expression: str
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if not isinstance(self.expression, str) or not self.expression.strip():
            raise InvalidScheduleError("a cron expression must be a non-empty string")
        zone = _check_zone(self.timezone)
        try:
            cronsim.CronSim(self.expression, datetime(2000, 1, 1, tzinfo=zone))
        except cronsim.CronSimError as exc:
            raise InvalidScheduleError(f"cron expression {self.expression!r}: {exc}") from exc

    def next_after(self, t: float) -> float | None:
        """The first fire strictly after ``t`` (seconds since the epoch), if any."""
        zone = ZoneInfo(self.timezone)
        # To the microsecond below (datetime's precision), exactly: a time a
        # hair before a fire must not round up onto it.
        micros = math.floor(t * 1_000_000)
        try:
            start = (_EPOCH + timedelta(microseconds=micros)).astimezone(zone)
            times = cronsim.CronSim(self.expression, start)
        except (OverflowError, ValueError, cronsim.CronSimError):
            return None
        try:
            return next(times).timestamp()
        except (StopIteration, cronsim.CronSimError, OverflowError, ValueError):
            return None  # no fire before the end of year 9999


@dataclass(frozen=True, slots=True)
class IntervalSpec:
    """Every ``every`` seconds, at the times ``offset + k * every`` since the epoch.

    ``every`` is a whole number of seconds, at least 1; ``offset`` a whole
    number from 0 to ``every - 1`` (``every=86400, offset=3600``: daily at
    01:00 UTC).
    """

    every: float
    offset: float = 0.0

    def __post_init__(self) -> None:
        every = _finite("interval 'every'", self.every, least=1)
        offset = _finite("interval 'offset'", self.offset)
        if every != int(every) or offset != int(offset):
            raise InvalidScheduleError("an interval and its offset are whole seconds")
        if offset >= every:
            raise InvalidScheduleError(
                f"an interval's offset ({offset:g}) must be less than the interval ({every:g})"
            )

    def next_after(self, t: float) -> float:
        """The first fire strictly after ``t``: ``offset + k * every`` for the least such k."""
        k = math.floor((t - self.offset) / self.every) + 1
        fire = self.offset + k * self.every
        # The division can round across a multiple (a tiny negative ``t``
        # divides to -0.0): settle on the least fire still after ``t``.
        while fire - self.every > t:
            fire -= self.every
        while fire <= t:
            fire += self.every
        return fire


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """When a schedule fires: the union of its cron expressions and intervals.

    Fires only from ``start_at`` to ``end_at`` (seconds since the epoch,
    both included; ``None``: no bound). Each fire's start is put off by up
    to ``jitter`` seconds, the same amount every time for that fire (taken
    from the schedule id and the fire time), so that many schedules on one
    minute do not all start at once.
    """

    cron: tuple[CronSpec, ...] = ()
    intervals: tuple[IntervalSpec, ...] = ()
    jitter: float = 0.0
    start_at: float | None = None
    end_at: float | None = None

    def __post_init__(self) -> None:
        if not self.cron and not self.intervals:
            raise InvalidScheduleError("a schedule needs a cron expression or an interval")
        _finite("jitter", self.jitter)
        if self.start_at is not None:
            _time("start_at", self.start_at)
        if self.end_at is not None:
            _time("end_at", self.end_at)
        if self.start_at is not None and self.end_at is not None and self.end_at < self.start_at:
            raise InvalidScheduleError("end_at is before start_at")

    def next_after(self, t: float) -> float | None:
        """The first fire strictly after ``t``, within the start and end times; ``None``: none."""
        if self.start_at is not None and t < self.start_at:
            t = self.start_at - _TICK
        found: list[float] = [interval.next_after(t) for interval in self.intervals]
        for cron in self.cron:
            at = cron.next_after(t)
            if at is not None:
                found.append(at)
        if not found:
            return None
        first = min(found)
        if self.end_at is not None and first > self.end_at:
            return None
        return first

    def fires(self, after: float, until: float) -> Iterator[float]:
        """The fires strictly after ``after`` and at or before ``until``, in order."""
        t = after
        while True:
            t_next = self.next_after(t)
            if t_next is None or t_next > until:
                return
            yield t_next
            t = t_next

    def upcoming(self, after: float, count: int) -> list[float]:
        """The next ``count`` fires after ``after`` (fewer if the spec ends)."""
        found: list[float] = []
        t = after
        while len(found) < count:
            t_next = self.next_after(t)
            if t_next is None:
                break
            found.append(t_next)
            t = t_next
        return found

    def delay(self, schedule_id: str, fire: float) -> float:
        """How long the start of ``fire`` is put off (0 to ``jitter`` seconds)."""
        if not self.jitter:
            return 0.0
        digest = hashlib.sha256(f"{schedule_id}\x00{fire!r}".encode()).digest()
        return self.jitter * int.from_bytes(digest[:8], "big") / 2**64
