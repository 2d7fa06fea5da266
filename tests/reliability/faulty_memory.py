"""Simulated processes on one in-memory broker, with faults injected at chosen points.

A :class:`Cluster` runs orchestrators and workers in this process, all on one
:class:`~transport.memory._transport.MemoryTransport` (the "broker"). Each service runs
as a :class:`Node`: a cancel scope (killing the node is cancelling it) and a
:class:`FaultyTransport` of its own (its "connection"). The connection counts
the node's operations by kind and, when a :class:`Fault` names an operation
(the 3rd state write of the first orchestrator, say), does what the fault
says there:

=================  ==========================================================
operation          actions
=================  ==========================================================
``state.read``     ``fail_before`` (of an instance's state)
``state.write``    ``crash_before``, ``crash_after`` (the write landed),
                   ``fail_before``, ``fail_after`` (landed, but the caller
                   gets an error), ``freeze`` (the whole node stops for
                   ``arg`` seconds, then writes as if nothing happened)
``publish``        ``crash_before``, ``crash_mid`` (the first half of a
                   batch stored; nothing of a single message),
                   ``crash_after``, ``fail_before``, ``fail_mid``,
                   ``fail_after``, ``duplicate`` (every event and task in it
                   stored a second time under another message id, so that
                   dedup does not drop it)
``ack``            ``crash_before``, ``crash_after``, ``lose`` (the caller
                   thinks it acked; the broker never hears of it)
``deliver``        ``duplicate`` (the same delivery handed over twice),
                   ``delay`` (held back ``arg`` seconds, so later messages
                   overtake it)
``run``            (an activity the worker runs) ``crash_begin``,
                   ``crash_mid``, ``crash_end`` (it ran to the end; the
                   result was never sent), ``freeze_mid`` (the worker stops
                   ``arg`` seconds half-way through)
=================  ==========================================================

A killed node behaves like a SIGKILLed process, not like a clean shutdown:
it settles nothing more (its acks, naks and heartbeats are lost), and what it
held comes back only after the consumer's ack wait. The consume context of
the memory transport hands everything back at once when it exits, so each
connection consumes through a pump that lives in the cluster's own nursery;
when its node dies, the pump ends the broker-side session the way a dead
client's ends: it fetches nothing more and what it held stays pending until
the ack wait expires (this reaches into the memory transport's session
bookkeeping, ``Session.ended`` and ``Session.outstanding``).

A frozen node (``freeze``) is a SIGSTOP: every operation of its connection
waits until it thaws, so the deliveries it holds expire and go to the other
nodes, and its writes, when it resumes, are made on what it read before.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

import trio

from actors.wire import STATES_BUCKET
from transport import (
    ConflictError,
    ConnectionEvent,
    ConnectionLostError,
    ConnectionState,
    ConsumerLag,
    ConsumerSpec,
    Delivery,
    KeyValue,
    KVChange,
    KVEntry,
    KVSpec,
    OutMessage,
    PubAck,
    Settlement,
    StoredMessage,
    StreamSpec,
    Transport,
    TransportClosedError,
    TransportError,
    TransportTimeoutError,
)
from transport.memory import MemoryTransport
from transport.memory._stream import MemoryDelivery, Session

#: The node whose code is running (set for every task a node spawns), so that
#: activities can reach their worker's fault plan.
CURRENT_NODE: contextvars.ContextVar[Node | None] = contextvars.ContextVar(
    "faulty_memory_node", default=None
)

#: Each operation a fault can name, with the actions it can take there.
ACTIONS: Mapping[str, tuple[str, ...]] = {
    "state.read": ("fail_before",),
    "state.write": ("crash_before", "crash_after", "fail_before", "fail_after", "freeze"),
    "publish": (
        "crash_before",
        "crash_mid",
        "crash_after",
        "fail_before",
        "fail_mid",
        "fail_after",
        "duplicate",
    ),
    "ack": ("crash_before", "crash_after", "lose"),
    "deliver": ("duplicate", "delay"),
    "run": ("crash_begin", "crash_mid", "crash_end", "freeze_mid"),
}


@dataclass(frozen=True, slots=True)
class Fault:
    """At the ``nth`` (from 1) ``op`` of life ``life`` of slot ``slot``, do ``action``.

    A slot is a role the cluster keeps filled ("orchestrator-a", "worker-a");
    life 0 is its first node, life 1 the node that replaced it, and so on.
    ``arg`` is the seconds of a ``delay`` or ``freeze``.
    """

    slot: str
    life: int
    op: str
    nth: int
    action: str
    arg: float = 0.0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS.get(self.op, ()):
            raise ValueError(f"no action {self.action!r} for operation {self.op!r}")

    def __str__(self) -> str:
        extra = f"({self.arg:g}s)" if self.arg else ""
        return f"{self.slot}#{self.life} {self.op}[{self.nth}] {self.action}{extra}"


@dataclass
class Journal:
    """What happened, for the test's assertions and for a failing example's report."""

    #: Each fault that fired, as ``str(fault)``, in order.
    fired: list[str] = field(default_factory=list)
    #: How each write made on thawing from a ``freeze`` ended: "ok" or "conflict".
    thawed_writes: list[str] = field(default_factory=list)
    #: Node names, in the order they were killed.
    killed: list[str] = field(default_factory=list)


class InjectedError(ConnectionLostError):
    """A broker failure the plan injected (the request never reached the broker)."""


class InjectedTimeoutError(TransportTimeoutError):
    """A broker failure the plan injected (the request was carried out; its reply was lost)."""


class Node:
    """One simulated process: a service in a cancel scope, with its own connection."""

    def __init__(self, cluster: Cluster, slot: str, life: int) -> None:
        self.cluster = cluster
        self.slot = slot
        self.life = life
        self.name = f"{slot}#{life}"
        self.scope = trio.CancelScope()
        self.alive = True
        self.dead = trio.Event()
        self.transport = FaultyTransport(self, cluster.broker)
        self._counts: Counter[str] = Counter()
        #: The node is frozen (every operation waits) until this Trio time.
        self.frozen_until = -math.inf
        #: The service (an Orchestrator or a Worker) the node runs.
        self.service: Any = None
        #: The node's consume contexts.
        self.pumps: list[_Pump] = []

    def fault(self, op: str) -> Fault | None:
        """Count one ``op`` of this node; the fault planned for it, if any."""
        self._counts[op] += 1
        fault = self.cluster.plan.get((self.slot, self.life, op, self._counts[op]))
        if fault is not None:
            self.cluster.journal.fired.append(str(fault))
        return fault

    def kill(self) -> None:
        """SIGKILL: nothing more of this node reaches the broker."""
        if self.alive:
            self.alive = False
            if not self.cluster.stopping:
                self.cluster.journal.killed.append(self.name)
            self.scope.cancel()
            self.dead.set()

    async def crash(self) -> NoReturn:
        """Kill this node from inside one of its own tasks."""
        self.kill()
        await trio.lowlevel.checkpoint()  # the node's scope is cancelled: this raises
        raise TransportClosedError(f"{self.name} is dead")  # only reached under a shield

    async def thaw(self) -> None:
        """Return once the node is not frozen."""
        # A loop, not one sleep: a second freeze may push the thaw further out.
        while trio.current_time() < self.frozen_until:  # noqa: ASYNC110
            await trio.sleep_until(self.frozen_until)

    async def gate(self) -> None:
        """Wait while the node is frozen; raise if it is dead."""
        await self.thaw()
        if not self.alive:
            await trio.lowlevel.checkpoint()
            raise TransportClosedError(f"{self.name} is dead")

    async def freeze(self, seconds: float) -> None:
        """SIGSTOP for ``seconds``, then SIGCONT (called from one of its own operations)."""
        self.frozen_until = max(self.frozen_until, trio.current_time() + seconds)
        for pump in self.pumps:
            pump.retire()
        await self.gate()


class FaultyTransport(Transport):
    """A node's connection to the shared broker: every call may meet a planned fault."""

    def __init__(self, node: Node, broker: MemoryTransport) -> None:
        self._node = node
        self._broker = broker

    # -- passed through ----------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._broker.state if self._node.alive else ConnectionState.CLOSED

    def now(self) -> float:
        return self._broker.now()

    async def ensure_stream(self, spec: StreamSpec) -> StreamSpec:
        await self._node.gate()
        return await self._broker.ensure_stream(spec)

    async def ensure_kv(self, spec: KVSpec) -> KeyValue:
        await self._node.gate()
        return _FaultyKV(self._node, await self._broker.ensure_kv(spec))

    async def kv(self, bucket: str) -> KeyValue:
        await self._node.gate()
        return _FaultyKV(self._node, await self._broker.kv(bucket))

    async def read(
        self, stream: str, subject: str, *, start_seq: int = 1, limit: int = 1000
    ) -> list[StoredMessage]:
        await self._node.gate()
        return await self._broker.read(stream, subject, start_seq=start_seq, limit=limit)

    async def holds(self, stream: str, seq: int) -> bool:
        await self._node.gate()
        return await self._broker.holds(stream, seq)

    async def consumer_lag(self, stream: str, consumer: str) -> ConsumerLag:
        await self._node.gate()
        return await self._broker.consumer_lag(stream, consumer)

    def connection_events(self) -> trio.MemoryReceiveChannel[ConnectionEvent]:
        return self._broker.connection_events()

    async def aclose(self) -> None:
        """The broker belongs to the cluster: closing a connection closes nothing."""
        await trio.lowlevel.checkpoint()

    # -- publishing (``publish`` is Transport's: a batch of one) -----------------

    async def publish_many(self, messages: Sequence[OutMessage]) -> list[PubAck]:
        node = self._node
        await node.gate()
        fault = node.fault("publish")
        action = fault.action if fault is not None else ""
        if action == "crash_before":
            await node.crash()
        if action == "fail_before":
            raise InjectedError(f"{node.name}: publish refused (injected)")
        if action in ("crash_mid", "fail_mid"):
            half = messages[: max(1, len(messages) // 2)] if len(messages) > 1 else []
            await self._broker.publish_many(half)
            if action == "crash_mid":
                await node.crash()
            raise InjectedError(f"{node.name}: publish cut half-way (injected)")
        receipts = await self._broker.publish_many(messages)
        if action == "duplicate":
            # Copies under other ids: the broker stores them as new messages,
            # as it would a retry made after its duplicate window.
            copies = [
                OutMessage(
                    m.subject,
                    m.data,
                    f"{m.msg_id or 'none'}.copy{node.name}",
                    m.headers,
                    m.deliver_at,
                )
                for m in messages
                if m.subject.startswith(("workflow.", "activity."))
            ]
            await self._broker.publish_many(copies)
        if action == "crash_after":
            await node.crash()
        if action == "fail_after":
            raise InjectedTimeoutError(f"{node.name}: publish reply lost (injected)")
        return receipts

    # -- consuming ---------------------------------------------------------------

    def consume(
        self, stream: str, spec: ConsumerSpec, *, buffer: int = 64
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Delivery]]:
        return self._consume(stream, spec, buffer)

    @asynccontextmanager
    async def _consume(
        self, stream: str, spec: ConsumerSpec, buffer: int
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Delivery]]:
        node = self._node
        await node.gate()
        pump = _Pump(node, self._broker, stream, spec, buffer)
        await node.cluster.connections.start(pump.run)
        try:
            yield pump.receive
        finally:
            # Runs in a cancelled scope when the node is killed: nothing here waits.
            if node.alive:
                pump.hand_back()
            else:
                pump.abandon()


