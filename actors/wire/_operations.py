"""The wire forms of the instance operations: pause, resume and retry messages,
removals (``WORKFLOW_EXPIRIES``), and the records of ``WORKFLOW_OPERATIONS``
(paused workflow types).

An operation on an instance is an event on its own subject,
``instance.{id}.pause``, ``.resume`` or ``.retry``, decided by the instance's
orchestrator in order with its other events (``docs/wire.md``, "Instance
operations"). A paused workflow type is a key ``paused.{type}`` of the
``WORKFLOW_OPERATIONS`` bucket, which every orchestrator watches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from ..core import (
    PauseRequested,
    ResumeRequested,
    RetryRequested,
    check_instance_id,
    check_name,
    check_step_key,
)
from ._codec import encode
from ._fields import _BOOL, _INT, _STR, MessageError, _body, _Fields, _names
from ._names import EXPIRE_PREFIX, OPERATIONS_BUCKET, event_subject

__all__ = [
    "EVENT_PAUSE",
    "EVENT_RESUME",
    "EVENT_RETRY",
    "OPERATIONS_BUCKET",
    "TypePause",
    "decode_expire",
    "decode_pause",
    "decode_resume",
    "decode_retry",
    "decode_type_pause",
    "encode_expire",
    "encode_pause",
    "encode_resume",
    "encode_retry",
    "encode_type_pause",
    "expire_msg_id",
    "expired_instance",
    "expire_subject",
    "pause_subject",
    "paused_type",
    "resume_subject",
    "retry_subject",
    "type_pause_key",
]

EVENT_PAUSE: Final = "pause"
EVENT_RESUME: Final = "resume"
EVENT_RETRY: Final = "retry"
KIND_PAUSE: Final = "workflow.pause"
KIND_RESUME: Final = "workflow.resume"
KIND_RETRY: Final = "workflow.retry"
KIND_EXPIRE: Final = "workflow.expire"
KIND_TYPE_PAUSE: Final = "workflow.type_pause"
_TYPE_PAUSE_PREFIX: Final = "paused."


def pause_subject(instance_id: str) -> str:
    return event_subject(instance_id, EVENT_PAUSE)


def resume_subject(instance_id: str) -> str:
    return event_subject(instance_id, EVENT_RESUME)


def retry_subject(instance_id: str) -> str:
    return event_subject(instance_id, EVENT_RETRY)


def expire_subject(instance_id: str) -> str:
    """Where the removal of ``instance_id`` is published (``WORKFLOW_EXPIRIES``)."""
    return f"{EXPIRE_PREFIX}.{instance_id}"


def expired_instance(subject: str) -> str:
    """The instance an ``expire.{id}`` subject names. Raises :class:`MessageError`."""
    prefix, _, instance_id = subject.partition(".")
    if prefix != EXPIRE_PREFIX or not instance_id:
        raise MessageError(f"no removal is published on {subject!r}")
    with _names():
        return check_instance_id(instance_id)


def expire_msg_id(instance_id: str, seq: int) -> str:
    """The expiry of the end recorded as ``seq``: one per end, however often it is sent."""
    return f"expire.{instance_id}.{seq}"


def encode_expire(seq: int | None) -> bytes:
    return encode(KIND_EXPIRE, {"seq": seq})


def decode_expire(data: bytes) -> int | None:
    """A ``workflow.expire``: the ``seq`` of the end it expires; null (absent): delete now."""
    seq: int | None = _Fields(_body(data, KIND_EXPIRE)).get("seq", _INT, None)
    return seq


def type_pause_key(workflow_type: str) -> str:
    """The key of ``WORKFLOW_OPERATIONS`` that says ``workflow_type`` is paused."""
    return _TYPE_PAUSE_PREFIX + workflow_type


def paused_type(key: str) -> str | None:
    """The workflow type a key of ``WORKFLOW_OPERATIONS`` pauses; ``None`` for another key."""
    return key[len(_TYPE_PAUSE_PREFIX) :] if key.startswith(_TYPE_PAUSE_PREFIX) else None


def _who(by: str, reason: str, **more: Any) -> dict[str, Any]:
    return {"by": by, "reason": reason, **more}


def encode_pause(by: str, reason: str, *, by_type: bool = False) -> bytes:
    return encode(KIND_PAUSE, _who(by, reason, type=by_type))


def encode_resume(by: str, reason: str, *, by_type: bool = False) -> bytes:
    return encode(KIND_RESUME, _who(by, reason, type=by_type))


def encode_retry(by: str, reason: str, step: str | None) -> bytes:
    return encode(KIND_RETRY, _who(by, reason, step=step))


def decode_pause(data: bytes) -> PauseRequested:
    """A ``workflow.pause``: ``by``, ``reason`` (strings, ``""``), ``type`` (boolean, false)."""
    return PauseRequested(*_pause_fields(data, KIND_PAUSE))


def decode_resume(data: bytes) -> ResumeRequested:
    """A ``workflow.resume``, with the fields of a ``workflow.pause``."""
    return ResumeRequested(*_pause_fields(data, KIND_RESUME))


def _pause_fields(data: bytes, kind: str) -> tuple[str, str, bool]:
    """``by``, ``reason`` and ``type`` of a pause or resume (one form for both)."""
    fields = _Fields(_body(data, kind))
    return (
        fields.get("by", _STR, ""),
        fields.get("reason", _STR, ""),
        fields.get("type", _BOOL, False),
    )


def decode_retry(data: bytes) -> RetryRequested:
    """A ``workflow.retry``: ``by``, ``reason`` and ``step`` (a step id, none: the default)."""
    fields = _Fields(_body(data, KIND_RETRY))
    step = fields.get("step", _STR, None)
    if step is not None:
        with _names("step: "):
            check_step_key(step)
    return RetryRequested(step, fields.get("by", _STR, ""), fields.get("reason", _STR, ""))


@dataclass(frozen=True, slots=True)
class TypePause:
    """A paused workflow type: who paused it, when and why."""

    workflow_type: str
    by: str
    reason: str
    at: float


def encode_type_pause(pause: TypePause) -> bytes:
    return encode(
        KIND_TYPE_PAUSE,
        {"type": pause.workflow_type, "by": pause.by, "reason": pause.reason, "at": pause.at},
    )


def decode_type_pause(data: bytes) -> TypePause:
    """A ``workflow.type_pause`` record. Raises :class:`MessageError`."""
    fields = _Fields(_body(data, KIND_TYPE_PAUSE))
    with _names():
        workflow_type = check_name("workflow type", fields.text("type"))
    try:
        return TypePause(
            workflow_type,
            fields.get("by", _STR, ""),
            fields.get("reason", _STR, ""),
            fields.number("at"),
        )
    except MessageError as exc:
        raise MessageError(f"damaged type pause: {exc}") from None
