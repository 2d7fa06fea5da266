"""A dev server (``python -m actors dev``) run as a process, for the tests that drive it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Dev:
    """A running dev server: its process and where it listens."""

    def __init__(self, process: subprocess.Popen[str], lines: list[str]) -> None:
        self.process = process
        self.lines = lines
        text = "\n".join(lines)
        nats = re.search(r"nats-server\s+(nats://\S+)", text)
        api = re.search(r"HTTP API\s+(http://\S+)", text)
        assert nats is not None, text
        assert api is not None, text
        self.nats_url, self.api_url = nats.group(1), api.group(1)
        ui = re.search(r"web UI\s+(http://\S+)", text)
        self.ui_url = None if ui is None else ui.group(1)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "actors", "--url", self.nats_url, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def start_dev(data: Path | None, *options: str, cwd: Path = ROOT) -> Dev:
    """A dev server on ``data`` (``None``: its default, ``./data`` of ``cwd``), once it serves."""
    folder = () if data is None else ("--data", str(data))
    process = subprocess.Popen(
        [sys.executable, "-m", "actors", "dev", *folder, "--api-port", "0", *options],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if line.startswith(("serving", "stopped")):
            return Dev(process, lines)
    process.kill()
    raise AssertionError("the dev server did not come up:\n" + "\n".join(lines))


def stop_dev(server: Dev) -> None:
    """Kill the dev server's process if it still runs, and close its pipe."""
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait()
    assert server.process.stdout is not None
    server.process.stdout.close()
