"""``python -m actors dev``: the one-command dev server, and the CLI and API against it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from devserver import ROOT, Dev, start_dev, stop_dev
from metrics_samples import parse, value

pytestmark = pytest.mark.jetstream


def _actors(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m actors ARGS...`` run to its end."""
    return subprocess.run(
        [sys.executable, "-m", "actors", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    server = start_dev(
        tmp_path / "data", "--count", "5", "--token", "s3cret", "--metrics-port", "0"
    )
    try:
        yield server
    finally:
        stop_dev(server)


def test_dev_runs_the_examples_serves_the_cli_and_api_and_stops_on_ctrl_c(
    dev: Dev, tmp_path: Path
) -> None:
    text = "\n".join(dev.lines)
    assert "registered    order v3" in text
    assert re.search(r"order-\d+-large\s+completed", text), text
    assert "5 of 5 returned" in text
    assert "schedule      count-every-10-minutes" in text
    schedules = dev.cli("--json", "schedules", "list")
    assert schedules.returncode == 0, schedules.stderr
    assert [s["id"] for s in json.loads(schedules.stdout)] == ["count-every-10-minutes"]

    started = dev.cli("start", "count", "--input", '{"count": 0}', "--id", "dev-1", "--wait")
    assert started.returncode == 0, started.stderr
    assert "dev-1" in started.stdout
    listed = dev.cli("--json", "list", "--type", "count", "--status", "completed")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)["instances"]) >= 6
    history = dev.cli("--json", "history", "dev-1")
    assert history.returncode == 0, history.stderr
    assert "workflow.completed" in history.stdout

    # The API wants the token; with it, it answers.
    assert httpx.get(f"{dev.api_url}/health").status_code == 200
    assert httpx.get(f"{dev.api_url}/workflows").status_code == 401
    auth = {"Authorization": "Bearer s3cret"}
    page = httpx.get(f"{dev.api_url}/workflows", params={"type": "order"}, headers=auth)
    assert page.status_code == 200
    assert page.json()["total"] == 5
    # The web UI, at the address it printed, asks for the token.
    assert dev.ui_url == f"{dev.api_url}/ui/"
    ui = httpx.get(dev.ui_url)
    assert (ui.status_code, ui.headers["location"]) == (303, "/ui/login?next=/ui/")
    assert httpx.get(dev.ui_url, headers=auth).status_code == 200

    # The three services' metrics on one port, with the probes.
    found = re.search(r"metrics\s+(http://\S+)/metrics", text)
    assert found is not None, text
    probes = found.group(1)
    assert httpx.get(f"{probes}/readyz").text == "ready\n"
    scraped = parse(httpx.get(f"{probes}/metrics").text)
    orders = value(scraped, "actors_workflows_started_total", type="order")
    assert orders == 5  # the order along its five paths
    ended = sum(
        value(scraped, f"actors_workflows_{end}_total", type="order")
        for end in ("completed", "failed", "cancelled")
    )
    assert ended == orders
    assert value(scraped, "actors_workflows_completed_total", type="count") >= 6
    assert value(scraped, "actors_activity_attempts_total", activity="ship", outcome="completed")
    listing = {"method": "GET", "route": "/workflows", "status": "200"}
    assert value(scraped, "actors_api_requests_total", **listing) == 1

    dev.process.send_signal(signal.SIGINT)
    out, _ = dev.process.communicate(timeout=60)
    assert dev.process.returncode == 0, out
    assert "stopped" in out

    # The data folder survives: a second run finds what the first stored.
    again = start_dev(tmp_path / "data", "--no-examples", "--once")
    rest, _ = again.process.communicate(timeout=60)
    assert again.process.returncode == 0, rest
    assert "registered    order v3" in "\n".join(again.lines)
    assert "count-every-10-minutes (exists already)" in "\n".join(again.lines)


def test_one_data_folder_one_server(tmp_path: Path) -> None:
    # Regression: a second server on a store in use corrupted it ("corrupt
    # state file" on recovery, completed instances with a step scheduled).
    first = start_dev(None, "--no-examples", cwd=tmp_path)
    try:
        data = tmp_path / "data"
        log = data / "nats" / "nats-server.log"
        runs = log.read_text().count("=== ")
        for command in ("dev", "demo"):
            refused = _actors(command, "--data", str(data), "--count", "1", cwd=tmp_path)
            assert refused.returncode != 0, refused.stdout
            lines = refused.stderr.strip().splitlines()
            assert len(lines) == 1, refused.stderr
            assert f"{data / 'nats'} is in use by nats-server pid" in lines[0], lines[0]
            assert f"of pid {first.process.pid} (" in lines[0], lines[0]
        assert log.read_text().count("=== ") == runs, "a second server ran on the store"

        # The first serves on, unharmed.
        started = first.cli("start", "count", "--input", '{"count": 0}', "--id", "kept", "--wait")
        assert started.returncode == 0, started.stderr

        # demo's own default folder is not dev's: it runs beside it.
        demo = _actors("demo", "--count", "3", cwd=tmp_path, timeout=180)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "3 of 3 returned" in demo.stdout
        assert (data / "demo" / "nats" / "nats-server.log").is_file()

        # A holder killed outright lets go: the next start gets the folder,
        # and what the first stored.
        first.process.kill()
        first.process.wait()
        again = start_dev(data, "--no-examples")
        try:
            status = again.cli("--json", "status", "kept")
            assert status.returncode == 0, status.stderr
            assert json.loads(status.stdout)["status"] == "completed"
            again.process.send_signal(signal.SIGINT)
            out, _ = again.process.communicate(timeout=60)
            assert again.process.returncode == 0, out
        finally:
            stop_dev(again)
    finally:
        stop_dev(first)
