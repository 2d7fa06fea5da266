"""What the peer drivers share: the workload, the phases, CPU counters, child processes.

The peer drivers (``temporal_bench.py``, ``dbos_bench.py``,
``celery_bench.py``) run with the peers' own interpreter (the benchmark's
separate virtual environment), where neither this project nor Trio is
installed. So this module uses the standard library only, and the drivers
import it as a neighbour (their folder is first on ``sys.path`` when run as
scripts).

The contract with ``bench/compare.py``: a driver is run as
``python DRIVER --workflows 1000,5000 --latency 200 --workdir DIR`` (the
SQLite peers also take ``--synchronous normal|full``, see :data:`SYNCHRONOUS`) and
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
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn, Protocol

#: The workload's input and the result every workflow must return.
INPUT: Final[dict[str, int]] = {"count": 0}
EXPECTED: Final[dict[str, int]] = {"count": 3}
ACTIVITIES_PER_WORKFLOW: Final = 3
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
#: The prefix of the one line of stdout that carries the figures.
RESULT_MARK: Final = "RESULT "
#: The prefix of the stderr line that says why a driver failed.
FAILED_MARK: Final = "FAILED: "
#: The SQLite ``synchronous`` settings a driver may be asked for, by the
#: ``--synchronous`` value: NORMAL (in WAL mode, fsync only at checkpoints: a
#: commit survives a crash of the process, the last ones may be lost on a power
#: loss) and FULL (the WAL fsynced at every commit).
SYNCHRONOUS: Final[dict[str, int]] = {"normal": 1, "full": 2}
#: SQLite's names of the values ``PRAGMA synchronous`` reads back.
SYNCHRONOUS_NAMES: Final[dict[int, str]] = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
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


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds so far of process ``pid`` and every descendant of it.

    For a service that forks its workers (Celery's prefork pool, Redis's
    background saves). Each live process of the tree counts its own time and
    the time of the children it has reaped (``cutime``, ``cstime``), so a child
    that already exited still counts, once. A child that exits between two
    reads and is not reaped by then is missed: none of the services here does
    that during a phase.
    """
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone since the listing
            continue
        # The command name (field 2) may hold spaces: count the fields after its ')'.
        stats[int(entry.name)] = stat.rpartition(")")[2].split()
    if pid not in stats:
        raise ProcessLookupError(f"no process {pid}")
    children: dict[int, list[int]] = {}
    for child, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(child)
    total = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        total += sum(int(x) for x in stats[current][11:15])  # utime, stime, cutime, cstime
        todo.extend(children.get(current, []))
    return total / CLOCK_TICKS


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
        phases.append(phase_record(n, seconds, before, cpu()))
    async with asyncio.timeout(phase_timeout):
        lat = await latencies(run_one, m)
    return phases, lat


def phase_record(
    n: int, seconds: float, before: dict[str, float], after: dict[str, float]
) -> dict[str, Any]:
    """One throughput phase as :func:`emit` reports it: what each process spent in it."""
    spent = {name: after[name] - before[name] for name in before}
    return {"workflows": n, "seconds": seconds, "cpu": spent}


class Pending(Protocol):
    """A started workflow whose result a blocking client waits for."""

    def get(self, timeout: float) -> object:
        """The workflow's result; raises if it is not there within ``timeout`` seconds."""
        ...


def measure_blocking(
    start_one: Callable[[], Pending],
    wait_all: Callable[[list[Pending], float], list[object]],
    sizes: Sequence[int],
    m: int,
    cpu: Callable[[], dict[str, float]],
    phase_timeout: float,
) -> tuple[list[dict[str, Any]], list[float]]:
    """:func:`measure` for a client whose calls block (no asyncio API), with the same phases.

    ``start_one`` starts one workflow (it returns once the start is sent);
    ``wait_all`` returns the results of the started workflows, waiting at most
    the seconds it is given, as the client's own way of waiting for many does.
    A throughput phase starts its N workflows one after another as fast as the
    client can, then waits for them all: the same as N concurrent starts from
    one event loop, which also send one after another. Every result is checked;
    each phase is bounded by ``phase_timeout``.
    """
    check(start_one().get(phase_timeout))  # warm-up, as in measure
    phases: list[dict[str, Any]] = []
    for n in sizes:
        before = cpu()
        start = time.perf_counter()
        pending = [start_one() for _ in range(n)]
        left = phase_timeout - (time.perf_counter() - start)
        if left <= 0:
            raise TimeoutError(f"starting {n} workflows took over {phase_timeout}s")
        for result in wait_all(pending, left):
            check(result)
        seconds = time.perf_counter() - start
        phases.append(phase_record(n, seconds, before, cpu()))
    found: list[float] = []
    deadline = time.monotonic() + phase_timeout
    for _ in range(m):
        start = time.perf_counter()
        check(start_one().get(max(deadline - time.monotonic(), 0.001)))
        found.append((time.perf_counter() - start) * 1000)
    return phases, found


