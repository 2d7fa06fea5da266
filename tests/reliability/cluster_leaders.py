"""Who leads what on a loopback NATS cluster, and a chaos loop that SIGKILLs the leader.

Every JetStream stream (a KV bucket is the stream ``KV_{bucket}``) and every
durable consumer is a Raft group with a leader. Each node's monitoring
endpoint (``/jsz?streams=true&consumers=true``) reports the groups it holds
a replica of, with their leader's server name; only the leader's own report
says whether its followers are current. So:

* :func:`leaders` asks every live node and keeps, per group, the leader its
  members name;
* :func:`unsettled` says why the cluster is not back to full strength yet
  (a node down or unhealthy, a group without leader, a follower lagging), or
  ``None`` once every node is up and every group has caught up;
* :class:`LeaderKiller` SIGKILLs the node that leads most of the engine's
  streams and buckets, restarts it after a few seconds, and waits for
  :func:`unsettled` to be ``None`` before the next kill, so at most one node
  is ever down and no group is ever left with a single current replica.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
from natsserver import NatsCluster, NatsServer

from actors.wire import (
    DEFINITIONS_BUCKET,
    EVENTS_STREAM,
    HISTORY_STREAM,
    STATES_BUCKET,
    TASKS_STREAM,
)
from actors.wire._names import DEADLETTER_STREAM

#: The engine's streams, buckets as their streams: every one of them is replicated.
ENGINE_STREAMS = (
    EVENTS_STREAM,
    TASKS_STREAM,
    HISTORY_STREAM,
    DEADLETTER_STREAM,
    f"KV_{STATES_BUCKET}",
    f"KV_{DEFINITIONS_BUCKET}",
)
#: The groups whose leader the killer aims at: where every event, task and
#: state write of the engine goes.
HOT_STREAMS = (EVENTS_STREAM, TASKS_STREAM, f"KV_{STATES_BUCKET}")


def jsz(node: NatsServer, timeout: float = 2.0) -> dict[str, Any] | None:
    """The node's ``/jsz`` with stream and consumer details and configs; ``None`` if it
    does not answer."""
    if not node.running or node.paused:
        return None
    try:
        info: dict[str, Any] = node.monitor(
            "/jsz?accounts=true&streams=true&consumers=true&config=true", timeout=timeout
        )
    except (OSError, ValueError):
        return None
    return info


def _groups(info: Mapping[str, Any]) -> Iterable[tuple[str, dict[str, Any], int]]:
    """(group name, cluster info, replicas) of every replicated group in a ``/jsz`` report.

    A stream's group is named by the stream, a durable consumer's
    ``stream/consumer``. Ephemeral consumers (the KV watches: one replica, in
    memory, gone with their owner) are left out.
    """
    for account in info.get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            replicas = int((stream.get("config") or {}).get("num_replicas") or 1)
            yield stream["name"], stream.get("cluster") or {}, replicas
            for consumer in stream.get("consumer_detail") or []:
                config = consumer.get("config") or {}
                if not config.get("durable_name"):
                    continue
                own = int(config.get("num_replicas") or 0)
                yield (
                    f"{stream['name']}/{consumer['name']}",
                    consumer.get("cluster") or {},
                    own or replicas,
                )


def replica_counts(cluster: NatsCluster) -> dict[str, int]:
    """Stream (or ``stream/consumer``) -> its configured replicas, as live nodes report."""
    counts: dict[str, int] = {}
    for node in cluster.nodes:
        info = jsz(node)
        if info is not None:
            for name, _group, replicas in _groups(info):
                counts.setdefault(name, replicas)
    return counts


def leaders(cluster: NatsCluster) -> dict[str, str]:
    """Group (stream, or ``stream/consumer``) -> the server name of its leader.

    A group is listed when some live node reports a leader for it; a group
    whose members disagree keeps the answer of the leader itself, if it is
    among them.
    """
    found: dict[str, str] = {}
    for node in cluster.nodes:
        info = jsz(node)
        if info is None:
            continue
        for name, group, _ in _groups(info):
            leader = group.get("leader")
            if leader and (name not in found or leader == node.server_name):
                found[name] = str(leader)
    return found


def node_index(cluster: NatsCluster, server_name: str) -> int:
    return [node.server_name for node in cluster.nodes].index(server_name)


def unsettled(cluster: NatsCluster, streams: Sequence[str] = ENGINE_STREAMS) -> str | None:
    """Why the cluster is not at full strength, or ``None`` once it is.

    Full strength: every node runs and answers ``/healthz`` (which, on a
    cluster node, also means every group it holds a replica of is current),
    the nodes agree on a meta leader, and each of ``streams`` and each of
    their consumers has a leader whose own report shows all its followers
    current.
    """
    reports: dict[str, dict[str, Any]] = {}
    metas: set[str] = set()
    for node in cluster.nodes:
        name = str(node.server_name)
        if not node.running:
            return f"{name} is down"
        if not node.healthy(timeout=2.0):
            return f"{name}: /healthz is not 200"
        info = jsz(node)
        if info is None:
            return f"{name}: /jsz does not answer"
        reports[name] = info
        metas.add(str((info.get("meta_cluster") or {}).get("leader")))
    if len(metas) != 1 or "None" in metas:
        return f"meta leaders seen: {sorted(metas)}"
    seen: set[str] = set()
    for leader_name, info in reports.items():
        for name, group, replicas in _groups(info):
            if name.split("/")[0] not in streams or group.get("leader") != leader_name:
                continue
            seen.add(name)
            followers = group.get("replicas") or []
            if len(followers) != replicas - 1:
                return f"{name}: leader {leader_name} lists {len(followers)} followers"
            lagging = [f["name"] for f in followers if not f.get("current")]
            if lagging:
                return f"{name}: followers {lagging} are not current"
    for info in reports.values():
        for name, _group, _replicas in _groups(info):
            if name.split("/")[0] in streams and name not in seen:
                return f"{name} has no leader"
    missing = [s for s in streams if s not in seen]
    if missing:
        return f"streams not reported by a leader: {missing}"
    return None


async def wait_settled(
    cluster: NatsCluster, streams: Sequence[str] = ENGINE_STREAMS, within: float = 90.0
) -> float:
    """Wait until :func:`unsettled` is ``None``; the seconds it took.

    Fails after ``within`` seconds.
    """
    start = trio.current_time()
    why: str | None = "not asked yet"
    with trio.move_on_after(within):
        # The servers only tell through their monitoring port: poll it.
        while (why := await trio.to_thread.run_sync(unsettled, cluster, streams)) is not None:  # noqa: ASYNC110
            await trio.sleep(0.25)
        return trio.current_time() - start
    raise AssertionError(f"the cluster did not settle within {within}s: {why}")


def target(cluster: NatsCluster, rng: random.Random) -> tuple[int, list[str]]:
    """The node to kill: the one leading most of :data:`HOT_STREAMS` (ties: the leader of
    the states bucket, then a seeded draw); with the groups it leads."""
    found = leaders(cluster)
    hot = {name: leader for name, leader in found.items() if name in HOT_STREAMS}
    if not hot:
        raise AssertionError(f"no node leads any of {HOT_STREAMS}: {found}")
    counts = Counter(hot.values())
    best = max(counts.values())
    tied = sorted(name for name, n in counts.items() if n == best)
    states_leader = hot.get(f"KV_{STATES_BUCKET}")
    chosen = states_leader if states_leader in tied else rng.choice(tied)
    led = sorted(name for name, leader in found.items() if leader == chosen)
    return node_index(cluster, chosen), led


@dataclass
class Kill:
    """One kill of the chaos loop, for the report."""

    node: str
    led: list[str]
    at: float  # seconds since the loop started
    down: float = 0.0  # seconds the node was down
    settle: float = 0.0  # seconds from its restart until the cluster was whole again


@dataclass
class LeaderKiller:
    """Kills the leading node (:func:`target`) and brings it back, one kill at a time.

    Each :meth:`kill_once` SIGKILLs the node, restarts it ``down`` seconds
    later on its ports and store, and returns once :func:`unsettled` is
    ``None``. A cancellation while the node is down still restarts it, so the
    cluster is never left short of a node. Kills and restarts run in the
    test's main thread, so each node keeps dying with the test process (see
    ``actors.testing._natsserver._child_setup_factory``).
    """

    cluster: NatsCluster
    rng: random.Random
    down: float = 3.0
    kills: list[Kill] = field(default_factory=list)
    origin: float = field(default_factory=trio.current_time)

    async def kill_once(self) -> Kill:
        index, led = await trio.to_thread.run_sync(target, self.cluster, self.rng)
        node = self.cluster.nodes[index]
        began = trio.current_time()
        kill = Kill(str(node.server_name), led, began - self.origin)
        self.kills.append(kill)
        print(f"{wall()} chaos: SIGKILL {kill.node} at {kill.at:.1f}s; it led {led}")
        await trio.to_thread.run_sync(self.cluster.kill, index)
        try:
            await trio.sleep(self.down)
        finally:
            # Shielded: a cancellation cannot skip the restart. In a thread:
            # it waits for the node's client port.
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(
                    partial(self.cluster.restart, index, wait_healthy=False)
                )
            kill.down = trio.current_time() - began
        kill.settle = await wait_settled(self.cluster)
        print(
            f"{wall()} chaos: {kill.node} back after {kill.down:.1f}s, whole in {kill.settle:.1f}s"
        )
        return kill


def wall() -> str:
    """The wall-clock time, for log lines that must line up with the services' logs."""
    return time.strftime("%H:%M:%S")
