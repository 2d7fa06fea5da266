"""Activities that write down every execution, for the process-level tests.

Serve them with ``python -m actors.worker --activities tests.engine.ledger_activities``
and the environment variable ``LEDGER_FILE`` naming the ledger. Every execution
appends JSON lines to it (``O_APPEND``, one ``write`` per line, then ``fsync``), so
the ledger survives a SIGKILL of the worker right after the line is written:

* ``{"phase": "begin", ...}`` when the activity starts,
* ``{"phase": "end", ...}`` just before it returns,

each with the activity, the instance, step, attempt, delivery (1, then 2 after a redelivery)
and the worker's pid. Outputs are deterministic: the input with ``count`` plus one
and the step's id appended to ``trail``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

import actors

#: The environment variable naming the ledger file.
LEDGER_ENV: Final = "LEDGER_FILE"


def record(phase: str, info: actors.ActivityInfo | None = None) -> None:
    """Append one line for the activity running now (or ``info``'s) to the ledger."""
    path = os.environ.get(LEDGER_ENV)
    if not path:
        raise RuntimeError(f"set {LEDGER_ENV} to the ledger file's path")
    info = info or actors.activity_info()
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


def next_value(value: dict[str, Any], step: str) -> dict[str, Any]:
    """The output every ledger activity returns for ``value`` at ``step``."""
    return {
        **value,
        "count": value.get("count", 0) + 1,
        "trail": [*value.get("trail", []), step],
    }


@actors.activity
def ledger_increment(value: dict[str, Any]) -> dict[str, Any]:
    """Count one step (a sync activity: it runs in a worker thread)."""
    record("begin")
    output = next_value(value, actors.activity_info().step)
    record("end")
    return output


#: Beside the ledger, a file whose presence says ``ledger_buggy``'s bug is fixed.
FIXED_SUFFIX: Final = ".fixed"


@actors.activity
def ledger_buggy(value: dict[str, Any]) -> dict[str, Any]:
    """Like ``ledger_increment``, but fails for good until the bug is fixed (see FIXED_SUFFIX)."""
    record("begin")
    if not Path(os.environ[LEDGER_ENV] + FIXED_SUFFIX).exists():
        raise actors.ActivityError("the bug", type="Bug", non_retryable=True)
    output = next_value(value, actors.activity_info().step)
    record("end")
    return output


@actors.activity
async def ledger_slow(value: dict[str, Any]) -> dict[str, Any]:
    """Like ``ledger_increment``, after ``value["seconds"]`` of heartbeating work."""
    record("begin")
    deadline = trio.current_time() + float(value.get("seconds", 1.0))
    while trio.current_time() < deadline:
        actors.heartbeat()
        await trio.sleep(min(0.1, max(0.0, deadline - trio.current_time())))
    output = next_value(value, actors.activity_info().step)
    record("end")
    return output


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


def duplicate_runs(entries: list[Entry]) -> dict[tuple[str, str], int]:
    """(instance, step) -> how many times it began beyond the first (at least once)."""
    begun = Counter((e.instance, e.step) for e in entries if e.phase == "begin")
    return {key: n - 1 for key, n in begun.items() if n > 1}
