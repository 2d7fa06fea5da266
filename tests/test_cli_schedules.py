"""``python -m actors schedules ...`` against a real engine (test_cli's module engine)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from test_cli import Engine, assert_clean_error, assert_ok, engine

from actors.cli import ExitCode

__all__ = ["engine"]

pytestmark = pytest.mark.jetstream


def _wait_runs(engine: Engine, schedule_id: str, count: int, seconds: float = 30) -> dict[str, Any]:
    # Another process fires it: poll what describe says.
    deadline = time.monotonic() + seconds
    while True:
        data = engine.json("schedules", "describe", schedule_id)
        done = [r for r in data["runs"] if r["status"] == "completed"]
        if len(done) >= count:
            result: dict[str, Any] = data
            return result
        assert time.monotonic() < deadline, repr(data)
        time.sleep(0.2)


def test_schedules_create_describe_pause_trigger_backfill_delete(
    engine: Engine, tmp_path: Path
) -> None:
    spec = tmp_path / "every.yaml"
    spec.write_text(
        "id: every-second\nworkflow: count\ninput: {count: 0}\nspec: {intervals: [1s]}\n"
    )
    assert_ok(engine("schedules", "create", str(spec)), "created schedule every-second")
    data = _wait_runs(engine, "every-second", 2)
    assert data["started"] >= 2
    assert len(data["next_fires"]) == 5
    assert all(r["kind"] == "scheduled" for r in data["runs"])
    assert engine.json("schedules", "pause", "every-second", "--note", "downstream down") == {
        "id": "every-second",
        "paused": True,
        "note": "downstream down",
    }
    paused = engine.json("schedules", "describe", "every-second")
    assert (paused["paused"], paused["note"], paused["next_fires"]) == (
        True,
        "downstream down",
        [],
    )
    described = engine("schedules", "describe", "every-second")
    assert_ok(described, "paused (downstream down)", "completed")
    listed = engine.json("schedules", "list")
    assert [row["id"] for row in listed] == ["every-second"]
    triggered = engine("schedules", "trigger", "every-second")
    assert_ok(triggered, "every-second-")
    instance = triggered.out.strip()
    assert instance.endswith("-now")
    result = engine("result", instance, "--wait", "30")
    assert result.code == 0, result
    backfill = engine.json(
        "schedules",
        "backfill",
        "every-second",
        "--from",
        "2026-01-01T00:00:00Z",
        "--to",
        "2026-01-01T00:00:02Z",
    )
    assert backfill == {"id": "every-second", "fires": 3}
    assert_ok(engine("result", "every-second-20260101T000000Z", "--wait", "30"))
    # With --json every command answers with a document a script can read.
    again = engine.json("schedules", "trigger", "every-second")
    assert again["id"] == "every-second"
    assert again["instance"].startswith("every-second-")
    assert_ok(engine("schedules", "unpause", "every-second"), "unpaused")
    assert engine.json("schedules", "delete", "every-second") == {
        "id": "every-second",
        "deleted": True,
    }
    assert_clean_error(
        engine("schedules", "describe", "every-second"), ExitCode.NOT_FOUND, "every-second"
    )


def test_schedules_create_from_flags_and_mistakes(engine: Engine) -> None:
    created = engine.json(
        "schedules",
        "create",
        "--id",
        "nightly",
        "--workflow",
        "count",
        "--cron",
        "30 2 * * *",
        "--timezone",
        "Europe/Berlin",
        "--input",
        '{"count": 5}',
        "--overlap",
        "buffer_one",
    )
    assert created["spec"]["cron"] == [{"expression": "30 2 * * *", "timezone": "Europe/Berlin"}]
    assert (created["overlap"], created["input"]) == ("buffer_one", {"count": 5})
    assert_clean_error(
        engine("schedules", "create", "--id", "nightly", "--workflow", "count", "--every", "1h"),
        ExitCode.INVALID,
        "exists",
    )
    assert_clean_error(
        engine("schedules", "create", "--id", "bad", "--workflow", "count", "--cron", "99 * * * *"),
        ExitCode.INVALID,
        "99 * * * *",
    )
    assert_clean_error(
        engine("schedules", "create", "--id", "x", "--workflow", "nosuch", "--every", "1h"),
        ExitCode.NOT_FOUND,
        "nosuch",
    )
    assert_clean_error(engine("schedules", "trigger", "nosuch"), ExitCode.NOT_FOUND, "nosuch")
    assert_ok(engine("schedules", "delete", "nightly"))
