"""Engine services as real subprocesses, and readers of what they left on the broker.

:class:`Services` spawns ``python -m actors.orchestrator`` and ``python -m
actors.worker`` (serving :mod:`ledger_activities`) against one NATS URL, each in
its own session with its output in a log file, and kills whatever is left when
its ``with`` block ends. :func:`read_history` reads the whole history stream,
:func:`read_states` the stored state of chosen instances.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

import actors
from actors.testing._natsserver import _child_setup_factory
from actors.wire import decode_history, decode_state
from transport import ConsumerSpec, Transport

REPO_ROOT = Path(__file__).resolve().parents[2]
ACTIVITIES_MODULE = "tests.engine.ledger_activities"
#: What a service logs once it serves (see ``actors.cli._services.serve_until_stopped``).
READY_MARK = "]: ready"
#: Seconds a service may take to be ready, and to drain and exit after SIGTERM.
START_TIMEOUT = 60
STOP_TIMEOUT = 30


def service_env() -> dict[str, str]:
    """This process's environment without its ``ACTORS_*`` settings, which the
    tests give as flags, but with the NATS client under test
    (``ACTORS_NATS_CLIENT``), so that services run on the same one."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ACTORS_") or k == "ACTORS_NATS_CLIENT"
    }


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class Services:
    """The services of one test. Use as a context manager; it kills leftovers on exit."""

    def __init__(self, url: str, directory: Path, ledger: Path) -> None:
        self.url = url
        self.directory = directory
        self.ledger = ledger
        self.services: dict[str, Service] = {}
        directory.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill_all()
        self.print_logs()

    # -- spawning ------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = service_env()
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
        env["LEDGER_FILE"] = str(self.ledger)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def spawn(self, name: str, argv: list[str]) -> Service:
        if name in self.services and self.services[name].proc.poll() is None:
            raise RuntimeError(f"service {name} is already running")
        log_path = self.directory / f"{name}.log"
        with open(log_path, "ab") as log:
            log.write(f"=== {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                [sys.executable, *argv],
                cwd=REPO_ROOT,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_child_setup_factory(),
            )
        service = Service(name, proc, log_path)
        self.services[name] = service
        return service

    def orchestrator(self, name: str, *args: str) -> Service:
        """An orchestrator; unless ``args`` say otherwise, with a 3 s lease on its partitions.

        The tests kill orchestrators: with the default (10 s), each restart
        would wait that long for the dead one's partitions.
        """
        lease = () if "--lease" in args else ("--lease", "3")
        return self.spawn(name, ["-m", "actors.orchestrator", "--url", self.url, *lease, *args])

    def worker(self, name: str, *args: str) -> Service:
        return self.spawn(
            name,
            ["-m", "actors.worker", "--url", self.url, "--activities", ACTIVITIES_MODULE, *args],
        )

    async def wait_ready(self, *names: str) -> None:
        """Wait until each named service logged that it serves (fail if one exits)."""
        with trio.fail_after(START_TIMEOUT):
            for name in names:
                service = self.services[name]
                # Another process's log is all there is to wait on: poll it. The
                # log keeps earlier runs of the same name: read from the last spawn.
                while READY_MARK not in service.log().rpartition("\n=== ")[2]:
                    code = service.proc.poll()
                    if code is not None:
                        raise AssertionError(
                            f"{name} exited with {code} before it was ready:\n{service.log()}"
                        )
                    await trio.sleep(0.05)

    # -- stopping ------------------------------------------------------------------

    async def sigkill(self, name: str) -> None:
        """SIGKILL the service (by its own pid) and reap it (in a thread: the
        kernel takes its time to tear a process down)."""
        proc = self.services[name].proc
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        with trio.fail_after(10):
            await trio.to_thread.run_sync(proc.wait, abandon_on_cancel=True)

    async def terminate(self, name: str) -> int:
        """SIGTERM the service and wait for it to drain and exit; its exit code."""
        return (await self._terminate([self.services[name]]))[name]

    async def terminate_all(self) -> dict[str, int]:
        """SIGTERM every running service at once; name -> exit code."""
        return await self._terminate(list(self.services.values()))

    async def _terminate(self, services: list[Service]) -> dict[str, int]:
        running = [s for s in services if s.proc.poll() is None]
        for service in running:
            os.kill(service.pid, signal.SIGTERM)
        with trio.fail_after(STOP_TIMEOUT):
            for service in running:
                await trio.to_thread.run_sync(service.proc.wait, abandon_on_cancel=True)
        return {s.name: s.proc.returncode for s in running}

    def kill_all(self) -> None:
        for service in self.services.values():
            if service.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(service.pid, signal.SIGKILL)
            try:
                service.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                print(f"{service.name} (pid {service.pid}) did not die")

    def print_logs(self, lines: int = 40) -> None:
        """Print each service's log tail (pytest shows it when a test fails)."""
        for service in self.services.values():
            tail = "\n".join(service.log().splitlines()[-lines:])
            print(f"----- {service.name} (pid {service.pid}) -----\n{tail}")


