"""The wire contract: every stream, bucket, subject, consumer and message id.

This is the one place that names the engine's assets on the broker, so that
the layout can be read (and documented in ``docs/wire.md``) in one sitting.
Subject spaces of different streams never overlap: JetStream refuses it, and
work-queue streams refuse overlapping consumer filters.

=====================  =========  ===========================================
asset                  kind       holds
=====================  =========  ===========================================
WORKFLOW_EVENTS        stream WQ  ``instance.{p}.{instance}.>``: every event
                                  of an instance, filed in its partition;
                                  ``workflow.start.{type}``: plain starts
ACTIVITY_TASKS         stream WQ  ``activity.tasks.{activity}``
WORKFLOW_HISTORY       stream     ``history.{instance}``: every state change
WORKFLOW_DEADLETTERS   stream     ``deadletter.{source}``: what was refused
WORKFLOW_DEFINITIONS   KV         ``{type}.{version}`` -> definition
WORKFLOW_STATES        KV         ``{instance}`` -> state (compare-and-set)
WORKFLOW_PARTITIONS    KV         which orchestrator owns which partition
ACTIVITY_CANCELS       KV         ``{instance}.{step token}.{attempt}`` ->
                                  a withdrawn task (kept a day)
FLOW_SLOTS             KV         ``workflow.{type}.{digest}`` -> the slots
                                  of one key value of a concurrency limit
FLOW_RATES             KV         ``rate.{activity}.{digest}`` -> when the
                                  next attempt of a rate limit is due
WORKFLOW_SCHEDULES     KV         ``{schedule}`` -> schedule and its firing
WORKER_PRESENCE        KV         ``{worker id}`` -> a live worker process
                                  (JSON, rewritten every few seconds)
=====================  =========  ===========================================

Events of an instance are published on ``instance.{instance}.{event...}``;
the events stream files each under ``instance.{p}.{instance}.{event...}``,
``p`` the partition of the instance id (see :func:`partition_of`), and one
orchestrator at a time owns a partition and decides its events in the order
they were stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from transport import (
    ConsumerSpec,
    InvalidSpecError,
    KeyValue,
    KVSpec,
    Partitioning,
    Retention,
    StreamSpec,
    Transport,
    partition_of,
)

__all__ = ["EVENTS_STREAM", "Layout"]

EVENTS_STREAM: Final = "WORKFLOW_EVENTS"
TASKS_STREAM: Final = "ACTIVITY_TASKS"
HISTORY_STREAM: Final = "WORKFLOW_HISTORY"
DEADLETTER_STREAM: Final = "WORKFLOW_DEADLETTERS"
#: Finished instances' removals, each delayed to the end of its retention.
EXPIRIES_STREAM: Final = "WORKFLOW_EXPIRIES"
DEFINITIONS_BUCKET: Final = "WORKFLOW_DEFINITIONS"
STATES_BUCKET: Final = "WORKFLOW_STATES"
PARTITIONS_BUCKET: Final = "WORKFLOW_PARTITIONS"
#: Tasks withdrawn by their instance, which the workers watch.
CANCELS_BUCKET: Final = "ACTIVITY_CANCELS"
#: The slots and queues of concurrency limits (``_flow.py``), by compare-and-set.
SLOTS_BUCKET: Final = "FLOW_SLOTS"
#: The pace of rate limits: when each key value's next attempt is due.
RATES_BUCKET: Final = "FLOW_RATES"
#: How long a rate limit's pace is kept unwritten (then it is long past anyway).
RATES_TTL: Final = 2 * 86400.0
#: Operations that are no instance's own: paused workflow types (``_operations.py``).
OPERATIONS_BUCKET: Final = "WORKFLOW_OPERATIONS"
#: Schedules by id (``actors.core.ScheduleState``), written by compare-and-set.
SCHEDULES_BUCKET: Final = "WORKFLOW_SCHEDULES"
#: The live worker processes, each under its id (``_presence.py``).
PRESENCE_BUCKET: Final = "WORKER_PRESENCE"
#: How often a worker rewrites its presence entry, by default.
PRESENCE_INTERVAL: Final = 5.0
#: How long the presence bucket keeps an entry not rewritten: three default
#: intervals, so that a live worker's entry survives two lost writes, and a
#: crashed worker's is gone soon after.
PRESENCE_TTL: Final = 3 * PRESENCE_INTERVAL
#: A presence entry is a few hundred bytes; this leaves room for many activity types.
_PRESENCE_MAX_VALUE: Final = 64 * 1024
#: The consumer of plain starts, shared by every orchestrator.
INTAKE_CONSUMER: Final = "intake"

#: Prefix of a plain start, ``workflow.start.{type}``, whose instance id is in
#: its body (or made from its sequence): any orchestrator forwards it to its
#: instance's partition.
START_PREFIX: Final = "workflow.start"
#: Prefix of every event of an instance: ``instance.{id}.{event...}`` as
#: published, ``instance.{p}.{id}.{event...}`` as stored.
INSTANCE_PREFIX: Final = "instance"
#: The event token after the instance id, and the tokens after it.
EVENT_START: Final = "start"  # .{type}
EVENT_CANCEL: Final = "cancel"
EVENT_TERMINATE: Final = "terminate"
EVENT_SIGNAL: Final = "signal"  # .{name}
EVENT_COMPLETED: Final = "completed"  # .{step key}
EVENT_FAILED: Final = "failed"  # .{step key}
EVENT_TIMER: Final = "timer"
#: A queued instance was given a slot (``_flow.py``).
EVENT_ADMIT: Final = "admit"
TASK_PREFIX: Final = "activity.tasks"
HISTORY_PREFIX: Final = "history"
DEADLETTER_PREFIX: Final = "deadletter"
EXPIRE_PREFIX: Final = "expire"
#: The consumer of ``WORKFLOW_EXPIRIES``, shared by every orchestrator.
EXPIRIES_CONSUMER: Final = "expiries"


def plain_start_subject(workflow_type: str) -> str:
    """Where a program that does not name the instance in the subject starts one."""
    return f"{START_PREFIX}.{workflow_type}"


def event_subject(instance_id: str, *tokens: str) -> str:
    """``instance.{id}.{tokens...}``: the one place an instance's event subjects are spelled.

    Every event of an instance, whichever module names it, goes through here.
    """
    return ".".join((INSTANCE_PREFIX, instance_id, *tokens))


def start_subject(instance_id: str, workflow_type: str) -> str:
    return event_subject(instance_id, EVENT_START, workflow_type)


def stored_start_filter(instance_id: str) -> str:
    """The subjects the events stream stores a start of ``instance_id`` on, whatever
    its partition (the filing adds the partition's number after the prefix)."""
    return f"{INSTANCE_PREFIX}.*.{instance_id}.{EVENT_START}.*"


def cancel_subject(instance_id: str) -> str:
    return event_subject(instance_id, EVENT_CANCEL)


def terminate_subject(instance_id: str) -> str:
    return event_subject(instance_id, EVENT_TERMINATE)


def signal_subject(instance_id: str, name: str) -> str:
    return event_subject(instance_id, EVENT_SIGNAL, name)


def result_subject(instance_id: str, step: str, *, ok: bool) -> str:
    return event_subject(instance_id, EVENT_COMPLETED if ok else EVENT_FAILED, step)


def timer_subject(instance_id: str) -> str:
    return event_subject(instance_id, EVENT_TIMER)


def task_subject(activity: str) -> str:
    return f"{TASK_PREFIX}.{activity}"


def history_subject(instance_id: str) -> str:
    return f"{HISTORY_PREFIX}.{instance_id}"


def deadletter_subject(source: str) -> str:
    return f"{DEADLETTER_PREFIX}.{source}"


def definition_key(workflow_type: str, version: int) -> str:
    return f"{workflow_type}.{version}"


def activity_consumer(activity: str) -> str:
    """The durable consumer every worker serving ``activity`` shares."""
    return f"activity-{activity}"


def partition_consumer(partition: int) -> str:
    """The durable consumer of one partition's events (its owner pulls it)."""
    return f"partition-{partition}"


# Deterministic message ids (rule 2): a retry after a crash republishes the
# same ids, and the broker drops the copies within its duplicate window.
def start_msg_id(instance_id: str) -> str:
    return f"start.{instance_id}"


def task_msg_id(instance_id: str, step: str, attempt: int) -> str:
    return f"task.{instance_id}.{step}.{attempt}"


def result_msg_id(instance_id: str, step: str, attempt: int) -> str:
    return f"result.{instance_id}.{step}.{attempt}"


def timer_msg_id(instance_id: str, key: str) -> str:
    return f"timer.{instance_id}.{key}"


def history_msg_id(instance_id: str, seq: int) -> str:
    return f"history.{instance_id}.{seq}"


def deadletter_msg_id(source: str, stream_seq: int) -> str:
    """A dead letter's id: the dead message's sequence in its own stream."""
    return f"deadletter.{source}.{stream_seq}"


#: A step key's bytes that stand for themselves in a key of ``ACTIVITY_CANCELS``.
_PLAIN_KEY_BYTES: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-"
)


