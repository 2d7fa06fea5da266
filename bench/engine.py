"""Engine benchmark: 3-activity workflows end to end, on memory and on NATS JetStream.

The workload is ``actors/examples/count.yaml`` (three ``increment`` activities in a
row) with input ``{"count": 0}``; every result is checked to be
``{"count": 3}``. Two figures per transport:

* throughput: N workflows started concurrently by one client, each task
  starting one and waiting for its result; timed from the first start to the
  last result, as workflows/s and activities/s (3 per workflow);
* latency at low load: M workflows one after another, each timed from start
  to result; p50 and p99 in ms.

And the CPU the engine spends, in CPU seconds per 1000 workflows of the
throughput phase:

* ``memory://``: orchestrator, worker and client in this one process and one
  ``trio.run`` (the memory broker is in-process only); CPU is this whole
  process (client and broker included).
* ``nats``: a ``nats-server`` in a temporary folder (default settings), one
  ``python -m actors.orchestrator`` and one ``python -m actors.worker
  --activities actors.examples.activities`` as subprocesses, the client in this
  process. CPU is the orchestrator's plus the worker's (from /proc); the
  client's and the server's are printed beside it. At the end both services
  get SIGTERM and must exit 0.

``memory_figures`` and ``nats_figures`` run the same for several N on one
set of services (and on NATS with a server config, or with more
orchestrator and worker processes); ``bench/compare.py`` uses them.

Usage, from the repository root::

    python bench/engine.py [--workflows 1000] [--latency 200] [--transports memory,nats]
    python bench/engine.py --quick      # N=100, M=20: a smoke run
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

# Run as a script, this file's folder comes first on sys.path, and its
# neighbour bench/transport.py would shadow the transport package. The
# repository root comes first instead: the checkout's packages are the ones run.
_HERE: Final = Path(__file__).resolve().parent
REPO_ROOT: Final = _HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import trio  # noqa: E402

import actors.examples.activities  # noqa: E402
from actors import (  # noqa: E402
    Client,
    Orchestrator,
    OrchestratorConfig,
    Worker,
    WorkerConfig,
    collect_activities,
)
from actors.testing import NatsServer  # noqa: E402
from actors.testing._natsserver import _child_setup_factory  # noqa: E402
from transport import TransportTimeoutError, open_transport  # noqa: E402

WORKFLOW_TYPE: Final = "count"
DEFINITION: Final = REPO_ROOT / "actors" / "examples" / "count.yaml"
INPUT: Final = {"count": 0}
EXPECTED: Final = {"count": 3}
ACTIVITIES_PER_WORKFLOW: Final = 3
#: What a service logs once it serves (``actors.cli._services.serve_until_stopped``).
READY_MARK: Final = "]: ready"
#: What an orchestrator logs for each compare-and-set conflict (``runtime/_instance.py``).
CONFLICT_MARK: Final = "state changed by another process"
#: Bounds, so that a wedged engine fails the run instead of hanging it.
READY_TIMEOUT: Final = 60.0
PHASE_TIMEOUT: Final = 600.0
STOP_TIMEOUT: Final = 30.0
#: How often one start is tried when the broker's acknowledgement times out.
START_ATTEMPTS: Final = 10
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


@dataclass
class Figures:
    """What one transport measured."""

    transport: str
    workflows: int
    seconds: float
    latencies_ms: list[float]
    #: CPU seconds of the throughput phase, by process (see the docstring).
    cpu: dict[str, float]
    #: Which of ``cpu`` make up the engine.
    engine: tuple[str, ...]
    #: Seconds from SIGTERM to the last service's exit (NATS only).
    stop_seconds: float | None = None
    #: Warnings and errors the services logged, by service (NATS only).
    warnings: dict[str, list[str]] = field(default_factory=dict)
    #: Starts sent again after a timeout, over the whole run (see one_workflow).
    start_retries: int = 0
    #: Compare-and-set conflicts the orchestrators logged over the whole run
    #: (a state changed by another process: NATS only).
    conflicts: int = 0

    @property
    def workflows_per_s(self) -> float:
        return self.workflows / self.seconds

    @property
    def activities_per_s(self) -> float:
        return self.workflows_per_s * ACTIVITIES_PER_WORKFLOW

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 99)

    @property
    def engine_cpu_per_1000(self) -> float:
        """CPU s per 1000 workflows of the engine's processes."""
        return self.per_1000(sum(self.cpu[k] for k in self.engine))

    @property
    def all_cpu_per_1000(self) -> float:
        """CPU s per 1000 workflows of every process involved (client, broker too)."""
        return self.per_1000(sum(self.cpu.values()))

    def per_1000(self, seconds: float) -> float:
        return seconds / self.workflows * 1000


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile, interpolated between the closest ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces: count fields after its ')'.
    fields = stat.rpartition(")")[2].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def own_cpu() -> float:
    """CPU seconds of this process so far (every thread)."""
    return time.process_time()


