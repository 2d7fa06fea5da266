"""Flow control benchmark: what a concurrency limit costs, and how fast a freed slot is reused.

Two figures, on ``memory://`` (everything in this process) and on NATS
JetStream (a fresh ``nats-server``, one ``actors.orchestrator`` and one
``actors.worker`` process, the client in this process):

* a limit that never binds: N workflows of ``count.yaml`` (three
  ``increment`` activities) started at once, each waited for, with and
  without ``concurrency: [{key: input.customer, limit: 1}]``, every
  instance for a customer of its own (so the limit never holds one back:
  the case of "one running order per customer"); workflows/s, the median
  of ``--rounds`` rounds, the two kinds alternating, and their ratio; and
  the engine's CPU ms per workflow (this process on memory; the
  orchestrator's and the worker's on NATS), the median too, which a
  machine shared with other work disturbs less than the wall clock;
* a binding limit: M one-activity workflows of one customer, limit 1,
  started at once, so that each starts when the one before it ends; per
  handoff, the time from the decision that ended one instance (its
  ``workflow.completed`` record) to the decision that started the next
  (its ``workflow.started`` record), both on the orchestrator's clock;
  p50 and p99 in ms.

Usage, from the repository root::

    python bench/flow.py [--workflows 1000] [--handoffs 200] [--rounds 3]
                         [--transports memory,nats]
    python bench/flow.py --quick     # N=100, M=20, 1 round
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Final

_HERE: Final = Path(__file__).resolve().parent
REPO_ROOT: Final = _HERE.parent
# As in bench/engine.py: the neighbour bench/transport.py must not shadow the package.
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
from transport import open_transport  # noqa: E402


def _load_engine() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_engine", _HERE / "engine.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Its dataclasses look their module up by name.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ENGINE: Final = _load_engine()
COUNT: Final = (REPO_ROOT / "actors" / "examples" / "count.yaml").read_text()
PLAIN: Final = COUNT.replace("type: count", "type: count_plain")
LIMITED: Final = COUNT.replace(
    "type: count",
    "type: count_limited\nconcurrency: [{key: input.customer, limit: 1}]",
)
HANDOFF: Final = """
type: handoff
concurrency: [{key: input.customer, limit: 1}]
steps: [{id: only, activity: increment}]
"""
PHASE_TIMEOUT: Final = 600.0


async def _throughput(
    client: Client, workflow_type: str, n: int, cpu: Callable[[], float]
) -> tuple[float, float]:
    """Workflows/s for ``n`` started at once, each for a customer of its own, and the
    engine's CPU ms per workflow meanwhile (``cpu``: its CPU seconds so far)."""

    async def one() -> None:
        instance = uuid.uuid4().hex
        value = {"count": 0, "customer": instance}
        await ENGINE.start_with_retries(client, workflow_type, value, instance)
        result = await client.result(instance)
        if result != {"count": 3, "customer": instance}:
            raise AssertionError(f"{instance} returned {result!r}")

    with trio.fail_after(PHASE_TIMEOUT):
        spent = cpu()
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(one)
        return n / (time.perf_counter() - start), (cpu() - spent) / n * 1000


async def _handoffs(client: Client, m: int) -> list[float]:
    """Ms from each end to the next start, for ``m`` workflows behind one limit of 1."""
    customer = uuid.uuid4().hex
    ids = [f"h-{customer[:8]}-{i}" for i in range(m)]
    for instance in ids:
        await client.start("handoff", {"count": 0, "customer": customer}, id=instance)
    with trio.fail_after(PHASE_TIMEOUT):
        for instance in ids:
            await client.result(instance)
    spans: list[tuple[float, float]] = []
    for instance in ids:
        records = await client.history(instance)
        with trio.fail_after(30):
            while not any(r["kind"] == "workflow.completed" for r in records):
                # The history lands just after the state (see Client.history).
                await trio.sleep(0.05)
                records = await client.history(instance)
        at = {r["kind"]: r["at"] for r in records}
        spans.append((at["workflow.started"], at["workflow.completed"]))
    spans.sort()
    return [(spans[i + 1][0] - spans[i][1]) * 1000 for i in range(len(spans) - 1)]


