"""Scenario 13: signals sent right after their starts, while processes and the server die.

Two orchestrators and two workers (real processes) serve ``ledger_gated``
workflows: a ledger step, a wait for the signal ``go``, three more ledger
steps. A quarter of the instances are signalled right after their start is
accepted, when the start may not be decided yet (on a process that owns
another partition, or one about to die); the others a moment later. Every few
seconds one of the four services is SIGKILLed and started again, and the
server (``sync_interval: always``) is SIGKILLed twice and restarted on its
store. Starts and signals are retried, with their ids, until the broker takes
them, as a careful client does.

What must hold: every accepted start completes once with the right output
(so every signal was applied, and none twice), the checker finds nothing
wrong, and there is no dead letter: no event waited in vain for its instance.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import trio
from bad_messages import read_deadletters
from checker import (
    GATED_FLOW,
    GATED_TYPE,
    LEDGER_STEPS,
    check_run,
    connected,
    ledger_input,
    ledger_output,
)
from natsserver import NatsServer
from processes import Services

import actors
from transport import TransportError, open_transport

pytestmark = pytest.mark.jetstream

ACK_WAIT = "5"
ORCHESTRATORS = ("orchestrator-0", "orchestrator-1")
WORKERS = ("worker-0", "worker-1")


@dataclass(frozen=True)
class Storm:
    workflows: int
    #: Seconds over which the starts are spread (the kills go on as long).
    duration: float
    #: Seconds between two service kills, drawn from this range.
    gap: tuple[float, float]
    #: Seconds the server stays down, each of the two times.
    down: tuple[float, float]


QUICK = Storm(workflows=60, duration=15.0, gap=(2.0, 4.0), down=(1.0, 3.0))
FULL = Storm(workflows=400, duration=90.0, gap=(2.0, 5.0), down=(2.0, 6.0))


async def _retried(attempt: Callable[[], Awaitable[object]]) -> int:
    """Await ``attempt()`` until the broker takes it; how many times it failed."""
    failures = 0
    while True:
        try:
            await attempt()
            return failures
        except TransportError:
            # Not connected (it fails at once then), or no answer in time.
            failures += 1
            await trio.sleep(0.2)


async def _storm(server: NatsServer, tmp_path: Path, seed: int, storm: Storm) -> None:
    rng = random.Random(seed)
    began = time.monotonic()
    accepted: dict[str, int] = {}
    early: set[str] = set()
    counts = {"service kills": 0, "server kills": 0, "retries": 0}
    with Services(server.url, tmp_path / "services", tmp_path / "ledger") as services:
        for name in ORCHESTRATORS:
            services.orchestrator(name, "--ack-wait", ACK_WAIT)
        for name in WORKERS:
            services.worker(name, "--ack-wait", ACK_WAIT)
        await services.wait_ready(*ORCHESTRATORS, *WORKERS)

        def restart(name: str) -> None:
            if name in ORCHESTRATORS:
                services.orchestrator(name, "--ack-wait", ACK_WAIT)
            else:
                services.worker(name, "--ack-wait", ACK_WAIT)

        async with open_transport(server.url) as transport, actors.Client(transport) as client:
            await client.register(GATED_FLOW)

            async def signal_later(instance: str, delay: float) -> None:
                await trio.sleep(delay)
                counts["retries"] += await _retried(
                    partial(client.signal, instance, "go", instance, signal_id="go")
                )

            async def start_all(nursery: trio.Nursery) -> None:
                for n in range(storm.workflows):
                    instance = f"gated-{n:05d}"
                    counts["retries"] += await _retried(
                        partial(client.start, GATED_TYPE, ledger_input(n), id=instance)
                    )
                    accepted[instance] = n
                    if n % 4 == 0:
                        early.add(instance)
                        nursery.start_soon(signal_later, instance, 0.0)
                    else:
                        nursery.start_soon(signal_later, instance, rng.uniform(0.2, 3.0))
                    await trio.sleep(storm.duration / storm.workflows)

            async def kill_services() -> None:
                deadline = trio.current_time() + storm.duration
                server_kills = sorted(rng.uniform(0.2, 0.8) * storm.duration for _ in range(2))
                start = trio.current_time()
                while trio.current_time() < deadline or server_kills:
                    await trio.sleep(rng.uniform(*storm.gap))
                    if server_kills and trio.current_time() - start >= server_kills[0]:
                        server_kills.pop(0)
                        await trio.to_thread.run_sync(server.kill)
                        counts["server kills"] += 1
                        await trio.sleep(rng.uniform(*storm.down))
                        # A start waits for the server to be healthy: not on the event loop.
                        await trio.to_thread.run_sync(server.start)
                        continue
                    victim = rng.choice(ORCHESTRATORS + WORKERS)
                    await services.sigkill(victim)
                    counts["service kills"] += 1
                    await trio.sleep(0.5)
                    restart(victim)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(kill_services)
                await start_all(nursery)
            # The client may still be reconnecting after the last server kill.
            with trio.fail_after(60):
                await connected(transport)
            print(
                f"{storm.workflows} workflows, {len(early)} signalled right after the start; "
                f"{counts}; storm over after {time.monotonic() - began:.1f}s"
            )
            report = await check_run(
                transport,
                client,
                accepted,
                services.ledger,
                servers=[server],
                steps=LEDGER_STEPS,
                output=ledger_output,
                stall=90.0,
                signals=1,
            )
            letters = await read_deadletters(transport)
            print(f"checked after {time.monotonic() - began:.1f}s")
        report.assert_ok()
        assert letters == [], letters[:5]
        assert counts["server kills"] == 2, counts


async def test_signals_right_after_start_while_everything_dies(
    synced_server: NatsServer, tmp_path: Path, seed: int
) -> None:
    """60 gated workflows over 15 s: services killed every 2-4 s, the server twice."""
    await _storm(synced_server, tmp_path, seed, QUICK)


@pytest.mark.chaos
async def test_signals_right_after_start_while_everything_dies_full(
    synced_server: NatsServer, tmp_path: Path, seed: int
) -> None:
    """400 gated workflows over 90 s: services killed every 2-5 s, the server twice."""
    await _storm(synced_server, tmp_path, seed, FULL)
