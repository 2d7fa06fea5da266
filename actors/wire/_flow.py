"""Flow control on the wire: the slots of concurrency limits, and the event that admits.

A workflow-level concurrency limit keeps, per value of its key, one entry
in the ``FLOW_SLOTS`` bucket: the instances holding a slot and those queued
for one, in the order they came. Every change to an entry is a
compare-and-set of the whole entry, so that taking a slot, queueing for one
and handing one on never race. Its form is in ``docs/wire.md`` ("Flow
control").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ._codec import encode
from ._fields import _LIST, _NUMBER, _STR, MessageError, _body, _Fields
from ._names import EVENT_ADMIT, event_subject

__all__ = [
    "Slot",
    "SlotHolder",
    "activity_slot_key",
    "admit_msg_id",
    "admit_subject",
    "decode_admit",
    "decode_pace",
    "decode_slot",
    "encode_admit",
    "encode_pace",
    "encode_slot",
    "rate_slot_key",
    "workflow_slot_key",
]

KIND_SLOT: Final = "flow.slot"
KIND_ADMIT: Final = "flow.admit"
#: Where the slots of workflow-level limits are kept in ``FLOW_SLOTS``.
WORKFLOW_SLOT_PREFIX: Final = "workflow"
#: Where the slots of activity steps' limits are kept.
ACTIVITY_SLOT_PREFIX: Final = "activity"
#: Where the pace of rate limits is kept.
RATE_SLOT_PREFIX: Final = "rate"
KIND_RATE: Final = "flow.rate"


@dataclass(frozen=True, slots=True)
class SlotHolder:
    """An instance holding (or waiting for) a slot, since ``at`` (seconds since the epoch).

    ``by``: for a slot handed on, the instance that freed it, which sends
    the holder its admission (again, while it is redelivered). For an
    activity step's limit, ``id`` is the attempt (``{instance}.{step
    key}.{attempt}``) and ``task`` the task message (subject, body) that is
    published when it gets its slot.
    """

    id: str
    at: float
    by: str | None = None
    task: tuple[str, bytes] | None = None
    #: The stream sequence of the start that queued it (0: none), which
    #: orders the queue: instances are admitted in the order their starts
    #: were stored, whichever orchestrators decided them first.
    seq: int = 0

    def to_data(self) -> list[Any]:
        if self.task is not None:
            return [self.id, self.at, self.by, self.seq, self.task[0], self.task[1]]
        if self.seq:
            return [self.id, self.at, self.by, self.seq]
        return [self.id, self.at] if self.by is None else [self.id, self.at, self.by]


@dataclass(frozen=True, slots=True)
class Slot:
    """One key value of one limit: who holds its slots and who waits, first first."""

    #: The workflow type (the activity, for a step's limit), the key
    #: expression and the key's value it counts.
    type: str
    key: str
    value: str | int | float
    #: The limit, as the definition that wrote the entry last says.
    limit: int
    holders: tuple[SlotHolder, ...] = ()
    queue: tuple[SlotHolder, ...] = field(default=())

    def holds(self, instance_id: str) -> bool:
        return any(holder.id == instance_id for holder in self.holders)

    def place(self, instance_id: str) -> int:
        """1 for the first in the queue; 0 if ``instance_id`` is not queued here."""
        for index, waiter in enumerate(self.queue):
            if waiter.id == instance_id:
                return index + 1
        return 0

    def to_data(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "key": self.key,
            "value": self.value,
            "limit": self.limit,
            "holders": [holder.to_data() for holder in self.holders],
            "queue": [waiter.to_data() for waiter in self.queue],
        }


def workflow_slot_key(workflow_type: str, key: str, value: str | int | float) -> str:
    """The ``FLOW_SLOTS`` key of ``value`` of key expression ``key`` of ``workflow_type``.

    ``workflow.{type}.{digest}``: the digest (128 bits of SHA-256) of the key
    expression and its value as JSON, so that any value makes a valid key
    token. The entry holds the three, for those who list it; two values
    sharing a digest (a 2^-128 chance) would share their slots.
    """
    return _slot_key(WORKFLOW_SLOT_PREFIX, workflow_type, key, value)


def _slot_key(prefix: str, name: str, key: str, value: str | int | float) -> str:
    text = json.dumps([key, value], ensure_ascii=False, separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).hexdigest()[:32]
    return f"{prefix}.{name}.{digest}"


def activity_slot_key(activity: str, key: str, value: str | int | float) -> str:
    """The ``FLOW_SLOTS`` key of a step limit's key value: ``activity.{activity}.{digest}``.

    Steps of any workflow that limit the same activity by the same key
    expression share its slots.
    """
    return _slot_key(ACTIVITY_SLOT_PREFIX, activity, key, value)


def rate_slot_key(activity: str, key: str, value: str | int | float) -> str:
    """The ``FLOW_SLOTS`` key of a rate limit's key value: ``rate.{activity}.{digest}``."""
    return _slot_key(RATE_SLOT_PREFIX, activity, key, value)