# -- the workload (any transport) ---------------------------------------------


class StartRetries:
    """How many starts :func:`one_workflow` sent again after a broker timeout."""

    count = 0


async def one_workflow(client: Client) -> None:
    """Start one workflow, wait for its result, check it.

    A start whose acknowledgement times out (``TransportTimeoutError``: the
    broker is overloaded, as with thousands of starts at once on a server that
    fsyncs every write) is sent again with the same instance id, which the
    engine deduplicates: what any client should do. Each such retry counts
    in :attr:`StartRetries.count`; past ``START_ATTEMPTS`` the error stands.
    """
    instance_id = uuid.uuid4().hex
    await start_with_retries(client, WORKFLOW_TYPE, INPUT, instance_id)
    result = await client.result(instance_id)
    if result != EXPECTED:
        raise AssertionError(f"workflow {instance_id} returned {result!r}, not {EXPECTED!r}")


async def start_with_retries(
    client: Client, workflow_type: str, value: Any, instance_id: str
) -> None:
    """``client.start``, sent again with the same id when its acknowledgement times out.

    Each retry counts in :attr:`StartRetries.count`; past ``START_ATTEMPTS``
    the error stands.
    """
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            await client.start(workflow_type, value, id=instance_id)
            return
        except TransportTimeoutError:
            if attempt == START_ATTEMPTS:
                raise
            StartRetries.count += 1


async def throughput(client: Client, n: int) -> float:
    """Run ``n`` workflows at once; the seconds from the first start to the last result."""

    async def run_one(done: list[int]) -> None:
        await one_workflow(client)
        done.append(1)

    done: list[int] = []
    with trio.fail_after(PHASE_TIMEOUT):
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(run_one, done)
        seconds = time.perf_counter() - start
    if len(done) != n:
        raise AssertionError(f"{len(done)} of {n} workflows finished")
    return seconds


async def latencies(client: Client, m: int) -> list[float]:
    """Run ``m`` workflows one after another; each one's start-to-result time in ms."""
    found: list[float] = []
    with trio.fail_after(PHASE_TIMEOUT):
        for _ in range(m):
            start = time.perf_counter()
            await one_workflow(client)
            found.append((time.perf_counter() - start) * 1000)
    return found


async def measure(
    client: Client,
    transport: str,
    n: int,
    m: int,
    cpu: Callable[[], dict[str, float]],
    engine: tuple[str, ...],
) -> Figures:
    """Register, warm up, then the throughput and latency phases.

    ``cpu`` reads the CPU counters of every process involved, by name;
    ``engine`` names those that are the engine's.
    """
    return (await measure_sizes(client, transport, [n], m, cpu, engine))[0]


async def measure_sizes(
    client: Client,
    transport: str,
    sizes: Sequence[int],
    m: int,
    cpu: Callable[[], dict[str, float]],
    engine: tuple[str, ...],
) -> list[Figures]:
    """:func:`measure` with a throughput phase per size, on the same services.

    One warm-up, then a throughput phase for each of ``sizes`` in order, then
    one latency phase of ``m`` workflows whose figures every returned
    :class:`Figures` shares (one per size, in the order of ``sizes``).
    """
    await client.register(DEFINITION.read_text())
    retries_before = StartRetries.count
    # Warm-up: the services are ready once one workflow completes.
    with trio.fail_after(READY_TIMEOUT):
        await one_workflow(client)
    phases: list[tuple[int, float, dict[str, float]]] = []
    for n in sizes:
        before = cpu()
        seconds = await throughput(client, n)
        after = cpu()
        phases.append((n, seconds, {key: after[key] - before[key] for key in before}))
    lat = await latencies(client, m)
    retries = StartRetries.count - retries_before
    return [
        Figures(transport, n, seconds, lat, spent, engine, start_retries=retries)
        for n, seconds, spent in phases
    ]


# -- memory: everything in this process -----------------------------------------


def run_memory(n: int, m: int) -> Figures:
    return memory_figures([n], m)[0]


def memory_figures(sizes: Sequence[int], m: int, label: str = "memory") -> list[Figures]:
    """The engine on ``memory://`` in this process: :func:`measure_sizes` there."""

    async def main() -> list[Figures]:
        specs = collect_activities([actors.examples.activities])
        async with open_transport("memory://") as transport, trio.open_nursery() as nursery:
            orchestrator = Orchestrator(transport, OrchestratorConfig())
            worker = Worker(transport, specs, WorkerConfig())
            await nursery.start(orchestrator.run)
            await nursery.start(worker.run)
            try:
                async with Client(transport) as client:
                    return await measure_sizes(
                        client, label, sizes, m, lambda: {"process": own_cpu()}, ("process",)
                    )
            finally:
                orchestrator.shutdown()
                worker.shutdown()

    return trio.run(main)


