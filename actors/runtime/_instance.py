"""The instance actor: one instance's events, decided one at a time.

For each event: load the state (once; it is then kept), decide, check the
sizes, persist by compare-and-set, publish the decision's messages, ack.
That is durability rules 1 to 5 in order (``docs/engine.md``). On a
compare-and-set conflict another process advanced the instance: the actor
reloads and decides again, so two processes never both advance it.

An event for an instance not stored yet is held here, unacknowledged and
kept alive, while the actor looks for the instance again, more and more
rarely, until it is stored or ``start_wait`` has passed since the event was
stored; later events of the instance wait behind it, so that they are
decided in the order they came.

An actor sees of its orchestrator only a :class:`Context`
(``_actor_context.py``): what it reads, writes and counts.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from dataclasses import replace
from typing import Final

from transport import (
    ConflictError,
    Delivery,
    OutMessage,
    TooLargeError,
    TransportClosedError,
    TransportError,
)

from ..core import (
    ActivityCompleted,
    ActivityFailed,
    CancelActivity,
    Command,
    Definition,
    ErrorInfo,
    Event,
    InstanceState,
    LimitExceededError,
    StartRequested,
    decide,
    fail_instance,
)
from ..errors import EngineError
from ..observability import clock, tracing
from ..wire import (
    EVENTS_STREAM,
    CodecError,
    MessageError,
    PayloadTooLargeError,
    activity_cancel_key,
    decode_state,
    encode_activity_cancel,
    encode_expire,
    expire_msg_id,
    expire_subject,
)
from ._actor_context import Context, Routed
from ._instance_slots import admit, free_slots, hold_back
from ._outbox import messages_for
from ._sizes import checked, encoded, slim, within_limits

__all__ = ["DamagedStateError", "InstanceActor"]

log = logging.getLogger("actors.orchestrator")

#: Wait before an event that met a broker failure is handed back.
RETRY_DELAY: Final = 1.0
#: Waits before an actor holding events for an instance not stored yet looks
#: for it again: the first (the start is usually being decided in another
#: process at that moment), doubled each time up to the last.
_START_RETRY_FIRST: Final = 0.02
_START_RETRY_MAX: Final = 2.0
#: Deliveries of an event that keeps failing before it goes to dead letters.
_POISON_DELIVERIES: Final = 5


class DamagedStateError(EngineError):
    """The stored state of an instance does not decode, or is another instance's."""


