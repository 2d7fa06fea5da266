"""The orchestrator: event pump, router and one actor per active instance.

Events arrive through the one durable consumer on ``WORKFLOW_EVENTS`` that
every orchestrator process shares. The pump decodes just enough of each to
know its instance and hands it to that instance's actor (spawning one if
needed); an actor handles its events one at a time:

    load (once) -> decide -> persist by compare-and-set -> publish -> ack

which is durability rules 1 to 5 in order. On a compare-and-set conflict
another process advanced the instance first: the actor reloads and decides
again, so two orchestrators never both advance one instance. An actor with
nothing to do for ``passivate_after`` seconds exits; its state lives in KV.

What cannot be processed (a malformed message, an event for an instance that
does not exist) goes to the dead-letter stream with its reason and is acked.
An event for an instance not stored yet is not given up at once: with several
orchestrators sharing the consumer, a signal sent right after a start can
reach one process while another still holds the start. Its actor keeps it
(unacknowledged, kept alive) and looks for the instance again, more and more
rarely, until the instance exists or ``start_wait`` has passed since the
event was stored; later events of the instance wait behind it, so that they
are decided in the order they came.
A bug or an oversized state inside one instance fails that instance with the
error recorded; the service goes on.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Final

import trio

from transport import (
    ConflictError,
    Delivery,
    KeyValue,
    OutMessage,
    TooLargeError,
    Transport,
    TransportClosedError,
    TransportError,
)

from ..core import (
    ActivityCompleted,
    ActivityFailed,
    CancelChild,
    CancelRequested,
    Command,
    Definition,
    ErrorInfo,
    Event,
    InstanceState,
    InstanceStatus,
    InvalidNameError,
    LimitExceededError,
    Limits,
    NotifyParent,
    RecordHistory,
    ScheduleActivity,
    SignalReceived,
    StartChild,
    StartRequested,
    TerminateRequested,
    check_instance_id,
    check_name,
    decide,
    fail_instance,
)
from ..wire import (
    DEFAULT_LIMITS,
    DEFINITIONS_BUCKET,
    EVENT_CANCEL,
    EVENT_COMPLETED,
    EVENT_FAILED,
    EVENT_SIGNAL,
    EVENT_START,
    EVENT_TERMINATE,
    EVENT_TIMER,
    EVENTS_STREAM,
    INSTANCE_PREFIX,
    PARTITIONS_BUCKET,
    START_PREFIX,
    STATES_BUCKET,
    CodecError,
    Layout,
    MessageError,
    PayloadTooLargeError,
    StartMessage,
    cancel_subject,
    deadletter_subject,
    decode_cancel,
    decode_result,
    decode_signal,
    decode_start,
    decode_state,
    decode_terminate,
    decode_timer,
    encode,
    encode_cancel,
    encode_deadletter,
    encode_history,
    encode_history_records,
    encode_result,
    encode_start,
    encode_state,
    encode_task,
    encode_timer,
    history_msg_id,
    history_subject,
    instance_partition,
    published_subject,
    result_msg_id,
    result_subject,
    start_msg_id,
    start_subject,
    task_msg_id,
    task_subject,
    terminate_subject,
    timer_msg_id,
    timer_subject,
)
from ._partitions import Leases, Ownership
from ._registry import DefinitionStore

__all__ = ["Orchestrator", "OrchestratorConfig"]

log = logging.getLogger("actors.orchestrator")

#: Bytes of a dead message kept in its dead letter (enough to diagnose it).
_DEADLETTER_SAMPLE: Final = 64 * 1024
#: Wait before an event that met a broker failure is handed back.
_RETRY_DELAY: Final = 1.0
#: Waits before an actor holding events for an instance not stored yet looks
#: for it again: the first (the start is usually being decided in another
#: process at that moment), doubled each time up to the last.
_START_RETRY_FIRST: Final = 0.02
_START_RETRY_MAX: Final = 2.0
#: Deliveries of an event that keeps failing before it goes to dead letters.
_POISON_DELIVERIES: Final = 5
#: Steps one decision may fail for an input over the limit (each failure is
#: a further decision, and compensations may be oversized too).
_MAX_REFUSALS: Final = 100
#: What the envelope of an ``output`` record adds to its body's encoding
#: (``None`` is one byte).
_OUTPUT_ENVELOPE: Final = len(encode("output", None)) - 1
#: History records of one decision that share a message, and the most bytes
#: such a message may have (so that records never add up past the broker's
#: largest message; each one fits alone).
_RECORDS_PER_MESSAGE: Final = 64
_RECORDS_BYTES: Final = 256 * 1024


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

    def __post_init__(self) -> None:
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


@dataclass(slots=True)
class _Routed:
    delivery: Delivery
    event: Event


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

    def __init__(self, transport: Transport, config: OrchestratorConfig | None = None) -> None:
        self._transport = transport
        self._config = config or OrchestratorConfig()
        self._mailboxes: dict[str, trio.MemorySendChannel[_Routed]] = {}
        #: The idle actors' waits, longest idle first (see ``max_idle_actors``).
        self._idle: OrderedDict[str, trio.CancelScope] = OrderedDict()
        self._stopping = trio.Event()
        self._intake_scope = trio.CancelScope()
        self._states: KeyValue | None = None
        self._definitions: DefinitionStore | None = None
        self._leases: Leases | None = None
        #: The partitions being served, by number.
        self._partitions: dict[int, _Partition] = {}
        #: How many partitions the instances are filed in (the stream's).
        self._count = self._config.layout.partitions
        #: Events the actors hold, waiting for their instance to be stored.
        self._held = 0
        #: Counters for tests and operators.
        self.stats: dict[str, int] = {
            "events": 0,
            "conflicts": 0,
            "deadletters": 0,
            "instance_failures": 0,
            "waits_for_start": 0,
            "starts_forwarded": 0,
        }

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
        self._states = assets.buckets[STATES_BUCKET]
        self._definitions = DefinitionStore(assets.buckets[DEFINITIONS_BUCKET])
        leases = self._leases = Leases(
            assets.buckets[PARTITIONS_BUCKET], self._count, lease=config.lease
        )
        async with trio.open_nursery() as services:
            await services.start(self._definitions.follow)
            await services.start(leases.run)
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
            await delivery.nak(_RETRY_DELAY)
            return
        self.stats["starts_forwarded"] += 1
        await delivery.ack()

    async def _route(
        self, delivery: Delivery, nursery: trio.Nursery, partition: _Partition
    ) -> None:
        self.stats["events"] += 1
        try:
            instance_id, event = self._parse(delivery, partition.number)
        except (MessageError, CodecError, InvalidNameError) as exc:
            await self._deadletter(delivery, f"malformed: {exc}")
            return
        mailbox = self._mailboxes.get(instance_id)
        if mailbox is None:
            send, receive = trio.open_memory_channel[_Routed](math.inf)
            self._mailboxes[instance_id] = mailbox = send
            partition.instances.add(instance_id)
            nursery.start_soon(
                self._actor, instance_id, receive, partition, name=f"instance {instance_id}"
            )
        mailbox.send_nowait(_Routed(delivery, event))

    def _parse(self, delivery: Delivery, partition: int) -> tuple[str, Event]:
        """The instance and event a stored ``instance.{p}.{id}.{event...}`` message carries."""
        subject = delivery.subject
        tokens = subject.split(".")
        if len(tokens) < 4 or tokens[0] != INSTANCE_PREFIX:
            raise MessageError(f"no event is published on {subject!r}")
        instance_id = check_instance_id(tokens[2])
        if instance_partition(instance_id, self._count) != partition:
            raise MessageError(f"{subject!r} is filed in another partition than its instance's")
        kind, rest = tokens[3], tokens[4:]
        data = delivery.data
        if kind == EVENT_START and len(rest) == 1:
            workflow_type = check_name("workflow type", rest[0])
            start = decode_start(data)
            if start.instance_id not in (None, instance_id):
                raise MessageError("start body names another instance than its subject")
            return instance_id, StartRequested(
                instance_id,
                workflow_type,
                start.version,
                start.input,
                start.parent,
                start.parent_step,
                start.depth,
            )
        if kind == EVENT_CANCEL and not rest:
            return instance_id, CancelRequested(decode_cancel(data))
        if kind == EVENT_TERMINATE and not rest:
            return instance_id, TerminateRequested(decode_terminate(data))
        if kind == EVENT_SIGNAL and len(rest) == 1:
            name = check_name("signal name", rest[0])
            return instance_id, SignalReceived(name, decode_signal(data), delivery.stream_seq)
        if kind in (EVENT_COMPLETED, EVENT_FAILED) and len(rest) == 1:
            named, result = decode_result(data)
            if named != instance_id or result.step != rest[0]:
                raise MessageError("result body names another instance or step than its subject")
            if (kind == EVENT_COMPLETED) != isinstance(result, ActivityCompleted):
                raise MessageError("result outcome disagrees with its subject")
            return instance_id, result
        if kind == EVENT_TIMER and not rest:
            named, timer = decode_timer(data)
            if named != instance_id:
                raise MessageError("timer body names another instance than its subject")
            return instance_id, timer
        raise MessageError(f"no event is published on {subject!r}")

    async def _deadletter(self, delivery: Delivery, reason: str) -> None:
        """Record ``delivery`` in the dead-letter stream, then ack it (rule 7).

        The letter names the subject the event was published on, so that it
        can be published again as it is.
        """
        self.stats["deadletters"] += 1
        subject = published_subject(delivery.subject)
        log.warning("dead letter from %s: %s", subject, reason)
        data = encode_deadletter(
            subject,
            reason[:2000],
            delivery.data[:_DEADLETTER_SAMPLE],
            delivery.num_delivered,
        )
        try:
            await self._transport.publish(
                deadletter_subject("events"),
                data,
                msg_id=f"deadletter.events.{delivery.stream_seq}",
            )
        except TransportError as exc:
            log.warning("could not record a dead letter (%s); handing the event back", exc)
            await delivery.nak(_RETRY_DELAY)
            return
        await delivery.ack()

    # -- the instance actor -------------------------------------------------------

    async def _actor(
        self,
        instance_id: str,
        mailbox: trio.MemoryReceiveChannel[_Routed],
        partition: _Partition,
    ) -> None:
        actor = _InstanceActor(self, instance_id)
        try:
            while True:
                routed: _Routed | None = None
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
            # Anything left (drain deadline, cancellation) is handed back by
            # the consume context; nothing here is acked unprocessed.

    def _went_idle(self, instance_id: str, wait: trio.CancelScope) -> None:
        """Note an actor waiting for events; past the cap, end the longest idle's wait."""
        self._idle[instance_id] = wait
        while len(self._idle) > self._config.max_idle_actors:
            _, oldest = self._idle.popitem(last=False)
            oldest.cancel()  # it exits unless an event came meanwhile