async def _measure(
    client: Client, n: int, m: int, rounds: int, cpu: Callable[[], float]
) -> dict[str, Any]:
    for text in (PLAIN, LIMITED, HANDOFF):
        await client.register(text)
    await _throughput(client, "count_plain", 10, cpu)  # warm-up
    plain: list[tuple[float, float]] = []
    limited: list[tuple[float, float]] = []
    for _ in range(rounds):
        plain.append(await _throughput(client, "count_plain", n, cpu))
        limited.append(await _throughput(client, "count_limited", n, cpu))
    gaps = await _handoffs(client, m)
    return {
        "plain": statistics.median(rate for rate, _ in plain),
        "limited": statistics.median(rate for rate, _ in limited),
        "plain_cpu": statistics.median(ms for _, ms in plain),
        "limited_cpu": statistics.median(ms for _, ms in limited),
        "rounds": ([rate for rate, _ in plain], [rate for rate, _ in limited]),
        "p50": statistics.median(gaps),
        "p99": ENGINE.percentile(gaps, 99),
    }


Run = Callable[[Client, Callable[[], float]], Awaitable[dict[str, Any]]]


def _on_memory(run: Run) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        specs = collect_activities([actors.examples.activities])
        async with open_transport("memory://") as transport, trio.open_nursery() as nursery:
            orchestrator = Orchestrator(transport, OrchestratorConfig())
            worker = Worker(transport, specs, WorkerConfig())
            await nursery.start(orchestrator.run)
            await nursery.start(worker.run)
            try:
                async with Client(transport) as client:
                    return await run(client, ENGINE.own_cpu)
            finally:
                orchestrator.shutdown()
                worker.shutdown()

    return trio.run(main)


def _on_nats(run: Run) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-flow-") as folder:
        workdir = Path(folder)
        server = NatsServer(workdir / "nats")
        services: list[Any] = []
        try:
            server.start()
            services.extend(ENGINE.engine_services(server.url, workdir))
            deadline = time.monotonic() + ENGINE.READY_TIMEOUT
            for service in services:
                service.wait_ready(deadline)

            def cpu() -> float:
                return sum(ENGINE.proc_cpu(service.pid) for service in services)

            async def main() -> dict[str, Any]:
                async with Client.connect(server.url) as client:
                    return await run(client, cpu)

            return trio.run(main)
        finally:
            for service in services:
                service.kill()
            server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=1000, help="N, started at once (1000)")
    parser.add_argument("--handoffs", type=int, default=200, help="M, behind one slot (200)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, medians taken (3)")
    parser.add_argument("--transports", default="memory,nats", help="memory,nats")
    parser.add_argument("--quick", action="store_true", help="smoke run: N=100, M=20, 1 round")
    args = parser.parse_args(argv)
    n, m, rounds = (100, 20, 1) if args.quick else (args.workflows, args.handoffs, args.rounds)
    runners = {"memory": _on_memory, "nats": _on_nats}
    print(f"N={n} workflows at once, M={m} handoffs, {rounds} rounds")
    heads = ("no limit/s", "limit/s", "ratio", "cpu ms", "limit cpu", "p50 ms", "p99 ms")
    print(f"{'transport':<10} " + " ".join(f"{head:>11}" for head in heads))
    for name in args.transports.split(","):
        found = runners[name](lambda client, cpu: _measure(client, n, m, rounds, cpu))
        ratio = found["limited"] / found["plain"]
        cells = (
            found["plain"],
            found["limited"],
            ratio,
            found["plain_cpu"],
            found["limited_cpu"],
            found["p50"],
            found["p99"],
        )
        print(f"{name:<10} " + " ".join(f"{cell:>11.3f}" for cell in cells))
        plain, limited = ([round(x) for x in rates] for rates in found["rounds"])
        print(f"{'':<10} rounds, workflows/s: no limit {plain}, limit {limited}")


if __name__ == "__main__":
    main()
