"""What an event message on an instance's subject carries: its decoding.

The orchestrator pulls ``instance.{p}.{id}.{event...}`` messages from its
partitions' consumers; :func:`decode_event` turns one delivery into the
instance it is for and the core's :class:`~actors.core.Event`, checking
that the subject and the body agree (the instance, the step, the outcome)
and that the message is filed under its instance's partition. It reads
nothing but the delivery and does no I/O; a message it cannot take raises
:class:`~actors.wire.MessageError`, :class:`~actors.wire.CodecError` or
:class:`~actors.core.InvalidNameError`, which the orchestrator sends to
the dead letters.
"""

from __future__ import annotations

from transport import Delivery

from ..core import (
    ActivityCompleted,
    CancelRequested,
    Event,
    SignalReceived,
    SlotGranted,
    StartRequested,
    TerminateRequested,
    check_instance_id,
    check_name,
)
from ..wire import (
    EVENT_ADMIT,
    EVENT_CANCEL,
    EVENT_COMPLETED,
    EVENT_FAILED,
    EVENT_PAUSE,
    EVENT_RESUME,
    EVENT_RETRY,
    EVENT_SIGNAL,
    EVENT_START,
    EVENT_TERMINATE,
    EVENT_TIMER,
    INSTANCE_PREFIX,
    MessageError,
    decode_admit,
    decode_cancel,
    decode_pause,
    decode_result,
    decode_resume,
    decode_retry,
    decode_signal,
    decode_start,
    decode_terminate,
    decode_timer,
    instance_partition,
)

__all__ = ["decode_event"]


def decode_event(delivery: Delivery, partition: int, partitions: int) -> tuple[str, Event]:
    """The instance and event a stored ``instance.{p}.{id}.{event...}`` message carries.

    ``partition``: the partition whose consumer delivered it, of
    ``partitions`` in all. Raises ``MessageError`` for a subject no event is
    published on, one filed in another partition than its instance's, or a
    body that disagrees with its subject; ``CodecError`` for a body that
    does not decode; ``InvalidNameError`` for a bad instance id, workflow
    type or signal name.
    """
    subject = delivery.subject
    tokens = subject.split(".")
    if len(tokens) < 4 or tokens[0] != INSTANCE_PREFIX:
        raise MessageError(f"no event is published on {subject!r}")
    instance_id = check_instance_id(tokens[2])
    if instance_partition(instance_id, partitions) != partition:
        raise MessageError(f"{subject!r} is filed in another partition than its instance's")
    kind, rest = tokens[3], tokens[4:]
    data = delivery.data
    if kind == EVENT_START and len(rest) == 1:
        workflow_type = check_name("workflow type", rest[0])
        start = decode_start(data)
        if start.instance_id not in (None, instance_id):
            raise MessageError("start body names another instance than its subject")
        # A signal-with-start's signal is identified by its message, as a signal is.
        signal = (
            None
            if start.signal is None
            else SignalReceived(start.signal[0], start.signal[1], delivery.stream_seq)
        )
        return instance_id, StartRequested(
            instance_id,
            workflow_type,
            start.version,
            start.input,
            start.parent,
            start.parent_step,
            start.depth,
            signal=signal,
            parent_attempt=start.parent_attempt,
            rerun_of=start.rerun_of,
            schedule=start.schedule,
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
    if kind == EVENT_ADMIT and not rest:
        named, slot = decode_admit(data)
        if named != instance_id:
            raise MessageError("admission body names another instance than its subject")
        return instance_id, SlotGranted(slot)
    if kind == EVENT_PAUSE and not rest:
        return instance_id, decode_pause(data)
    if kind == EVENT_RESUME and not rest:
        return instance_id, decode_resume(data)
    if kind == EVENT_RETRY and not rest:
        return instance_id, decode_retry(data)
    if kind == EVENT_TIMER and not rest:
        named, timer = decode_timer(data)
        if named != instance_id:
            raise MessageError("timer body names another instance than its subject")
        return instance_id, timer
    raise MessageError(f"no event is published on {subject!r}")