class InstanceActor:
    """The per-instance half of the orchestrator: owns the cached state of one instance.

    It sees of its orchestrator only its :class:`Context`.
    """

    def __init__(self, context: Context, instance_id: str) -> None:
        self._ctx = context
        self._transport = context.transport
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
        self._early: list[Routed] = []
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
        self._ctx.held -= len(self._early)
        self._early = []

    async def handle(self, routed: Routed) -> None:
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
        ctx = self._ctx
        try:
            await self._load()
        except DamagedStateError as exc:
            early, self._early = self._early, []
            ctx.held -= len(early)
            for routed in early:
                await ctx.deadletter(routed.delivery, f"instance {self._id}: {exc}")
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
        waiting: list[Routed] = []
        for routed in self._early:
            if now - routed.delivery.stored_at >= ctx.start_wait:
                ctx.held -= 1
                await ctx.deadletter(
                    routed.delivery,
                    f"no instance {self._id!r} (its start did not come within "
                    f"{ctx.start_wait:g} s)",
                )
            else:
                waiting.append(routed)
        self._early = waiting
        if waiting and now - self._touched >= ctx.ack_wait / 3:
            self._touched = now
            for routed in waiting:
                await routed.delivery.in_progress()
        self._recheck = min(self._recheck * 2, _START_RETRY_MAX)

    async def _hold(self, routed: Routed) -> bool:
        """Keep an event for an instance not stored yet; ``False`` if it went to dead letters."""
        ctx = self._ctx
        delivery = routed.delivery
        if self._transport.now() - delivery.stored_at >= ctx.start_wait:
            reason = f"its start did not come within {ctx.start_wait:g} s"
        elif ctx.held >= ctx.max_waiting_events:
            reason = f"and {ctx.held} events already wait for their instance"
        else:
            if not self._early:
                self._recheck = _START_RETRY_FIRST
                self._touched = self._transport.now()
            self._early.append(routed)
            ctx.held += 1
            ctx.stats["waits_for_start"] += 1
            return True
        await ctx.deadletter(delivery, f"no instance {self._id!r} ({reason})")
        return False

    async def _release(self) -> None:
        """Decide the held events, in the order they came: the instance is stored."""
        early, self._early = self._early, []
        self._ctx.held -= len(early)
        for routed in early:
            await self._handle_one(routed)

    async def _handle_one(self, routed: Routed) -> None:
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
            await delivery.nak(RETRY_DELAY)
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
                await self._ctx.deadletter(delivery, f"instance {self._id}: {exc!r}")
            else:
                await delivery.nak(RETRY_DELAY)

    async def _load(self) -> None:
        states = self._ctx.states
        assert states is not None
        entry = await states.get(self._id)
        if entry is None:
            self._state, self._revision = None, 0
        else:
            try:
                self._state = decode_state(entry.value)
            except MessageError as exc:
                raise DamagedStateError(str(exc)) from None
            if self._state.id != self._id:
                # Run under another id, it would publish and record for one
                # instance what belongs to another.
                raise DamagedStateError(
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

    async def _handle(self, routed: Routed) -> None:
        delivery, event = routed.delivery, routed.event
        began, began_at = clock(), tracing.wall()
        store = self._ctx.definitions
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
                except DamagedStateError as exc:
                    await self._ctx.deadletter(delivery, f"instance {self._id}: {exc}")
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
            if state is None and isinstance(event, StartRequested):
                # A start of a paused type is stored paused (``_pauses.py``).
                paused = self._ctx.type_pause(event.workflow_type)
                if paused is not None:
                    event = replace(event, pause=paused)
            try:
                admitted = within_limits(self._ctx.limits, state, event, len(delivery.data), now)
            except LimitExceededError as exc:
                await self._ctx.deadletter(delivery, f"instance {self._id}: {exc}")
                return
            # Outside the net below: a broker error taking a slot hands the
            # event back (``_handle_one``); it is no failure of the instance.
            flow = None
            if not isinstance(admitted, tuple):
                flow = await admit(
                    self._ctx.slots, self._id, definition, state, admitted, now, delivery.stream_seq
                )
            try:
                if isinstance(admitted, tuple):
                    new, commands = admitted
                elif flow is not None:
                    new, commands = flow
                else:
                    new, commands = decide(definition, state, admitted, now)
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
                    await self._publish(
                        self._messages(state, state.outbox), state.outbox, definition, state
                    )
                    self._outbox_sent = True
                    await free_slots(self._ctx.slots, definition, state, event)
                if isinstance(event, StartRequested) and state is not None:
                    # A duplicate start may have taken a slot before the
                    # instance was found to exist: free it if it has ended
                    # (while it runs or waits, it holds its own already).
                    await free_slots(self._ctx.slots, definition, state, event)
                if (
                    state is not None
                    and isinstance(event, StartRequested)
                    and event.parent is None
                    and event.workflow_type != state.type
                ):
                    # Its publisher may not know: leave a trace of the refusal.
                    await self._ctx.deadletter(
                        delivery,
                        f"instance {self._id!r} is of type {state.type!r}: "
                        f"a start of type {event.workflow_type!r} is refused",
                    )
                    return
                await delivery.ack()
                return
            root = None
            if state is None and isinstance(event, StartRequested):
                root, traceparent = tracing.workflow_span(event, delivery.headers, began_at)
                new = replace(new, trace=traceparent)
            if state is not None and not self._outbox_sent:
                await self._send_previous(state, delivery)
            # Everything is encoded and measured before anything is written,
            # so that an instance over a limit fails whole (never a state
            # that says a task went out when it could not).
            try:
                new, commands, messages = checked(
                    self._ctx.limits, self._id, definition, new, commands, now
                )
                messages = tracing.traced(messages, new.trace)
                data = self._encoded(new, delivery.stream_seq)
            except (LimitExceededError, CodecError) as exc:
                # A CodecError: a value the codec cannot carry once in place (an
                # input nested deeper than the state allows, an expression's
                # result of 64-bit overflow or too many items). Retrying would
                # meet it again: the instance would hang, its event dead-lettered.
                kind = exc.kind if isinstance(exc, LimitExceededError) else "UnencodableValue"
                new, commands = self._fail(slim(state), event, kind, exc, now, definition)
                messages = self._messages(new, commands)
                data = self._encoded(new, delivery.stream_seq)
            try:
                if not await self._persist(new, data, delivery.stream_seq):
                    continue
            except (PayloadTooLargeError, TooLargeError) as exc:
                # The broker's own limit is below ours: fail small instead.
                new, commands = self._fail(
                    slim(state), event, "StateTooLarge", exc, now, definition
                )
                messages = self._messages(new, commands)
                if not await self._persist(
                    new,
                    self._encoded(new, delivery.stream_seq),
                    delivery.stream_seq,
                ):
                    continue
            await self._publish(messages, commands, definition, new)
            self._outbox_sent = True
            await free_slots(self._ctx.slots, definition, new, event)
            await delivery.ack()
            lag = self._transport.now() - delivery.stored_at
            self._ctx.metrics.decided(event, state, new, commands, clock() - began, lag)
            if root is None:
                tracing.decision_span(self._id, new.trace, event, delivery.headers, began_at)
            tracing.end_span(root)
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
            definition = await self._ctx.definitions.get(state.type, state.version)
            await self._publish(
                self._messages(state, state.outbox), state.outbox, definition, state
            )
        self._outbox_sent = True

    async def _publish(
        self,
        messages: list[OutMessage],
        commands: Sequence[Command],
        definition: Definition | None,
        state: InstanceState,
    ) -> None:
        """Carry out a decision: publish its ``messages``, then write its withdrawn tasks.

        A withdrawal is a key of ``ACTIVITY_CANCELS``, which every worker
        watches; written again when the outbox is sent again, it is the same.
        The task of an attempt of a step with a concurrency limit goes out
        only if it gets a slot; otherwise it waits in the slot's queue, and
        whoever frees a slot publishes it. The decision that ended ``state``
        also publishes its removal, delayed by its type's retention
        (``_retention.py``): sent again with that outbox, it is the same message.
        """
        if definition is not None and definition.limited_steps:
            messages = await hold_back(self._ctx.slots, self._id, messages, commands, definition)
        expiry = self._expiry(state) if state.status.terminal else None
        await self._transport.publish_many(messages if expiry is None else [*messages, expiry])
        for command in commands:
            if isinstance(command, CancelActivity):
                await self._ctx.cancels.put(
                    activity_cancel_key(self._id, command.step, command.attempt),
                    encode_activity_cancel(self._id, command.step, command.attempt, command.reason),
                )

    def _expiry(self, state: InstanceState) -> OutMessage | None:
        """The removal of the ended ``state``, due when its type's retention is over."""
        retention = self._ctx.retention(state.type)
        if retention is None:
            return None
        due = state.updated_at + retention
        return OutMessage(
            expire_subject(self._id),
            encode_expire(state.seq),
            msg_id=expire_msg_id(self._id, state.seq),
            deliver_at=due if due > self._transport.now() else None,
        )

    def _fail(
        self,
        state: InstanceState | None,
        event: Event,
        kind: str,
        exc: BaseException,
        now: float,
        definition: Definition | None = None,
    ) -> tuple[InstanceState, list[Command]]:
        self._ctx.stats["instance_failures"] += 1
        trace = "" if isinstance(exc, LimitExceededError) else traceback.format_exc()
        error = ErrorInfo(kind, f"{type(exc).__name__}: {exc}", trace, non_retryable=True)
        start = event if isinstance(event, StartRequested) else None
        if state is None and start is None:
            raise RuntimeError("nothing to fail") from exc
        failed, commands = fail_instance(state, start, error, now, definition)
        if isinstance(event, ActivityCompleted | ActivityFailed):
            # The instance fails on top of the state before this result: its
            # step still looks out, but its task has reported. Nothing to withdraw.
            reported = (event.step, event.attempt)
            commands = [
                c
                for c in commands
                if not (isinstance(c, CancelActivity) and (c.step, c.attempt) == reported)
            ]
            failed = replace(failed, outbox=tuple(commands))
        return failed, commands

    def _messages(self, state: InstanceState, commands: Sequence[Command]) -> list[OutMessage]:
        messages = messages_for(self._id, state, commands, self._transport.now())
        # Each message carries the instance's trace on (docs/observability.md).
        return tracing.traced(messages, state.trace)

    def _encoded(self, new: InstanceState, cause: int) -> bytes:
        return encoded(self._ctx.limits.max_state, new, cause)

    async def _definition_for(self, state: InstanceState | None, event: Event) -> Definition | None:
        store = self._ctx.definitions
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
        states = self._ctx.states
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
            self._ctx.stats["conflicts"] += 1
            self._ctx.metrics.conflict()
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
