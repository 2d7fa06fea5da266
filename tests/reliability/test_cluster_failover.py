"""The engine on a 3-node NATS cluster whose leading node is SIGKILLed, again and again.

Issue 6, scenario 5. Three ``nats-server`` nodes on loopback hold every
stream and bucket with 3 replicas; orchestrator and worker subprocesses (and
this test's client) are given all three URLs. While ``ledger_four`` workflows
run, the node that leads most of the hot groups (the events and tasks
streams, the states bucket) is SIGKILLed, restarted a few seconds later, and
the next kill waits until the cluster is whole again: at most one node is
ever down, so every acknowledged write survives (it is on two nodes) and the
engine must only ride out leader elections.

What such an election does to the processes, and what the engine must do:

* a request in flight times out or fails: a publish or a compare-and-set
  whose reply was lost may or may not have happened. The orchestrator hands
  the event back and decides again from a fresh read; a CAS that did happen
  shows as a state whose ``cause`` is this event, and its outbox is
  published again (deduplicated by message id). A worker republishes its
  result with the same id;
* connections to the killed node drop and move to another node;
* pull requests and KV watches on the old leader go silent and are re-made.

The run is judged by the lead's :func:`checker.check_run`: every workflow
completed once with the right output, every step applied once, steps run
more than once counted, nothing left pending on any consumer, nothing for
unknown instances. The quick variant (default suite) kills one leader; the
full one (``-m chaos``) kills every 10 s for the whole run of 500 workflows.
"""

from __future__ import annotations

import functools
import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import trio
from checker import LEDGER_FLOW, LEDGER_STEPS, LEDGER_TYPE, check_run, ledger_input
from cluster_leaders import (
    ENGINE_STREAMS,
    LeaderKiller,
    leaders,
    node_index,
    replica_counts,
    wait_settled,
    wall,
)
from natsserver import NatsCluster
from processes import Services

import actors
from actors import Layout
from transport import (
    KVSpec,
    NotFoundError,
    StreamSpec,
    Transport,
    TransportClosedError,
    TransportError,
    open_transport,
)

T = TypeVar("T")

pytestmark = pytest.mark.jetstream

#: Every process provisions with this layout: 3 replicas of everything.
LAYOUT = Layout(replicas=3)
#: How long a service may hold a message before it is redelivered. Short, so
#: that an ack lost in a failover is made up for within the checker's wait.
ACK_WAIT = "10"


@dataclass(frozen=True)
class Scenario:
    """The size of a run: workflows, services, and how the chaos goes."""

    workflows: int
    orchestrators: int
    workers: int
    #: Seconds over which the starts are spread, so that kills land mid-run.
    start_over: float
    #: Kills at most (``None``: until every workflow finished).
    kills: int | None
    #: Seconds from one kill to the next, and how long a killed node stays down.
    every: float = 10.0
    down: float = 3.0
    #: The first kill comes once this share of the workflows was started.
    first_kill_after: float = 0.3


QUICK = Scenario(workflows=60, orchestrators=2, workers=2, start_over=4.0, kills=1)
FULL = Scenario(workflows=500, orchestrators=2, workers=2, start_over=60.0, kills=None)


async def through_failover(call: Callable[[], Awaitable[T]], what: str, within: float = 60.0) -> T:
    """``call()``, repeated while the broker fails it, as any client must during an election.

    Only for calls that are safe to repeat (a start with an id, a
    registration, a read).
    """
    failures: list[TransportError] = []
    with trio.fail_after(within):
        while True:
            try:
                result = await call()
            except TransportClosedError:
                raise
            except TransportError as exc:
                failures.append(exc)
                await trio.sleep(0.5)
                continue
            if failures:
                print(f"{wall()} {what}: done after {len(failures)} failures, {failures[-1]!r}")
            return result


async def start_paced(
    client: actors.Client, ids: Mapping[str, int], over: float, on_share: tuple[float, trio.Event]
) -> None:
    """Start every instance of ``ids`` (id -> n), spread over ``over`` seconds; set the
    event once the given share of them is started."""
    share, reached = on_share
    interval = over / max(1, len(ids))
    for k, (instance_id, n) in enumerate(ids.items(), 1):
        start = functools.partial(client.start, LEDGER_TYPE, ledger_input(n), id=instance_id)
        await through_failover(start, f"start {instance_id}")
        if k >= share * len(ids):
            reached.set()
        await trio.sleep(interval)
    reached.set()


