"""The orchestrator: partitions, the intake of plain starts, and the instance actors.

Every event of an instance is filed under the instance's partition of the
events stream. The orchestrator serves the partitions it holds a lease on
(``_partitions.py``): for each, it pulls the partition's consumer and hands
each event (decoded by ``_incoming.py``) to its instance's actor
(``_instance.py``), spawning one if needed; an actor decides its events one
at a time, in the order they were stored. Any orchestrator also takes
plain starts (``workflow.start.{type}``) from the shared intake and files
each under its instance.

What cannot be processed (a malformed message, an event for an instance
that never comes) goes to the dead-letter stream with its reason and is
acked. A bug or an oversized state inside one instance fails that instance
with the error recorded; the service goes on. An actor with nothing to do
for ``passivate_after`` seconds exits: its state lives in KV.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import trio

from transport import Delivery, Transport, TransportClosedError, TransportError

from ..core import (
    InvalidNameError,
    Limits,
    check_name,
)
from ..observability import NO_METRICS, Metrics
from ..wire import (
    CANCELS_BUCKET,
    DEFINITIONS_BUCKET,
    EVENTS_STREAM,
    INSTANCE_PREFIX,
    OPERATIONS_BUCKET,
    PARTITIONS_BUCKET,
    SCHEDULES_BUCKET,
    SLOTS_BUCKET,
    START_PREFIX,
    STATES_BUCKET,
    CodecError,
    Layout,
    MessageError,
    decode_start,
    instance_partition,
    published_subject,
    start_subject,
)
from ._actor_context import Context, Routed
from ._counters import Counters
from ._deadletters import deadletter
from ._flow import WorkflowSlots
from ._incoming import decode_event
from ._instance import RETRY_DELAY, InstanceActor
from ._partitions import Leases, Ownership
from ._pauses import TypePauses
from ._registry import DefinitionStore
from ._retention import DEFAULT_REMOVAL_RATE, DEFAULT_RETENTION, Sweeper, retention_periods
from ._scheduler import Scheduler

__all__ = ["Orchestrator", "OrchestratorConfig"]

log = logging.getLogger("actors.orchestrator")


@dataclass(frozen=True, kw_only=True)
class OrchestratorConfig:
    """How an orchestrator runs. Durations in seconds."""

    layout: Layout = field(default_factory=Layout)
    #: An actor idle this long exits (its instance stays in KV).
    passivate_after: float = 30.0
    #: Idle actors kept at most: past it, the one idle longest exits at once,
    #: so that memory stays bounded however many instances wait at a time.
    max_idle_actors: int = 10_000
    #: Deliveries fetched ahead of the actors.
    prefetch: int = 512
    #: On shutdown, how long actors may take to finish the events they hold.
    drain_timeout: float = 10.0
    #: Sizes an instance's input, outputs and state may have.
    limits: Limits = field(default_factory=Limits)
    #: How long an event for an instance not stored yet (a signal sent right
    #: after a start another process still holds) waits for it, from when the
    #: event was stored, before it goes to dead letters. ``None``: the
    #: streams' duplicate window, within which a start sent again is dropped.
    start_wait: float | None = None
    #: Events held back at once waiting for their instance; past it, a further
    #: one goes to dead letters at once. Each held event keeps a place in the
    #: consumer's limit of unacknowledged messages, which a flood of events
    #: for made-up ids must not fill.
    max_waiting_events: int = 1000
    #: How long a lease on a partition lasts unrenewed: a crashed or frozen
    #: orchestrator's partitions are taken over this long after its last
    #: renewal (see ``_partitions.py``).
    lease: float = 10.0
    #: How often the orchestrator owning partition 0 looks for slots of
    #: concurrency limits held by instances that will never free them (see
    #: ``WorkflowSlots.sweep``); ``None``: never.
    slot_sweep: float | None = 30.0
    #: How long a finished instance's state and history are kept (``None``:
    #: for ever), unless its type has a period in ``retention_by_type``.
    retention: float | None = DEFAULT_RETENTION
    #: Per workflow type, ``TYPE=DURATION`` (``order=1d``): its own retention.
    retention_by_type: tuple[str, ...] = ()
    #: Finished instances this process removes a second at most, so that many
    #: expiring at once do not slow the running ones (see ``_retention.py``).
    removal_rate: float = DEFAULT_REMOVAL_RATE

    def __post_init__(self) -> None:
        if self.retention is not None and not 0 < self.retention < math.inf:
            raise ValueError(
                f"retention must be a positive number of seconds, got {self.retention}"
            )
        # Checked now, so that a typo stops the service at its start.
        retention_periods(self.retention_by_type)
        if not 0 < self.removal_rate < math.inf:
            raise ValueError(f"removal_rate must be a positive number, got {self.removal_rate}")
        if self.max_idle_actors < 0:
            raise ValueError(f"max_idle_actors must not be negative, got {self.max_idle_actors}")
        if self.start_wait is not None and not 0 <= self.start_wait < math.inf:
            raise ValueError(f"start_wait must be 0 or more seconds, got {self.start_wait}")
        if not 0 < self.lease < math.inf:
            raise ValueError(f"lease must be a positive number of seconds, got {self.lease}")
        if self.max_waiting_events < 0:
            raise ValueError(
                f"max_waiting_events must not be negative, got {self.max_waiting_events}"
            )
        if self.limits.max_state > self.layout.max_payload:
            # A state the broker refuses cannot even be failed in place: the
            # instance would stay running with its event dead-lettered.
            raise ValueError(
                f"max_state ({self.limits.max_state}) must not be over the broker's "
                f"largest message ({self.layout.max_payload} bytes)"
            )


def _retention_for(config: OrchestratorConfig) -> Callable[[str], float | None]:
    """How long a finished instance of each type is kept, by the config."""
    periods: Mapping[str, float] = retention_periods(config.retention_by_type)
    return lambda workflow_type: periods.get(workflow_type, config.retention)


@dataclass(eq=False)
class _Partition:
    """A partition this process decides the events of, while it owns it."""

    number: int
    #: Cancelled to stop taking its events (the actors then finish theirs).
    routing: trio.CancelScope = field(default_factory=trio.CancelScope)
    #: The instances with an actor here.
    instances: set[str] = field(default_factory=set)
    #: Set once its consumer is closed: nothing of it is decided any more.
    stopped: trio.Event = field(default_factory=trio.Event)


class Orchestrator:
    """One orchestrator process's share of the work.

    Use :meth:`run` in a nursery (``await nursery.start(orch.run)``); it
    returns after :meth:`shutdown` once the events in hand are finished or
    the drain deadline passed, and its partitions handed to the other
    orchestrators; it raises only for a broken transport.
    """

    def __init__(
        self,
        transport: Transport,
        config: OrchestratorConfig | None = None,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self._transport = transport
        self._config = config or OrchestratorConfig()
        #: Where it counts what it does (``None``: nowhere); see ``actors.observability``.
        self._metrics = metrics or NO_METRICS
        self._mailboxes: dict[str, trio.MemorySendChannel[Routed]] = {}
        #: The idle actors' waits, longest idle first (see ``max_idle_actors``).
        self._idle: OrderedDict[str, trio.CancelScope] = OrderedDict()
        self._stopping = trio.Event()
        self._intake_scope = trio.CancelScope()
        #: What the instance actors see of this orchestrator (once it runs).
        self._context: Context | None = None
        self._leases: Leases | None = None
        #: The partitions being served, by number.
        self._partitions: dict[int, _Partition] = {}
        #: How many partitions the instances are filed in (the stream's).
        self._count = self._config.layout.partitions
        #: Counters for tests and operators (a ``dict``; see :meth:`wait_until`).
        self.stats = Counters(
            (
                "events",
                "conflicts",
                "deadletters",
                "instance_failures",
                "waits_for_start",
                "starts_forwarded",
                "expired",
                "schedule_starts",
                "schedule_skips",
                "schedule_missed",
            )
        )
        _observed(self, self._metrics, transport)

    @property
    def active_actors(self) -> int:
        return len(self._mailboxes)

    @property
    def partitions(self) -> frozenset[int]:
        """The partitions whose events this process decides now."""
        return frozenset(self._partitions)

    @property
    def leases(self) -> Leases | None:
        """This process's leases on the partitions (once :meth:`run` started)."""
        return self._leases

    @property
    def start_wait(self) -> float:
        """Seconds an event for an instance not stored yet waits for it (see the config)."""
        config = self._config
        return config.layout.duplicate_window if config.start_wait is None else config.start_wait

    def shutdown(self) -> None:
        """Stop taking events; finish those in hand (see ``drain_timeout``)."""
        self._stopping.set()

    async def wait_until(self, condition: Callable[[], object]) -> None:
        """Return once ``condition()`` is true: at once if it is already.

        ``condition`` is called again after each change of :attr:`stats`,
        :attr:`active_actors` or :attr:`partitions`, and never on a timer, so
        it must depend on those alone (a condition on a stream or a bucket
        is not woken by their changes). It runs in the waiting task, some
        time after the change: a state that comes and goes before then is
        not seen, so wait for lasting ones (the counters only grow). Waits
        for ever if the condition never holds: bound it (``trio.fail_after``).
        Meant for tests, such as "wait until the orchestrator took an event
        and has no actor left"::

            seen = orchestrator.stats["events"]
            ...  # publish an event
            await orchestrator.wait_until(
                lambda: orchestrator.stats["events"] > seen and not orchestrator.active_actors
            )
        """
        await self.stats.wait_until(condition)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Provision the assets, then serve events until :meth:`shutdown`.

        Ready once this process holds its first share of the partitions and
        takes plain starts.
        """
        config = self._config
        assets = await config.layout.provision(self._transport)
        self._count = assets.partitions
        if self._count != config.layout.partitions:
            log.info(
                "the events stream has %d partitions (fixed when it was created), not %d",
                self._count,
                config.layout.partitions,
            )
        definitions = DefinitionStore(assets.buckets[DEFINITIONS_BUCKET])
        pauses = TypePauses(assets.buckets[OPERATIONS_BUCKET])
        self._context = Context(
            transport=self._transport,
            states=assets.buckets[STATES_BUCKET],
            cancels=assets.buckets[CANCELS_BUCKET],
            definitions=definitions,
            limits=config.limits,
            ack_wait=config.layout.ack_wait,
            start_wait=self.start_wait,
            max_waiting_events=config.max_waiting_events,
            stats=self.stats,
            deadletter=self._deadletter,
            slots=WorkflowSlots(self._transport, assets.buckets[SLOTS_BUCKET]),
            type_pause=pauses.pause_for,
            retention=_retention_for(config),
            metrics=self._metrics,
        )
        leases = self._leases = Leases(
            assets.buckets[PARTITIONS_BUCKET], self._count, lease=config.lease
        )
        async with trio.open_nursery() as services:
            await services.start(definitions.follow)
            await services.start(pauses.follow)
            sweeper = Sweeper(
                self._transport,
                assets.buckets[STATES_BUCKET],
                config.layout,
                config.removal_rate,
                self.stats,
                self._deadletter,
            )
            await services.start(sweeper.run)
            await services.start(leases.run)
            services.start_soon(self._sweep_slots)
            scheduler = Scheduler(
                self._transport,
                assets.buckets[SCHEDULES_BUCKET],
                assets.buckets[STATES_BUCKET],
                owns=self._fires,
                stats=self.stats,
            )
            await services.start(scheduler.run)
            async with trio.open_nursery() as served:
                services.start_soon(self._follow_leases, leases, served)
                await served.start(self._intake)
                task_status.started()
                await self._stopping.wait()
                # Drain: stop taking events; the actors finish what they hold.
                self._intake_scope.cancel()
                for partition in list(self._partitions.values()):
                    partition.routing.cancel()
            services.cancel_scope.cancel()
        # Nothing is decided here any more: let the others take over now.
        await leases.close()

    async def _sweep_slots(self) -> None:
        """Now and then, free slots whose holders will never free them (partition 0's owner)."""
        every = self._config.slot_sweep
        context = self._context
        if every is None or context is None:
            return
        # An instance not stored this long after it took a slot never will be:
        # its start waits no longer than ``start_wait`` plus an ack wait.
        grace = self.start_wait + 2 * self._config.layout.ack_wait
        while True:
            await trio.sleep(every)
            if 0 not in self._partitions:
                continue
            try:
                await context.slots.sweep(context.states, grace)
            except TransportClosedError:
                raise
            except (TransportError, MessageError) as exc:
                log.warning("could not sweep the slots (%s); trying again later", exc)

    def _fires(self, schedule_id: str) -> bool:
        """Whether this process fires the schedule now: it owns the id's partition."""
        number = instance_partition(schedule_id, self._count)
        leases = self._leases
        return (
            number in self._partitions
            and leases is not None
            and leases.valid(number)
            and not self._stopping.is_set()
        )

    async def _follow_leases(self, leases: Leases, served: trio.Nursery) -> None:
        """Serve the partitions this process acquires; stop those it loses or hands back."""
        async for change, number in leases.changes:
            partition = self._partitions.get(number)
            if change is Ownership.ACQUIRED:
                if not self._stopping.is_set():
                    served.start_soon(self._serve, number, partition)
                continue
            if partition is not None:
                partition.routing.cancel()
            if change is Ownership.RELEASE:
                served.start_soon(self._hand_back, leases, number, partition)

    async def _hand_back(self, leases: Leases, number: int, partition: _Partition | None) -> None:
        if partition is not None:
            await partition.stopped.wait()
        await leases.release(number)

    async def _serve(self, number: int, previous: _Partition | None) -> None:
        """Decide the events of partition ``number`` until its routing is cancelled."""
        if previous is not None:
            await previous.stopped.wait()  # handed back, and taken again at once
        leases = self._leases
        assert leases is not None
        partition = self._partitions[number] = _Partition(number)
        self.stats.changed()
        config = self._config
        spec = config.layout.partition_consumer(number, self._count)
        # The prefetch is shared by the partitions, so that one process
        # holding them all fetches ahead about as much as one consumer would.
        buffer = max(16, config.prefetch // self._count)
        try:
            async with (
                self._transport.consume(EVENTS_STREAM, spec, buffer=buffer) as deliveries,
                trio.open_nursery() as actors,
            ):
                with partition.routing:
                    async for delivery in deliveries:
                        if not leases.valid(number):
                            # Frozen past the lease, or cut off from the
                            # bucket: another process may own it now.
                            await delivery.nak()
                            await leases.renewed()
                            continue
                        await self._route(delivery, actors, partition)
                    # The events ended without shutdown(): the transport was
                    # closed under the service (nats-py closes a connection for
                    # good after some server errors). Ending here as if asked
                    # to would exit 0, which a supervisor does not restart.
                    raise TransportClosedError("the connection to the broker closed for good")
                for instance_id in list(partition.instances):
                    mailbox = self._mailboxes.get(instance_id)
                    if mailbox is not None:
                        mailbox.close()
                actors.cancel_scope.deadline = trio.current_time() + config.drain_timeout
            # Leaving the consume context handed back whatever is still unsettled.
        finally:
            partition.stopped.set()
            if self._partitions.get(number) is partition:
                del self._partitions[number]
                self.stats.changed()

    async def _intake(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Forward plain starts to their instance's partition (any process may)."""
        spec = self._config.layout.intake_consumer()
        async with self._transport.consume(EVENTS_STREAM, spec, buffer=64) as deliveries:
            task_status.started()
            with self._intake_scope:
                async for delivery in deliveries:
                    await self._forward(delivery)
                raise TransportClosedError("the connection to the broker closed for good")

    async def _forward(self, delivery: Delivery) -> None:
        """File a plain start under its instance (rule 2: a resend is a duplicate)."""
        subject = delivery.subject
        tokens = subject.split(".")
        try:
            if not (subject.startswith(START_PREFIX + ".") and len(tokens) == 3):
                raise MessageError(
                    f"no event is published on {subject!r}: the events of an instance go "
                    f"to {INSTANCE_PREFIX}.{{instance}}.…, plain starts to "
                    f"{START_PREFIX}.{{type}}"
                )
            workflow_type = check_name("workflow type", tokens[2])
            start = decode_start(delivery.data)
        except (MessageError, CodecError, InvalidNameError) as exc:
            await self._deadletter(delivery, f"malformed: {exc}")
            return
        # A start without an id gets one derived from the message itself,
        # so that its redelivery cannot make a second instance.
        instance_id = start.instance_id or f"{workflow_type}-{delivery.stream_seq}"
        headers = {k: v for k, v in delivery.headers.items() if not k.startswith("Nats-")}
        try:
            await self._transport.publish(
                start_subject(instance_id, workflow_type),
                delivery.data,
                msg_id=f"intake.{delivery.stream_seq}",
                headers=headers or None,
            )
        except TransportClosedError:
            raise
        except TransportError as exc:
            log.warning("could not forward a start (%s); handing it back", exc)
            await delivery.nak(RETRY_DELAY)
            return
        self.stats["starts_forwarded"] += 1
        await delivery.ack()

    async def _route(
        self, delivery: Delivery, nursery: trio.Nursery, partition: _Partition
    ) -> None:
        self.stats["events"] += 1
        self._metrics.delivered("events", delivery.num_delivered)
        try:
            instance_id, event = decode_event(delivery, partition.number, self._count)
        except (MessageError, CodecError, InvalidNameError) as exc:
            await self._deadletter(delivery, f"malformed: {exc}")
            return
        mailbox = self._mailboxes.get(instance_id)
        if mailbox is None:
            send, receive = trio.open_memory_channel[Routed](math.inf)
            self._mailboxes[instance_id] = mailbox = send
            partition.instances.add(instance_id)
            self.stats.changed()
            nursery.start_soon(
                self._actor, instance_id, receive, partition, name=f"instance {instance_id}"
            )
        mailbox.send_nowait(Routed(delivery, event))

    async def _deadletter(self, delivery: Delivery, reason: str) -> None:
        """Record ``delivery`` in the dead-letter stream, then ack it (rule 7).

        The letter names the subject the event was published on, so that it
        can be published again as it is.
        """
        self.stats["deadletters"] += 1
        self._metrics.dead_letter("events")
        await deadletter(
            self._transport,
            delivery,
            reason,
            source="events",
            subject=published_subject(delivery.subject),
            retry_delay=RETRY_DELAY,
            log=log,
        )

    # -- the instance actor -------------------------------------------------------

    async def _actor(
        self,
        instance_id: str,
        mailbox: trio.MemoryReceiveChannel[Routed],
        partition: _Partition,
    ) -> None:
        assert self._context is not None
        actor = InstanceActor(self._context, instance_id)
        try:
            while True:
                routed: Routed | None = None
                holding = actor.holding
                timeout = actor.recheck_in if holding else self._config.passivate_after
                with trio.move_on_after(timeout) as wait:
                    if not holding and mailbox.statistics().current_buffer_used == 0:
                        self._went_idle(instance_id, wait)
                    try:
                        routed = await mailbox.receive()
                    except trio.EndOfChannel:
                        return
                    finally:
                        if self._idle.get(instance_id) is wait:
                            del self._idle[instance_id]
                if routed is not None:
                    await actor.handle(routed)
                elif actor.holding:
                    await actor.recheck()
                else:
                    # Idle. The router only sends without waiting, so no event
                    # can slip in between this check and the unregistering.
                    if mailbox.statistics().current_buffer_used == 0:
                        return
                    continue
                if (
                    actor.idle_worthless
                    and not actor.holding
                    and mailbox.statistics().current_buffer_used == 0
                ):
                    # Nothing more will happen to it, or there is nothing
                    # cached worth keeping (an event for an instance that does
                    # not exist, a damaged state): do not keep it in RAM. A
                    # flood of events for made-up ids would otherwise hold an
                    # actor per id for ``passivate_after`` seconds.
                    return
        finally:
            actor.forget_held()
            partition.instances.discard(instance_id)
            if self._mailboxes.get(instance_id) is not None:
                del self._mailboxes[instance_id]
                self.stats.changed()
            # Anything left (drain deadline, cancellation) is handed back by
            # the consume context; nothing here is acked unprocessed.

    def _went_idle(self, instance_id: str, wait: trio.CancelScope) -> None:
        """Note an actor waiting for events; past the cap, end the longest idle's wait."""
        self._idle[instance_id] = wait
        while len(self._idle) > self._config.max_idle_actors:
            _, oldest = self._idle.popitem(last=False)
            oldest.cancel()  # it exits unless an event came meanwhile


def _observed(orchestrator: Orchestrator, metrics: Metrics, transport: Transport) -> None:
    """Have ``metrics`` report the orchestrator's gauges and its consumers' lag when scraped."""
    metrics.add_gauges(
        lambda: [
            ("actors_actors_alive", (), len(orchestrator._mailboxes)),
            ("actors_actors_idle", (), len(orchestrator._idle)),
            ("actors_partitions_owned", (), len(orchestrator._partitions)),
        ]
    )
    layout = orchestrator._config.layout
    metrics.add_consumers(
        transport,
        EVENTS_STREAM,
        lambda: [
            layout.intake_consumer().durable,
            *(layout.partition_consumer(n, 1).durable for n in orchestrator.partitions),
        ],
    )
    metrics.add_connection(transport)