# -- the driver's command line and output -----------------------------------------


def parse_args(
    description: str,
    argv: Sequence[str] | None = None,
    *,
    sqlite: bool = False,
    extra: Callable[[argparse.ArgumentParser], object] | None = None,
) -> argparse.Namespace:
    """The arguments every driver takes (see the module docstring).

    With ``sqlite``, also ``--synchronous`` (a key of :data:`SYNCHRONOUS`;
    ``full`` unless given), the setting of the peer's SQLite database.
    ``extra`` adds a driver's own arguments to the parser.
    """
    parser = argparse.ArgumentParser(description=description)
    if extra is not None:
        extra(parser)
    if sqlite:
        parser.add_argument(
            "--synchronous",
            choices=sorted(SYNCHRONOUS),
            default="full",
            help="SQLite's synchronous setting: normal (fsync at checkpoints) or full",
        )
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


def run_driver(peer: str, body: Callable[[], object]) -> None:
    """Run a driver's ``body``; an exception ends the driver as :func:`fail` does.

    The whole traceback goes to stderr first; the caller shows the reason.
    """
    try:
        body()
    except Exception as error:
        traceback.print_exc()
        fail(f"{peer}: {type(error).__name__}: {error}")


def fail(reason: str) -> NoReturn:
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

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        cwd: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        """Start ``argv`` in ``cwd``, with ``env`` (this process's environment if None)."""
        self.name = name
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
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


# -- fsyncs -------------------------------------------------------------------------


#: How many workflows, one after another, a driver runs under :class:`FsyncCount`.
FSYNC_PROBE_WORKFLOWS: Final = 20


class FsyncCount:
    """Counts the fsync and fdatasync calls of process ``pid`` (every thread) with strace.

    To check a database's durability setting by what it does, not by what it
    was told: SQLite in WAL mode fsyncs its log at every commit with
    ``synchronous=FULL`` and only at checkpoints with ``NORMAL``. strace is
    optional, and slows the traced process down: count only outside the
    measured phases. Without strace, or when it cannot attach, :attr:`unavailable`
    says why and :meth:`stop` returns None.
    """

    def __init__(self, pid: int, workdir: Path, timeout: float = 15.0) -> None:
        self.unavailable: str | None = None
        self.child: Child | None = None
        self.summary = workdir / f"strace-{pid}.txt"
        binary = shutil.which("strace")
        if binary is None:
            self.unavailable = "strace not installed"
            return
        argv = [binary, "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", str(self.summary)]
        self.child = Child(
            "strace", [*argv, "-p", str(pid)], workdir / f"strace-{pid}.log", workdir
        )
        try:
            self.child.wait_for_log("attached", timeout)
        except RuntimeError as error:
            self.unavailable = " ".join(str(error).split())[:200]
            self.child.stop()
            self.child = None

    def stop(self) -> int | None:
        """Detach; the calls counted since the start (None, and :attr:`unavailable`, if none)."""
        if self.child is None:
            return None
        self.child.stop()  # strace detaches on SIGTERM and writes its summary
        self.child = None
        try:
            summary = self.summary.read_text()
        except FileNotFoundError:
            self.unavailable = "strace wrote no summary"
            return None
        calls = 0
        for line in summary.splitlines():
            fields = line.split()
            # Rows: % time, seconds, usecs/call, calls, [errors,] syscall.
            if fields and fields[-1] in ("fsync", "fdatasync"):
                calls += int(fields[3])
        return calls


async def count_fsyncs(
    pid: int, workdir: Path, run_one: Callable[[], Awaitable[object]], phase_timeout: float
) -> str:
    """The settings column's words on the fsyncs of process ``pid`` per workflow.

    Counted with :class:`FsyncCount` over :data:`FSYNC_PROBE_WORKFLOWS` more
    workflows, one after another, within ``phase_timeout`` seconds; run it after the
    measured phases. Without strace, says why not, and runs none.
    """
    counter = FsyncCount(pid, workdir)
    if counter.unavailable is not None:
        return f"fsyncs not counted ({counter.unavailable})"
    try:
        async with asyncio.timeout(phase_timeout):
            await latencies(run_one, FSYNC_PROBE_WORKFLOWS)
    finally:
        calls = counter.stop()
    if calls is None:
        return f"fsyncs not counted ({counter.unavailable})"
    return f"{calls / FSYNC_PROBE_WORKFLOWS:.1f} fsyncs/wf (strace, {FSYNC_PROBE_WORKFLOWS} wf)"