class _InstanceActor:
    """The per-instance half of the orchestrator: owns the cached state."""

    def __init__(self, owner: Orchestrator, instance_id: str) -> None:
        self._owner = owner
        self._transport = owner._transport
        self._id = instance_id
        self._loaded = False
        self._state: InstanceState | None = None
        self._revision = 0
        self.terminal = False
        #: Whether this actor published the cached state's outbox itself.
        self._outbox_sent = False
        #: Whether the cached "absent" was assumed, not read (a start).
        self._unread = False
        #: Events that came before the instance was stored, in the order they
        #: came (see ``OrchestratorConfig.start_wait``).
        self._early: list[_Routed] = []
        self._recheck = _START_RETRY_FIRST
        #: When the held events were last kept alive (transport time).
        self._touched = 0.0

    @property
    def idle_worthless(self) -> bool:
        """Whether waiting for the next event would keep nothing: no live state is cached."""
        return self.terminal or not self._loaded or self._state is None

    @property
    def holding(self) -> bool:
        """Whether events wait here for the instance to be stored."""
        return bool(self._early)

    @property
    def recheck_in(self) -> float:
        """Seconds until the actor should look for its instance again (while holding)."""
        return self._recheck

    def forget_held(self) -> None:
        """The actor ends: its held events go back to the broker with the consumer."""
        self._owner._held -= len(self._early)
        self._early = []

    async def handle(self, routed: _Routed) -> None:
        """Decide one event (or hold it while the instance is not stored yet)."""
        if self._early and not isinstance(routed.event, StartRequested):
            # Behind events that wait for the instance: stay in stored order.
            if await self._hold(routed):
                await self.recheck()  # the instance may be stored by now
            return
        await self._handle_one(routed)
        if self._early and self._state is not None:
            await self._release()

    async def recheck(self) -> None:
        """Look for the instance again: decide the held events if it is stored.

        Otherwise give up those that waited ``start_wait`` (to dead letters),
        keep the others alive past the consumer's ack wait, and wait longer
        before the next look.
        """
        owner = self._owner
        try:
            await self._load()
        except _DamagedStateError as exc:
            early, self._early = self._early, []
            owner._held -= len(early)
            for routed in early:
                await owner._deadletter(routed.delivery, f"instance {self._id}: {exc}")
            return
        except TransportClosedError:
            raise
        except TransportError as exc:
            log.warning("instance %s: could not look for it (%s)", self._id, exc)
            self._loaded = False
        if self._state is not None:
            await self._release()
            return
        now = self._transport.now()
        waiting: list[_Routed] = []
        for routed in self._early:
            if now - routed.delivery.stored_at >= owner.start_wait:
                owner._held -= 1
                await owner._deadletter(
                    routed.delivery,
                    f"no instance {self._id!r} (its start did not come within "
                    f"{owner.start_wait:g} s)",
                )
            else:
                waiting.append(routed)
        self._early = waiting
        if waiting and now - self._touched >= owner._config.layout.ack_wait / 3:
            self._touched = now
            for routed in waiting:
                await routed.delivery.in_progress()
        self._recheck = min(self._recheck * 2, _START_RETRY_MAX)

    async def _hold(self, routed: _Routed) -> bool:
        """Keep an event for an instance not stored yet; ``False`` if it went to dead letters."""
        owner = self._owner
        delivery = routed.delivery
        if self._transport.now() - delivery.stored_at >= owner.start_wait:
            reason = f"its start did not come within {owner.start_wait:g} s"
        elif owner._held >= owner._config.max_waiting_events:
            reason = f"and {owner._held} events already wait for their instance"
        else:
            if not self._early:
                self._recheck = _START_RETRY_FIRST
                self._touched = self._transport.now()
            self._early.append(routed)
            owner._held += 1
            owner.stats["waits_for_start"] += 1
            return True
        await owner._deadletter(delivery, f"no instance {self._id!r} ({reason})")
        return False

    async def _release(self) -> None:
        """Decide the held events, in the order they came: the instance is stored."""
        early, self._early = self._early, []
        self._owner._held -= len(early)
        for routed in early:
            await self._handle_one(routed)

    async def _handle_one(self, routed: _Routed) -> None:
        delivery = routed.delivery
        try:
            await self._handle(routed)
        except TransportClosedError:
            raise
        except TransportError as exc:
            # The broker failed us mid-way: forget the cache (it may be stale)
            # and let the event come back; rules 2 and 4 make the retry safe.
            log.warning(
                "instance %s: broker error (%s); event handed back",
                self._id,
                exc,
                extra={
                    "instance": self._id,
                    "step": getattr(routed.event, "step", None),
                    "attempt": getattr(routed.event, "attempt", None),
                },
            )
            self._loaded = False
            await delivery.nak(_RETRY_DELAY)
        except Exception as exc:
            # A bug outside decide (which has its own net). Retry a few times
            # in case it was transient, then give the event up to dead letters
            # so that one instance cannot wedge the service.
            log.exception(
                "instance %s: failed handling %s",
                self._id,
                delivery.subject,
                extra={
                    "instance": self._id,
                    "step": getattr(routed.event, "step", None),
                    "attempt": getattr(routed.event, "attempt", None),
                },
            )
            self._loaded = False
            if delivery.num_delivered >= _POISON_DELIVERIES:
                await self._owner._deadletter(delivery, f"instance {self._id}: {exc!r}")
            else:
                await delivery.nak(_RETRY_DELAY)

    async def _load(self) -> None:
        states = self._owner._states
        assert states is not None
        entry = await states.get(self._id)
        if entry is None:
            self._state, self._revision = None, 0
        else:
            try:
                self._state = decode_state(entry.value)
            except MessageError as exc:
                raise _DamagedStateError(str(exc)) from None
            if self._state.id != self._id:
                # Run under another id, it would publish and record for one
                # instance what belongs to another.
                raise _DamagedStateError(
                    f"the state stored under {self._id!r} is that of {self._state.id!r}"
                )
            self._revision = entry.revision
        self._loaded = True
        self._outbox_sent = False
        self.terminal = self._state is not None and self._state.status.terminal
        self._unread = False

    def _assume_absent(self) -> None:
        """Take the instance as absent from the bucket, unread (see ``_handle``)."""
        self._state, self._revision = None, 0
        self._loaded = True
        self._outbox_sent = False
        self.terminal = False
        self._unread = True

    async def _handle(self, routed: _Routed) -> None:
        delivery, event = routed.delivery, routed.event
        store = self._owner._definitions
        assert store is not None
        # A start is nearly always for an instance that does not exist yet:
        # rather than read its key first, decide on "absent" and write with
        # create, which the broker refuses if the key exists. A refusal is a
        # conflict like any other: reload and decide again.
        assume_absent = isinstance(event, StartRequested)
        while True:
            fresh = not self._loaded
            if fresh and assume_absent:
                self._assume_absent()
            elif fresh:
                try:
                    await self._load()
                except _DamagedStateError as exc:
                    await self._owner._deadletter(delivery, f"instance {self._id}: {exc}")
                    return
            assume_absent = False
            state = self._state
            if state is None and not isinstance(event, StartRequested):
                if not fresh:
                    self._loaded = False
                    continue
                await self._hold(routed)
                return
            definition = await self._definition_for(state, event)
            now = self._transport.now()
            try:
                checked = self._within_limits(state, event, delivery)
            except LimitExceededError as exc:
                await self._owner._deadletter(delivery, f"instance {self._id}: {exc}")
                return
            try:
                if isinstance(checked, tuple):
                    new, commands = checked
                else:
                    new, commands = decide(definition, state, checked, now)
            except Exception as exc:
                log.exception(
                    "instance %s: the engine failed deciding %r",
                    self._id,
                    event,
                    extra={
                        "instance": self._id,
                        "step": getattr(event, "step", None),
                        "attempt": getattr(event, "attempt", None),
                    },
                )
                new, commands = self._fail(state, event, "EngineError", exc, now, definition)
            if (new is None or new is state) and not fresh:
                # The cached state may be stale: another orchestrator may
                # have advanced the instance, and this event may be for a
                # step the cache has not seen. A change would meet a
                # compare-and-set conflict; "nothing to do" would not, so
                # it is only believed from a state read just now.
                self._loaded = False
                continue
            if new is None or new is state:
                if state is not None and state.outbox and state.cause == delivery.stream_seq:
                    # Rule 5: this event made the last decision and is back,
                    # so its ack (and maybe the publish before it) was lost.
                    # Publishing again is deduplicated by message id (rule 2).
                    await self._transport.publish_many(self._messages(state, state.outbox))
                    self._outbox_sent = True
                if (
                    state is not None
                    and isinstance(event, StartRequested)
                    and event.parent is None
                    and event.workflow_type != state.type
                ):
                    # Its publisher may not know: leave a trace of the refusal.
                    await self._owner._deadletter(
                        delivery,
                        f"instance {self._id!r} is of type {state.type!r}: "
                        f"a start of type {event.workflow_type!r} is refused",
                    )
                    return
                await delivery.ack()
                return
            if state is not None and not self._outbox_sent:
                await self._send_previous(state, delivery)
            # Everything is encoded and measured before anything is written,
            # so that an instance over a limit fails whole (never a state
            # that says a task went out when it could not).
            try:
                new, commands, messages = self._checked(definition, new, commands, now)
                data = self._encoded(new, delivery.stream_seq)
            except (LimitExceededError, CodecError) as exc:
                # A CodecError: a value the codec cannot carry once in place (an
                # input nested deeper than the state allows, an expression's
                # result of 64-bit overflow or too many items). Retrying would
                # meet it again: the instance would hang, its event dead-lettered.
                kind = exc.kind if isinstance(exc, LimitExceededError) else "UnencodableValue"
                new, commands = self._fail(_slim(state), event, kind, exc, now, definition)
                messages = self._messages(new, commands)
                data = self._encoded(new, delivery.stream_seq)
            try:
                if not await self._persist(new, data, delivery.stream_seq):
                    continue
            except (PayloadTooLargeError, TooLargeError) as exc:
                # The broker's own limit is below ours: fail small instead.
                new, commands = self._fail(
                    _slim(state), event, "StateTooLarge", exc, now, definition
                )
                messages = self._messages(new, commands)
                if not await self._persist(
                    new, self._encoded(new, delivery.stream_seq), delivery.stream_seq
                ):
                    continue
            await self._transport.publish_many(messages)
            self._outbox_sent = True
            await delivery.ack()
            return

    async def _send_previous(self, state: InstanceState, delivery: Delivery) -> None:
        """Publish ``state``'s outbox if the event that made it may not be acked yet.

        Rule 5 republishes an outbox when its event comes back, but only while
        its decision is the latest: deciding another event on top replaces
        the outbox. An event is acked only after its outbox went out, so an
        outbox whose event is still in the work queue may never have been
        published (a crash or a broker error between the state write and the
        publish); it is sent now, before it is replaced. This costs one lookup
        in the events stream, only for a state read from the bucket (the
        actor knows it published its own decisions).
        """
        cause = state.cause
        # A lookup of that one sequence: a read of "the next event from
        # there" made the server step over every event acked since.
        if (
            state.outbox
            and cause
            and cause != delivery.stream_seq
            and await self._transport.holds(EVENTS_STREAM, cause)
        ):
            await self._transport.publish_many(self._messages(state, state.outbox))
        self._outbox_sent = True

    def _within_limits(
        self, state: InstanceState | None, event: Event, delivery: Delivery
    ) -> Event | tuple[InstanceState | None, list[Command]]:
        """``event``, or what replaces it because its message is over a limit.

        A start over ``max_input`` fails the instance; a result whose output
        is over ``max_output`` (measured as the workflow's output is, see
        :func:`_output_size`) fails the step's attempt, without retry. A signal over
        ``max_input`` raises :class:`LimitExceededError` (it goes to dead
        letters: the instance never asked for it).
        """
        limits = self._owner._config.limits
        size = len(delivery.data)
        if isinstance(event, StartRequested) and size > limits.max_input:
            if state is not None:
                return state, []
            exc = LimitExceededError("the start message", size, limits.max_input, "InputTooLarge")
            error = ErrorInfo("InputTooLarge", str(exc), non_retryable=True)
            return fail_instance(None, event, error, self._transport.now())
        if isinstance(event, ActivityCompleted):
            output_size = _output_size(event.output)
            if output_size > limits.max_output:
                exc = LimitExceededError(
                    f"the output in the result of step {event.step!r}",
                    output_size,
                    limits.max_output,
                    "OutputTooLarge",
                )
                error = ErrorInfo("OutputTooLarge", str(exc), non_retryable=True)
                return ActivityFailed(event.step, event.attempt, error)
        if isinstance(event, SignalReceived) and size > limits.max_input:
            raise LimitExceededError(
                f"signal {event.name!r}", size, limits.max_input, "InputTooLarge"
            )
        return event

    def _checked(
        self,
        definition: Definition | None,
        new: InstanceState,
        commands: list[Command],
        now: float,
    ) -> tuple[InstanceState, list[Command], list[OutMessage]]:
        """The decision, with each step whose input is over the limit failed; and its messages.

        A task or a child's start over ``max_input`` is never published: its
        step fails (``InputTooLarge``, no retry) in a further decision made
        on top, which compensates like any failure. Raises
        :class:`LimitExceededError` for a workflow output over ``max_output``.
        """
        limits = self._owner._config.limits
        for _ in range(_MAX_REFUSALS):
            pairs = self._command_messages(new, commands)
            oversized = [
                (command, len(message.data))
                for command, message in pairs
                if isinstance(command, ScheduleActivity | StartChild)
                and len(message.data) > limits.max_input
            ]
            if not oversized:
                messages = self._assembled(pairs, commands)
                break
            command, size = oversized[0]
            refused = LimitExceededError(
                f"the input of step {command.step!r}", size, limits.max_input, "InputTooLarge"
            )
            attempt = command.attempt if isinstance(command, ScheduleActivity) else 1
            failure = ActivityFailed(
                command.step,
                attempt,
                ErrorInfo("InputTooLarge", str(refused), non_retryable=True),
                unsent=True,
            )
            after, more = decide(definition, new, failure, now)
            if after is None or after is new:
                raise refused
            commands = [c for c in commands if c is not command] + more
            new = replace(after, outbox=tuple(commands))
        else:
            raise LimitExceededError(
                "the inputs refused in one decision", _MAX_REFUSALS, _MAX_REFUSALS, "InputTooLarge"
            )
        if new.status is InstanceStatus.COMPLETED and new.output is not None:
            size = _output_size(new.output)
            if size > limits.max_output:
                raise LimitExceededError(
                    "the workflow's output", size, limits.max_output, "OutputTooLarge"
                )
        return new, commands, messages

    def _encoded(self, new: InstanceState, cause: int) -> bytes:
        """``new`` as stored (made by event ``cause``); raises if over ``max_state``."""
        limit = self._owner._config.limits.max_state
        try:
            data = encode_state(replace(new, cause=cause))
        except PayloadTooLargeError:
            # Over the codec's own ceiling (the broker's largest message):
            # surely over max_state too, so fail the same way, not retry.
            raise LimitExceededError(
                "the instance state", limit + 1, limit, "StateTooLarge"
            ) from None
        if len(data) > limit and not new.status.terminal:
            raise LimitExceededError("the instance state", len(data), limit, "StateTooLarge")
        return data

    def _fail(
        self,
        state: InstanceState | None,
        event: Event,
        kind: str,
        exc: BaseException,
        now: float,
        definition: Definition | None = None,
    ) -> tuple[InstanceState, list[Command]]:
        self._owner.stats["instance_failures"] += 1
        trace = "" if isinstance(exc, LimitExceededError) else traceback.format_exc()
        error = ErrorInfo(kind, f"{type(exc).__name__}: {exc}", trace, non_retryable=True)
        start = event if isinstance(event, StartRequested) else None
        if state is None and start is None:
            raise RuntimeError("nothing to fail") from exc
        return fail_instance(state, start, error, now, definition)

    async def _definition_for(self, state: InstanceState | None, event: Event) -> Definition | None:
        store = self._owner._definitions
        assert store is not None
        if state is not None:
            return await store.get(state.type, state.version)
        assert isinstance(event, StartRequested)
        return await store.get(event.workflow_type, event.version)

    async def _persist(self, new: InstanceState, data: bytes, cause: int) -> bool:
        """Write ``new`` (encoded as ``data``, made by event ``cause``) by compare-and-set.

        ``False`` on a conflict: another process advanced the instance, and
        the cache is dropped so the next attempt reloads.
        """
        states = self._owner._states
        assert states is not None
        try:
            if self._revision == 0:
                self._revision = await states.create(self._id, data)
            else:
                self._revision = await states.update(self._id, data, self._revision)
        except ConflictError:
            self._loaded = False
            if self._unread:
                # A start for an instance that exists (a duplicate start):
                # no other process is involved.
                return False
            self._owner.stats["conflicts"] += 1
            # Rare in a healthy cluster (each event goes to one process); many
            # of these mean processes keep redelivering to each other.
            log.info(
                "instance %s: state changed by another process; deciding again",
                self._id,
                extra={"instance": self._id},
            )
            return False
        self._state = replace(new, cause=cause)
        self._outbox_sent = False
        self._unread = False
        self.terminal = new.status.terminal
        return True

    def _messages(
        self, state: InstanceState, commands: tuple[Command, ...] | list[Command]
    ) -> list[OutMessage]:
        """The messages that carry out ``commands``, each with its deterministic id."""
        return self._assembled(self._command_messages(state, commands), commands)

    def _assembled(
        self,
        pairs: list[tuple[Command, OutMessage]],
        commands: tuple[Command, ...] | list[Command],
    ) -> list[OutMessage]:
        """``pairs``' messages (see ``_command_messages``), then the history of ``commands``."""
        records = [command for command in commands if isinstance(command, RecordHistory)]
        return [message for _, message in pairs] + self._history_messages(records)

    def _history_messages(self, records: list[RecordHistory]) -> list[OutMessage]:
        """A decision's history records, in as few messages as is safe.

        Up to ``_RECORDS_PER_MESSAGE`` records share one message, whose id is
        that of its first record: the same decision sent again (rule 5) makes
        the same messages, so the broker drops the copies. A group whose
        message would be over ``_RECORDS_BYTES`` (many large errors at once)
        goes one record per message instead, as every record fits alone.
        """
        messages: list[OutMessage] = []
        subject = history_subject(self._id)
        for first in range(0, len(records), _RECORDS_PER_MESSAGE):
            group = records[first : first + _RECORDS_PER_MESSAGE]
            data = encode_history_records(self._id, group) if len(group) > 1 else b""
            if len(group) > 1 and len(data) <= _RECORDS_BYTES:
                messages.append(
                    OutMessage(subject, data, msg_id=history_msg_id(self._id, group[0].seq))
                )
                continue
            messages.extend(
                OutMessage(
                    subject,
                    encode_history(self._id, record),
                    msg_id=history_msg_id(self._id, record.seq),
                )
                for record in group
            )
        return messages

    def _command_messages(
        self, state: InstanceState, commands: tuple[Command, ...] | list[Command]
    ) -> list[tuple[Command, OutMessage]]:
        """Each command but the history records, with the message that carries it out."""
        messages: list[tuple[Command, OutMessage]] = []
        now = self._transport.now()
        for command in commands:
            if isinstance(command, RecordHistory):
                continue
            if isinstance(command, ScheduleActivity):
                message = OutMessage(
                    task_subject(command.activity),
                    encode_task(self._id, state.type, command),
                    msg_id=task_msg_id(self._id, command.step, command.attempt),
                )
            elif isinstance(command, StartChild):
                start = StartMessage(
                    command.child,
                    command.input,
                    command.version,
                    self._id,
                    command.step,
                    depth=state.depth + 1,
                )
                message = OutMessage(
                    start_subject(command.child, command.workflow),
                    encode_start(start),
                    msg_id=start_msg_id(command.child),
                )
            elif isinstance(command, CancelChild):
                subject = (terminate_subject if command.terminate else cancel_subject)(
                    command.child
                )
                message = OutMessage(
                    subject,
                    encode_cancel(command.reason, terminate=command.terminate),
                    msg_id=f"parent.{subject}",
                )
            elif isinstance(command, NotifyParent):
                # A child's end reaches its parent as the result of its step.
                message = OutMessage(
                    result_subject(command.parent, command.step, ok=command.error is None),
                    encode_result(
                        command.parent,
                        command.step,
                        1,
                        output=command.output,
                        error=command.error,
                    ),
                    msg_id=result_msg_id(command.parent, command.step, 1),
                )
            else:
                key = f"{command.kind}.{command.step}.{command.attempt}"
                message = OutMessage(
                    timer_subject(self._id),
                    encode_timer(self._id, command),
                    msg_id=timer_msg_id(self._id, key),
                    deliver_at=command.fire_at if command.fire_at > now else None,
                )
            messages.append((command, message))
        return messages


class _DamagedStateError(Exception):
    """The stored state of an instance does not decode, or is another instance's."""


def _output_size(value: object) -> int:
    """The size of ``value`` encoded: what ``max_output`` bounds, for a step and a workflow.

    The value's own CBOR encoding, without the message around it, so that one
    output measures the same as a step's result and as the workflow's output.
    Past the codec's ceiling it is over any output limit: one byte more is said.
    """
    try:
        return len(encode("output", value)) - _OUTPUT_ENVELOPE
    except PayloadTooLargeError:
        return DEFAULT_LIMITS.max_bytes + 1


def _slim(state: InstanceState | None) -> InstanceState | None:
    """``state`` without its payloads (input, outputs), for recording a failure."""
    if state is None:
        return None
    steps = {key: replace(step, output=None) for key, step in state.steps.items()}
    return replace(state, input=None, output=None, steps=steps)
