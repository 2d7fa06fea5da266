"""Frozen descriptions of streams, buckets, consumers and messages.

These are plain data, validated on construction, shared by every transport
implementation. Durations are float seconds; sizes are bytes; ``None`` means
"no limit".
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ._errors import InvalidSpecError

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TOKEN = re.compile(r"^[^\s.*>]+$")
_KV_KEY = re.compile(r"^[-/_=.A-Za-z0-9]+$")

#: Prefix of the subjects that hold delayed-delivery schedules inside a stream
#: (``_sched.<STREAM>.<token>``). Consumers of a stream that allows delayed
#: delivery never see these subjects.
SCHEDULE_PREFIX = "_sched"

#: Header carrying the wall-clock time (float seconds) a delayed message was due.
DELIVER_AT_HEADER = "Actors-Deliver-At"


def check_name(kind: str, name: str) -> str:
    """Return ``name`` if it is a valid stream, bucket or consumer name, else raise."""
    if not _NAME.match(name):
        raise InvalidSpecError(f"{kind} name {name!r} must be 1-64 of A-Z a-z 0-9 _ -")
    return name


def check_subject(subject: str, *, wildcards: bool = False) -> str:
    """Return ``subject`` if it is a valid NATS subject, else raise.

    With ``wildcards`` the tokens ``*`` and a final ``>`` are allowed (filters).
    """
    tokens = subject.split(".")
    for i, token in enumerate(tokens):
        if wildcards and (token == "*" or (token == ">" and i == len(tokens) - 1)):
            continue
        if not _TOKEN.match(token):
            raise InvalidSpecError(f"invalid subject {subject!r} (token {i} is {token!r})")
    return subject


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid key-value key, else raise."""
    if not _KV_KEY.match(key) or key.startswith(".") or key.endswith(".") or ".." in key:
        raise InvalidSpecError(f"invalid key {key!r}")
    return key


def subject_matches(pattern: str, subject: str) -> bool:
    """True if ``subject`` matches the filter ``pattern`` (``*`` and ``>`` wildcards)."""
    pat = pattern.split(".")
    sub = subject.split(".")
    for i, token in enumerate(pat):
        if token == ">":
            return len(sub) > i
        if i >= len(sub) or (token != "*" and token != sub[i]):
            return False
    return len(pat) == len(sub)