def encode_pace(rate: Mapping[str, Any], next_at: float) -> bytes:
    """A rate limit's key value, and when its next attempt is due (seconds since the epoch)."""
    return encode(
        KIND_RATE,
        {"activity": rate["activity"], "key": rate["key"], "value": rate["value"], "tat": next_at},
    )


def decode_pace(data: bytes) -> float:
    """When the next attempt of a rate limit's key value is due. Raises :class:`MessageError`."""
    return _Fields(_body(data, KIND_RATE)).number("tat")


def encode_slot(slot: Slot) -> bytes:
    return encode(KIND_SLOT, slot.to_data())


def decode_slot(data: bytes) -> Slot:
    """A slot entry as :func:`encode_slot` writes it. Raises :class:`MessageError`."""
    fields = _Fields(_body(data, KIND_SLOT))
    value = fields.data.get("value")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise fields.wrong("value", "a string or a number")
    limit = fields.count("limit", default=0, least=1, wanted="an integer >= 1")
    return Slot(
        fields.text("type"),
        fields.text("key"),
        value,
        limit,
        tuple(_holders(fields, "holders")),
        tuple(_holders(fields, "queue")),
    )


def _holders(fields: _Fields, name: str) -> list[SlotHolder]:
    found: list[SlotHolder] = []
    for index, item in enumerate(fields.get(name, _LIST, [])):
        ok = (
            isinstance(item, list)
            and len(item) in (2, 3, 4, 6)
            and type(item[0]) in _STR.types
            and type(item[1]) in _NUMBER.types
            and (len(item) == 2 or item[2] is None or type(item[2]) in _STR.types)
            and (len(item) < 4 or (type(item[3]) is int and item[3] >= 0))
            and (len(item) < 6 or (type(item[4]) is str and type(item[5]) is bytes))
        )
        if not ok:
            raise MessageError(
                f"field {fields.path(name)}[{index}] must be [instance, time], "
                "[instance, time, by], [instance, time, by, seq] or "
                "[attempt, time, by, seq, subject, task]"
            )
        task = (item[4], item[5]) if len(item) == 6 else None
        by = item[2] if len(item) >= 3 else None
        seq = item[3] if len(item) >= 4 else 0
        found.append(SlotHolder(item[0], float(item[1]), by, task, seq))
    return found


def admit_subject(instance_id: str) -> str:
    """Where an instance is told it was given a slot it waited for."""
    return event_subject(instance_id, EVENT_ADMIT)


def admit_msg_id(instance_id: str, slot_key: str) -> str:
    """An admission's id: an instance waits for a slot of one key value once."""
    return f"admit.{instance_id}.{slot_key}"


def encode_admit(instance_id: str, slot_key: str) -> bytes:
    return encode(KIND_ADMIT, {"instance": instance_id, "slot": slot_key})


def decode_admit(data: bytes) -> tuple[str, str]:
    """The instance and the slot key an admission names. Raises :class:`MessageError`."""
    fields = _Fields(_body(data, KIND_ADMIT))
    return fields.text("instance"), fields.text("slot")
