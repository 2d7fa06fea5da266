"""Visibility benchmark: listing instances with N stored, on NATS JetStream.

Stores N instance states straight into the states bucket of a fresh
``nats-server`` (as an orchestrator would have left them: a mix of types and
statuses, a small input and step outputs each), then measures, through
``actors.Client``:

* the first ``list`` call, which builds the client's index from one pass
  over the bucket;
* later queries, each answered from the index after a ``sync`` (one write
  and the watch's delay): filtered by type and status, by status alone, by
  a start-time window, and an unfiltered page deep in the list; p50 and max
  over repeated calls;
* the index's size in memory (tracemalloc, the index alone).

Usage, from the repository root::

    python bench/visibility.py [--instances 100000]
    python bench/visibility.py --quick      # 5,000 instances: a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

# As in bench/engine.py: keep this folder off sys.path (bench/transport.py
# would shadow the transport package) and put the repository root on it.
_HERE: Final = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import trio  # noqa: E402

from actors import Client, InstanceStatus, Layout  # noqa: E402
from actors.core import InstanceState, StepState, StepStatus  # noqa: E402
from actors.runtime._visibility import InstanceIndex  # noqa: E402
from actors.testing import NatsServer  # noqa: E402
from actors.wire import STATES_BUCKET, encode_state  # noqa: E402
from transport import Transport, open_transport  # noqa: E402

TYPES: Final = ("order", "refund", "count", "report")
STATUSES: Final = (
    InstanceStatus.COMPLETED,
    InstanceStatus.COMPLETED,
    InstanceStatus.COMPLETED,
    InstanceStatus.RUNNING,
    InstanceStatus.FAILED,
    InstanceStatus.CANCELLED,
)
#: Puts in flight at once while storing.
WINDOW: Final = 256
QUERIES: Final = 50


def _state(i: int, base: float) -> bytes:
    """A plausible stored state for instance ``i`` (about 600 bytes encoded)."""
    steps = {
        f"s{n}": StepState(StepStatus.COMPLETED, 1, base + i, {"n": n, "ok": True}, None, base + i)
        for n in range(3)
    }
    return encode_state(
        InstanceState(
            id=f"i{i:07d}",
            type=TYPES[i % len(TYPES)],
            version=1,
            input={"order_id": f"o-{i}", "items": [{"sku": "apple", "quantity": 3}]},
            status=STATUSES[i % len(STATUSES)],
            created_at=base + i * 0.01,
            updated_at=base + i * 0.01 + 1,
            steps=steps,
            seq=8,
        )
    )


async def _timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = await call()
    return time.perf_counter() - started, value


async def store_states(transport: Transport, instances: int) -> float:
    """Store ``instances`` states (see :func:`_state`); return the first one's start time."""
    await Layout().provision(transport)
    states = await transport.kv(STATES_BUCKET)
    base = time.time() - instances
    started = time.perf_counter()
    numbers = iter(range(instances))

    async def writer() -> None:
        # WINDOW writers share one sequence of numbers: that many puts
        # are in flight at once.
        for i in numbers:
            await states.put(f"i{i:07d}", _state(i, base))

    async with trio.open_nursery() as nursery:
        for _ in range(WINDOW):
            nursery.start_soon(writer)
    print(f"stored        {instances:,} states in {time.perf_counter() - started:.1f} s")
    return base


async def run(instances: int) -> None:
    with tempfile.TemporaryDirectory() as folder, NatsServer(Path(folder)) as server:
        async with open_transport(server.url) as transport:
            base = await store_states(transport, instances)
            states = await transport.kv(STATES_BUCKET)

            async with Client(transport) as client:
                first, listed = await _timed(lambda: client.list(limit=10))
                print(f"first list    {first:.2f} s (builds the index: one pass over the bucket)")
                assert len(listed) == 10
                window = (base + instances * 0.004, base + instances * 0.006)
                cases: dict[str, Callable[[], Awaitable[Any]]] = {
                    "type+status": lambda: client.count_and_list(
                        workflow_type="refund", status="running", limit=100
                    ),
                    "status": lambda: client.count_and_list(status="failed", limit=100),
                    "time window": lambda: client.count_and_list(
                        started_after=window[0], started_before=window[1], limit=100
                    ),
                    "deep page": lambda: client.count_and_list(limit=100, offset=instances // 2),
                }
                print(f"{'query':<14} {'matches':>9} {'p50 ms':>8} {'max ms':>8}")
                for name, call in cases.items():
                    times = []
                    total = 0
                    for _ in range(QUERIES):
                        took, (page, total) = await _timed(call)
                        times.append(took * 1000)
                        assert len(page) == min(100, max(0, total))
                    print(
                        f"{name:<14} {total:>9,} {statistics.median(times):>8.2f} "
                        f"{max(times):>8.2f}"
                    )

            # The index alone, built again from the same bucket, under tracemalloc.
            tracemalloc.start()
            index = InstanceIndex(states)
            async with trio.open_nursery() as nursery:
                await nursery.start(index.run)
                size = tracemalloc.get_traced_memory()[0]
                nursery.cancel_scope.cancel()
            tracemalloc.stop()
            print(
                f"index memory  {size / 2**20:.1f} MiB for {len(index):,} instances "
                f"({size / max(len(index), 1):.0f} bytes each, measured with the watch's buffers)"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="5,000 instances: a smoke run")
    args = parser.parse_args()
    trio.run(run, 5_000 if args.quick else args.instances)
    return 0


if __name__ == "__main__":
    sys.exit(main())
