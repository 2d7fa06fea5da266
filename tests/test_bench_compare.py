"""The side-by-side benchmark runs and prints our rows (a smoke run of our systems only).

The peers are left out: installing them downloads packages, which a test must
not need. The figures are not judged beyond being there and being sane.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def table_rows(output: str) -> dict[str, list[str]]:
    """The Markdown table's rows by their first cell, each as its stripped cells."""
    rows: dict[str, list[str]] = {}
    for line in output.splitlines():
        if line.startswith("| ") and not line.startswith("| system"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


def number(text: str) -> float:
    return float(text.replace(",", "").split()[0])


@pytest.mark.jetstream
def test_compare_quick_run_of_our_rows(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "compare.py"),
            "--quick",
            "--systems",
            "memory,nats",
            # Never touched without a peer chosen; pointed away from the checkout regardless.
            "--peer-venv",
            str(tmp_path / "peers"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert not (tmp_path / "peers").exists(), "a run without peers must not set them up"
    rows = table_rows(done.stdout)
    for system in ("actors memory", "actors nats"):
        assert system in rows, output
        _, settings, n, per_s, activities, p50, p99, cpu, vs_rate, vs_p50 = rows[system]
        assert settings, output
        assert number(n) == 100, output
        assert number(per_s) > 0, output
        # Three activities per workflow.
        assert number(activities) == pytest.approx(3 * number(per_s), rel=0.02), output
        assert 0 < number(p50) <= number(p99) < 10_000, output
        assert 0 < number(cpu) < 1_000, output
        assert vs_rate == vs_p50 == "no peer", output
    assert "temporal" not in rows, output
    assert "dbos" not in rows, output
