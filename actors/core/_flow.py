"""Workflow-level concurrency limits: what a definition says, and the keys it gives.

A definition's ``concurrency`` is a list of limits, each a key expression
and a number: at most ``limit`` instances of the type run at once per value
of the key. The core only names the keys (:func:`key_values`); the slots
themselves are held on the broker by the runtime (``actors.runtime._flow``),
which tells ``decide``'s neighbours :func:`~._decide.queue_instance` and
:func:`~._decide.admit_instance` when an instance must wait or may go.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ._expressions import Expression, ExpressionError, kind_of

if TYPE_CHECKING:
    from ._definition import Definition
    from ._parse import Checker
    from ._state import InstanceState

__all__ = [
    "MAX_CONCURRENCY_LIMITS",
    "ConcurrencyLimit",
    "RateLimit",
    "StepLimit",
    "attempt_key_value",
    "key_values",
    "parse_concurrency",
    "parse_rate",
    "parse_step_limit",
    "step_key_value",
    "step_limit",
]

#: Limits one definition may have (each costs a slot read and write per start).
MAX_CONCURRENCY_LIMITS: Final = 8
#: The largest ``limit``.
MAX_LIMIT: Final = 1_000_000
#: The longest key value, in characters (a key value names a slot).
MAX_KEY_LENGTH: Final = 256
_FIELDS: Final = frozenset({"key", "limit"})


@dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    """At most ``limit`` running instances per value of ``key``."""

    key: Expression
    limit: int

    def to_data(self) -> dict[str, Any]:
        return {"key": self.key.source, "limit": self.limit}


@dataclass(frozen=True, slots=True)
class StepLimit:
    """At most ``limit`` attempts of an activity step out at once per value of ``key``.

    ``key=None``: one count for every attempt of the step's activity under this limit.
    """

    key: Expression | None
    limit: int

    @property
    def source(self) -> str:
        """The key expression as written (``""`` without one)."""
        return "" if self.key is None else self.key.source

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"limit": self.limit}
        if self.key is not None:
            data["key"] = self.key.source
        return data


#: The fields of a rate limit.
_RATE_FIELDS: Final = frozenset({"limit", "period", "burst", "key"})
#: The longest period of a rate limit (a day).
MAX_PERIOD: Final = 86400.0


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``limit`` attempts started per ``period`` seconds per value of ``key``.

    ``burst``: how many may start at once after a quiet time (1: evenly
    spaced, one every ``period / limit`` seconds).
    """

    limit: int
    period: float
    burst: int = 1
    key: Expression | None = None

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"limit": self.limit, "period": self.period, "burst": self.burst}
        if self.key is not None:
            data["key"] = self.key.source
        return data

    def pace(
        self, activity: str, definition: Definition, instance_id: str, input: Any
    ) -> dict[str, Any]:
        """What a task carries for its worker to pace it (``ScheduleActivity.rate``).

        Raises :class:`ExpressionError` if the key gives no string or number.
        """
        value: str | int | float = ""
        if self.key is not None:
            context = {
                "input": input,
                "workflow": {
                    "id": instance_id,
                    "type": definition.type,
                    "version": definition.version,
                },
            }
            value = _checked(self.key, self.key.evaluate(context), "rate.key")
        return {
            "activity": activity,
            "key": "" if self.key is None else self.key.source,
            "value": value,
            "limit": self.limit,
            "period": self.period,
            "burst": self.burst,
        }


def parse_rate(checker: Checker, data: object) -> RateLimit | None:
    """An activity step's ``rate`` (absent: ``None``), problems to ``checker``."""
    if data is None:
        return None
    with checker.at("rate"):
        fields = checker.mapping(data, _RATE_FIELDS, "a rate limit ({limit, period, burst, key})")
        if fields is None:
            return None
        before = len(checker.errors)
        limit = checker.integer(fields, "limit", 0, 1, MAX_LIMIT, f"must be from 1 to {MAX_LIMIT}")
        period = checker.duration(fields, "period", positive=True)
        if "period" not in fields:
            with checker.at("period"):
                checker.error("required: a duration (1s, 1m)")
        elif period is not None and period > MAX_PERIOD:
            with checker.at("period"):
                checker.error("must be at most a day")
        burst = checker.integer(fields, "burst", 1, 1, MAX_LIMIT, f"must be from 1 to {MAX_LIMIT}")
        key = checker.expression(fields, "key")
        if len(checker.errors) != before or limit is None or period is None or burst is None:
            return None
        return RateLimit(limit, period, burst, key)


