"""Retention: a finished instance's state and history are removed once its type's
retention period has passed, or at once on request (``Client.delete``).

When an instance ends, the instance actor publishes with that decision's
messages a message ``expire.{id}`` on the stream ``WORKFLOW_EXPIRIES``,
delayed to the end plus the retention period of the instance's type
(message id ``expire.{id}.{seq}``: one per end, however often the
decision's outbox is sent again, which is what makes it survive a crash
between the state's write and the publish, as the rest of the outbox does).
Every orchestrator runs a :class:`Sweeper` on the stream's shared consumer:
if the instance still ended as the message says (it was not retried since),
its history is purged from the history stream,
then its state is deleted from ``WORKFLOW_STATES`` by compare-and-set, so
that a change made meanwhile is never lost; the clients' indexes drop it as
they see the deletion. A crash in between leaves the message
unacknowledged: it comes back and finishes the job. ``delete`` publishes
the same message with no ``seq``, due at once.

Removals have a stream of their own, not the events stream, and are paced
(``removal_rate``): 100,000 expiring at once (after an outage, or a bulk
delete) must not queue ahead of the events of the instances still running.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Final

import trio

from transport import ConflictError, Delivery, KeyValue, Transport, TransportClosedError

from ..core import parse_duration
from ..wire import (
    EXPIRIES_STREAM,
    HISTORY_STREAM,
    CodecError,
    Layout,
    MessageError,
    decode_expire,
    decode_state,
    expired_instance,
    history_subject,
)

__all__ = ["DEFAULT_REMOVAL_RATE", "DEFAULT_RETENTION", "Sweeper", "retention_periods"]

log = logging.getLogger("actors.orchestrator")

#: How long a finished instance is kept by default: seven days.
DEFAULT_RETENTION: Final = 7 * 86400.0
#: Removals a second, by default, per orchestrator process.
DEFAULT_REMOVAL_RATE: Final = 200.0
#: Removals under way at once (each a few round trips to the broker), so that
#: the rate is reached whatever the broker's latency.
_REMOVERS: Final = 4


def retention_periods(entries: tuple[str, ...]) -> Mapping[str, float]:
    """The per-type periods of ``TYPE=DURATION`` entries (``order=1d``, ``refund=3600``).

    Raises ``ValueError`` naming the entry at fault.
    """
    periods: dict[str, float] = {}
    for entry in entries:
        workflow_type, sep, duration = entry.partition("=")
        if not sep or not workflow_type.strip():
            raise ValueError(f"retention_by_type: {entry!r} is not TYPE=DURATION")
        try:
            seconds = parse_duration(duration.strip())
        except ValueError as exc:
            raise ValueError(f"retention_by_type: {entry!r}: {exc}") from None
        if not 0 < seconds < math.inf:
            raise ValueError(f"retention_by_type: {entry!r}: must be more than 0 seconds")
        periods[workflow_type.strip()] = seconds
    return periods


class Sweeper:
    """Removes the finished instances whose removal is due, at most ``rate`` a second.

    Run :meth:`run` in a nursery (``await nursery.start(sweeper.run)``); it
    serves until cancelled. ``removed`` counts the instances it removed.
    """

    def __init__(
        self,
        transport: Transport,
        states: KeyValue,
        layout: Layout,
        rate: float,
        stats: MutableMapping[str, int],
        deadletter: Callable[[Delivery, str], Awaitable[None]],
    ) -> None:
        if not 0 < rate < math.inf:
            raise ValueError(f"removal rate must be a positive number, got {rate}")
        self._transport = transport
        self._states = states
        self._layout = layout
        self._interval = 1 / rate
        self._stats = stats
        self._deadletter = deadletter

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        spec = self._layout.expiries_consumer()
        # A small buffer: what waits for its turn here is not redelivered
        # (the ack wait is far longer than the buffer takes at the rate).
        async with (
            self._transport.consume(EXPIRIES_STREAM, spec, buffer=2 * _REMOVERS) as deliveries,
            trio.open_nursery() as removers,
        ):
            for _ in range(_REMOVERS):
                removers.start_soon(self._remover, deliveries)
            task_status.started()
        raise TransportClosedError("the connection to the broker closed for good")

    async def _remover(self, deliveries: trio.MemoryReceiveChannel[Delivery]) -> None:
        """One of the removers: each takes its share of the rate."""
        interval = self._interval * _REMOVERS
        async for delivery in deliveries:
            began = trio.current_time()
            await self._remove(delivery)
            await trio.sleep_until(began + interval)

    async def _remove(self, delivery: Delivery) -> None:
        try:
            instance_id = expired_instance(delivery.subject)
            seq = decode_expire(delivery.data)
        except (MessageError, CodecError) as exc:
            await self._deadletter(delivery, f"malformed: {exc}")
            return
        entry = await self._states.get(instance_id)
        if entry is not None:
            try:
                state = decode_state(entry.value)
            except MessageError as exc:
                await self._deadletter(delivery, f"instance {instance_id}: {exc}")
                return
            if not state.status.terminal or (seq is not None and seq != state.seq):
                # Retried since (or not ended): its next end sends its own removal.
                await delivery.ack()
                return
        # The history first: should the process die between the two, the
        # removal comes back and finds the state still there.
        await self._transport.purge(HISTORY_STREAM, history_subject(instance_id))
        if entry is not None:
            try:
                await self._states.delete(instance_id, revision=entry.revision)
            except ConflictError:
                # Changed meanwhile (a retry): judged again from its new state.
                await delivery.nak()
                return
            self._stats["expired"] += 1
        await delivery.ack()
