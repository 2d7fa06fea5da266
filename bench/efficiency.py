"""Efficiency: the engine's throughput as a fraction of what its broker operations allow.

One run, on one fresh ``nats-server`` (default settings), in rounds that
interleave two measurements:

* the ceiling: plain nats-py on asyncio, in a fresh interpreter
  (``bench/transport.py``), doing the broker operations the engine does:
  batched stream publishes, concurrent KV compare-and-set updates, and pull
  consumption with an ack per message. Each gives a rate in operations/s;
* the engine: one ``python -m actors.orchestrator`` and one ``python -m
  actors.worker``, N 3-activity workflows started at once by one client
  (``bench/engine.py``'s throughput phase). The server's own counters
  (``/jsz``, ``/varz``), read before and after, say how many operations of
  each kind one workflow cost.

The ceiling for a workflow is what its operations would take at those raw
rates, one after another on one core: ``1 / sum(count_k / rate_k)``
workflows/s. The efficiency is the engine's workflows/s over that. Messages
the three kinds do not cover (pull requests, keep-alives, reads, the
client's watch) are counted and printed but left out of the ceiling, which
therefore flatters the engine's operations as little as it can.

Usage, from the repository root::

    python bench/efficiency.py [--workflows 3000] [--rounds 3]
    python bench/efficiency.py --quick      # N=300, one round
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Final

HERE: Final = Path(__file__).resolve().parent


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# bench/engine.py puts the repository root on sys.path first.
engine = _load("bench_engine", HERE / "engine.py")
raw = _load("bench_transport", HERE / "transport.py")

import trio  # noqa: E402

from actors import Client  # noqa: E402
from actors.testing import NatsServer, http_get  # noqa: E402

#: Streams whose stored messages are the engine's publishes, and the KV stream.
PUBLISH_STREAMS: Final = ("WORKFLOW_EVENTS", "ACTIVITY_TASKS", "WORKFLOW_HISTORY")
KV_STREAM: Final = "KV_WORKFLOW_STATES"
#: Each kind of operation, and the raw nats-py rate that prices it.
KINDS: Final = {
    "stream publishes": "publish batched",
    "KV compare-and-set writes": "KV CAS update (concurrent)",
    "deliveries consumed and acked": "consume + ack",
}


def server_counters(server: NatsServer) -> dict[str, int]:
    """Cumulative operation counts, by kind, from the server's monitoring endpoint."""
    status, body = http_get(server.monitor_url + "/jsz?consumers=true", 5.0)
    if status != 200:
        raise RuntimeError(f"/jsz answered {status}")
    counts = dict.fromkeys(KINDS, 0)
    for account in json.loads(body).get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            name = stream.get("name")
            last = stream.get("state", {}).get("last_seq", 0)
            if name in PUBLISH_STREAMS:
                counts["stream publishes"] += last
            elif name == KV_STREAM:
                counts["KV compare-and-set writes"] += last
            if name in ("WORKFLOW_EVENTS", "ACTIVITY_TASKS"):
                for consumer in stream.get("consumer_detail") or []:
                    delivered = consumer.get("delivered", {}).get("consumer_seq", 0)
                    counts["deliveries consumed and acked"] += delivered
    status, body = http_get(server.monitor_url + "/varz", 5.0)
    if status != 200:
        raise RuntimeError(f"/varz answered {status}")
    counts["all messages in"] = json.loads(body)["in_msgs"]
    return counts


async def engine_round(
    url: str, server: NatsServer, n: int, first: bool
) -> tuple[float, dict[str, float]]:
    """N workflows at once: (workflows/s, operations per workflow by kind)."""
    async with Client.connect(url) as client:
        if first:
            await client.register(engine.DEFINITION.read_text())
            await engine.throughput(client, min(200, n))  # warm up
        before = await trio.to_thread.run_sync(server_counters, server)
        seconds = await engine.throughput(client, n)
        after = await trio.to_thread.run_sync(server_counters, server)
    return n / seconds, {kind: (after[kind] - before[kind]) / n for kind in after}


def ceiling(per_workflow: dict[str, float], rates: dict[str, float]) -> float:
    """Workflows/s if each operation ran at its raw rate, one after another."""
    return 1.0 / sum(per_workflow[kind] / rates[op] for kind, op in KINDS.items())


def run(n: int, rounds: int, scale: float) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-efficiency-") as folder:
        workdir = Path(folder)
        server = NatsServer(workdir / "nats")
        services: list[Any] = []
        try:
            server.start()
            url = server.url
            services = engine.engine_services(url, workdir)
            deadline = time.monotonic() + engine.READY_TIMEOUT
            for service in services:
                service.wait_ready(deadline)
            for r in range(rounds):
                # The ceiling runs while the services idle, so neither slows the other.
                rates, _ = raw.plain_in_subprocess(url, scale, latency=False)
                wf_per_s, per_workflow = trio.run(engine_round, url, server, n, r == 0)
                limit = ceiling(per_workflow, rates)
                found.append(
                    {
                        "rates": rates,
                        "wf_per_s": wf_per_s,
                        "per_workflow": per_workflow,
                        "ceiling": limit,
                        "efficiency": wf_per_s / limit,
                    }
                )
            for service in services:
                service.terminate()
            for service in services:
                code = service.wait_exit()
                if code != 0:
                    raise service.failure(f"exited with {code} after SIGTERM")
        finally:
            for service in services:
                service.kill()
            server.stop()
    return found


def report(n: int, found: list[dict[str, Any]]) -> str:
    def med(values: list[float]) -> str:
        spread = f" ({min(values):,.2f}-{max(values):,.2f})" if len(values) > 1 else ""
        return f"{statistics.median(values):,.2f}{spread}"

    lines = [f"N={n} 3-activity workflows per round, {len(found)} rounds; medians (min-max)"]
    lines.append("broker operations per workflow (the server's counters):")
    for kind in [*KINDS, "all messages in"]:
        values = [r["per_workflow"][kind] for r in found]
        rate = ""
        if kind in KINDS:
            op = KINDS[kind]
            rates = [r["rates"][op] for r in found]
            rate = f"   raw nats-py rate ({op}): {statistics.median(rates):,.0f}/s"
        lines.append(f"  {kind:<32} {med(values):>22}{rate}")
    lines.append(
        f"ceiling (those three kinds at their raw rates): "
        f"{med([r['ceiling'] for r in found])} workflows/s"
    )
    lines.append(f"engine: {med([r['wf_per_s'] for r in found])} workflows/s")
    lines.append(
        f"efficiency (engine / ceiling): {med([r['efficiency'] for r in found])} (target 0.5)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=3000, help="N per round (default 3000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run: N=300, one round")
    args = parser.parse_args(argv)
    n, rounds, scale = args.workflows, args.rounds, 1.0
    if args.quick:
        n, rounds, scale = 300, 1, 0.1
    print(f"Command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"cores: {os.cpu_count()}; python {platform.python_version()}")
    print(report(n, run(n, rounds, scale)))


if __name__ == "__main__":
    main()
