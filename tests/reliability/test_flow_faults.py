"""Concurrency limits through SIGKILLs of the orchestrator, the workers and the server.

Ledger workflows limited to two running instances per group (and one
attempt of their second step per group) run while the test SIGKILLs, in
turn, the orchestrator, a worker and the nats-server, restarting each. At
the end the usual checker judges the run (every start finished correctly,
every step applied once), and the limits are judged from the activities'
own ledger: never more than two instances of a group had activity lines
open at once (nor two attempts of step two). And no slot leaked: the slots
bucket is empty once every instance has ended.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import pytest
import trio
from checker import check_run, ledger_input, ledger_output
from ledger_activities import read_ledger
from processes import Services

import actors
from actors.testing import NatsServer
from actors.wire import SLOTS_BUCKET
from transport import open_transport

pytestmark = pytest.mark.jetstream

ACK_WAIT = "2"
GROUPS = 5
SECONDS = 0.3
LIMITED_TYPE = "ledger_limited"
_TIMEOUT = "timeout: {start_to_close: 60s, heartbeat: 5s}"
LIMITED_FLOW = f"""
type: {LIMITED_TYPE}
version: 1
concurrency: [{{key: input.group, limit: 2}}]
steps:
  - {{id: one, activity: ledger_slow, {_TIMEOUT}}}
  - {{id: two, activity: ledger_slow, {_TIMEOUT}, concurrency: {{key: input.group, limit: 1}}}}
  - {{id: three, activity: ledger_slow, {_TIMEOUT}}}
  - {{id: four, activity: ledger_slow, {_TIMEOUT}}}
"""


def group_of(n: int) -> str:
    return f"g{n % GROUPS}"


def most_open(spans: Iterable[tuple[int, int]]) -> int:
    """The most of ``spans`` (first line, last line of the ledger) open at once."""
    edges = sorted([(first, 1) for first, _ in spans] + [(last, -1) for _, last in spans])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def overlaps(ledger: Path, ids: dict[str, int], step: str | None) -> dict[str, int]:
    """Per group, the most instances (or attempts of ``step``) running at once.

    The ledger's lines are in the order they were written (appended, fsynced):
    an instance runs from its first line to its last; an attempt of a step
    from its first begin to its last end (a run cut by a kill is inside).
    """
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for index, entry in enumerate(read_ledger(ledger)):
        if step is not None and entry.step != step:
            continue
        first.setdefault(entry.instance, index)
        last[entry.instance] = index
    spans: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for instance, begun in first.items():
        spans[group_of(ids[instance])].append((begun, last[instance]))
    return {group: most_open(found) for group, found in spans.items()}


async def _slots_freed(url: str) -> list[str]:
    """The slots bucket's keys once it is empty (bounded): every slot freed."""
    async with open_transport(url) as fresh:
        bucket = await fresh.kv(SLOTS_BUCKET)
        with trio.fail_after(60):
            async with bucket.watch() as changes:
                while keys := await bucket.keys():
                    print(f"slots still held: {keys}")
                    await changes.receive()
        return await bucket.keys()


async def _limits_through_kills(
    server: NatsServer, tmp_path: Path, *, workflows: int, kills: int, seed: int
) -> None:
    rng = random.Random(seed)
    with Services(server.url, tmp_path / "services", tmp_path / "ledger") as services:
        workers = ("worker-a", "worker-b")
        for name in workers:
            services.worker(name, "--ack-wait", ACK_WAIT)
        services.orchestrator("orchestrator", "--ack-wait", ACK_WAIT)
        await services.wait_ready(*workers, "orchestrator")
        async with open_transport(server.url) as transport, actors.Client(transport) as client:
            await client.register(LIMITED_FLOW)
            ids = {f"lim-{n:04d}": n for n in range(workflows)}
            for instance, n in ids.items():
                order = ledger_input(n, group=group_of(n), seconds=SECONDS)
                await client.start(LIMITED_TYPE, order, id=instance)
            victims = ["orchestrator", *workers, "server"]
            done = 0
            for _ in range(kills):
                # Each kill lands after more of the run has gone by.
                done += rng.randint(2, 6)
                await _ledger_lines(services.ledger, done)
                victim = rng.choice(victims)
                print(f"SIGKILL {victim} after {done} ledger lines")
                if victim == "server":
                    await trio.to_thread.run_sync(server.kill)
                    await trio.sleep(1.0)
                    await trio.to_thread.run_sync(server.restart)
                else:
                    await services.sigkill(victim)
                    if victim == "orchestrator":
                        services.orchestrator(victim, "--ack-wait", ACK_WAIT)
                    else:
                        services.worker(victim, "--ack-wait", ACK_WAIT)
            report = await check_run(
                transport,
                client,
                ids,
                services.ledger,
                servers=[server],
                output=lambda n: ledger_output(n, group=group_of(n), seconds=SECONDS),
            )
            report.assert_ok()
        assert await _slots_freed(server.url) == []
        instances = overlaps(services.ledger, ids, None)
        attempts = overlaps(services.ledger, ids, "two")
        print(f"most at once per group: instances {instances}, step two {attempts}")
        assert max(instances.values()) <= 2
        assert max(attempts.values()) <= 1
        assert len(instances) == GROUPS


async def _ledger_lines(ledger: Path, at_least: int) -> None:
    """Wait until the ledger holds ``at_least`` end lines (another process writes it)."""
    with trio.fail_after(120):
        # Another process's file is all there is to wait on: poll it.
        while sum(1 for e in read_ledger(ledger) if e.phase == "end") < at_least:  # noqa: ASYNC110
            await trio.sleep(0.1)


@pytest.mark.chaos
async def test_no_slot_leaks_through_kills(
    synced_server: NatsServer, tmp_path: Path, seed: int
) -> None:
    """40 limited workflows over 5 groups; 6 SIGKILLs among orchestrator, workers, server."""
    await _limits_through_kills(synced_server, tmp_path, workflows=40, kills=6, seed=seed)
