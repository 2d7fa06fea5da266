"""Sleep steps: wait durably for a while (``sleep``) or until a time (``sleep_until``).

The wait is a ``sleep`` timer held by the runtime, so it survives any
restart; a time already past ends the step at once. The step passes on
the value that flowed into it.

History: ``sleep.started``, ``sleep.completed``.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .._commands import StartTimer
from .._error_info import ErrorInfo
from .._events import TimerFired, TimerKind
from .._expressions import ExpressionError
from .._scope import chained, context
from .._state import StepState, StepStatus

if TYPE_CHECKING:
    from .._decision import Decision
    from .._definition import Definition
    from .._expressions import Expression
    from .._parse import Checker
    from .._refs import Ref

__all__ = ["FIELDS", "UNTIL_FIELDS", "SleepStep", "begin", "parse", "parse_until", "timer"]


@dataclass(frozen=True, slots=True)
class SleepStep:
    """Wait durably: ``seconds`` from when the step starts, or ``until`` a time.

    ``until`` evaluates to seconds since the epoch or an ISO 8601 time (UTC
    if it names no zone). A time already past ends the step at once.
    """

    id: str
    seconds: float | None = None
    until: Expression | None = None

    def to_data(self) -> dict[str, Any]:
        if self.until is not None:
            return {"id": self.id, "sleep_until": self.until.source}
        return {"id": self.id, "sleep": self.seconds}


#: The fields of a sleep step (its kind: the key ``sleep``, a duration).
FIELDS: Final = frozenset({"id", "sleep"})
#: The fields of a sleep-until step (its kind: the key ``sleep_until``, an expression).
UNTIL_FIELDS: Final = frozenset({"id", "sleep_until"})
_COMPLETED: Final = "sleep.completed"


def parse(
    checker: Checker, step: Mapping[str, Any], step_id: str | None, depth: int
) -> SleepStep | None:
    with checker.at("sleep"):
        if step.get("sleep") is None:
            checker.error("required: a duration")
    seconds = checker.duration(step, "sleep", positive=False)
    if step_id is None or seconds is None:
        return None
    return SleepStep(step_id, seconds=seconds)


def parse_until(
    checker: Checker, step: Mapping[str, Any], step_id: str | None, depth: int
) -> SleepStep | None:
    until = checker.expression(step, "sleep_until", required="an expression giving a time")
    if step_id is None or until is None:
        return None
    return SleepStep(step_id, until=until)


def begin(build: Decision, definition: Definition, ref: Ref, step: SleepStep) -> None:
    if step.until is not None:
        try:
            fire_at = _to_epoch(step.until.evaluate(context(build.state, definition, ref)))
        except ExpressionError as exc:
            build.fail_workflow(
                definition, ErrorInfo("ExpressionError", f"step {ref.key!r} sleep_until: {exc}")
            )
            return
    else:
        fire_at = build.now + (step.seconds or 0.0)
    build.set_step(ref.key, StepState(StepStatus.WAITING, 1, build.now))
    build.history("sleep.started", step=ref.key, until=fire_at)
    if fire_at <= build.now:
        build.step_done(definition, ref, chained(build.state, definition, ref), _COMPLETED)
        return
    build.commands.append(StartTimer(TimerKind.SLEEP, ref.key, 1, fire_at))


def timer(
    build: Decision, definition: Definition, ref: Ref, current: StepState, event: TimerFired
) -> bool:
    """The ``sleep`` timer ends the step."""
    if event.kind is not TimerKind.SLEEP or current.status is not StepStatus.WAITING:
        return False
    build.step_done(definition, ref, chained(build.state, definition, ref), _COMPLETED)
    return True


def _to_epoch(value: Any) -> float:
    """Seconds since the epoch from a number or an ISO 8601 string (UTC if no zone)."""
    if isinstance(value, bool) or value is None:
        raise ExpressionError(f"sleep_until gave {value!r}, not a time")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise ExpressionError(f"sleep_until gave {value!r}, not an ISO 8601 time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        return moment.timestamp()
    raise ExpressionError(f"sleep_until gave {type(value).__name__}, not a time")
