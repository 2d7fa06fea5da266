"""JetStream's wire conventions, without a client library: API errors, ack
subjects, publish acknowledgements, time stamps and header blocks.

Shared by the JetStream transport's two clients (nats-py, and the Trio
client of :mod:`transport.natsproto`); nothing here does I/O. The API is
JSON requests on ``$JS.API.*`` subjects; errors come back as
``{"error": {"code": <HTTP-like>, "err_code": <JetStream's>, "description"}}``.
"""

from __future__ import annotations

import datetime
import json
import re
import secrets
from collections.abc import Mapping
from typing import Any, Protocol

from .._errors import (
    ConflictError,
    ConnectionLostError,
    InvalidSpecError,
    NotFoundError,
    StorageFullError,
    TooLargeError,
    TransportError,
)
from .._specs import PubAck

NS = 1_000_000_000
#: Idle heartbeat of pull requests and watches; twice this without a word and
#: the request or watch is presumed lost and re-issued.
HEARTBEAT = 1.0
#: Lifetime of one pull request.
PULL_EXPIRES = 10.0
API = "$JS.API"
#: Bytes a KV bucket's messages may carry beyond the value: subject and headers.
KV_HEADROOM = 1024
#: The most one batch of a direct get may carry, so that a page of large
#: messages cannot swamp the reply inbox, which every request shares.
BATCH_BYTES = 4 * 1024 * 1024
#: Headers a direct get adds to each stored message; the rest are the message's own.
DIRECT_HEADERS = frozenset(
    {
        "Nats-Stream",
        "Nats-Subject",
        "Nats-Sequence",
        "Nats-Time-Stamp",
        "Nats-Num-Pending",
        "Nats-Last-Sequence",
        "Nats-UpTo-Sequence",
    }
)
#: JetStream's "no message found": nothing matches at or after the sequence.
NO_MESSAGE = 10037

# JetStream API error codes (nats-server's errors.json) that map to our types.
_CONFLICT_CODES = {10071, 10164}
_TOO_LARGE_CODES = {10054}
_NOT_FOUND_CODES = {10059, 10014, 10037}
_FULL_CODES = {10023, 10047, 10077, 10028}
_STREAM_EXISTS = 10058
_SPEC_CODES = {10065, 10052, 10099, 10100, 10105, 10012, 10013, 10025, 10148}

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")


class StreamExistsError(InvalidSpecError):
    """A stream of that name exists with another configuration."""


class NoStreamAnswered(NotFoundError):
    """No stream answered a publish ("no responders"): none takes its subject, or the
    one that does has no leader right now (an election, a server recovering)."""


class JetStreamDisabledError(ConnectionLostError):
    """Nobody answers the JetStream API ("no responders"): the server runs without
    JetStream (``-js``), or the account has none. Asking again will not help."""


def api_error(err: Mapping[str, Any]) -> TransportError:
    """The transport error for a JetStream API error object."""
    code = int(err.get("code", 0))
    err_code = int(err.get("err_code", 0))
    text = f"{err.get('description', 'JetStream error')} (code {code}/{err_code})"
    if err_code == _STREAM_EXISTS:
        return StreamExistsError(text)
    if err_code in _CONFLICT_CODES:
        return ConflictError(text)
    if err_code in _TOO_LARGE_CODES or code == 413:
        return TooLargeError(text)
    if err_code in _FULL_CODES or ("maximum" in text and "exceeded" in text):
        return StorageFullError(text)
    if err_code in _NOT_FOUND_CODES or code == 404:
        return NotFoundError(text)
    if err_code in _SPEC_CODES or code == 400:
        return InvalidSpecError(text)
    if code == 503:
        return ConnectionLostError(text)
    return TransportError(text)


