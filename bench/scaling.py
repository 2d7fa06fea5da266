"""Scaling past one machine: what a target rate of workflows needs, and what gives out first.

A model, not a benchmark. For each target rate (1,000, 10,000 and 100,000
workflows/s by default) it prints how many partitions, orchestrators,
workers and NATS nodes the rate needs, how busy each hot stream's leader
is, and the first thing that gives out as the rate grows. The reasoning and
the limits of the model are in ``docs/scaling.md``.

What is measured, on this machine, and what is assumed:

* **Costs, measured.** CPU seconds of one orchestrator decision, one worker
  task, and each broker operation (a stream write, a KV compare-and-set, a
  delivery with its ack) on one server, and at 3 replicas on a 3-node
  loopback cluster, where each node's part is told apart: the group's
  leader, the consumer's leader, the followers. ``--calibrate`` measures
  them (about two minutes; each figure the median of 3 rounds on fresh
  servers): the broker's operations done in bulk by this process through
  the transport, from 50 tasks at once, each server's CPU read from /proc
  before and after; then ``bench/engine.py``'s throughput phase (one
  orchestrator and one worker as processes) on the same servers, less what
  the servers spend with the engine idle. The engine's operations cost the
  servers more than the same operations in bulk (its pull requests, reads
  and outbox checks, fewer messages per batch at its lower rate): the model
  takes every broker cost that many times (printed), and also says where
  the first limit would be at the bulk costs, the other end of the range.
  Without ``--calibrate`` the program uses its last calibration
  (``CALIBRATED``, with its date).
* **The workload, assumed.** The reference workflow of ``bench/engine.py``:
  ``--activities`` (3) activities in a row that do nothing, ``--signals``
  (0) signals each, started by clients that do not wait for results
  (``--watch`` adds the read and the watch of a client that does).
* **Headroom, assumed.** An engine process is one Python thread: planned at
  ``PROCESS_BUSY`` of a core. A NATS node at ``NODE_BUSY`` of its cores
  (``--node-cores``, 8). A stream (a bucket, a consumer) is one Raft group
  whose leader alone takes its writes: the model counts all of the leader's
  CPU for the group as done one operation at a time and plans it at
  ``LEADER_BUSY`` of one core. That ceiling is the model's, not measured (a
  machine with 2 cores cannot load a stream to its limit and measure
  anything else), and pessimistic: the server spreads part of that work
  over other threads.

And one part that is simulated rather than computed: instance ids are
hashed into partitions with the engine's own hash (``transport.partition_of``),
and the partitions shared out among orchestrators by the leases' rule, so
that the busiest orchestrator's load, not the average, sets how many are
needed.

Usage, from the repository root::

    python bench/scaling.py                        # the model, on the stored costs
    python bench/scaling.py --rates 2000,50000 --activities 5 --node-cores 16
    python bench/scaling.py --calibrate            # measure the costs first (minutes)
    python bench/scaling.py --calibrate --quick    # a smoke calibration
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

HERE: Final = Path(__file__).resolve().parent
REPO_ROOT: Final = HERE.parent
# Run as a script, this file's folder comes first on sys.path, where its
# neighbour bench/transport.py would shadow the transport package: the
# repository root comes first instead, and bench/engine.py is imported from
# it. The calibration's loopback cluster, and who leads what on it, are the
# test suite's (tests/natsserver.py, tests/reliability/cluster_leaders.py).
sys.path[:] = [
    str(REPO_ROOT),
    *(p for p in sys.path if Path(p or ".").resolve() != HERE),
    str(REPO_ROOT / "tests"),
    str(REPO_ROOT / "tests" / "reliability"),
]
import cluster_leaders  # noqa: E402
import natsserver  # noqa: E402
import trio  # noqa: E402

from actors import Client, Layout  # noqa: E402
from actors.testing import NatsServer  # noqa: E402
from bench import engine  # noqa: E402
from transport import (  # noqa: E402
    MAX_PARTITIONS,
    ConsumerSpec,
    KVSpec,
    Retention,
    StreamSpec,
    partition_of,
)
from transport import open_transport as _open_transport  # noqa: E402

#: Share of one core an engine process (one Python thread) is planned to use.
PROCESS_BUSY: Final = 0.7
#: Share of a NATS node's cores planned to be used.
NODE_BUSY: Final = 0.6
#: Share of one core that one stream's leader work is planned to use.
LEADER_BUSY: Final = 0.8
#: Lease renewals per lease time (``actors/runtime/_partitions.py``).
RENEWALS: Final = 4
#: Partitions planned per orchestrator at least: the shares then differ by a quarter at
#: most, and one partition is at most a quarter of a process's work.
PARTITIONS_PER_PROCESS: Final = 4
#: Partition counts considered: powers of two, so that a count can later be
#: doubled partition by partition (see docs/scaling.md, "Changing P").
PARTITION_CHOICES: Final = tuple(2**k for k in range(4, 11) if 2**k <= MAX_PARTITIONS)
#: Seconds the calibration watches the servers with the engine idle.
IDLE_SECONDS: Final = 3.0
#: Instance ids hashed to see how evenly they spread over the partitions.
SIMULATED_IDS: Final = 200_000
#: The engine's hot assets: every event, task, decision and state write goes to one of them.
EVENTS, TASKS, HISTORY, STATES = (
    "WORKFLOW_EVENTS",
    "ACTIVITY_TASKS",
    "WORKFLOW_HISTORY",
    "KV_WORKFLOW_STATES",
)
LEASES: Final = "KV_WORKFLOW_PARTITIONS"
#: The consumer of one activity type's tasks (the reference workflow has one type).
TASK_CONSUMER: Final = "activity consumer"


# -- the costs ------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """CPU seconds one broker operation costs each node that holds a copy.

    ``leader``: the node leading the stream (or bucket). ``consumer``: for a
    delivery, the node leading its consumer, when that is another node (0
    otherwise: then ``leader`` holds both). ``follower``: each other node.
    ``total``: all nodes together (the sum of the others when left out).
    """

    leader: float
    follower: float = 0.0
    consumer: float = 0.0
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.total:
            object.__setattr__(self, "total", self.leader + self.consumer + self.follower)


@dataclass(frozen=True)
class Costs:
    """What each operation costs, in CPU seconds (see the module's docstring)."""

    measured: str
    #: One orchestrator decision (an event in, a state write, its messages, an ack).
    decision: float
    #: One worker task (a task in, a result out, an ack), the activity doing nothing.
    task: float
    #: replicas -> the servers' CPU per workflow in the engine run, every node together.
    server_per_workflow: dict[int, float]
    #: replicas -> operation ("write", "cas", "delivery") -> its cost, done in bulk.
    broker: dict[int, dict[str, Op]]

    def bottom_up(self, replicas: int) -> float:
        """The servers' CPU for one workflow of the engine run, priced operation by
        operation at the bulk costs."""
        ops = self.broker[replicas]
        return sum(
            writes * ops[kind].total + deliveries * ops["delivery"].total
            for kind, writes, deliveries in ENGINE_RUN.assets().values()
        )

    def overhead(self, replicas: int) -> float:
        """What the engine's broker work costs over its operations priced in bulk (its
        pull requests, outbox checks and reads, and smaller batches at its lower rate):
        the engine run's server CPU over :meth:`bottom_up`, at least 1."""
        return max(1.0, self.server_per_workflow[replicas] / self.bottom_up(replicas))

    def ops(self, replicas: int, overhead: bool = True) -> dict[str, Op]:
        """The broker's costs at ``replicas``, times :meth:`overhead` unless told not to."""
        k = self.overhead(replicas) if overhead else 1.0
        return {
            kind: Op(op.leader * k, op.follower * k, op.consumer * k, op.total * k)
            for kind, op in self.broker[replicas].items()
        }


#: The figures of the last ``--calibrate`` on this machine (2 vCPUs, shared; see
#: docs/scaling.md for the run). Replace them with your own machine's.
CALIBRATED: Final = Costs(
    measured="2026-12-06 16:21 UTC, bench/scaling.py --calibrate on this 2-vCPU machine",
    decision=384e-6,
    task=233e-6,
    server_per_workflow={1: 984e-6, 3: 5616e-6},
    broker={
        1: {"write": Op(12.5e-6), "cas": Op(13.9e-6), "delivery": Op(17.5e-6)},
        3: {
            "write": Op(27.5e-6, 19.0e-6, total=65.5e-6),
            "cas": Op(29.9e-6, 18.9e-6, total=67.7e-6),
            "delivery": Op(35.0e-6, 26.5e-6, consumer=42.0e-6, total=103.5e-6),
        },
    },
)


# -- the workload -----------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    activities: int = 3
    signals: int = 0
    #: Seconds an activity waits (I/O) while it runs; a worker runs ``concurrency`` at once.
    activity_seconds: float = 0.0
    concurrency: int = 16
    #: Whether clients read each start's state and watch it to its result.
    watch: bool = False
    replicas: int = 3

    @property
    def decisions(self) -> int:
        """Events an orchestrator decides per workflow: a start, each result, each signal."""
        return 1 + self.activities + self.signals

    def assets(self) -> dict[str, tuple[str, float, float]]:
        """Per workflow: asset -> (its write's kind, writes, deliveries)."""
        events = 1 + self.activities + self.signals
        # A waiting client: a read of the key at its start and another as it begins to
        # wait, and each state write pushed to its watch.
        reads = (2 + self.decisions) if self.watch else 0
        return {
            EVENTS: ("write", events, events),
            TASKS: ("write", self.activities, self.activities),
            HISTORY: ("write", self.decisions, 0),
            STATES: ("cas", self.decisions, reads),
        }


#: The engine run of a calibration: ``bench/engine.py``'s workflow, its client waiting
#: for each result.
ENGINE_RUN: Final = Workload(watch=True)


# -- the simulation of partitions and owners -----------------------------------------------


def shares(partitions: int, members: int) -> list[int]:
    """How many partitions each of ``members`` orchestrators owns (the leases' rule: the
    live members, sorted, share evenly; the first ``partitions % members`` take one more)."""
    return [partitions // members + (1 if i < partitions % members else 0) for i in range(members)]


class Spread:
    """How instance ids fall into partitions: a sample hashed with the engine's hash."""

    def __init__(self, count: int = SIMULATED_IDS) -> None:
        # Ids as a client makes them (bench/engine.py: uuid4().hex), here reproducible;
        # each hashed once: the partition is the 32-bit hash modulo the count.
        first = 0x5EED << 100
        self._hashes = [partition_of(f"{n:032x}", 1 << 32) for n in range(first, first + count)]
        self._fractions: dict[int, list[float]] = {}

    def fractions(self, partitions: int) -> list[float]:
        """Each partition's share of the instances."""
        if partitions not in self._fractions:
            counts = [0] * partitions
            for digest in self._hashes:
                counts[digest % partitions] += 1
            self._fractions[partitions] = [c / len(self._hashes) for c in counts]
        return self._fractions[partitions]

    def busiest(self, partitions: int, members: int) -> float:
        """The largest share of the instances one orchestrator decides, partitions given
        out in runs of consecutive numbers as the leases first hand them out."""
        fractions = self.fractions(partitions)
        start, most = 0, 0.0
        for share in shares(partitions, members):
            most = max(most, sum(fractions[start : start + share]))
            start += share
        return most


# -- the plan for one rate ----------------------------------------------------------------


@dataclass
class Plan:
    rate: float
    partitions: int
    orchestrators: int
    #: Cores the busiest orchestrator uses, and the hottest partition's.
    busiest: float
    hottest_partition: float
    workers: int
    nodes: int
    #: asset -> cores its leader spends (writes, deliveries), at this rate.
    leaders: dict[str, float]
    #: asset -> the rate at which its leader reaches LEADER_BUSY of a core.
    ceilings: dict[str, float]
    #: Cores every NATS node spends between them.
    server_cores: float

    @property
    def first_limit(self) -> tuple[str, float]:
        name = min(self.ceilings, key=lambda a: self.ceilings[a])
        return name, self.ceilings[name]

    def shards(self, asset: str) -> int:
        """Streams (or buckets) the asset would have to be split into to stay under the ceiling."""
        return max(1, math.ceil(self.leaders[asset] / LEADER_BUSY))


def plan(
    rate: float,
    costs: Costs,
    work: Workload,
    spread: Spread,
    node_cores: int,
    lease: float,
    *,
    overhead: bool = True,
) -> Plan:
    """What ``rate`` workflows/s need (see the module's docstring); ``overhead``: whether
    the broker's costs carry :meth:`Costs.overhead`."""
    broker = costs.ops(work.replicas, overhead)
    # Partitions: at least PARTITIONS_PER_PROCESS for each orchestrator the work
    # would need if it spread perfectly, within what the engine allows. Then the
    # fewest orchestrators that keep the busiest, as the leases share the
    # partitions out, under PROCESS_BUSY (a partition is never split).
    deciding = rate * work.decisions * costs.decision
    ideal = max(1, math.ceil(deciding / PROCESS_BUSY))
    partitions = next(
        (p for p in PARTITION_CHOICES if p >= PARTITIONS_PER_PROCESS * ideal),
        PARTITION_CHOICES[-1],
    )
    orchestrators = ideal
    while (
        orchestrators < partitions
        and spread.busiest(partitions, orchestrators) * deciding > PROCESS_BUSY
    ):
        orchestrators += 1
    busiest = spread.busiest(partitions, orchestrators) * deciding
    hottest = max(spread.fractions(partitions)) * deciding

    per_task = max(costs.task / PROCESS_BUSY, work.activity_seconds / work.concurrency)
    workers = max(1, math.ceil(rate * work.activities * per_task))

    leaders: dict[str, float] = {}
    ceilings: dict[str, float] = {}
    server = 0.0
    delivery = broker["delivery"]
    for asset, (kind, writes, deliveries) in work.assets().items():
        per_workflow = writes * broker[kind].leader + deliveries * delivery.leader
        leaders[asset] = rate * per_workflow
        # A quick calibration on a busy machine can measure a leader's share
        # as nothing: no ceiling is known then, rather than a division by zero.
        ceilings[asset] = LEADER_BUSY / per_workflow if per_workflow > 0 else math.inf
        server += rate * (writes * broker[kind].total + deliveries * delivery.total)
    # A consumer is a group of its own: the tasks of one activity type all go
    # through one consumer's leader (the events are spread over the partitions').
    if delivery.consumer:
        per_workflow = work.activities * delivery.consumer
        leaders[TASK_CONSUMER] = rate * per_workflow
        ceilings[TASK_CONSUMER] = LEADER_BUSY / per_workflow
    # The leases: every process renews its member key and each partition's owner
    # key RENEWALS times a lease, and every orchestrator watches every change.
    # Not proportional to the rate (to the processes and partitions), so not in
    # ``ceilings``.
    writes = (orchestrators + partitions) * RENEWALS / lease
    leaders[LEASES] = writes * (broker["cas"].leader + orchestrators * delivery.leader)
    server += writes * (broker["cas"].total + orchestrators * delivery.total)
    nodes = max(work.replicas, math.ceil(server / (node_cores * NODE_BUSY)))
    return Plan(
        rate, partitions, orchestrators, busiest, hottest, workers, nodes, leaders, ceilings, server
    )


# -- calibration --------------------------------------------------------------------------


@dataclass(frozen=True)
class Bulk:
    """How many operations of each kind a calibration does, from how many tasks at once."""

    writes: int = 20_000
    tasks: int = 50
    cas_each: int = 200
    workflows: int = 2000
    #: Broker rounds, each on fresh servers; the median of each figure is kept.
    rounds: int = 3


async def _broker_round(
    url: str,
    nodes: Sequence[NatsServer],
    leaders: Callable[[], Mapping[str, str]],
    replicas: int,
    bulk: Bulk,
) -> dict[str, Op]:
    """Each broker operation in bulk on one stream and one bucket of ``replicas``; what
    it cost each node, by the node's part in the operation's groups (``leaders`` says
    who leads each: stream, or ``stream/consumer`` -> server name)."""
    found: dict[str, Op] = {}

    def cpu() -> dict[str, float]:
        return {str(node.server_name): engine.proc_cpu(node.pid) for node in nodes}

    def priced(before: dict[str, float], count: int, leader: str, consumer: str = "") -> Op:
        spent = {name: (seconds - before[name]) / count for name, seconds in cpu().items()}
        others = [spent[name] for name in spent if name not in (leader, consumer)]
        return Op(
            leader=spent[leader],
            follower=sum(others) / len(others) if others else 0.0,
            consumer=spent[consumer] if consumer and consumer != leader else 0.0,
            total=sum(spent.values()),
        )

    async with _open_transport(url) as transport:
        await transport.ensure_stream(
            StreamSpec(
                name="SCALING",
                subjects=("scaling.>",),
                retention=Retention.WORK_QUEUE,
                replicas=replicas,
            )
        )
        kv = await transport.ensure_kv(KVSpec(bucket="SCALING", replicas=replicas))
        payload = b"x" * 300  # about an engine event's size

        async def publishes(k: int) -> None:
            # One at a time, as an instance actor publishes what a decision sends.
            for i in range(k, bulk.writes, bulk.tasks):
                await transport.publish(f"scaling.{k}", payload, msg_id=f"w-{i}")

        before = cpu()
        async with trio.open_nursery() as nursery:
            for k in range(bulk.tasks):
                nursery.start_soon(publishes, k)
        found["write"] = priced(before, bulk.writes, leaders()["SCALING"])

        async def updates(k: int) -> None:
            revision = await kv.create(f"k{k}", payload)
            for _ in range(bulk.cas_each):
                revision = await kv.update(f"k{k}", payload, revision)

        before = cpu()
        async with trio.open_nursery() as nursery:
            for k in range(bulk.tasks):
                nursery.start_soon(updates, k)
        writes = bulk.tasks * (bulk.cas_each + 1)
        found["cas"] = priced(before, writes, leaders()["KV_SCALING"])

        before = cpu()
        got = 0
        spec = ConsumerSpec(durable="scaling")
        async with transport.consume("SCALING", spec, buffer=512) as deliveries:
            async for delivery in deliveries:
                await delivery.ack()
                got += 1
                if got == bulk.writes:
                    break
        groups = leaders()
        found["delivery"] = priced(before, got, groups["SCALING"], groups["SCALING/scaling"])
    return found


def _engine_round(
    urls: str, nodes: Sequence[NatsServer], replicas: int, bulk: Bulk, folder: Path
) -> tuple[float, float, float]:
    """``bench/engine.py``'s throughput phase on these servers, one orchestrator and one
    worker as processes: CPU seconds per workflow of the orchestrator, the worker, and
    the servers together (less what they spend with the engine idle)."""
    flags = ["--url", urls, "--replicas", str(replicas)]
    services = [
        engine.ServiceProcess(
            "orchestrator", ["-m", "actors.orchestrator", *flags], folder / "orchestrator.log"
        ),
        engine.ServiceProcess(
            "worker",
            ["-m", "actors.worker", *flags, "--activities", "actors.examples.activities"],
            folder / "worker.log",
        ),
    ]
    try:
        deadline = time.monotonic() + engine.READY_TIMEOUT
        for service in services:
            service.wait_ready(deadline)

        def cpu() -> dict[str, float]:
            spent = {s.name: engine.proc_cpu(s.pid) for s in services}
            spent["servers"] = sum(engine.proc_cpu(node.pid) for node in nodes)
            return spent

        async def run() -> Any:
            async with (
                _open_transport(urls) as transport,
                Client(transport, layout=Layout(replicas=replicas)) as client,
            ):
                names = ("orchestrator", "worker")
                (figures,) = await engine.measure_sizes(
                    client, "scaling", [bulk.workflows], 5, cpu, names
                )
                return figures

        # What the servers spend with the engine idle (Raft heartbeats, the
        # services' pull requests and lease renewals) is no workflow's cost.
        idle_from = cpu()["servers"]
        time.sleep(IDLE_SECONDS)
        idle = (cpu()["servers"] - idle_from) / IDLE_SECONDS
        figures = trio.run(run)
    finally:
        for service in services:
            service.terminate()
        for service in services:
            service.wait_exit()
    spent, n = figures.cpu, figures.workflows
    servers = max(0.0, spent["servers"] - idle * figures.seconds)
    return spent["orchestrator"] / n, spent["worker"] / n, servers / n


def _alone() -> Mapping[str, str]:
    """Who leads what on a single server: it leads everything."""
    return defaultdict(lambda: "single")


def calibrate(bulk: Bulk, say: Callable[[str], None]) -> Costs:
    """Measure :class:`Costs` on this machine (see the module's docstring).

    Each round runs on fresh servers: one, then a 3-node loopback cluster;
    on each, the broker's operations in bulk and then the engine. The median
    of the rounds is kept for each figure.
    """
    rounds: list[dict[int, tuple[dict[str, Op], tuple[float, float, float]]]] = []
    for n in range(1, bulk.rounds + 1):
        found: dict[int, tuple[dict[str, Op], tuple[float, float, float]]] = {}
        with tempfile.TemporaryDirectory(prefix="bench-scaling-") as folder:
            say(f"round {n} of {bulk.rounds}: one server")
            with NatsServer(Path(folder) / "single", server_name="single") as single:
                found[1] = (
                    trio.run(_broker_round, single.url, [single], _alone, 1, bulk),
                    _engine_round(single.url, [single], 1, bulk, Path(folder)),
                )
            say(f"round {n} of {bulk.rounds}: a 3-node loopback cluster, 3 replicas")
            with natsserver.NatsCluster(Path(folder) / "cluster", 3) as cluster:
                found[3] = (
                    trio.run(
                        _broker_round,
                        cluster.urls,
                        cluster.nodes,
                        partial(cluster_leaders.leaders, cluster),
                        3,
                        bulk,
                    ),
                    _engine_round(cluster.urls, cluster.nodes, 3, bulk, Path(folder)),
                )
        rounds.append(found)

    def median(values: Iterable[float]) -> float:
        return statistics.median(values)

    parts = ("leader", "follower", "consumer", "total")
    broker = {
        r: {
            kind: Op(*(median(getattr(f[r][0][kind], part) for f in rounds) for part in parts))
            for kind in rounds[0][r][0]
        }
        for r in (1, 3)
    }
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    return Costs(
        measured=f"{when} UTC, measured now ({os.cpu_count()} cores)",
        # The orchestrator's and the worker's, on one server: what the broker's
        # replicas cost them is in waiting, not in CPU.
        decision=median(f[1][1][0] for f in rounds) / ENGINE_RUN.decisions,
        task=median(f[1][1][1] for f in rounds) / ENGINE_RUN.activities,
        server_per_workflow={r: median(f[r][1][2] for f in rounds) for r in (1, 3)},
        broker=broker,
    )


# -- report -------------------------------------------------------------------------------


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} us"


def _rate(value: float) -> str:
    return "unbounded" if math.isinf(value) else f"{value:,.0f}/s"


def describe_costs(costs: Costs, work: Workload) -> list[str]:
    lines = [
        f"costs ({costs.measured}):",
        f"  orchestrator {_us(costs.decision)} CPU per decision, worker {_us(costs.task)} per task",
    ]
    for replicas, ops in sorted(costs.broker.items()):
        parts = []
        for kind in ("write", "cas", "delivery"):
            op = ops[kind]
            if replicas == 1:
                parts.append(f"{kind} {_us(op.leader)}")
                continue
            consumer = f", its consumer's leader {_us(op.consumer)}" if op.consumer else ""
            parts.append(
                f"{kind} {_us(op.total)} (its leader {_us(op.leader)}{consumer}, "
                f"a follower {_us(op.follower)})"
            )
        lines.append(f"  broker at {replicas} replica{'s' * (replicas > 1)}: " + "; ".join(parts))
    for replicas in sorted(costs.broker):
        lines.append(
            f"  check at {replicas} replica{'s' * (replicas > 1)}: the engine run's servers "
            f"spent {_us(costs.server_per_workflow[replicas])} per workflow, its operations "
            f"priced in bulk {_us(costs.bottom_up(replicas))}: every broker cost is taken "
            f"{costs.overhead(replicas):.2f} times"
        )
    return lines


def report(
    plans: list[Plan],
    bulk: list[Plan],
    costs: Costs,
    work: Workload,
    node_cores: int,
    lease: float,
) -> str:
    """The plans, and beside each first limit the one at the bulk costs (``bulk``)."""
    lines = [
        f"workload: {work.activities} activities in a row, {work.signals} signals, "
        f"{work.activity_seconds:g} s in each activity; clients "
        f"{'watch each workflow to its end' if work.watch else 'start and do not wait'}; "
        f"{work.replicas} replica{'s' * (work.replicas > 1)}, lease {lease:g} s",
        *describe_costs(costs, work),
        f"headroom: engine processes at {PROCESS_BUSY:.0%} of a core, NATS nodes of "
        f"{node_cores} cores at {NODE_BUSY:.0%}, a group's leader at {LEADER_BUSY:.0%} of a core",
        "",
    ]
    header = (
        "workflows/s",
        "partitions",
        "orchestrators",
        "workers",
        "NATS nodes",
        "busiest leader",
    )
    rows = []
    for p in plans:
        hot = max(p.leaders, key=lambda a: p.leaders[a])
        rows.append(
            (
                f"{p.rate:,.0f}",
                str(p.partitions),
                f"{p.orchestrators} (busiest {p.busiest:.2f} core)",
                str(p.workers),
                f"{p.nodes} ({p.server_cores:.1f} cores busy)",
                f"{hot} {p.leaders[hot]:.2f} core",
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    lines.append("")
    for p, b in zip(plans, bulk, strict=True):
        name, at = p.first_limit
        over = [a for a in p.leaders if p.leaders[a] > LEADER_BUSY]
        lines.append(f"at {p.rate:,.0f} workflows/s:")
        lines.append("  leaders, cores: " + ", ".join(f"{a} {c:.2f}" for a, c in p.leaders.items()))
        lines.append(
            f"  hottest partition {p.hottest_partition:.2f} core of orchestrator work; "
            f"first to give out as the rate grows: {name}'s leader at {_rate(at)} "
            f"({_rate(b.ceilings[name])} at the bulk costs)"
        )
        if over:
            lines.append(
                "  over one leader's ceiling, and the groups each would have to be split into: "
                + ", ".join(f"{a} {p.shards(a)}" for a in over)
            )
    return "\n".join(lines)


def _at_least(low: float, kind: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type: a finite number of ``kind``, ``low`` or more."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value < math.inf:
            raise argparse.ArgumentTypeError(f"must be {low:g} or more, not {text}")
        return value

    return parse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="1000,10000,100000", help="workflows/s, comma-separated")
    parser.add_argument("--activities", type=_at_least(1, int), default=3)
    parser.add_argument("--signals", type=_at_least(0, int), default=0)
    parser.add_argument("--activity-seconds", type=_at_least(0, float), default=0.0)
    parser.add_argument("--watch", action="store_true", help="clients wait for each result")
    parser.add_argument("--replicas", type=int, choices=(1, 3), default=3)
    parser.add_argument("--node-cores", type=_at_least(1, int), default=8)
    parser.add_argument("--lease", type=_at_least(0.1, float), default=10.0)
    parser.add_argument("--calibrate", action="store_true", help="measure the costs first")
    parser.add_argument("--quick", action="store_true", help="with --calibrate: small bulks")
    args = parser.parse_args(argv)
    try:
        rates = [float(r) for r in args.rates.split(",")]
    except ValueError:
        rates = []
    if not rates or not all(0 < r < math.inf for r in rates):
        parser.error(
            f"--rates: positive numbers of workflows/s, like 1000,10000, not {args.rates!r}"
        )
    if args.quick and not args.calibrate:
        parser.error("--quick is for --calibrate")
    work = Workload(
        activities=args.activities,
        signals=args.signals,
        activity_seconds=args.activity_seconds,
        watch=args.watch,
        replicas=args.replicas,
    )
    print(f"Command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"cores: {os.cpu_count()}; python {platform.python_version()}")
    costs = CALIBRATED
    if args.calibrate:
        bulk = (
            Bulk(writes=2000, tasks=20, cas_each=20, workflows=200, rounds=1)
            if args.quick
            else Bulk()
        )
        costs = calibrate(bulk, lambda text: print(f"calibrating: {text}", flush=True))
        print(f"calibrated: {costs!r}")
    spread = Spread()
    plans, bulk_plans = (
        [
            plan(rate, costs, work, spread, args.node_cores, args.lease, overhead=overhead)
            for rate in rates
        ]
        for overhead in (True, False)
    )
    print(report(plans, bulk_plans, costs, work, args.node_cores, args.lease))


if __name__ == "__main__":
    main()
