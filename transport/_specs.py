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

#: Characters a schedule token keeps as they are; every other byte is escaped.
_PLAIN_TOKEN_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")


def schedule_token(msg_id: str) -> str:
    """The subject token of the schedule that delivers the message ``msg_id`` later.

    The server keeps one schedule per subject, so two delayed messages must
    never share a token: the mapping is injective. Letters, digits and ``-``
    stand for themselves; every other byte of the id's UTF-8 encoding,
    ``_`` included, becomes ``_`` and two lowercase hex digits. No plain
    character is ``_``, so the escapes cannot be confused with the rest, and
    the token never holds ``.``, ``*``, ``>`` or whitespace.
    """
    return "".join(
        chr(byte) if byte in _PLAIN_TOKEN_CHARS else f"_{byte:02x}" for byte in msg_id.encode()
    )


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


#: The most partitions a stream may have.
MAX_PARTITIONS = 1024


def partition_of(key: str, count: int) -> int:
    """The partition (0 to ``count - 1``) that ``key`` falls in.

    The 32-bit FNV-1a hash of the key's UTF-8 bytes, modulo ``count``: the
    function nats-server's ``partition()`` subject transform computes, so a
    program can tell where the server files a message.
    """
    digest = 0x811C9DC5
    for byte in key.encode():
        digest = ((digest ^ byte) * 0x01000193) & 0xFFFFFFFF
    return digest % count


@dataclass(frozen=True, kw_only=True)
class Partitioning:
    """How a stream files messages into numbered partitions as it stores them.

    A message published on ``{prefix}.{key}.{rest...}`` is stored on
    ``{prefix}.{p}.{key}.{rest...}``, ``p`` being ``partition_of(key,
    count)``; other subjects are stored as published. A consumer filtered on
    :meth:`filter` of one partition receives that partition's messages in the
    order they were stored. Publishers need not know the partitions.
    """

    prefix: str
    count: int

    def __post_init__(self) -> None:
        check_subject(self.prefix)
        if not 1 <= self.count <= MAX_PARTITIONS:
            raise InvalidSpecError(
                f"a stream has 1 to {MAX_PARTITIONS} partitions, not {self.count!r}"
            )

    def stored_subject(self, subject: str) -> str:
        """The subject a message published on ``subject`` is stored on."""
        head = self.prefix + "."
        if not subject.startswith(head):
            return subject
        key, dot, rest = subject[len(head) :].partition(".")
        if not dot or not rest:
            return subject
        return f"{head}{partition_of(key, self.count)}.{key}.{rest}"

    def published_subject(self, stored: str) -> str:
        """The subject a message stored on ``stored`` was published on."""
        head = self.prefix + "."
        if not stored.startswith(head):
            return stored
        number, dot, rest = stored[len(head) :].partition(".")
        if not dot or not number.isdigit() or rest.count(".") < 1:
            return stored
        return head + rest

    def filter(self, partition: int) -> str:
        """The subjects one partition's messages are stored on."""
        return f"{self.prefix}.{partition}.>"


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
    #: File messages into numbered partitions as they are stored.
    partitioning: Partitioning | None = None

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
        if self.partitioning is not None:
            sample = f"{self.partitioning.prefix}.key.rest"
            if not any(subject_matches(subject, sample) for subject in self.subjects):
                raise InvalidSpecError(
                    f"stream {self.name}: no subject of it takes the partitioned "
                    f"{self.partitioning.prefix}.> messages"
                )

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


def check_purge(stream: str, subject: str) -> None:
    """Raise :class:`InvalidSpecError` unless these are valid arguments of ``purge``."""
    check_name("stream", stream)
    check_subject(subject, wildcards=True)


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


@dataclass(frozen=True, slots=True)
class ConsumerLag:
    """How far a durable consumer is behind, as its broker counts it."""

    #: Messages of its stream it has still to deliver (past its cursor, or delayed).
    pending: int
    #: Messages it delivered and awaits the acknowledgement of.
    unacked: int


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