async def wait_all(client: actors.Client, ids: Mapping[str, int], *, stall: float) -> None:
    """Wait until every instance is terminal, riding out broker errors.

    Fails if no instance finished for ``stall`` seconds (the checker looks at
    outcomes afterwards; here only "stuck for good" is an error).
    """
    pending = set(ids)
    with trio.move_on_after(stall) as progress:

        async def one(instance_id: str) -> None:
            await through_failover(
                functools.partial(client.wait, instance_id), f"wait {instance_id}", math.inf
            )
            pending.discard(instance_id)
            progress.deadline = trio.current_time() + stall

        async with trio.open_nursery() as nursery:
            for instance_id in sorted(ids):
                nursery.start_soon(one, instance_id)
    if pending:
        raise AssertionError(
            f"{len(pending)} of {len(ids)} instances made no progress for {stall}s, "
            f"e.g. {sorted(pending)[:5]}"
        )


async def chaos(
    killer: LeaderKiller, scenario: Scenario, first: trio.Event, finished: trio.Event
) -> None:
    """Kill leaders from ``first`` on, one every ``scenario.every`` seconds (each kill
    waits for the cluster to be whole again), until the limit or ``finished``."""
    await first.wait()
    while scenario.kills is None or len(killer.kills) < scenario.kills:
        if finished.is_set():
            return
        began = trio.current_time()
        await killer.kill_once()
        with trio.move_on_after(max(0.0, scenario.every - (trio.current_time() - began))):
            await finished.wait()


