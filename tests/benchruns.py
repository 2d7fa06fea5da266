"""Smoke runs of the programs under ``bench/``: they still run (their figures are not judged).

Shared by ``test_bench_*.py``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quick_run(program: str, *args: str, timeout: float) -> str:
    """The output (stdout) of ``python bench/PROGRAM --quick ARGS``, run from the checkout.

    Fails the test, with everything the program printed, if it does not exit 0
    within ``timeout`` seconds.
    """
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / program), "--quick", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def figures(output: str, *patterns: str) -> list[str]:
    """The first group of each pattern's first match in ``output``, in order.

    Fails the test, naming the pattern and showing the output, if one does not match.
    """
    found: list[str] = []
    for pattern in patterns:
        match = re.search(pattern, output)
        assert match, f"no {pattern!r} in:\n{output}"
        found.append(match.group(1))
    return found
