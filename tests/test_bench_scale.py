"""The scale, efficiency, scaling and web UI programs still run (smoke runs: figures not judged)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from benchruns import ROOT, figures, quick_run


@pytest.mark.jetstream
def test_waiting_benchmark_quick_run() -> None:
    out = quick_run("waiting.py", timeout=300)
    # It checks itself that every instance waited and then completed.
    resumed, passivated = figures(
        out, r"\(([\d,]+) resumed/s", r"2,000 waiting and passivated (\d+) MB"
    )
    assert int(resumed.replace(",", "")) > 0
    assert 0 < int(passivated) < 1000


@pytest.mark.jetstream
def test_efficiency_benchmark_quick_run() -> None:
    out = quick_run("efficiency.py", timeout=300)
    publishes, efficiency = figures(
        out, r"stream publishes\s+([\d.]+)", r"efficiency \(engine / ceiling\): ([\d.]+)"
    )
    # A 3-activity workflow: a start, 3 results, 3 tasks and its history at least.
    assert float(publishes) >= 7
    assert 0 < float(efficiency) < 1.5


def scaling(*args: str) -> subprocess.CompletedProcess[str]:
    """``python bench/scaling.py ARGS``, run from the checkout, whatever its exit code."""
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scaling.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


#: A row of the scaling model's table: rate, partitions, orchestrators, workers, nodes.
PLAN_ROW = re.compile(r"^([\d,]+)\s+(\d+)\s+(\d+) \(busiest ([\d.]+) core\)\s+(\d+)\s+(\d+) ", re.M)


def test_scaling_model_plans_each_rate() -> None:
    """The model on its stored costs: a plan per rate, growing with the rate, each
    orchestrator within its budget, and the first limit named."""
    done = scaling("--rates", "500,5000,50000")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = PLAN_ROW.findall(done.stdout)
    assert [r[0] for r in rows] == ["500", "5,000", "50,000"], done.stdout
    partitions = [int(r[1]) for r in rows]
    orchestrators = [int(r[2]) for r in rows]
    assert all(p & (p - 1) == 0 and 16 <= p <= 1024 for p in partitions), partitions
    assert orchestrators == sorted(orchestrators)
    assert orchestrators[0] < orchestrators[-1]
    assert all(o <= p for o, p in zip(orchestrators, partitions, strict=True))
    assert all(float(r[3]) <= 0.7 for r in rows), rows
    assert done.stdout.count("first to give out as the rate grows: ") == 3, done.stdout


def test_scaling_model_refuses_bad_rates() -> None:
    done = scaling("--rates", "1000,nan")
    assert done.returncode == 2
    assert "--rates: positive numbers of workflows/s" in done.stderr


@pytest.mark.jetstream
def test_scaling_calibration_quick_run() -> None:
    """A small calibration measures every cost on one server and a 3-node cluster."""
    out = quick_run("scaling.py", "--calibrate", "--rates", "1000", timeout=300)
    assert "measured now" in out
    checks = re.findall(r"every broker cost is taken ([\d.]+) times", out)
    assert len(checks) == 2, out
    assert PLAN_ROW.search(out), out


@pytest.mark.jetstream
def test_ui_pages_benchmark_quick_run() -> None:
    out = quick_run("ui_pages.py", timeout=300)
    # Each page was answered 200 (the program checks), and every one is timed.
    timed = re.findall(r"^(.+?)\s+([\d.]+)\s+([\d.]+)\s+(ok|OVER)\s+(/\S+)$", out, re.MULTILINE)
    assert {name.strip() for name, *_ in timed} >= {"page 1", "id prefix", "instance"}, out