def activity_cancel_key(instance_id: str, step: str, attempt: int) -> str:
    """The key in ``ACTIVITY_CANCELS`` that withdraws ``attempt`` of ``step``'s task.

    One key per attempt, and never one for two: the step key's bytes other
    than letters, digits and ``-`` are written ``_`` and two hex digits (a
    step key holds ``.``, ``@`` and ``~``, which a key token cannot), and an
    instance id holds no ``.``.
    """
    token = "".join(
        chr(byte) if byte in _PLAIN_KEY_BYTES else f"_{byte:02x}" for byte in step.encode()
    )
    return f"{instance_id}.{token}.{attempt}"


@dataclass(frozen=True, kw_only=True)
class Layout:
    """How the engine's assets are provisioned.

    ``replicas`` applies to every stream and bucket (3 on a cluster).
    ``ack_wait`` is the orchestrator consumer's redelivery delay: an event
    held by a process that died comes back after it.
    """

    replicas: int = 1
    ack_wait: float = 30.0
    duplicate_window: float = 120.0
    history_max_age: float | None = None
    max_payload: int = 1024 * 1024
    #: Partitions of the instances, for a new events stream; an existing
    #: stream keeps those it was created with (see :meth:`provision`).
    partitions: int = 16
    #: How long a withdrawn task is remembered (``ACTIVITY_CANCELS``): a task
    #: taken from its queue later than this after its withdrawal runs (its
    #: result is then ignored).
    cancel_ttl: float = 86400.0

    def __post_init__(self) -> None:
        try:
            Partitioning(prefix=INSTANCE_PREFIX, count=self.partitions)
        except InvalidSpecError as exc:
            raise ValueError(str(exc)) from None

    def streams(self) -> tuple[StreamSpec, ...]:
        common = {"replicas": self.replicas, "duplicate_window": self.duplicate_window}
        return (
            StreamSpec(
                name=EVENTS_STREAM,
                subjects=("workflow.>", f"{INSTANCE_PREFIX}.>"),
                retention=Retention.WORK_QUEUE,
                allow_delayed=True,
                max_msg_size=self.max_payload,
                partitioning=Partitioning(prefix=INSTANCE_PREFIX, count=self.partitions),
                **common,  # type: ignore[arg-type]
            ),
            StreamSpec(
                name=TASKS_STREAM,
                subjects=(f"{TASK_PREFIX}.>",),
                retention=Retention.WORK_QUEUE,
                max_msg_size=self.max_payload,
                **common,  # type: ignore[arg-type]
            ),
            StreamSpec(
                name=HISTORY_STREAM,
                subjects=(f"{HISTORY_PREFIX}.>",),
                max_age=self.history_max_age,
                **common,  # type: ignore[arg-type]
            ),
            StreamSpec(
                name=DEADLETTER_STREAM,
                subjects=(f"{DEADLETTER_PREFIX}.>",),
                **common,  # type: ignore[arg-type]
            ),
            StreamSpec(
                name=EXPIRIES_STREAM,
                subjects=(f"{EXPIRE_PREFIX}.>",),
                retention=Retention.WORK_QUEUE,
                allow_delayed=True,
                **common,  # type: ignore[arg-type]
            ),
        )

    def buckets(self) -> tuple[KVSpec, ...]:
        return (
            KVSpec(bucket=DEFINITIONS_BUCKET, replicas=self.replicas),
            KVSpec(
                bucket=STATES_BUCKET,
                replicas=self.replicas,
                max_value_size=self.max_payload,
            ),
            # Leases are written every few seconds while held; a dead process's
            # keys are ignored once stale, and gone after an hour.
            KVSpec(bucket=PARTITIONS_BUCKET, replicas=self.replicas, ttl=3600.0),
            KVSpec(bucket=CANCELS_BUCKET, replicas=self.replicas, ttl=self.cancel_ttl),
            KVSpec(bucket=SLOTS_BUCKET, replicas=self.replicas, max_value_size=self.max_payload),
            KVSpec(bucket=RATES_BUCKET, replicas=self.replicas, ttl=RATES_TTL),
            KVSpec(bucket=OPERATIONS_BUCKET, replicas=self.replicas),
            KVSpec(
                bucket=SCHEDULES_BUCKET, replicas=self.replicas, max_value_size=self.max_payload
            ),
            # A fixed TTL, not a setting: every process provisions the buckets,
            # and one provisioning a longer TTL than another would set the
            # bucket back and forth.
            KVSpec(
                bucket=PRESENCE_BUCKET,
                replicas=self.replicas,
                ttl=PRESENCE_TTL,
                max_value_size=_PRESENCE_MAX_VALUE,
            ),
        )

    def intake_consumer(self) -> ConsumerSpec:
        """Plain starts, for any orchestrator; and what is in no partition, to refuse it.

        That is anything else under ``workflow.``, and ``instance.{x}``, too
        short to be filed in a partition.
        """
        return ConsumerSpec(
            durable=INTAKE_CONSUMER,
            filter_subjects=("workflow.>", f"{INSTANCE_PREFIX}.*"),
            ack_wait=self.ack_wait,
        )

    def expiries_consumer(self) -> ConsumerSpec:
        """The removals of finished instances, for any orchestrator (``_retention.py``)."""
        return ConsumerSpec(durable=EXPIRIES_CONSUMER, ack_wait=self.ack_wait)

    def partition_consumer(self, partition: int, partitions: int) -> ConsumerSpec:
        """The events of one partition (of ``partitions``), for its owner."""
        parts = Partitioning(prefix=INSTANCE_PREFIX, count=partitions)
        return ConsumerSpec(
            durable=partition_consumer(partition),
            filter_subjects=(parts.filter(partition),),
            ack_wait=self.ack_wait,
        )

    def activity_consumer(self, activity: str, ack_wait: float) -> ConsumerSpec:
        return ConsumerSpec(
            durable=activity_consumer(activity),
            filter_subjects=(task_subject(activity),),
            ack_wait=ack_wait,
        )

    async def provision(self, transport: Transport) -> Assets:
        """Create every stream and bucket (idempotent); what a process then uses.

        The partition count is the events stream's: fixed when it was
        created, whatever ``partitions`` says now, since its stored events
        are filed by it.
        """
        partitions = self.partitions
        for stream in self.streams():
            spec = await transport.ensure_stream(stream)
            if spec.name == EVENTS_STREAM and spec.partitioning is not None:
                partitions = spec.partitioning.count
        buckets = {spec.bucket: await transport.ensure_kv(spec) for spec in self.buckets()}
        return Assets(partitions=partitions, buckets=buckets)


@dataclass(frozen=True, kw_only=True)
class Assets:
    """What provisioning found or made: the partition count and a handle per bucket."""

    partitions: int
    buckets: Mapping[str, KeyValue]


def instance_partition(instance_id: str, partitions: int) -> int:
    """The partition the events of ``instance_id`` are filed in."""
    return partition_of(instance_id, partitions)


def published_subject(stored: str) -> str:
    """The subject an event stored on ``stored`` was published on (without its partition)."""
    # The partition count does not change where the partition token sits.
    return Partitioning(prefix=INSTANCE_PREFIX, count=1).published_subject(stored)
