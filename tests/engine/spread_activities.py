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

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

import actors

#: The environment variable naming the ledger file (the one ``processes.py`` sets).
LEDGER_ENV: Final = "LEDGER_FILE"
#: The activity types, by the short name the tests use.
ACTIVITIES: Final = {"A": "spread_a", "B": "spread_b", "C": "spread_c"}


def _record(phase: str, info: actors.ActivityInfo) -> None:
    path = os.environ.get(LEDGER_ENV)
    if not path:
        raise RuntimeError(f"set {LEDGER_ENV} to the ledger file's path")
    line = json.dumps(
        {
            "phase": phase,
            "activity": info.activity,
            "instance": info.instance_id,
            "step": info.step,
            "attempt": info.attempt,
            "delivery": info.delivery,
            "pid": os.getpid(),
        }
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def next_value(value: dict[str, Any], activity: str, step: str) -> dict[str, Any]:
    """What every spread activity returns for ``value`` at ``step``."""
    return {**value, "trail": [*value.get("trail", []), f"{activity}:{step}"]}


async def _run(value: dict[str, Any]) -> dict[str, Any]:
    info = actors.activity_info()
    # The fsync is blocking: keep it off the Trio loop.
    await trio.to_thread.run_sync(_record, "begin", info)
    await trio.sleep(float(value.get("sleep", 0.05)))
    output = next_value(value, info.activity, info.step)
    await trio.to_thread.run_sync(_record, "end", info)
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


# -- reading the ledger (test side) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    phase: str
    activity: str
    instance: str
    step: str
    attempt: int
    delivery: int
    pid: int


def read_ledger(path: Path) -> list[Entry]:
    """Every complete line of the ledger (a line cut by a kill is skipped)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return list(_parse(text))


def _parse(text: str) -> Iterator[Entry]:
    for line in text.splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        yield Entry(**data)
