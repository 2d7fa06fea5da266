"""The engine benchmark still runs (a smoke run; its figures are not judged here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.jetstream
def test_engine_benchmark_quick_run() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "engine.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.strip()}
    for transport in ("memory", "nats"):
        assert transport in rows, done.stdout
        assert float(rows[transport][1].replace(",", "")) > 0, done.stdout
    assert "both exited 0" in done.stdout