def parse_step_limit(checker: Checker, data: object) -> StepLimit | None:
    """An activity step's ``concurrency`` (absent: ``None``), problems to ``checker``."""
    if data is None:
        return None
    with checker.at("concurrency"):
        fields = checker.mapping(data, _FIELDS, "a concurrency limit ({key, limit})")
        if fields is None:
            return None
        key = checker.expression(fields, "key")
        limit = checker.integer(fields, "limit", 0, 1, MAX_LIMIT, f"must be from 1 to {MAX_LIMIT}")
        return None if limit is None else StepLimit(key, limit)


def step_limit(definition: Definition, step: str) -> tuple[str, StepLimit] | None:
    """The activity and the limit of the step ``step`` (a step key) names, if it has one.

    A compensation (``~undo``) has none: undoing is never held back.
    """
    from ._refs import resolve
    from ._steps import ActivityStep

    ref = resolve(definition, step)
    if ref is None or ref.undo or not isinstance(ref.step, ActivityStep):
        return None
    limit = ref.step.concurrency
    return None if limit is None else (ref.step.activity, limit)


def attempt_key_value(
    definition: Definition, state: InstanceState, step: str
) -> tuple[str, StepLimit, str | int | float] | None:
    """The activity, limit and key value of the attempts of ``step`` (a step key).

    ``None`` for a step without a limit, or one whose input or key fails
    (its attempt failed on it and took no slot). The input is computed
    again from ``state``: what it depends on (the workflow's input, the
    outputs of completed steps) does not change while the step runs.
    """
    from ._refs import resolve
    from ._scope import input_of
    from ._steps import ActivityStep

    ref = resolve(definition, step)
    if ref is None or ref.undo or not isinstance(ref.step, ActivityStep):
        return None
    limit = ref.step.concurrency
    if limit is None:
        return None
    try:
        value = input_of(state, definition, ref, ref.step.input)
        return ref.step.activity, limit, step_key_value(limit, definition, state.id, value)
    except ExpressionError:
        return None


def step_key_value(
    limit: StepLimit, definition: Definition, instance_id: str, input: Any
) -> str | int | float:
    """The value of a step limit's key for an attempt given ``input`` (the activity's input).

    The key sees ``input`` (what the activity is given) and ``workflow``.
    Raises :class:`ExpressionError` as :func:`key_values` does.
    """
    if limit.key is None:
        return ""
    context = {
        "input": input,
        "workflow": {"id": instance_id, "type": definition.type, "version": definition.version},
    }
    return _checked(limit.key, limit.key.evaluate(context), "concurrency.key")


def parse_concurrency(checker: Checker, data: object) -> tuple[ConcurrencyLimit, ...]:
    """The ``concurrency`` field of a definition (absent: no limit), problems to ``checker``."""
    if data is None:
        return ()
    limits: list[ConcurrencyLimit] = []
    with checker.at("concurrency"):
        if not isinstance(data, list) or not data:
            checker.error("must be a list of at least one limit ({key, limit})")
            return ()
        if len(data) > MAX_CONCURRENCY_LIMITS:
            checker.error(f"{len(data)} limits; at most {MAX_CONCURRENCY_LIMITS}")
            return ()
        for i, item in enumerate(data):
            with checker.at(f"[{i}]"):
                fields = checker.mapping(item, _FIELDS, "a concurrency limit")
                if fields is None:
                    continue
                key = checker.expression(fields, "key", required="a key expression")
                limit = checker.integer(
                    fields, "limit", 0, 1, MAX_LIMIT, f"must be from 1 to {MAX_LIMIT}"
                )
                if key is not None and limit is not None:
                    limits.append(ConcurrencyLimit(key, limit))
    return tuple(limits)


def key_values(definition: Definition, instance_id: str, input: Any) -> list[str | int | float]:
    """The value of each of ``definition``'s concurrency keys for an instance, in order.

    A key sees ``input`` and ``workflow`` (``id``, ``type``, ``version``).
    Raises :class:`ExpressionError` if a key fails or is not a string or a
    number (``null`` and booleans included: a key names a slot, and a
    missing field is more likely a mistake than a shared slot).
    """
    context: Mapping[str, Any] = {
        "input": input,
        "workflow": {"id": instance_id, "type": definition.type, "version": definition.version},
    }
    return [
        _checked(limit.key, limit.key.evaluate(context), f"concurrency[{i}].key")
        for i, limit in enumerate(definition.concurrency)
    ]


def _checked(key: Expression, value: object, where: str) -> str | int | float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ExpressionError(
            f"{where} {key.source!r} gave {kind_of(value)}; a key must be a string or a number"
        )
    if isinstance(value, str) and len(value) > MAX_KEY_LENGTH:
        raise ExpressionError(
            f"{where} gave a string of {len(value)} characters; the limit is {MAX_KEY_LENGTH}"
        )
    return value