async def run_scenario(cluster: NatsCluster, tmp_path: Path, seed: int, scenario: Scenario) -> None:
    """Run ``scenario`` on ``cluster``: services, workflows and kills, then the checker."""
    ledger = tmp_path / "ledger"
    ids = {f"wf-{n:05d}": n for n in range(scenario.workflows)}
    with Services(cluster.urls, tmp_path / "services", ledger) as services:
        for i in range(scenario.orchestrators):
            services.orchestrator(f"orchestrator-{i}", "--replicas", "3", "--ack-wait", ACK_WAIT)
        for i in range(scenario.workers):
            services.worker(f"worker-{i}", "--replicas", "3", "--ack-wait", ACK_WAIT)
        await services.wait_ready(*services.services)
        async with (
            open_transport(cluster.urls) as transport,
            actors.Client(transport, layout=LAYOUT) as client,
        ):
            await through_failover(functools.partial(client.register, LEDGER_FLOW), "register")
            killer = LeaderKiller(cluster, random.Random(seed), down=scenario.down)
            first, finished = trio.Event(), trio.Event()
            began = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(chaos, killer, scenario, first, finished)
                await start_paced(
                    client, ids, scenario.start_over, (scenario.first_kill_after, first)
                )
                await wait_all(client, ids, stall=120.0)
                ran = trio.current_time() - began
                finished.set()
            print(f"{wall()} all {len(ids)} instances terminal after {ran:.1f}s")
            for kill in killer.kills:
                print(
                    f"  kill at {kill.at:.1f}s: {kill.node} (led {', '.join(kill.led)}); "
                    f"down {kill.down:.1f}s, whole again {kill.settle:.1f}s later"
                )
            assert killer.kills, "no leader was killed: the scenario tested nothing"

            await wait_settled(cluster)
            # A service that gave up during an election (exited) would leave
            # the others to carry the load, and hide a defect.
            exited = {
                name: service.proc.poll()
                for name, service in services.services.items()
                if service.proc.poll() is not None
            }
            assert not exited, f"services exited during the failovers: {exited}"
            counts = await trio.to_thread.run_sync(replica_counts, cluster)
            engine = {name: n for name, n in counts.items() if name.split("/")[0] in ENGINE_STREAMS}
            assert engine, "no engine stream reported"
            assert set(engine.values()) == {3}, f"replicas: {engine}"

            report = await check_run(
                transport, client, ids, ledger, servers=cluster.nodes, settle=60.0
            )
            print(
                f"{wall()} {len(ids)} workflows in {ran:.1f}s through {len(killer.kills)} "
                f"kills: {report.summary()}"
            )
            # Activities run at least once: a task whose ack a failover lost
            # runs again. A tenth of all steps would mean something worse.
            report.assert_ok(max_duplicates=len(ids) * len(LEDGER_STEPS) // 10)


async def test_one_leader_killed_mid_run(cluster: NatsCluster, tmp_path: Path, seed: int) -> None:
    """60 ledger workflows complete exactly once on 3 replicas while the node leading the
    hot streams and the states bucket is SIGKILLed mid-run and restarted: services fail
    over to the other nodes, nothing is lost or applied twice, nothing is left pending."""
    await run_scenario(cluster, tmp_path, seed, QUICK)


@pytest.mark.chaos
async def test_leaders_killed_every_ten_seconds(
    cluster: NatsCluster, tmp_path: Path, seed: int
) -> None:
    """500 ledger workflows, two orchestrators and two workers; the leading node is
    SIGKILLed every 10 s (restarted 3 s later, the cluster whole again before the next
    kill) for the whole run: every workflow completes exactly once."""
    await run_scenario(cluster, tmp_path, seed, FULL)


# -- regressions: what the scenario found ---------------------------------------------


async def test_a_replicated_bucket_reads_what_was_just_written(cluster: NatsCluster) -> None:
    """A read right after an acknowledged write returns that write, from every node.

    Found by the full scenario: KV reads were direct gets, which every replica
    answers, and a follower may not have applied the latest write yet (about
    one read in 40 on a healthy loopback cluster). An orchestrator that read
    a state older than the one that scheduled a step took that step's result
    for a stale one and acked it: the workflow never finished. Replicated
    buckets are now read from their leader.
    """
    async with open_transport(cluster.urls) as writer:
        written = await writer.ensure_kv(KVSpec(bucket="FRESH", replicas=3))
        stale: dict[str, int] = {}
        for node in cluster.nodes:
            # A reader on each node, the writer on any: the node a client
            # talks to is the one whose replica tends to answer its reads.
            async with open_transport(node.url) as reader:
                kv = await reader.kv("FRESH")
                misses = 0
                for i in range(300):
                    for write, read in ((written, kv), (kv, kv)):
                        revision = await write.put("key", b"%d" % i)
                        entry = await read.get("key")
                        assert entry is not None
                        misses += entry.revision != revision
                stale[str(node.server_name)] = misses
    assert set(stale.values()) == {0}, f"reads older than the write just made, per node: {stale}"


async def test_a_client_at_the_default_layout_keeps_the_cluster_replicas(
    cluster: NatsCluster,
) -> None:
    """Opening a ``Client`` with the default layout (one replica) on a cluster whose assets
    have three leaves them at three.

    Provisioning updated an existing stream to the provisioner's
    configuration, replicas included: one ``Client(transport)`` or CLI command
    without ``--replicas 3`` took every stream and bucket down to a single
    copy, silently, and the next loss of a node lost or blocked them. An
    update now never lowers the replicas.
    """
    async with open_transport(cluster.urls) as transport:
        await LAYOUT.provision(transport)
        async with actors.Client(transport) as client:
            await client.register(LEDGER_FLOW)
    counts = await trio.to_thread.run_sync(replica_counts, cluster)
    streams = {name: n for name, n in counts.items() if name in ENGINE_STREAMS}
    assert sorted(streams) == sorted(ENGINE_STREAMS)
    assert set(streams.values()) == {3}, streams


async def writes_through_election(
    cluster: NatsCluster,
    group: str,
    prepare: Callable[[Transport], Awaitable[Callable[[], Awaitable[object]]]],
) -> list[TransportError]:
    """SIGKILL the leader of ``group``, write until it succeeds, restart the node; the
    errors the writes met.

    ``prepare`` makes the write before the kill (so that looking up a bucket
    does not meet a meta leader election instead). The client talks to a node
    that stays up, so what it sees is the election, not a lost connection.
    """
    await wait_settled(cluster, (group,))
    found = await trio.to_thread.run_sync(leaders, cluster)
    victim = node_index(cluster, found[group])
    survivor = next(node for i, node in enumerate(cluster.nodes) if i != victim)
    seen: list[TransportError] = []
    async with open_transport(survivor.url) as transport:
        write = await prepare(transport)
        await trio.to_thread.run_sync(cluster.kill, victim)
        try:
            # Once the survivor has dropped its route to the dead node,
            # requests meet the election rather than a route that is gone.
            await trio.sleep(0.5)
            with trio.fail_after(60):
                while True:
                    try:
                        await write()
                        break
                    except TransportError as exc:
                        seen.append(exc)
                        await trio.sleep(0.1)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(
                    functools.partial(cluster.restart, victim, wait_healthy=False)
                )
    print(f"{group}: stored after {dict(Counter(type(exc).__name__ for exc in seen))}")
    return seen


async def test_writes_during_a_leader_election_fail_as_transient(
    cluster: NatsCluster,
) -> None:
    """While a stream or a bucket has no leader, a publish or a KV write fails with a
    retryable error, not :class:`NotFoundError`; a subject no stream takes still raises
    ``NotFoundError``.

    Found by the scenario: for the seconds an election takes, the server
    answers a publish with "no responders", which the transport reported as
    ``NotFoundError("no stream stores subject ...")``, the error its contract
    gives for a subject no stream takes. A caller that, as documented, retries
    only lost connections and timeouts gave up on a start that would have
    succeeded a second later, and the services' logs blamed a missing stream.
    """
    async with open_transport(cluster.urls) as transport:
        await transport.ensure_stream(StreamSpec(name="ELECT", subjects=("elect.>",), replicas=3))
        await transport.ensure_kv(KVSpec(bucket="ELECT", replicas=3))

    async def publish(transport: Transport) -> Callable[[], Awaitable[object]]:
        return functools.partial(transport.publish, "elect.x", b"x", msg_id="elect-1")

    async def put(transport: Transport) -> Callable[[], Awaitable[object]]:
        return functools.partial((await transport.kv("ELECT")).put, "key", b"x")

    published = await writes_through_election(cluster, "ELECT", publish)
    written = await writes_through_election(cluster, "KV_ELECT", put)
    # With the cluster whole (a meta leader to ask), a subject no stream takes
    # is still told apart from a stream without a leader.
    await wait_settled(cluster, ("ELECT", "KV_ELECT"))
    async with open_transport(cluster.urls) as transport:
        with pytest.raises(NotFoundError):
            await transport.publish("nowhere.x", b"x")
    assert published, "no publish failed: the election went unobserved"
    assert written, "no KV write failed: the election went unobserved"
    wrong = [exc for exc in published + written if isinstance(exc, NotFoundError)]
    assert not wrong, wrong


async def test_services_started_beside_a_cluster_without_quorum_wait_for_it(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    """An orchestrator and a worker started while two of the three nodes are down
    (nothing can be provisioned: no meta leader) keep trying rather than exit,
    and serve once the nodes are back: a ledger workflow then completes. A
    deployment's services often start before, or beside, their cluster."""
    for node in (1, 2):
        await trio.to_thread.run_sync(cluster.kill, node)
    with Services(cluster.urls, tmp_path / "services", tmp_path / "ledger") as services:
        services.orchestrator("orchestrator", "--replicas", "3", "--ack-wait", ACK_WAIT)
        services.worker("worker", "--replicas", "3", "--ack-wait", ACK_WAIT)
        await trio.sleep(8.0)  # over one request's deadline (5 s): each service has waited
        gone = {
            name: code
            for name, service in services.services.items()
            if (code := service.proc.poll()) is not None
        }
        assert not gone, f"services gave up while the cluster had no quorum: {gone}"
        for node in (1, 2):
            restart = functools.partial(cluster.restart, node, wait_healthy=False)
            await trio.to_thread.run_sync(restart)
        await services.wait_ready("orchestrator", "worker")
        async with (
            open_transport(cluster.urls) as transport,
            actors.Client(transport, layout=LAYOUT) as client,
        ):
            await through_failover(functools.partial(client.register, LEDGER_FLOW), "register")
            await through_failover(
                functools.partial(client.start, LEDGER_TYPE, ledger_input(1), id="late-1"), "start"
            )
            with trio.fail_after(60):
                result = await client.wait("late-1")
        assert result.status == "completed", result
