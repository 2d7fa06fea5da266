"""The engine benchmark still runs (a smoke run; its figures are not judged here)."""

from __future__ import annotations

import pytest
from benchruns import quick_run


@pytest.mark.jetstream
def test_engine_benchmark_quick_run() -> None:
    out = quick_run("engine.py", timeout=180)
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    for transport in ("memory", "nats"):
        assert transport in rows, out
        assert float(rows[transport][1].replace(",", "")) > 0, out
    assert "both exited 0" in out
