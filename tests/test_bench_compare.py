"""The side-by-side benchmark: its table compares within durability classes, and it runs.

The smoke run covers our systems only: installing the peers downloads
packages, which a test must not need; the peers' table logic is checked on
figures made up here, and the drivers' shared helpers (CPU of a process tree,
fsync counting) on real processes. The smoke run's figures are not judged
beyond being there and being sane.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from benchruns import quick_run

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compare() -> Iterator[ModuleType]:
    """``bench/compare.py`` as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_compare", ROOT / "bench" / "compare.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


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
    output = quick_run(
        "compare.py",
        "--systems",
        "memory,nats",
        # Never touched without a peer chosen; pointed away from the checkout regardless.
        "--peer-venv",
        str(tmp_path / "peers"),
        timeout=180,
    )
    assert not (tmp_path / "peers").exists(), "a run without peers must not set them up"
    rows = table_rows(output)
    expected = {
        # (class, ratio cells): memory is outside the classes; nats has no peer here.
        "actors memory": ("outside: in memory only", "outside classes"),
        "actors nats": ("process-crash", "no peer in class"),
    }
    for system, (durability, ratio) in expected.items():
        assert system in rows, output
        _, found_class, settings, n, per_s, activities, p50, p99, cpu, vs_rate, vs_p50 = rows[
            system
        ]
        assert found_class == durability, output
        assert settings, output
        assert number(n) == 100, output
        assert number(per_s) > 0, output
        # Three activities per workflow.
        assert number(activities) == pytest.approx(3 * number(per_s), rel=0.02), output
        assert 0 < number(p50) <= number(p99) < 10_000, output
        assert 0 < number(cpu) < 1_000, output
        assert vs_rate == vs_p50 == ratio, output
    assert set(rows) == set(expected), output


def made_up(compare: ModuleType, system: str, per_s: float, p50: float) -> object:
    """An outcome of one round at N=100 with the given throughput and latency."""
    phase = compare.Phase(100, 100 / per_s, {"server": 0.5, "client": 0.25})
    found = compare.Round(phases=[phase], latencies_ms=[p50] * 3, settings=f"{system} settings")
    return compare.Outcome(system, f"{system} settings", rounds=[found])


def test_each_of_our_rows_is_compared_with_the_best_peer_of_its_own_class(
    compare: ModuleType,
) -> None:
    outcomes = [
        made_up(compare, "memory", 400, 2),
        made_up(compare, "nats", 300, 10),
        made_up(compare, "nats-sync", 150, 20),
        compare.Outcome("temporal-normal", "", error="could not install: no network"),
        made_up(compare, "temporal-full", 25, 11),
        made_up(compare, "dbos-normal", 120, 8),
        made_up(compare, "dbos-full", 80, 12),
        # Faster and quicker than every peer, but in no class: never the yardstick.
        made_up(compare, "celery", 900, 1),
    ]
    rows = table_rows(compare.table(outcomes, [100]))
    assert set(rows) == {
        "actors memory",
        "actors nats",
        "actors nats-sync",
        "temporal-normal",
        "temporal-full",
        "dbos-normal",
        "dbos-full",
        "celery",
    }
    classes = {name: cells[1] for name, cells in rows.items()}
    assert classes == {
        "actors memory": "outside: in memory only",
        "actors nats": "process-crash",
        "actors nats-sync": "power-loss",
        "temporal-normal": "process-crash",
        "temporal-full": "power-loss",
        "dbos-normal": "process-crash",
        "dbos-full": "power-loss",
        "celery": "outside: no durable workflow state",
    }
    ratios = {name: (cells[9], cells[10]) for name, cells in rows.items()}
    # process-crash: dbos-normal is the best (temporal-normal has no figures).
    assert ratios["actors nats"] == ("2.5x dbos-normal", "1.25x dbos-normal")
    # power-loss: the fastest peer and the quickest one are different peers.
    assert ratios["actors nats-sync"] == ("1.9x dbos-full", "1.82x temporal-full")
    assert ratios["actors memory"] == ("outside classes", "outside classes")
    for peer in ("temporal-full", "dbos-normal", "dbos-full", "celery"):
        assert ratios[peer] == ("", ""), peer
    assert rows["temporal-normal"][2] == "no figures: could not install: no network"
    # CPU of every process together, per workflow: (0.5 + 0.25) s / 100.
    assert rows["actors nats"][8] == "7.50"


