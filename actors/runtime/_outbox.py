"""What a decision's commands become on the wire: the messages an actor publishes.

Every message carries its deterministic id (rule 2), so that a decision sent
again (rule 5) makes the same messages and the broker drops the copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from transport import OutMessage

from ..core import (
    CancelActivity,
    CancelChild,
    Command,
    InstanceState,
    NotifyParent,
    RecordHistory,
    ScheduleActivity,
    StartChild,
)
from ..wire import (
    StartMessage,
    cancel_subject,
    encode_cancel,
    encode_history,
    encode_history_records,
    encode_result,
    encode_start,
    encode_task,
    encode_timer,
    history_msg_id,
    history_subject,
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

__all__ = ["assembled", "command_messages", "history_messages", "messages_for"]

#: History records of one decision that share a message, and the most bytes
#: such a message may have (so that records never add up past the broker's
#: largest message; each one fits alone).
_RECORDS_PER_MESSAGE: Final = 64
_RECORDS_BYTES: Final = 256 * 1024


def messages_for(
    instance_id: str, state: InstanceState, commands: Sequence[Command], now: float
) -> list[OutMessage]:
    """The messages that carry out ``commands``, each with its deterministic id."""
    return assembled(instance_id, command_messages(instance_id, state, commands, now), commands)


def assembled(
    instance_id: str,
    pairs: list[tuple[Command, OutMessage]],
    commands: Sequence[Command],
) -> list[OutMessage]:
    """``pairs``' messages (see :func:`command_messages`), then the history of ``commands``."""
    records = [command for command in commands if isinstance(command, RecordHistory)]
    return [message for _, message in pairs] + history_messages(instance_id, records)


def history_messages(instance_id: str, records: list[RecordHistory]) -> list[OutMessage]:
    """A decision's history records, in as few messages as is safe.

    Up to ``_RECORDS_PER_MESSAGE`` records share one message, whose id is
    that of its first record: the same decision sent again (rule 5) makes
    the same messages, so the broker drops the copies. A group whose
    message would be over ``_RECORDS_BYTES`` (many large errors at once)
    goes one record per message instead, as every record fits alone.
    """
    messages: list[OutMessage] = []
    subject = history_subject(instance_id)
    for first in range(0, len(records), _RECORDS_PER_MESSAGE):
        group = records[first : first + _RECORDS_PER_MESSAGE]
        data = encode_history_records(instance_id, group) if len(group) > 1 else b""
        if len(group) > 1 and len(data) <= _RECORDS_BYTES:
            messages.append(
                OutMessage(subject, data, msg_id=history_msg_id(instance_id, group[0].seq))
            )
            continue
        messages.extend(
            OutMessage(
                subject,
                encode_history(instance_id, record),
                msg_id=history_msg_id(instance_id, record.seq),
            )
            for record in group
        )
    return messages


def command_messages(
    instance_id: str,
    state: InstanceState,
    commands: Sequence[Command],
    now: float,
) -> list[tuple[Command, OutMessage]]:
    """Each command but the history records, with the message that carries it out.

    ``now`` (the transport's clock) decides whether a timer is delayed or due.
    """
    messages: list[tuple[Command, OutMessage]] = []
    for command in commands:
        if isinstance(command, RecordHistory | CancelActivity):
            # History goes in groups (history_messages); withdrawals are
            # written to a bucket (the instance actor's _publish).
            continue
        if isinstance(command, ScheduleActivity):
            message = OutMessage(
                task_subject(command.activity),
                encode_task(instance_id, state.type, command),
                msg_id=task_msg_id(instance_id, command.step, command.attempt),
            )
        elif isinstance(command, StartChild):
            start = StartMessage(
                command.child,
                command.input,
                command.version,
                instance_id,
                command.step,
                depth=state.depth + 1,
                parent_attempt=command.attempt,
            )
            message = OutMessage(
                start_subject(command.child, command.workflow),
                encode_start(start),
                msg_id=start_msg_id(command.child),
            )
        elif isinstance(command, CancelChild):
            subject = (terminate_subject if command.terminate else cancel_subject)(command.child)
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
                    command.attempt,
                    output=command.output,
                    error=command.error,
                ),
                msg_id=result_msg_id(command.parent, command.step, command.attempt),
            )
        else:
            key = f"{command.kind}.{command.step}.{command.attempt}"
            message = OutMessage(
                timer_subject(instance_id),
                encode_timer(instance_id, command),
                msg_id=timer_msg_id(instance_id, key),
                deliver_at=command.fire_at if command.fire_at > now else None,
            )
        messages.append((command, message))
    return messages
