"""The Python client: register, start, inspect, wait for and cancel workflows.

Waiting is event-driven: one watch over the states bucket per client, shared
by every waiter, wakes each when its instance reaches a terminal state. The
watch starts at the bucket's latest revision, so it never replays the
bucket's past (which may hold millions of instances), and the client writes
nothing there: the bucket holds instance states only.

Two groups of its methods live beside it, as classes it inherits: the
instance operations (:class:`Operations`, ``_operations.py``) and the
listings (:class:`Listing`, ``_listing.py``: history, slots, list, counts).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Final, TypeVar

import trio

from transport import (
    ConnectOptions,
    KeyValue,
    KVOp,
    Transport,
    TransportClosedError,
    open_transport,
)

from .._groups import leaves
from ..core import (
    Definition,
    ErrorInfo,
    InstanceStatus,
    LimitExceededError,
    Limits,
    check_instance_id,
    check_name,
    load_definition,
    parse_definition,
)
from ..observability import tracing
from ..wire import (
    DEFINITIONS_BUCKET,
    EVENTS_STREAM,
    SCHEDULES_BUCKET,
    STATES_BUCKET,
    Layout,
    MessageError,
    StartMessage,
    cancel_subject,
    decode_state,
    decode_status,
    encode_cancel,
    encode_signal,
    encode_start,
    signal_subject,
    start_msg_id,
    start_subject,
    terminate_subject,
)
from ._instances import (
    InstanceInfo,
    UnknownWorkflowTypeError,
    WorkflowCancelledError,
    WorkflowError,
    WorkflowFailedError,
    _info,
    _info_of,
    _same_type,
    _unknown,
)
from ._listing import Listing
from ._operations import Operations
from ._registry import DefinitionStore
from ._schedules import Schedules
from ._visibility import InstanceIndex

# The errors it raises are _instances.py's, and exported from there.
__all__ = ["Client"]

_A = TypeVar("_A")
_B = TypeVar("_B")

#: How many of its latest starts a client remembers, for :meth:`Client.start_pending`.
_STARTS_KEPT: Final = 100_000
#: Looks for the start a duplicate was dropped for, before giving up (see ``_first_start``).
_FIRST_START_LOOKS: Final = 6


class Client(Operations, Listing):
    """Talks to the engine through a transport. Use as an async context manager::

        async with Client.connect("nats://localhost:4222") as client:
            instance_id = await client.start("order", {"order_id": "o-1"})
            print(await client.result(instance_id))

    or ``async with Client(transport) as client`` on a transport you own.
    """

    def __init__(
        self, transport: Transport, *, layout: Layout | None = None, limits: Limits | None = None
    ) -> None:
        self._transport = transport
        self._layout = layout or Layout()
        self._limits = limits or Limits()
        self._states: KeyValue | None = None
        self._definitions: DefinitionStore | None = None
        self._schedules: Schedules | None = None
        self._nursery: trio.Nursery | None = None
        self._waiters: dict[str, list[trio.MemorySendChannel[InstanceInfo]]] = {}
        self._watch_ready: trio.Event | None = None
        self._index: InstanceIndex | None = None
        #: The error of the current watch, if it failed (the next wait starts another).
        self._watch_error: BaseException | None = None
        #: The error of the latest watch that failed, for the waiters it dropped.
        self._watch_failure: BaseException | None = None
        #: Where the events stream stored this client's latest starts, by id.
        self._starts: dict[str, int] = {}
        #: Which watch this is (one more each time one starts after a failure).
        self._watch_generation = 0
        #: Instances whose every state the current watch sees: this client
        #: started them (their key absent) while it ran. By id, the watch's
        #: generation then; gone once the watch saw the instance end.
        self._followed: dict[str, int] = {}

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, url: str, options: ConnectOptions | None = None, *, layout: Layout | None = None
    ) -> AsyncIterator[Client]:
        """Open a transport to ``url`` and a client on it; close both on exit."""
        async with open_transport(url, options) as transport, cls(transport, layout=layout) as c:
            yield c

    @property
    def transport(self) -> Transport:
        """The transport the client talks through (the caller's, or the one ``connect`` opened)."""
        return self._transport

    async def __aenter__(self) -> Client:
        await self._layout.provision(self._transport)
        self._states = await self._transport.kv(STATES_BUCKET)
        self._definitions = DefinitionStore(await self._transport.kv(DEFINITIONS_BUCKET))
        self._schedules = Schedules(
            self._transport,
            await self._transport.kv(SCHEDULES_BUCKET),
            self._states,
            self._definitions,
            self._limits,
        )
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        await self._nursery_cm.__aexit__(None, None, None)

    # -- definitions ------------------------------------------------------------

    async def register(self, definition: Definition | Mapping[str, Any] | str) -> Definition:
        """Validate and store a definition (a ``Definition``, plain data, or YAML/JSON text).

        Idempotent for identical content. Raises ``DefinitionError`` (with
        field paths) for an invalid one, ``VersionConflictError`` for a
        version already registered with other content.
        """
        if isinstance(definition, str):
            definition = load_definition(definition)
        elif not isinstance(definition, Definition):
            definition = parse_definition(definition)
        return await self._store().register(definition)

    async def definition(self, workflow_type: str, version: int = 0) -> Definition:
        """A registered definition (``version=0``: the newest).

        Raises :class:`UnknownWorkflowTypeError`.
        """
        found = await self._store().get(workflow_type, version)
        if found is None:
            raise UnknownWorkflowTypeError(_unknown(workflow_type, version))
        return found

    async def definitions(self) -> dict[str, list[int]]:
        """Every registered workflow type with its versions, ascending."""
        return await self._store().types()

    # -- schedules --------------------------------------------------------------

    @property
    def schedules(self) -> Schedules:
        """Create, list, describe, pause, unpause, trigger, backfill and delete schedules."""
        if self._schedules is None:
            raise RuntimeError("use the client inside 'async with'")
        return self._schedules

    # -- instances --------------------------------------------------------------

    async def start(
        self,
        workflow_type: str,
        input: Any = None,
        *,
        id: str | None = None,
        version: int = 0,
    ) -> str:
        """Start an instance and return its id, without waiting for it to run.

        ``id`` is the idempotency key: starting an id that exists (or is
        being started) as the same type does nothing more, and returns the
        id; an id that belongs to an instance of another type raises
        :class:`InstanceConflictError` (nothing is started). ``version=0``
        runs the newest version. Raises :class:`UnknownWorkflowTypeError` if
        the type (or the version) is not registered, ``InvalidNameError`` for
        a bad id, :class:`LimitExceededError` for an input over the client's
        ``limits.max_input`` (nothing is published then), and
        ``actors.StorageFullError`` when the broker's store is full (nothing
        is stored: start again, with the same ``id``, once there is space).

        Costs one publish and, with an ``id`` given, one read of its key at
        the same time (a random id is new). Not seen: a start of the id as
        another type that the broker took more than its duplicate window
        (120 s) earlier and no orchestrator has taken yet (none ran all that
        while); the orchestrator runs that one and drops this one.
        """
        check_name("workflow type", workflow_type)
        instance_id = check_instance_id(id) if id is not None else secrets.token_hex(12)
        data = encode_start(StartMessage(instance_id, input, version))
        if len(data) > self._limits.max_input:
            raise LimitExceededError(
                "the start message", len(data), self._limits.max_input, "InputTooLarge"
            )
        if await self._store().get(workflow_type, version) is None:
            raise UnknownWorkflowTypeError(_unknown(workflow_type, version))
        # A watch running before the key is read absent (or a random id is
        # made) sees every state the instance will have.
        watching = self._live_watch()
        publish = partial(
            self._transport.publish,
            start_subject(instance_id, workflow_type),
            data,
            msg_id=start_msg_id(instance_id),
            headers=tracing.start_span(workflow_type, instance_id),
        )
        if id is None:
            ack = await publish()  # a random id is new
        else:
            # The orchestrator ignores a start of an instance that exists,
            # whatever its type: the type is checked here, from the key read
            # while the start is published (the latency of one round trip).
            # Nothing else could tell: the broker forgets message ids after
            # its window. If the key holds another type, the start published
            # changes nothing: the orchestrator drops it.
            entry, ack = await _together(self._kv().get(instance_id), publish())
            if entry is not None:
                _same_type(instance_id, decode_state(entry.value).type, workflow_type)
                return instance_id
        if ack.duplicate:
            # A start of this id came first, within the duplicate window; the
            # broker dropped this one, and the instance is that start's.
            first = await self._first_start(instance_id, ack.seq)
            _same_type(instance_id, first, workflow_type)
        # Otherwise nothing more to check: the key was absent when read, and
        # the broker took this start as the first of its id within its
        # window, so the instance will be this start's (the one exception is
        # in the docstring).
        self._remember_start(instance_id, ack.seq)
        if watching is not None and not ack.duplicate:
            self._follow(instance_id, watching)
        return instance_id

    async def start_pending(self, instance_id: str) -> bool:
        """Whether the instance's start is accepted by the broker but not picked up yet.

        True while the events stream holds a start this client made for
        ``instance_id`` (one of its latest 100,000) and no orchestrator has
        stored the instance: none is running, or all are far behind. False
        once it is stored, and for an id this client did not start. A wait
        (:meth:`wait`, :meth:`result`) for a pending instance waits on for an
        orchestrator; this tells a caller whose wait ran out why there is no
        state to show (:meth:`status` is ``None``), where "running" would be
        wrong.
        """
        seq = self._starts.get(check_instance_id(instance_id))
        if seq is None or await self._kv().get(instance_id) is not None:
            return False
        # An orchestrator stores the state, then acks (so removes) the start:
        # a start still held after the state was found missing was not taken.
        return await self._transport.holds(EVENTS_STREAM, seq)

    def _live_watch(self) -> int | None:
        """The generation of the watch of the states if it runs now, else ``None``."""
        ready = self._watch_ready
        if ready is None or not ready.is_set() or self._watch_error is not None:
            return None
        return self._watch_generation

    def _follow(self, instance_id: str, generation: int) -> None:
        followed = self._followed
        followed[instance_id] = generation
        if len(followed) > _STARTS_KEPT:
            del followed[next(iter(followed))]  # the oldest: its wait reads the key

    def _remember_start(self, instance_id: str, seq: int) -> None:
        starts = self._starts
        starts.pop(instance_id, None)
        starts[instance_id] = seq
        if len(starts) > _STARTS_KEPT:
            del starts[next(iter(starts))]  # the oldest

    async def _first_start(self, instance_id: str, seq: int) -> str:
        """The workflow type of the start of ``instance_id`` stored at ``seq``.

        Read from the instance's state if an orchestrator has stored it, else
        from the subject of that start, still in the events stream. Raises
        :class:`WorkflowError` if the start was taken and no instance is
        stored: the orchestrator refused it, or its instance was removed
        since. The id cannot be started again within the duplicate window:
        an instance's messages have ids made of its id (rule 2), and the
        broker would drop the new instance's as copies of the old one's.
        """
        kv = self._kv()
        for look in range(_FIRST_START_LOOKS):
            entry = await kv.get(instance_id)
            if entry is not None:
                return decode_state(entry.value).type
            # Filed under its instance, or a plain start still in the intake.
            found = await self._transport.read(EVENTS_STREAM, ">", start_seq=seq, limit=1)
            if found and found[0].stream_seq == seq:
                return found[0].subject.rpartition(".")[2]
            if not await self._transport.holds(EVENTS_STREAM, seq):
                # Taken since the first look: its state is stored before the
                # start is acked, unless the start was refused.
                entry = await kv.get(instance_id)
                if entry is not None:
                    return decode_state(entry.value).type
                raise WorkflowError(
                    f"the start of {instance_id!r} was dropped as a duplicate of an earlier "
                    "start of that id that left no instance (its instance was deleted or "
                    "expired since, or the engine refused that start: see the dead letters): "
                    "start it again once the broker's duplicate window (2 min) has passed"
                )
            # Held, yet the read missed it: on a cluster a read may be answered
            # by a replica a moment behind the stream's leader. Nothing to
            # wait on but time; a few tries, a few milliseconds apart.
            await trio.sleep(0.005 * 2**look)
        raise WorkflowError(f"could not read the first start of {instance_id!r}; start it again")

    async def status(self, instance_id: str) -> InstanceInfo | None:
        """The instance's stored state; ``None`` if it does not exist (yet)."""
        entry = await self._kv().get(check_instance_id(instance_id))
        return None if entry is None else _info(entry.value)

    async def wait(self, instance_id: str) -> InstanceInfo:
        """Wait until the instance is terminal; return its final state.

        Waits as long as it takes: bound it with ``trio.fail_after``.
        """
        check_instance_id(instance_id)
        await self._ensure_watch()
        send, receive = trio.open_memory_channel[InstanceInfo](1)
        self._waiters.setdefault(instance_id, []).append(send)
        try:
            # Registered first, read second: a terminal write after this
            # read reaches the watch, one before it is in the read. An
            # instance this client started under this watch, which has not
            # seen it end, needs no read: the watch will.
            followed = self._followed.get(instance_id)
            if followed is None or followed != self._live_watch():
                info = await self.status(instance_id)
                if info is not None and info.status.terminal:
                    return info
            if self._watch_error is not None:
                raise self._watch_error
            try:
                return await receive.receive()
            except trio.EndOfChannel:
                # Only a failing watch closes a waiter's channel.
                assert self._watch_failure is not None
                raise self._watch_failure from None
        finally:
            waiters = self._waiters.get(instance_id, [])
            if send in waiters:
                waiters.remove(send)
            if not waiters:
                self._waiters.pop(instance_id, None)

    async def wait_for(
        self, instance_id: str, condition: Callable[[InstanceInfo], bool]
    ) -> InstanceInfo:
        """Wait until the instance's stored state meets ``condition``; return it.

        Event-driven: a watch on the instance's key sees its current state,
        then every change. A state the instance has already moved past is not
        seen. Waits as long as it takes: bound it with ``trio.fail_after``.
        """
        async with self._kv().watch(check_instance_id(instance_id)) as changes:
            async for change in changes:
                if change.op is not KVOp.PUT:
                    continue
                try:
                    info = _info(change.value)
                except MessageError:
                    continue
                if condition(info):
                    return info
        raise WorkflowError(f"the watch on {instance_id} ended")

    async def result(self, instance_id: str) -> Any:
        """Wait for the instance to finish and return its output.

        Raises :class:`WorkflowFailedError` (with the error) or
        :class:`WorkflowCancelledError`. Bound the wait with ``trio.fail_after``.
        """
        info = await self.wait(instance_id)
        if info.status is InstanceStatus.COMPLETED:
            return info.output
        if info.status in (InstanceStatus.CANCELLED, InstanceStatus.TERMINATED):
            raise WorkflowCancelledError(f"workflow {instance_id} was {info.status}")
        raise WorkflowFailedError(
            instance_id, info.error or ErrorInfo("Unknown", "failed without an error")
        )

    async def cancel(self, instance_id: str, reason: str = "") -> None:
        """Ask for the instance to be cancelled (a no-op once it is terminal).

        The compensations of its completed steps run before it ends as
        ``cancelled``.
        """
        await self._transport.publish(
            cancel_subject(check_instance_id(instance_id)), encode_cancel(reason)
        )

    async def terminate(self, instance_id: str, reason: str = "") -> None:
        """Stop the instance at once, without compensation (a no-op once terminal)."""
        await self._transport.publish(
            terminate_subject(check_instance_id(instance_id)),
            encode_cancel(reason, terminate=True),
        )

    async def signal(
        self, instance_id: str, name: str, payload: Any = None, *, signal_id: str | None = None
    ) -> None:
        """Send signal ``name`` with ``payload`` to the instance.

        A signal that arrives before the instance waits for it is kept until
        it does. ``signal_id`` makes a retried send count once (within the
        broker's duplicate window). Raises :class:`LimitExceededError` for a
        payload over ``limits.max_input``.
        """
        subject = signal_subject(check_instance_id(instance_id), check_name("signal name", name))
        data = encode_signal(payload)
        if len(data) > self._limits.max_input:
            raise LimitExceededError(
                f"signal {name!r}", len(data), self._limits.max_input, "InputTooLarge"
            )
        await self._transport.publish(
            subject,
            data,
            msg_id=None if signal_id is None else f"signal.{instance_id}.{signal_id}",
            headers=tracing.current_headers(),
        )

    # -- internals ----------------------------------------------------------------

    def _store(self) -> DefinitionStore:
        if self._definitions is None:
            raise RuntimeError("use the client inside 'async with'")
        return self._definitions

    def _kv(self) -> KeyValue:
        if self._states is None:
            raise RuntimeError("use the client inside 'async with'")
        return self._states

    async def _ensure_watch(self) -> None:
        # None yet, or the last one failed (its waiters saw the error): start
        # one. A broker error (a lost connection) must not make every later
        # wait of this client fail.
        if self._watch_ready is None or self._watch_error is not None:
            if self._nursery is None:
                raise RuntimeError("use the client inside 'async with'")
            self._watch_error = None
            self._watch_ready = trio.Event()
            self._watch_generation += 1
            self._nursery.start_soon(self._watch)
        await self._watch_ready.wait()

    async def _watch(self) -> None:
        assert self._watch_ready is not None
        kv = self._kv()
        try:
            mark = await kv.latest_revision()
            # "*": instance ids only (one token), not the dotted keys that
            # earlier versions wrote into the bucket.
            async with kv.watch("*", since=mark) as changes:
                self._watch_ready.set()
                async for change in changes:
                    waiters = self._waiters.get(change.key)
                    followed = change.key in self._followed
                    if not (waiters or followed) or change.op is not KVOp.PUT:
                        continue
                    try:
                        # Most states are not terminal: only those are rebuilt.
                        if not decode_status(change.value).terminal:
                            continue
                        state = decode_state(change.value)
                    except MessageError:
                        continue
                    if state.status.terminal:
                        # Ended: a wait from now on reads it.
                        self._followed.pop(change.key, None)
                        info = _info_of(state)
                        for send in waiters or ():
                            with contextlib.suppress(trio.WouldBlock):
                                send.send_nowait(info)
            # The changes end only when the transport closed under the client
            # (nats-py gave up on the connection): no answer will come.
            raise TransportClosedError("the connection to the broker closed for good")
        except Exception as exc:
            # Waiters must not hang on a dead watch: they see its error.
            self._watch_error = self._watch_failure = exc
            self._watch_ready.set()
            for waiters in self._waiters.values():
                for send in waiters:
                    send.close()


async def _together(first: Awaitable[_A], second: Awaitable[_B]) -> tuple[_A, _B]:
    """Await both at once; their results, or the first error either raised."""
    results: list[Any] = [None, None]

    async def run(index: int, awaitable: Awaitable[Any]) -> None:
        results[index] = await awaitable

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, 0, first)
            nursery.start_soon(run, 1, second)
    except BaseExceptionGroup as group:
        # The caller catches what the operations raise (StorageFullError...),
        # not a group of it.
        raise leaves(group)[0] from None
    return results[0], results[1]