# -- NATS: a server and the two services as processes ----------------------------


class ServiceProcess:
    """``python -m <module> ...`` from the repository root, its output in a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        # The caller's ACTORS_* settings are not the benchmark's, except the
        # NATS client to measure.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("ACTORS_") or k == "ACTORS_NATS_CLIENT"
        }
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *argv],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # SIGKILL from the kernel should this process die without cleaning up.
                preexec_fn=_child_setup_factory(),
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def warnings(self) -> list[str]:
        """The log lines at WARNING level or above, and tracebacks."""
        marks = (" WARNING ", " ERROR ", " CRITICAL ", "Traceback")
        return [line for line in self.log().splitlines() if any(m in line for m in marks)]

    def failure(self, what: str) -> RuntimeError:
        tail = "\n".join(self.log().splitlines()[-30:])
        return RuntimeError(f"{self.name} {what}; log tail:\n{tail}")

    def wait_ready(self, deadline: float) -> None:
        # Another process's log is all there is to wait on: poll it.
        while READY_MARK not in self.log():
            code = self.proc.poll()
            if code is not None:
                raise self.failure(f"exited with {code} before it was ready")
            if time.monotonic() > deadline:
                raise self.failure(f"not ready after {READY_TIMEOUT}s")
            time.sleep(0.05)

    def terminate(self) -> None:
        """SIGTERM: drain and exit (a second one would cancel at once)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self) -> int:
        """Wait for the exit code (SIGKILL and raise past the limit)."""
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise self.failure(f"still running {STOP_TIMEOUT}s after SIGTERM") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def engine_services(
    url: str,
    workdir: Path,
    orchestrators: int = 1,
    workers: int = 1,
    extra: Sequence[str] = (),
) -> list[ServiceProcess]:
    """Start ``orchestrators`` and ``workers`` (serving the examples' activities) on ``url``.

    ``extra`` is given to every one of them (``--metrics-port 0``).

    The first of each keeps the plain name (``orchestrator``, ``worker``),
    the others are numbered from 2; each logs into ``workdir``. Not waited
    for: see :meth:`ServiceProcess.wait_ready`.
    """

    def numbered(name: str, i: int) -> str:
        return name if i == 0 else f"{name}-{i + 1}"

    kinds = (
        (orchestrators, "orchestrator", ["-m", "actors.orchestrator", "--url", url, *extra]),
        (
            workers,
            "worker",
            [
                *("-m", "actors.worker", "--url", url),
                *("--activities", "actors.examples.activities", *extra),
            ],
        ),
    )
    return [
        ServiceProcess(numbered(name, i), argv, workdir / f"{numbered(name, i)}.log")
        for count, name, argv in kinds
        for i in range(count)
    ]


def run_nats(n: int, m: int) -> Figures:
    return nats_figures([n], m)[0]


def nats_figures(
    sizes: Sequence[int],
    m: int,
    *,
    label: str = "nats",
    config: Mapping[str, Any] | None = None,
    orchestrators: int = 1,
    workers: int = 1,
    service_args: Sequence[str] = (),
) -> list[Figures]:
    """The engine on a fresh ``nats-server``: :func:`measure_sizes` with services as processes.

    ``config`` is the server's extra configuration (``NatsServer``'s, e.g.
    ``{"jetstream": {"sync_interval": "always"}}``); ``orchestrators`` and
    ``workers`` are how many processes of each service share the work. The
    client is this process. At the end every service gets SIGTERM and must
    exit 0 (``RuntimeError`` otherwise, with its log tail). ``service_args``
    go to every service process.
    """
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as folder:
        workdir = Path(folder)
        server = NatsServer(workdir / "nats", config=config)
        services: list[ServiceProcess] = []
        try:
            server.start()
            url = server.url

            services.extend(engine_services(url, workdir, orchestrators, workers, service_args))
            deadline = time.monotonic() + READY_TIMEOUT
            for service in services:
                service.wait_ready(deadline)
            server_pid = server.pid
            assert server_pid is not None

            def cpu() -> dict[str, float]:
                return {
                    **{s.name: proc_cpu(s.pid) for s in services},
                    "client": own_cpu(),
                    "nats-server": proc_cpu(server_pid),
                }

            async def main() -> list[Figures]:
                async with Client.connect(url) as client:
                    engine = tuple(s.name for s in services)
                    return await measure_sizes(client, label, sizes, m, cpu, engine)

            found = trio.run(main)
            # Each must drain and exit 0 on SIGTERM.
            stop = time.perf_counter()
            for service in services:
                service.terminate()
            for service in services:
                code = service.wait_exit()
                if code != 0:
                    raise service.failure(f"exited with {code} after SIGTERM")
            stopped = time.perf_counter() - stop
            warnings = {s.name: s.warnings() for s in services}
            conflicts = sum(s.log().count(CONFLICT_MARK) for s in services)
            for figures in found:
                figures.stop_seconds = stopped
                figures.warnings = warnings
                figures.conflicts = conflicts
            return found
        finally:
            for service in services:
                service.kill()
            server.stop()