def test_a_row_of_ours_with_no_peer_of_its_class_says_so(compare: ModuleType) -> None:
    outcomes = [made_up(compare, "nats", 300, 10), made_up(compare, "dbos-full", 80, 12)]
    rows = table_rows(compare.table(outcomes, [100]))
    assert rows["actors nats"][9:] == ["no peer in class", "no peer in class"]


def test_a_systems_list_names_a_row_per_durability_setting(compare: ModuleType) -> None:
    args = compare.parse(["--systems", "nats,dbos-normal,dbos-full,celery"])
    assert args.chosen == ["nats", "dbos-normal", "dbos-full", "celery"]
    with pytest.raises(SystemExit):
        compare.parse(["--systems", "dbos"])  # which setting? one row each


def run_child(code: str) -> subprocess.Popen[str]:
    """A Python child running ``code``, its stdin and stdout piped to this test."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_tree_cpu_counts_the_children_alive_and_exited(compare: ModuleType) -> None:
    # The child starts two grandchildren that each burn 0.3 s of CPU: one exits
    # (and is reaped), the other stays alive; then the child waits for stdin.
    burn = "import time\nwhile time.process_time() < 0.3: pass\n"
    child = run_child(
        f"""
        import subprocess, sys
        burn = {burn!r}
        alive = subprocess.Popen(
            [sys.executable, "-c", burn + "print('burnt', flush=True); input()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        alive.stdout.readline()
        subprocess.run([sys.executable, "-c", burn], check=True, timeout=60)
        print("ready", flush=True)
        sys.stdin.readline()
        alive.stdin.close()
        alive.wait(timeout=60)
        """
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        common = compare.peer_common
        own = common.proc_cpu(child.pid)
        tree = common.tree_cpu(child.pid)
        assert own < 0.3  # the child itself burnt nothing much
        # Both grandchildren's 0.3 s (a clock tick of slack each).
        assert tree - own >= 0.6 - 0.05
    finally:
        child.communicate("\n", timeout=60)
    assert child.returncode == 0


def test_fsync_count_counts_a_process_fsyncs(compare: ModuleType, tmp_path: Path) -> None:
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    child = run_child(
        f"""
        import os, sys
        with open({str(tmp_path / "data")!r}, "wb") as f:
            sys.stdin.readline()
            for _ in range(5):
                f.write(b"x")
                f.flush()
                os.fdatasync(f.fileno())
            os.fsync(f.fileno())
            print("done", flush=True)
            sys.stdin.readline()
        """
    )
    try:
        counter = compare.peer_common.FsyncCount(child.pid, tmp_path)
        if counter.unavailable is not None:
            pytest.skip(f"strace cannot attach here: {counter.unavailable}")
        assert child.stdin is not None
        assert child.stdout is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
        assert counter.stop() == 6
    finally:
        child.communicate("\n", timeout=60)
    assert child.returncode == 0
    assert os.path.getsize(tmp_path / "data") == 5


def test_the_scale_out_section_pairs_rounds_and_counts_conflicts(compare: ModuleType) -> None:
    def outcome(system: str, rates: list[float], conflicts: int) -> Any:
        rounds = [
            compare.Round(
                phases=[compare.Phase(1000, 1000 / rate, {"server": 1.0, "orchestrator": 2.0})],
                latencies_ms=[5.0] * 100,
                number=number,
                conflicts=conflicts,
            )
            for number, rate in enumerate(rates, 1)
        ]
        return compare.Outcome(system, "", rounds=rounds)

    lines = compare.scale_out(
        [
            outcome("nats", [200.0, 100.0], 0),
            outcome("nats-2x2", [300.0, 200.0], 11),
            outcome("nats-4x4", [], 0),
        ],
        [1000],
    )
    assert lines[2] == (
        "  N=1,000 1+1: 150 workflows/s (x1.00 of 1+1); CPU 3.00 ms/wf "
        "(by round: 3.00, 3.00); conflicts 0.00 per 1,000 workflows"
    )
    # Round by round: 300/200 and 200/100; 11 conflicts in each of two rounds of 1,100 workflows.
    assert lines[3] == (
        "  N=1,000 2+2: 250 workflows/s (x1.75 of 1+1); CPU 3.00 ms/wf "
        "(by round: 3.00, 3.00); conflicts 10.00 per 1,000 workflows"
    )
    assert lines[4].startswith("  N=1,000 4+4: not measured")