@dataclass
class _Live:
    """One broker-side consume context of a pump, while it feeds the node."""

    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    #: The broker's bookkeeping of it, known from its first delivery.
    session: Session | None = None


class _Pump:
    """Moves one consume context's deliveries from the broker to its node.

    It runs in the cluster's nursery, not the node's. Each broker-side
    consume context is a *session*; a session is retired when the node dies
    or freezes: it fetches nothing more, and what the node held expires after
    the ack wait and goes to other nodes instead of being handed back at
    once. A node that thaws gets a new session. At most one session of a
    pump is live at a time.
    """

    def __init__(
        self, node: Node, broker: MemoryTransport, stream: str, spec: ConsumerSpec, buffer: int
    ) -> None:
        self._node = node
        self._broker = broker
        self._stream = stream
        self._spec = spec
        self._send, self.receive = trio.open_memory_channel[Delivery](buffer)
        self._run_scope = trio.CancelScope()
        self._late: trio.Nursery | None = None
        self._live: _Live | None = None
        self._retired = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        node = self._node
        node.pumps.append(self)
        try:
            async with trio.open_nursery() as sessions:
                with self._run_scope:
                    async with trio.open_nursery() as late:
                        self._late = late
                        self._live = _Live()
                        await sessions.start(self._session, self._live, late)
                        task_status.started()
                        while True:
                            await self._retired.wait()
                            self._retired = trio.Event()
                            await node.thaw()
                            if not node.alive:
                                break
                            if self._live is None:
                                self._live = _Live()
                                await sessions.start(self._session, self._live, late)
                        late.cancel_scope.cancel()
        finally:
            node.pumps.remove(self)
            self._send.close()

    async def _session(
        self,
        live: _Live,
        late: trio.Nursery,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        started = False
        with live.scope:
            # buffer=1: a session fetches little ahead of its node.
            async with self._broker.consume(self._stream, self._spec, buffer=1) as upstream:
                task_status.started()
                started = True
                async for delivery in upstream:
                    # The broker-side session this context feeds (memory
                    # internals: a delivery's pending record knows it).
                    assert isinstance(delivery, MemoryDelivery)
                    pending = delivery._consumer._pending.get(delivery.stream_seq)
                    if pending is not None and pending.delivery is delivery:
                        live.session = pending.session
                    await self._forward(delivery, late)
        if not started:
            task_status.started()  # retired before it began: there is nothing to end

    async def _forward(self, delivery: Delivery, late: trio.Nursery) -> None:
        await self._node.thaw()
        fault = self._node.fault("deliver")
        copies = 2 if fault is not None and fault.action == "duplicate" else 1
        for _ in range(copies):
            wrapped = _FaultyDelivery(self._node, delivery)
            if fault is not None and fault.action == "delay":
                late.start_soon(self._send_later, wrapped, fault.arg)
            else:
                with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                    await self._send.send(wrapped)

    async def _send_later(self, delivery: _FaultyDelivery, seconds: float) -> None:
        await trio.sleep(seconds)
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            await self._send.send(delivery)

    def retire(self) -> None:
        """End the live session as a crashed (or stopped) client's would end.

        It takes nothing more, and what it holds is not handed back: the
        broker redelivers it after the ack wait, to whichever session asks.
        """
        live, self._live = self._live, None
        if live is not None:
            if live.session is not None:
                # Ended, the broker's session task hands it nothing more; the
                # cancel below exits the context, which then naks nothing.
                live.session.ended = True
                live.session.outstanding.clear()
            live.scope.cancel()
        self._retired.set()

    def hand_back(self) -> None:
        """A clean exit: the broker-side context, exiting, hands back what is unsettled."""
        live, self._live = self._live, None
        if live is not None:
            live.scope.cancel()
        self._run_scope.cancel()
        self._send.close()

    def abandon(self) -> None:
        """The node died: feed it nothing more and settle nothing it held."""
        self.retire()
        if self._late is not None:
            self._late.cancel_scope.cancel()
        self._send.close()


class _FaultyDelivery(Delivery):
    """A delivery seen by a node: its settlements go through the node's fault plan."""

    __slots__ = ("_inner", "_node")

    def __init__(self, node: Node, inner: Delivery) -> None:
        super().__init__(
            inner.subject,
            inner.data,
            inner.headers,
            inner.num_delivered,
            inner.stream_seq,
            inner.stored_at,
        )
        self._node = node
        self._inner = inner

    async def _settle(self, how: Settlement, delay: float | None) -> None:
        node = self._node
        if not node.alive:
            return  # a dead process says nothing
        await node.gate()
        fault = node.fault("ack") if how is Settlement.ACK else None
        action = fault.action if fault is not None else ""
        if action == "crash_before":
            await node.crash()
        if action == "lose":
            return
        if how is Settlement.ACK:
            await self._inner.ack()
        elif how is Settlement.NAK:
            await self._inner.nak(delay)
        else:
            await self._inner.term()
        if action == "crash_after":
            await node.crash()

    async def _touch(self) -> None:
        node = self._node
        if not node.alive:
            return
        await node.gate()
        await self._inner.in_progress()


class _FaultyKV:
    """A node's handle to a bucket: writes of instance states may meet faults."""

    def __init__(self, node: Node, inner: KeyValue) -> None:
        self._node = node
        self._inner = inner

    @property
    def bucket(self) -> str:
        return self._inner.bucket

    async def get(self, key: str) -> KVEntry | None:
        node = self._node
        await node.gate()
        fault = node.fault("state.read") if self._inner.bucket == STATES_BUCKET else None
        if fault is not None and fault.action == "fail_before":
            raise InjectedError(f"{node.name}: state read refused (injected)")
        return await self._inner.get(key)

    async def create(self, key: str, value: bytes) -> int:
        return await self._write(lambda: self._inner.create(key, value))

    async def update(self, key: str, value: bytes, revision: int) -> int:
        return await self._write(lambda: self._inner.update(key, value, revision))

    async def put(self, key: str, value: bytes) -> int:
        await self._node.gate()
        return await self._inner.put(key, value)

    async def delete(self, key: str, *, revision: int | None = None) -> None:
        await self._node.gate()
        await self._inner.delete(key, revision=revision)

    async def keys(self, pattern: str = ">") -> list[str]:
        await self._node.gate()
        return await self._inner.keys(pattern)

    async def latest_revision(self) -> int:
        await self._node.gate()
        return await self._inner.latest_revision()

    def watch(
        self, pattern: str = ">", *, since: int | None = None
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[KVChange]]:
        return self._inner.watch(pattern, since=since)

    async def _write(self, write: Callable[[], Awaitable[int]]) -> int:
        node = self._node
        await node.gate()
        fault = node.fault("state.write") if self._inner.bucket == STATES_BUCKET else None
        action = fault.action if fault is not None else ""
        if action == "crash_before":
            await node.crash()
        if action == "fail_before":
            raise InjectedError(f"{node.name}: state write refused (injected)")
        if action == "freeze":
            assert fault is not None
            await node.freeze(fault.arg)
            try:
                revision = await write()
            except ConflictError:
                node.cluster.journal.thawed_writes.append("conflict")
                raise
            node.cluster.journal.thawed_writes.append("ok")
            return revision
        revision = await write()
        if action == "crash_after":
            await node.crash()
        if action == "fail_after":
            raise InjectedTimeoutError(f"{node.name}: state write reply lost (injected)")
        return revision


class ActivityRun:
    """One run of a test activity on a node, which a ``run`` fault may kill.

    Make it when the activity begins (that counts the node's ``run``); call
    :meth:`reached` at ``"mid"`` and ``"end"``.
    """

    def __init__(self) -> None:
        self.node = CURRENT_NODE.get()
        self.fault = self.node.fault("run") if self.node is not None else None

    async def reached(self, stage: str) -> None:
        """The activity is at ``stage`` ("begin", "mid", "end"): crash or freeze if planned."""
        if self.node is None or self.fault is None:
            return
        if self.fault.action == f"crash_{stage}":
            await self.node.crash()
        if self.fault.action == f"freeze_{stage}":
            await self.node.freeze(self.fault.arg)


ServiceFactory = Callable[[FaultyTransport], Any]


class Cluster:
    """Keeps slots filled with nodes on one broker; a killed node is replaced.

    ``plan`` maps ``(slot, life, op, nth)`` to the :class:`Fault` to inject.
    ``restart_after`` is how long a slot stays empty after its node died.
    """

    def __init__(
        self,
        broker: MemoryTransport,
        nursery: trio.Nursery,
        faults: Sequence[Fault] = (),
        *,
        restart_after: float = 1.0,
    ) -> None:
        self.broker = broker
        self.connections = nursery
        self.plan: dict[tuple[str, int, str, int], Fault] = {}
        for f in faults:
            # The first fault named for an operation wins (hypothesis may draw two).
            self.plan.setdefault((f.slot, f.life, f.op, f.nth), f)
        self.journal = Journal()
        self.restart_after = restart_after
        self.nodes: list[Node] = []
        self.stopping = False

    async def keep(self, slot: str, factory: ServiceFactory, *, lives: int = 1000) -> None:
        """Start a node in ``slot`` and replace it whenever it dies (up to ``lives`` times).

        Returns once the first node has started; the replacing goes on in the
        cluster's nursery until :meth:`stop`.
        """
        await self.connections.start(self._supervise, slot, factory, lives)

    async def _supervise(
        self,
        slot: str,
        factory: ServiceFactory,
        lives: int,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        for life in range(lives):
            if self.stopping:
                return
            node = Node(self, slot, life)
            self.nodes.append(node)
            await self._run(node, factory, task_status if life == 0 else None)
            if self.stopping:
                return
            await trio.sleep(self.restart_after)

    async def _run(
        self, node: Node, factory: ServiceFactory, task_status: trio.TaskStatus[None] | None
    ) -> None:
        token = CURRENT_NODE.set(node)
        try:
            node.service = factory(node.transport)
            with node.scope:
                try:
                    async with trio.open_nursery() as inner:
                        await inner.start(node.service.run)
                        if task_status is not None:
                            task_status.started()
                            task_status = None
                except* TransportError:
                    # A dead node's last words (an operation refused after
                    # the kill, under a shield) are not the test's concern.
                    if node.alive:
                        raise
            node.kill()  # it returned: treat it as gone, and replace it
        finally:
            CURRENT_NODE.reset(token)
            if task_status is not None:
                task_status.started()  # the first life died before it started

    async def thawed(self) -> None:
        """Return once no node is frozen (a frozen node's last write is part of the run)."""
        for node in list(self.nodes):
            await node.thaw()

    def stop(self) -> None:
        """Stop replacing nodes and kill the live ones."""
        self.stopping = True
        for node in self.nodes:
            node.kill()


class Watchdog(trio.abc.Instrument):
    """Cancels ``scope`` when a run stops making progress in real time.

    Either Trio's clock stood still for ``stall`` real seconds (on the
    autojump clock that means tasks spinning at one instant: a livelock), or
    the whole run took more than ``budget`` real seconds (the clock creeping
    on by tiny steps, say). Either would hang the test for ever; the
    watchdog turns it into a failure, naming the tasks that kept stepping.
    """

    def __init__(self, scope: trio.CancelScope, *, stall: float, budget: float) -> None:
        self._scope = scope
        self._stall = stall
        self._budget = budget
        self._virtual = -math.inf
        self._start = self._since = self._window = time.perf_counter()
        self._steps: Counter[str] = Counter()
        self._last: Counter[str] = Counter()
        #: Once it fired: what was wrong, and the busiest tasks.
        self.tripped: str | None = None

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        real = time.perf_counter()
        now = trio.current_time()
        if now != self._virtual:
            self._virtual, self._since = now, real
        if real - self._window > self._stall / 2:
            # Task steps are counted per window, the last two kept.
            self._window, self._last, self._steps = real, self._steps, Counter()
        self._steps[task.name] += 1
        if self.tripped is not None:
            return
        if real - self._since > self._stall:
            why = f"the clock stood at {now:g}s for {self._stall:g}s of real time"
        elif real - self._start > self._budget:
            why = f"the run took over {self._budget:g}s of real time (the clock at {now:g}s)"
        else:
            return
        self.tripped = f"{why}; busiest tasks {(self._steps + self._last).most_common(5)}"
        self._scope.cancel()
