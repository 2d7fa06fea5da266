"""The scale and efficiency benchmarks still run (smoke runs; their figures are not judged)."""

from __future__ import annotations

import pytest
from benchruns import figures, quick_run


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
