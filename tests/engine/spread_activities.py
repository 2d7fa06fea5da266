"""Three activity types, ``spread_a``, ``spread_b`` and ``spread_c``, that log who ran them.

Serve some of them with ``python -m actors.worker --activities
tests.engine.spread_activities --only spread_a spread_b`` and the environment
variable ``LEDGER_FILE`` naming the ledger. Each execution appends two JSON lines
to it (``O_APPEND``, one ``write`` per line, then ``fsync``, so a line survives a
SIGKILL right after it), ``{"phase": "begin", ...}`` when it starts and
``{"phase": "end", ...}`` just before it returns, each with the activity, the
instance, step, attempt, delivery and the worker's pid. In between it sleeps
``value["sleep"]`` seconds (0.05 by default), so that tasks overlap.

Outputs are deterministic: the input with ``"{activity}:{step}"`` appended to
``trail`` (see :func:`next_value`).
"""

from __future__ import annotations

from typing import Any, Final

import trio

import actors

# The worker imports this module as ``tests.engine.spread_activities``; the
# ledger (its format, writer and reader) is the process tests' own.
from tests.engine.ledger_activities import Entry, read_ledger, record

__all__ = ["ACTIVITIES", "Entry", "next_value", "read_ledger"]

#: The activity types, by the short name the tests use.
ACTIVITIES: Final = {"A": "spread_a", "B": "spread_b", "C": "spread_c"}


def next_value(value: dict[str, Any], activity: str, step: str) -> dict[str, Any]:
    """What every spread activity returns for ``value`` at ``step``."""
    return {**value, "trail": [*value.get("trail", []), f"{activity}:{step}"]}


async def _run(value: dict[str, Any]) -> dict[str, Any]:
    info = actors.activity_info()
    # The fsync is blocking: keep it off the Trio loop.
    await trio.to_thread.run_sync(record, "begin", info)
    await trio.sleep(float(value.get("sleep", 0.05)))
    output = next_value(value, info.activity, info.step)
    await trio.to_thread.run_sync(record, "end", info)
    return output


@actors.activity
async def spread_a(value: dict[str, Any]) -> dict[str, Any]:
    return await _run(value)


@actors.activity
async def spread_b(value: dict[str, Any]) -> dict[str, Any]:
    return await _run(value)


@actors.activity
async def spread_c(value: dict[str, Any]) -> dict[str, Any]:
    return await _run(value)
