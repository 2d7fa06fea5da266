"""What the peer drivers share: the workload, the phases, CPU counters, child processes.

The peer drivers (``temporal_bench.py``, ``dbos_bench.py``) run with the
peers' own interpreter (the benchmark's separate virtual environment), where
neither this project nor Trio is installed. So this module uses the standard
library only, and the drivers import it as a neighbour (their folder is first
on ``sys.path`` when run as scripts).

The contract with ``bench/compare.py``: a driver is run as
``python DRIVER --workflows 1000,5000 --latency 200 --workdir DIR`` and
either prints one line ``RESULT {json}`` (see :func:`emit`) and exits 0, or
exits non-zero with the reason on a ``FAILED: `` line of its stderr. Every wait in
a driver is bounded; a driver that overruns is killed by the caller.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

#: The workload's input and the result every workflow must return.
INPUT: Final[dict[str, int]] = {"count": 0}
EXPECTED: Final[dict[str, int]] = {"count": 3}
ACTIVITIES_PER_WORKFLOW: Final = 3
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
#: The prefix of the one line of stdout that carries the figures.
RESULT_MARK: Final = "RESULT "
#: The prefix of the stderr line that says why a driver failed.
FAILED_MARK: Final = "FAILED: "
#: How often a client tries one call the system refused for overload, and the
#: pause between tries (seconds).
ATTEMPTS: Final = 10
RETRY_PAUSE: Final = 0.5


class Retries:
    """The calls a driver's client tried again (see ``ATTEMPTS``), by kind of call and error."""

    def __init__(self) -> None:
        self.count = 0
        self.kinds: dict[str, int] = {}

    def add(self, kind: str) -> None:
        """Count one retry of ``kind`` (say, ``"start DEADLINE_EXCEEDED"``)."""
        self.count += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1


def increment(value: dict[str, Any]) -> dict[str, Any]:
    """The activity's body, the same as ``actors.examples.activities.increment``."""
    return {**value, "count": value.get("count", 0) + 1}


def check(result: object) -> None:
    """Raise unless ``result`` is what the workload returns."""
    if result != EXPECTED:
        raise AssertionError(f"a workflow returned {result!r}, not {EXPECTED!r}")


# -- CPU ------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc), every thread."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces: count the fields after its ')'.
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def own_cpu() -> float:
    """CPU seconds of this process so far (every thread)."""
    return time.process_time()


# -- the phases -----------------------------------------------------------------


async def throughput(run_one: Callable[[], Awaitable[object]], n: int) -> float:
    """Run ``n`` workflows at once; the seconds from the first start to the last result.

    ``run_one`` starts one workflow and returns its result, which is checked.
    Cancelled from outside (a timeout), it cancels every workflow's task.
    """

    async def one() -> None:
        check(await run_one())

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - start


async def latencies(run_one: Callable[[], Awaitable[object]], m: int) -> list[float]:
    """Run ``m`` workflows one after another; each one's start-to-result time in ms."""
    found: list[float] = []
    for _ in range(m):
        start = time.perf_counter()
        check(await run_one())
        found.append((time.perf_counter() - start) * 1000)
    return found


async def measure(
    run_one: Callable[[], Awaitable[object]],
    sizes: Sequence[int],
    m: int,
    cpu: Callable[[], dict[str, float]],
    phase_timeout: float,
) -> tuple[list[dict[str, Any]], list[float]]:
    """One warm-up workflow, a throughput phase per size, then the latency phase.

    ``cpu`` reads every process's CPU counter by name; each throughput phase
    records what each spent during it. Each phase (the warm-up too) is cut
    off with ``TimeoutError`` after ``phase_timeout`` seconds. Returns (the
    phases, the latencies).
    """
    # Warm-up: the first workflow pays for connections, caches and the
    # workers' first polls; none of that belongs in the figures.
    async with asyncio.timeout(phase_timeout):
        check(await run_one())
    phases: list[dict[str, Any]] = []
    for n in sizes:
        before = cpu()
        async with asyncio.timeout(phase_timeout):
            seconds = await throughput(run_one, n)
        after = cpu()
        spent = {name: after[name] - before[name] for name in before}
        phases.append({"workflows": n, "seconds": seconds, "cpu": spent})
    async with asyncio.timeout(phase_timeout):
        lat = await latencies(run_one, m)
    return phases, lat


# -- the driver's command line and output -----------------------------------------


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The arguments every driver takes (see the module docstring)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workflows", default="1000", help="sizes of the throughput phases")
    parser.add_argument("--latency", type=int, default=200, help="workflows one after another")
    parser.add_argument("--workdir", type=Path, required=True, help="an empty folder to use")
    parser.add_argument(
        "--phase-timeout", type=float, default=900.0, help="seconds any one phase may take"
    )
    args = parser.parse_args(argv)
    args.sizes = [int(x) for x in args.workflows.split(",") if x.strip()]
    if not args.sizes or min(args.sizes) < 1 or args.latency < 1:
        parser.error("--workflows and --latency must be at least 1")
    return args


def emit(
    settings: str,
    versions: str,
    phases: list[dict[str, Any]],
    lat: list[float],
    retries: Retries | None = None,
) -> None:
    """Print the figures as the one ``RESULT`` line ``bench/compare.py`` reads.

    ``retries`` are the calls the client tried again over the whole run.
    """
    payload = {
        "settings": settings,
        "versions": versions,
        "phases": phases,
        "latencies_ms": lat,
        "p50_ms": statistics.median(lat),
        "retries": retries.count if retries else 0,
        "retried": retries.kinds if retries else {},
    }
    print(RESULT_MARK + json.dumps(payload), flush=True)


def fail(reason: str) -> None:
    """End the driver, ``reason`` on a ``FAILED:`` line of stderr.

    Not necessarily the last line: a peer's own threads may still log while
    the process exits, so the caller looks for the mark.
    """
    print(FAILED_MARK + reason.replace("\n", " | "), file=sys.stderr, flush=True)
    raise SystemExit(1)


# -- ports and child processes ----------------------------------------------------


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 a moment ago (held until all are chosen)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel to SIGKILL the child when this process dies.

    Linux only, and only from the main thread (the signal follows the forking
    thread, not the process).
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not (
        threading.main_thread()
    ):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def setup() -> None:
        prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return setup


class Child:
    """A child process with its output in a log file; always reaped by :meth:`stop`."""

    def __init__(self, name: str, argv: list[str], log_path: Path, cwd: Path) -> None:
        self.name = name
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_for_log(self, mark: str, timeout: float) -> None:
        """Wait until ``mark`` is in the log; raise if the child exits or time runs out."""
        deadline = time.monotonic() + timeout
        # Another process's log is all there is to wait on: poll it.
        while mark not in self.log_path.read_text(errors="replace"):
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(f"{self.name} exited with {code}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout}s: {self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL past ``timeout``; returns once the child is reaped."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
        self.proc.wait()
