"""Retention benchmark: removing many expired instances beside a running workload.

On a fresh ``nats-server`` with one orchestrator and one worker (processes,
as ``bench/engine.py`` starts them):

1. stores N finished instances (a one-step workflow whose step is a zero
   sleep: started, completed, nothing for the worker), starts published in
   batches;
2. runs the workload alone: three-activity ``count`` workflows started at a
   steady rate, each timed from its start to its result (p50, p99, the rate
   they completed at);
3. makes the N instances expire at once (their removals, ``expire.{id}``,
   published beforehand, all due at one moment, as after an outage longer
   than their retention) and runs the same workload from that moment, while
   the orchestrator removes them: each removal purges the instance's history
   and deletes its state;

and prints the removal rate and the workload's figures in both phases.

Usage, from the repository root::

    python bench/retention.py [--instances 100000] [--rate 50] [--seconds 20]
    python bench/retention.py --quick      # 5,000 instances: a smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
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

import trio  # noqa: E402

from actors import Client, InstanceStatus  # noqa: E402
from actors.testing import NatsServer  # noqa: E402
from actors.wire import (  # noqa: E402
    StartMessage,
    encode_expire,
    encode_start,
    expire_subject,
    start_msg_id,
    start_subject,
)
from transport import OutMessage, Transport, open_transport  # noqa: E402

BURST: Final = {"type": "burst", "steps": [{"id": "nap", "sleep": 0}]}
COUNT: Final = (REPO := HERE.parent) / "actors" / "examples" / "count.yaml"
#: Messages per publish_many call.
BATCH: Final = 500


async def publish_all(transport: Transport, messages: list[OutMessage]) -> None:
    for first in range(0, len(messages), BATCH):
        await transport.publish_many(messages[first : first + BATCH])


async def wait_count(
    client: Client, status: InstanceStatus | None, wanted: int, what: str
) -> float:
    """Seconds until the index counts ``wanted`` burst instances (in ``status``)."""
    began = time.perf_counter()
    last = -1
    while True:
        _, total = await client.count_and_list(workflow_type="burst", status=status, limit=0)
        if total == wanted:
            return time.perf_counter() - began
        if total != last:
            print(f"  {what}: {total:,}", flush=True)
            last = total
        await trio.sleep(1.0)


async def workload(client: Client, rate: float, seconds: float, tag: str) -> dict[str, float]:
    """``count`` workflows at ``rate`` a second for ``seconds``: latencies and completion rate."""
    latencies: list[float] = []
    began = time.perf_counter()

    async def one(n: int) -> None:
        start = time.perf_counter()
        instance = await client.start("count", {"value": n}, id=f"{tag}-{n}")
        await client.result(instance)
        latencies.append(time.perf_counter() - start)

    async with trio.open_nursery() as nursery:
        n = 0
        while time.perf_counter() - began < seconds:
            nursery.start_soon(one, n)
            n += 1
            await trio.sleep(max(0.0, began + n / rate - time.perf_counter()))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "workflows": len(latencies),
        "completed_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "max_ms": 1000 * latencies[-1],
    }


async def bench(url: str, instances: int, rate: float, seconds: float) -> None:
    async with open_transport(url) as transport, Client(transport) as client:
        await client.register(BURST)
        await client.register(COUNT.read_text())
        ids = [f"old-{n}" for n in range(instances)]
        print(f"storing {instances:,} finished instances", flush=True)
        began = time.perf_counter()
        await publish_all(
            transport,
            [
                OutMessage(
                    start_subject(i, "burst"),
                    encode_start(StartMessage(i, None)),
                    msg_id=start_msg_id(i),
                )
                for i in ids
            ],
        )
        stored = await wait_count(client, InstanceStatus.COMPLETED, instances, "completed")
        print(
            f"  stored and completed in {time.perf_counter() - began:.1f} s ({stored:.1f} s wait)"
        )

        print(f"workload alone: {rate:g}/s for {seconds:g} s", flush=True)
        alone = await workload(client, rate, seconds, "alone")
        print(f"  {alone}")

        # The removals are published first (from this process, which runs the
        # workload's client too), all due at one moment a little later: the
        # workload is measured from that moment, while they are removed.
        lead = 30.0 + instances / 5_000
        due = transport.now() + lead
        print(f"expiring {instances:,} at once, {lead:g} s from now", flush=True)
        began = time.perf_counter()
        await publish_all(
            transport,
            [OutMessage(expire_subject(i), encode_expire(None), deliver_at=due) for i in ids],
        )
        results: dict[str, Any] = {"published_s": time.perf_counter() - began}
        await trio.sleep(max(0.0, due - transport.now()))
        print("  due now: the workload runs while they are removed", flush=True)

        async def expire() -> None:
            results["removed_s"] = await wait_count(client, None, 0, "left")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(expire)
            beside = await workload(client, rate, seconds, "beside")
        removed = instances / results["removed_s"]
        print(f"  {beside}")
        print()
        print(
            f"removal: {instances:,} instances in {results['removed_s']:.1f} s from when they"
            f" were due ({removed:,.0f}/s; published beforehand in {results['published_s']:.1f} s)"
        )
        for name, figures in (("alone", alone), ("while removing", beside)):
            print(
                f"workload {name:>15}: {figures['completed_per_s']:6.1f} wf/s completed, "
                f"p50 {figures['p50_ms']:7.1f} ms, p99 {figures['p99_ms']:7.1f} ms, "
                f"max {figures['max_ms']:7.1f} ms"
            )
        left = 0
        for instance in ids[:: max(1, instances // 1000)]:
            left += len(await transport.read("WORKFLOW_HISTORY", f"history.{instance}", limit=1))
        print(f"removed instances (1 in {max(1, instances // 1000)}) with history left: {left}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=50.0, help="workload workflows a second")
    parser.add_argument("--seconds", type=float, default=20.0, help="each workload phase")
    parser.add_argument("--quick", action="store_true", help="5,000 instances, 10 s phases")
    args = parser.parse_args()
    if args.quick:
        args.instances, args.seconds = 5_000, 10.0
    with tempfile.TemporaryDirectory(prefix="bench-retention-") as folder:
        workdir = Path(folder)
        server = NatsServer(workdir / "nats")
        services: list[Any] = []
        try:
            server.start()
            services = engine.engine_services(server.url, workdir)
            deadline = time.monotonic() + engine.READY_TIMEOUT
            for service in services:
                service.wait_ready(deadline)
            trio.run(bench, server.url, args.instances, args.rate, args.seconds)
            for service in services:
                service.terminate()
            for service in services:
                service.wait_exit()
        finally:
            for service in services:
                service.kill()
            server.stop()


if __name__ == "__main__":
    main()
