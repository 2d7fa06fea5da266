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

from ._expressions import Expression, ExpressionError

if TYPE_CHECKING:
    from ._definition import Definition
    from ._parse import Checker

__all__ = ["MAX_CONCURRENCY_LIMITS", "ConcurrencyLimit", "key_values", "parse_concurrency"]

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
    values: list[str | int | float] = []
    for i, limit in enumerate(definition.concurrency):
        value = limit.key.evaluate(context)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ExpressionError(
                f"concurrency[{i}].key {limit.key.source!r} gave {_kind(value)}; "
                "a key must be a string or a number"
            )
        if isinstance(value, str) and len(value) > MAX_KEY_LENGTH:
            raise ExpressionError(
                f"concurrency[{i}].key gave a string of {len(value)} characters; "
                f"the limit is {MAX_KEY_LENGTH}"
            )
        values.append(value)
    return values


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, list):
        return "a list"
    return "a mapping" if isinstance(value, dict) else type(value).__name__
