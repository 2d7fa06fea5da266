"""What an instance actor sees of the orchestrator that runs it, and what it is handed.

The orchestrator builds one :class:`Context` and shares it among the
instance actors it runs (``_instance.py``); an actor reads, writes and
counts through it and nothing else, so that the actor does not depend on
how the orchestrator serves its partitions. :class:`Routed` is what the
orchestrator puts in an actor's mailbox: an event, decoded, with the
delivery that brought it (the actor acks, naks or dead-letters it).
The mutable fields (``stats``, ``held``) are shared by every actor of the
process, which all run in one Trio thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from transport import Delivery, KeyValue, Transport

from ..core import Event, Limits, Pause
from ..observability import NO_METRICS, Metrics
from ._flow import WorkflowSlots
from ._registry import DefinitionStore

__all__ = ["Context", "Routed"]


@dataclass(slots=True)
class Routed:
    """An event, decoded, with the delivery that brought it."""

    delivery: Delivery
    event: Event


@dataclass(eq=False, kw_only=True)
class Context:
    """What an instance actor needs of the orchestrator that runs it, and nothing more."""

    transport: Transport
    states: KeyValue
    #: ``ACTIVITY_CANCELS``: where tasks the instances withdraw are written.
    cancels: KeyValue
    definitions: DefinitionStore
    limits: Limits
    #: The events consumer's ack wait: held events are kept alive within it.
    ack_wait: float
    #: How long an event for an instance not stored yet waits for it.
    start_wait: float
    #: Events held at most by all the actors of the process.
    max_waiting_events: int
    #: The orchestrator's counters.
    stats: dict[str, int]
    #: The slots of workflow-level concurrency limits (``FLOW_SLOTS``).
    slots: WorkflowSlots
    #: Records a delivery in the dead letters with a reason, then acks it.
    deadletter: Callable[[Delivery, str], Awaitable[None]]
    #: Where decisions are counted.
    metrics: Metrics = NO_METRICS
    #: Events the actors hold now, waiting for their instance.
    held: int = 0
    #: How a new instance of a workflow type is paused (``None``: the type is not).
    type_pause: Callable[[str], Pause | None] = lambda workflow_type: None
    #: How long a finished instance of a workflow type is kept (``None``: for ever).
    retention: Callable[[str], float | None] = lambda workflow_type: None