# -- waiting for results -------------------------------------------------------------


async def collect_results(
    client: actors.Client,
    ids: Iterable[str],
    results: dict[str, Any],
    *,
    stall: float = 20,
    on_progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Fill ``results`` (id -> output, or the WorkflowError) as instances finish;
    the ids still unfinished once none finished for ``stall`` seconds (sorted)."""
    pending = set(ids)
    with trio.move_on_after(stall) as progress:

        async def one(instance_id: str) -> None:
            try:
                results[instance_id] = await client.result(instance_id)
            except actors.WorkflowError as exc:
                results[instance_id] = exc
            pending.discard(instance_id)
            progress.deadline = trio.current_time() + stall
            if on_progress is not None:
                on_progress(len(results))

        async with trio.open_nursery() as waiters:
            for instance_id in sorted(pending):
                waiters.start_soon(one, instance_id)
    return sorted(pending)


async def wait_results(
    client: actors.Client,
    ids: Iterable[str],
    results: dict[str, Any],
    *,
    stall: float = 20,
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """:func:`collect_results`, failing (AssertionError) if an instance is stuck: one
    stuck for good fails the test fast, not at the caller's deadline."""
    stuck = await collect_results(client, ids, results, stall=stall, on_progress=on_progress)
    if stuck:
        raise AssertionError(
            f"{len(stuck)} of {len(results) + len(stuck)} instances made no progress for "
            f"{stall}s, e.g. {stuck[:5]}"
        )


# -- reading the broker ------------------------------------------------------------


async def read_history(
    transport: Transport, expected: int, *, durable: str = "test-history", quiet: float = 1.0
) -> list[dict[str, Any]]:
    """Every record of the history stream, in stream order.

    Reads (and acks: it is a limits stream, so nothing is removed) until
    ``expected`` records arrived and then nothing more for ``quiet`` seconds,
    so that records beyond the expected count are seen too.
    """
    records: list[dict[str, Any]] = []
    async with transport.consume(
        "WORKFLOW_HISTORY", ConsumerSpec(durable=durable), buffer=1024
    ) as deliveries:
        while True:
            delivery = None
            with trio.move_on_after(quiet if len(records) >= expected else 60):
                delivery = await deliveries.receive()
            if delivery is None:
                if len(records) >= expected:
                    return records
                raise AssertionError(
                    f"history stream: {len(records)} records after 60s, {expected} expected"
                )
            for record in decode_history(delivery.data):
                record["_subject"] = delivery.subject
                records.append(record)
            await delivery.ack()


async def read_states(transport: Transport, ids: Iterable[str]) -> dict[str, Any]:
    """id -> the stored :class:`actors.core.InstanceState` (absent ids are left out)."""
    states = await transport.kv("WORKFLOW_STATES")
    found: dict[str, Any] = {}
    for instance_id in ids:
        entry = await states.get(instance_id)
        if entry is not None:
            found[instance_id] = decode_state(entry.value)
    return found


def history_problems(
    by_instance: Mapping[str, list[dict[str, Any]]],
    states: Mapping[str, Any],
    ids: Iterable[str],
    steps: Iterable[str],
    signals: int = 0,
) -> list[str]:
    """What is wrong with the history of each of ``ids``, whose steps ran once each.

    Seqs must be 1..state.seq without gaps or repeats; each step completed
    once; and the records be one start, one completion, one schedule and
    one completion per step, and for each of ``signals`` signal waits one
    signal received and one wait completed (the signal came before the wait,
    ``signal.taken``, or after it, ``signal.waiting``).
    """
    steps = list(steps)
    problems: list[str] = []
    for instance_id in ids:
        mine = by_instance.get(instance_id, [])
        seqs = [r["seq"] for r in mine]
        if sorted(seqs) != list(range(1, states[instance_id].seq + 1)):
            problems.append(f"{instance_id}: seqs {seqs}, state seq {states[instance_id].seq}")
        completed = Counter(r["detail"]["step"] for r in mine if r["kind"] == "activity.completed")
        if completed != Counter(steps):
            problems.append(f"{instance_id}: activity.completed per step {dict(completed)}")
        kinds = Counter(r["kind"] for r in mine)
        want = {
            "workflow.started": 1,
            "activity.scheduled": len(steps),
            "activity.completed": len(steps),
            "workflow.completed": 1,
        }
        if signals:
            waits = kinds.get("signal.taken", 0) + kinds.get("signal.waiting", 0)
            want |= {"signal.received": signals, "signal.completed": signals}
            want |= {
                kind: kinds[kind]
                for kind in ("signal.taken", "signal.waiting")
                if waits == signals and kind in kinds
            }
        if kinds.get("flow.queued") == 1:
            # Queued behind a concurrency limit once before it started.
            want["flow.queued"] = 1
        if kinds != want:
            problems.append(f"{instance_id}: record kinds {dict(kinds)}")
    return problems