# -- report ----------------------------------------------------------------------


def table(results: list[Figures]) -> str:
    names = ("workflows/s", "activities/s", "p50 ms", "p99 ms", "CPU s/1000 wf", "all CPU s/1000")
    widths = [max(len(name), 8) for name in names]

    def row(label: str, cells: list[str]) -> str:
        return f"{label:<10} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True))

    header = row("transport", list(names))
    lines = [header, "-" * len(header)]
    for f in results:
        lines.append(
            row(
                f.transport,
                [
                    f"{f.workflows_per_s:,.0f}",
                    f"{f.activities_per_s:,.0f}",
                    f"{f.p50_ms:.2f}",
                    f"{f.p99_ms:.2f}",
                    f"{f.engine_cpu_per_1000:.2f}",
                    f"{f.all_cpu_per_1000:.2f}",
                ],
            )
        )
    by_name = {f.transport: f for f in results}
    if "memory" in by_name and "nats" in by_name:
        mem, js = by_name["memory"], by_name["nats"]
        lines.append(
            row(
                "nats/mem",
                [
                    f"{js.workflows_per_s / mem.workflows_per_s:.2f}x",
                    f"{js.activities_per_s / mem.activities_per_s:.2f}x",
                    f"{js.p50_ms / mem.p50_ms:.2f}x",
                    f"{js.p99_ms / mem.p99_ms:.2f}x",
                    f"{js.engine_cpu_per_1000 / mem.engine_cpu_per_1000:.2f}x",
                    f"{js.all_cpu_per_1000 / mem.all_cpu_per_1000:.2f}x",
                ],
            )
        )
    lines.append("")
    lines.append(
        "CPU s/1000 wf: the engine's, over the throughput phase (memory: this whole process,\n"
        "  client and broker included; nats: orchestrator + worker processes).\n"
        "all CPU s/1000: every process's (nats: + client + nats-server)."
    )
    for f in results:
        detail = ", ".join(f"{k} {f.per_1000(v):.2f}" for k, v in f.cpu.items())
        stopped = (
            "" if f.stop_seconds is None else f"; SIGTERM: both exited 0 in {f.stop_seconds:.2f}s"
        )
        lines.append(
            f"{f.transport}: {f.workflows} workflows in {f.seconds:.2f}s; latency of "
            f"{len(f.latencies_ms)}: min {min(f.latencies_ms):.2f}, "
            f"max {max(f.latencies_ms):.2f} ms; CPU s/1000 wf: {detail}{stopped}"
        )
        if f.start_retries:
            lines.append(f"  {f.start_retries} starts sent again after a broker timeout")
        for name, found in f.warnings.items():
            if found:
                lines.append(f"  {name} logged {len(found)} warnings/errors; first: {found[0]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=1000, help="N, run at once (default 1000)")
    parser.add_argument(
        "--latency", type=int, default=200, help="M, run one after another (default 200)"
    )
    parser.add_argument(
        "--transports",
        default="memory,nats",
        help="comma-separated: memory, nats (default both)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: N=100, M=20")
    args = parser.parse_args(argv)
    n, m = (100, 20) if args.quick else (args.workflows, args.latency)
    if n < 1 or m < 1:
        parser.error("--workflows and --latency must be at least 1")
    runners: dict[str, Callable[[int, int], Figures]] = {"memory": run_memory, "nats": run_nats}
    chosen = [t.strip() for t in args.transports.split(",") if t.strip()]
    unknown = [t for t in chosen if t not in runners]
    if unknown or not chosen:
        parser.error(f"unknown transports {unknown}; choose from {', '.join(runners)}")

    print("command:", " ".join([sys.executable, *sys.argv]))
    print(f"cores: {os.cpu_count()}; python {sys.version.split()[0]}; N={n}, M={m}")
    results: list[Figures] = []
    for name in chosen:
        print(f"running {name} ...", flush=True)
        results.append(runners[name](n, m))
    print()
    print(table(results))


if __name__ == "__main__":
    main()
