"""The scale and efficiency benchmarks still run (smoke runs; their figures are not judged)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def quick(program: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / program), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.jetstream
def test_waiting_benchmark_quick_run() -> None:
    out = quick("waiting.py")
    # It checks itself that every instance waited and then completed.
    resumed = re.search(r"\(([\d,]+) resumed/s", out)
    passivated = re.search(r"2,000 waiting and passivated (\d+) MB", out)
    assert resumed, out
    assert passivated, out
    assert int(resumed.group(1).replace(",", "")) > 0
    assert 0 < int(passivated.group(1)) < 1000


@pytest.mark.jetstream
def test_efficiency_benchmark_quick_run() -> None:
    out = quick("efficiency.py")
    publishes = re.search(r"stream publishes\s+([\d.]+)", out)
    efficiency = re.search(r"efficiency \(engine / ceiling\): ([\d.]+)", out)
    assert publishes, out
    assert efficiency, out
    # A 3-activity workflow: a start, 3 results, 3 tasks and its history at least.
    assert float(publishes.group(1)) >= 7
    assert 0 < float(efficiency.group(1)) < 1.5