def parse_ack(status: str | None, data: bytes, subject: str) -> PubAck:
    """The receipt in a publish's reply (its status line, if any, and body).

    Raises :class:`NoStreamAnswered` for "no responders" (503) and the
    translated API error for a refusal.
    """
    if status == "503":
        raise NoStreamAnswered(f"no stream stores subject {subject!r}")
    if status is not None:
        raise TransportError(f"unexpected status {status} in reply")
    resp = json.loads(data)
    if "error" in resp:
        raise api_error(resp["error"])
    return PubAck(resp["stream"], int(resp["seq"]), bool(resp.get("duplicate", False)))


def api_reply(status: str | None, data: bytes) -> dict[str, Any]:
    """The body of an API reply; raises the translated error if it is one."""
    if status == "503":
        raise JetStreamDisabledError(
            "JetStream is not enabled on the server (start nats-server with -js)"
        )
    resp: dict[str, Any] = json.loads(data)
    if "error" in resp:
        raise api_error(resp["error"])
    return resp


def reply_meta(reply: str | None) -> tuple[int, int, int, int, float] | None:
    """(num_delivered, stream_seq, consumer_seq, pending, stored_at) from a
    ``$JS.ACK`` reply subject, or None if the message is not a JetStream
    delivery. ``stored_at`` is in seconds since the epoch (the subject has
    nanoseconds)."""
    tokens = (reply or "").split(".")
    try:
        if tokens[:2] == ["$JS", "ACK"]:
            # The older form lacks the domain and account tokens after "ACK".
            first = 2 if len(tokens) == 9 else 4 if len(tokens) >= 11 else 0
            if first:
                delivered, seq, cseq, stamp, pending = tokens[first + 2 : first + 7]
                return int(delivered), int(seq), int(cseq), int(pending), int(stamp) / 1e9
    except ValueError:
        pass
    return None


def new_inbox() -> str:
    """A fresh reply subject nobody else uses."""
    return f"_INBOX.{secrets.token_hex(11)}"


def wall_clock() -> float:
    """Seconds since the epoch: JetStream schedules run on the servers' wall clocks."""
    return datetime.datetime.now(tz=datetime.UTC).timestamp()


def rfc3339(epoch: float) -> str:
    """``epoch`` as the RFC 3339 time stamp JetStream schedules take."""
    when = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dur(seconds: float | None) -> int:
    """A duration as JetStream's nanoseconds (0 for none)."""
    return 0 if seconds is None else int(seconds * NS)


def parse_headers(raw: bytes) -> dict[str, str]:
    """The headers of a raw ``NATS/1.0`` header block (the last value of a repeated one)."""
    headers: dict[str, str] = {}
    for line in raw.decode(errors="replace").split("\r\n")[1:]:
        name, colon, value = line.partition(":")
        if colon and name.strip():
            headers[name.strip()] = value.strip()
    return headers


def epoch(stamp: str) -> float:
    """Seconds since the epoch of the server's RFC 3339 time stamp.

    The server writes up to nine fractional digits, more than Python 3.11's
    ``fromisoformat`` takes, so the fraction is added separately.
    """
    match = _STAMP.match(stamp)
    if match is None:
        raise TransportError(f"unexpected time stamp {stamp!r} from the server")
    whole, fraction, zone = match.groups()
    offset = "+00:00" if zone == "Z" else zone
    seconds = datetime.datetime.fromisoformat(whole + offset).timestamp()
    return seconds + (float(fraction) if fraction else 0.0)


class WireMsg(Protocol):
    """A message as the JetStream core reads it, whichever client received it.

    ``status`` and ``description`` are those of a control message's status
    line (``503``, ``100 Idle Heartbeat``, ``408 Request Timeout``...), or
    ``None`` for a message somebody published.
    """

    @property
    def subject(self) -> str: ...

    @property
    def reply(self) -> str | None: ...

    @property
    def data(self) -> bytes: ...

    @property
    def headers(self) -> Mapping[str, str] | None: ...

    @property
    def status(self) -> str | None: ...

    @property
    def description(self) -> str | None: ...