def _positive(kind: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise InvalidSpecError(f"{kind} must be positive, got {value!r}")


class Retention(enum.Enum):
    """How long a stream keeps a message."""

    #: Until a limit (age, bytes, count) removes it.
    LIMITS = "limits"
    #: Until a consumer acknowledges it; consumer filters may not overlap.
    WORK_QUEUE = "workqueue"


class Storage(enum.Enum):
    """Where the broker keeps a stream or bucket."""

    FILE = "file"
    MEMORY = "memory"


class Discard(enum.Enum):
    """What a full stream does with a new message."""

    #: Drop the oldest messages to make room.
    OLD = "old"
    #: Refuse the new message (:class:`StorageFullError`).
    NEW = "new"


@dataclass(frozen=True, kw_only=True)
class StreamSpec:
    """A stream: an append-only log of messages on a set of subjects."""

    name: str
    subjects: tuple[str, ...]
    retention: Retention = Retention.LIMITS
    storage: Storage = Storage.FILE
    replicas: int = 1
    duplicate_window: float = 120.0
    max_msg_size: int | None = None
    max_age: float | None = None
    max_bytes: int | None = None
    max_msgs: int | None = None
    discard: Discard = Discard.OLD
    #: Accept messages published with ``deliver_at`` (durable timers).
    allow_delayed: bool = False

    def __post_init__(self) -> None:
        check_name("stream", self.name)
        if not self.subjects:
            raise InvalidSpecError(f"stream {self.name}: at least one subject is needed")
        for subject in self.subjects:
            check_subject(subject, wildcards=True)
            if subject.split(".")[0] == SCHEDULE_PREFIX:
                raise InvalidSpecError(f"stream {self.name}: {SCHEDULE_PREFIX}.> is reserved")
        if not 1 <= self.replicas <= 5:
            raise InvalidSpecError(f"stream {self.name}: replicas must be 1 to 5")
        _positive("duplicate_window", self.duplicate_window)
        for kind in ("max_msg_size", "max_age", "max_bytes", "max_msgs"):
            _positive(f"stream {self.name}: {kind}", getattr(self, kind))

    @property
    def schedule_subjects(self) -> str:
        """The filter covering this stream's delayed-delivery schedules."""
        return f"{SCHEDULE_PREFIX}.{self.name}.>"


@dataclass(frozen=True, kw_only=True)
class KVSpec:
    """A key-value bucket with per-key revisions."""

    bucket: str
    #: How many values per key are kept (1 to 64).
    history: int = 1
    storage: Storage = Storage.FILE
    replicas: int = 1
    max_value_size: int | None = None
    max_bytes: int | None = None
    #: How long a value lives; ``None`` keeps it forever.
    ttl: float | None = None

    def __post_init__(self) -> None:
        check_name("bucket", self.bucket)
        if not 1 <= self.history <= 64:
            raise InvalidSpecError(f"bucket {self.bucket}: history must be 1 to 64")
        if not 1 <= self.replicas <= 5:
            raise InvalidSpecError(f"bucket {self.bucket}: replicas must be 1 to 5")
        for kind in ("max_value_size", "max_bytes", "ttl"):
            _positive(f"bucket {self.bucket}: {kind}", getattr(self, kind))


@dataclass(frozen=True, kw_only=True)
class ConsumerSpec:
    """A durable pull consumer of one stream.

    Every process that consumes with the same ``durable`` name shares the work:
    each message goes to one of them at a time.
    """

    durable: str
    #: Subjects to receive; empty means every subject of the stream.
    filter_subjects: tuple[str, ...] = ()
    #: How long a delivery may stay unacknowledged before it is redelivered.
    ack_wait: float = 30.0
    #: Deliveries of one message before the broker gives up on it; ``None``: no limit.
    max_deliver: int | None = None
    #: Deliveries outstanding (unacknowledged) at once across all processes.
    max_ack_pending: int = 10_000

    def __post_init__(self) -> None:
        check_name("consumer", self.durable)
        for subject in self.filter_subjects:
            check_subject(subject, wildcards=True)
        _positive("ack_wait", self.ack_wait)
        if self.max_deliver is not None and self.max_deliver < 1:
            raise InvalidSpecError("max_deliver must be at least 1")
        if self.max_ack_pending < 1:
            raise InvalidSpecError("max_ack_pending must be at least 1")


@dataclass(frozen=True, slots=True)
class OutMessage:
    """One message to publish.

    ``msg_id`` deduplicates within the stream's duplicate window. ``deliver_at``
    (on the transport's clock, see ``Transport.now``) delays delivery; the stream
    must allow it.
    """

    subject: str
    data: bytes
    msg_id: str | None = None
    headers: Mapping[str, str] | None = None
    deliver_at: float | None = None


@dataclass(frozen=True, slots=True)
class PubAck:
    """The broker's receipt for a stored message."""

    stream: str
    #: Where the message is stored; for a duplicate, where the first one with its id is.
    seq: int
    #: True if the message id was seen within the duplicate window: nothing was stored.
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as its stream stores it, returned by ``Transport.read``."""

    subject: str
    data: bytes
    #: Its sequence in the stream: the next page starts after the last one's.
    stream_seq: int
    #: When the broker stored it, in seconds since the epoch.
    time: float
    #: The headers it was stored with (on JetStream, ``Nats-Msg-Id`` among them).
    headers: Mapping[str, str]


def check_read(stream: str, subject: str, start_seq: int, limit: int) -> None:
    """Raise :class:`InvalidSpecError` unless these are valid arguments of ``read``."""
    check_name("stream", stream)
    check_subject(subject, wildcards=True)
    if start_seq < 1:
        raise InvalidSpecError(f"start_seq must be at least 1, got {start_seq!r}")
    if limit < 1:
        raise InvalidSpecError(f"limit must be at least 1, got {limit!r}")


def check_holds(stream: str, seq: int) -> None:
    """Raise :class:`InvalidSpecError` unless these are valid arguments of ``holds``."""
    check_name("stream", stream)
    if seq < 1:
        raise InvalidSpecError(f"seq must be at least 1, got {seq!r}")


@dataclass(frozen=True, slots=True)
class KVEntry:
    """A key's current value and the revision it was written at."""

    key: str
    value: bytes
    revision: int


class KVOp(enum.Enum):
    """What a watched change did to its key."""

    PUT = "put"
    DELETE = "delete"
    PURGE = "purge"


@dataclass(frozen=True, slots=True)
class KVChange:
    """One change seen by a watch. ``value`` is empty for deletes and purges."""

    key: str
    value: bytes
    revision: int
    op: KVOp = KVOp.PUT


class ConnectionState(enum.Enum):
    """The transport's link to its broker."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    """A change of connection state, with the server or reason when known."""

    state: ConnectionState
    detail: str = ""
