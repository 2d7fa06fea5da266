"""The NATS client protocol without I/O: bytes from the server in, events out;
commands to the server as bytes.

Written from the public description of the protocol (docs.nats.io, "Client
Protocol"): a line-oriented text protocol over one byte stream. The server
sends ``INFO {json}``, ``MSG``/``HMSG`` (a message, with NATS headers for
the latter), ``PING``, ``PONG``, ``+OK`` and ``-ERR '<text>'``; the client
sends ``CONNECT {json}``, ``PUB``/``HPUB``, ``SUB``, ``UNSUB``, ``PING`` and
``PONG``. Every control line ends in CRLF, and a message's payload (headers
first, then data) follows its control line, also ended by CRLF.

A header block is ``NATS/1.0`` optionally followed by a status code and a
description (``NATS/1.0 503``, ``NATS/1.0 100 Idle Heartbeat``), then one
``Name: value`` line per header, then an empty line. The status line is not
a header: :class:`Msg` keeps it apart (``status``, ``description``), so a
stored message's own headers can never be mistaken for a status.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import InvalidSpecError, TransportError

__all__ = [
    "OK",
    "PING",
    "PING_FRAME",
    "PONG",
    "PONG_FRAME",
    "Err",
    "Event",
    "Info",
    "Msg",
    "Parser",
    "ProtocolError",
    "connect_frame",
    "decode_headers",
    "encode_headers",
    "pub_frame",
    "sub_frame",
    "unsub_frame",
]

#: The longest control line accepted from the server: an INFO with a long
#: list of cluster URLs fits many times over; anything longer is not NATS.
MAX_CONTROL_LINE = 1024 * 1024
#: The largest message accepted from the server. nats-server's own ceiling
#: for ``max_payload`` is 64 MiB; twice that leaves room for the headers a
#: server adds and still refuses a corrupt size before allocating it.
MAX_MESSAGE = 128 * 1024 * 1024

PING_FRAME = b"PING\r\n"
PONG_FRAME = b"PONG\r\n"
_HEADER_START = b"NATS/1.0"


class ProtocolError(TransportError):
    """The server sent something that is not the NATS protocol (the connection is dropped)."""


@dataclass(slots=True, eq=False, repr=False)
class Msg:
    """A message delivered by the server (``MSG`` or ``HMSG``).

    ``headers`` holds the message's own headers (``None`` if it had no header
    block); ``status`` and ``description`` hold the status line of a control
    message from the server (``"503"`` for no responders, ``"100"`` for an
    idle heartbeat or flow control, ``"404"``, ``"408"``, ``"409"`` for pull
    requests...), ``None`` otherwise.
    """

    subject: str
    sid: int
    reply: str | None
    data: bytes
    headers: dict[str, str] | None = None
    status: str | None = None
    description: str | None = None

    def __repr__(self) -> str:
        status = f" status={self.status}" if self.status else ""
        return f"<Msg {self.subject} sid={self.sid} reply={self.reply}{status} {len(self.data)}B>"


@dataclass(slots=True, eq=False, repr=False)
class Info:
    """The server's ``INFO``: who it is, what it allows, the cluster it belongs to."""

    fields: dict[str, Any]

    def __repr__(self) -> str:
        return f"<Info {self.fields.get('server_name') or self.fields.get('server_id')}>"


@dataclass(frozen=True, slots=True)
class Err:
    """The server's ``-ERR``, with its text unquoted."""

    text: str


class _Signal(enum.Enum):
    """The control lines that carry nothing: compare them with ``is``."""

    PING = "PING"
    PONG = "PONG"
    OK = "+OK"


PING = _Signal.PING
PONG = _Signal.PONG
OK = _Signal.OK

Event = Msg | Info | Err | _Signal


def decode_headers(block: bytes) -> tuple[dict[str, str], str | None, str | None]:
    """The headers, status code and status description of a header block.

    Raises :class:`ProtocolError` if the block does not start with ``NATS/1.0``.
    A repeated header keeps its last value; a line without a colon is skipped.
    """
    lines = block.decode("utf-8", errors="replace").split("\r\n")
    first = lines[0]
    if not first.startswith("NATS/1.0"):
        raise ProtocolError(f"header block starts with {first[:40]!r}, not NATS/1.0")
    status: str | None = None
    description: str | None = None
    rest = first[8:].strip()
    if rest:
        status, _, text = rest.partition(" ")
        description = text.strip() or None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon and name:
            headers[name] = value.strip()
    return headers, status, description


def _bad_header_text(text: str) -> bool:
    return "\r" in text or "\n" in text


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """The header block of ``headers`` (``NATS/1.0``, one line each, an empty line).

    Raises :class:`InvalidSpecError` for a name that is empty or holds a colon,
    whitespace or a control character, or a value with a line break: either
    would let one header forge others (or the end of the block).
    """
    parts = [_HEADER_START, b"\r\n"]
    for name, value in headers.items():
        if not name or not name.isprintable() or ":" in name or " " in name:
            raise InvalidSpecError(f"invalid header name {name!r}")
        if _bad_header_text(value):
            raise InvalidSpecError(f"header {name}: the value holds a line break")
        parts.append(f"{name}: {value}\r\n".encode())
    parts.append(b"\r\n")
    return b"".join(parts)


def _check_token(kind: str, text: str) -> bytes:
    """``text`` encoded, if it can stand as one token of a control line."""
    if not text or any(c in text for c in " \t\r\n"):
        raise InvalidSpecError(f"invalid {kind} {text!r}")
    return text.encode()


def pub_frame(subject: str, reply: str | None, data: bytes, header_block: bytes | None) -> bytes:
    """A ``PUB`` (or, with a header block, ``HPUB``) command carrying ``data``."""
    head = _check_token("subject", subject)
    if reply:
        head += b" " + _check_token("reply subject", reply)
    if header_block is None:
        return b"PUB %b %d\r\n%b\r\n" % (head, len(data), data)
    total = len(header_block) + len(data)
    return b"HPUB %b %d %d\r\n%b%b\r\n" % (head, len(header_block), total, header_block, data)


def sub_frame(subject: str, sid: int, queue: str | None = None) -> bytes:
    """A ``SUB`` command: deliver ``subject`` (wildcards allowed) as ``sid``."""
    head = _check_token("subject", subject)
    if queue:
        head += b" " + _check_token("queue group", queue)
    return b"SUB %b %d\r\n" % (head, sid)


def unsub_frame(sid: int) -> bytes:
    """An ``UNSUB`` command: stop delivering ``sid``."""
    return b"UNSUB %d\r\n" % sid


def connect_frame(fields: Mapping[str, Any]) -> bytes:
    """The ``CONNECT`` command with these fields (JSON)."""
    return b"CONNECT " + json.dumps(dict(fields), separators=(",", ":")).encode() + b"\r\n"


class Parser:
    """Turns the server's bytes into events, however the bytes are split.

    :meth:`feed` takes whatever the stream produced and returns the events it
    completed, in order; an incomplete line or message waits for the next
    call. Raises :class:`ProtocolError` for anything that is not the protocol
    (the connection cannot be trusted after that).
    """

    __slots__ = ("_buf", "_pending")

    def __init__(self) -> None:
        self._buf = bytearray()
        #: A message whose control line was read and whose payload was not:
        #: (subject, sid, reply, header bytes, total bytes).
        self._pending: tuple[str, int, str | None, int, int] | None = None

    def feed(self, data: bytes | bytearray) -> list[Event]:
        buf = self._buf
        buf += data
        events: list[Event] = []
        pos = 0
        end = len(buf)
        while pos < end:
            pending = self._pending
            if pending is not None:
                subject, sid, reply, hdr_len, total = pending
                stop = pos + total
                if end < stop + 2:
                    break
                if buf[stop : stop + 2] != b"\r\n":
                    raise ProtocolError(f"message on {subject!r} is not ended by CRLF")
                if hdr_len:
                    headers, status, description = decode_headers(bytes(buf[pos : pos + hdr_len]))
                    payload = bytes(buf[pos + hdr_len : stop])
                    events.append(Msg(subject, sid, reply, payload, headers, status, description))
                else:
                    events.append(Msg(subject, sid, reply, bytes(buf[pos:stop])))
                pos = stop + 2
                self._pending = None
                continue
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                if end - pos > MAX_CONTROL_LINE:
                    raise ProtocolError("control line too long")
                break
            line = bytes(buf[pos:nl])
            pos = nl + 2
            event = self._control(line)
            if event is not None:
                events.append(event)
        del buf[:pos]
        return events

    def _control(self, line: bytes) -> Event | None:
        op, _, rest = line.partition(b" ")
        op = op.upper()
        if op == b"MSG":
            self._pending = _message_args(rest, headers=False)
            return None
        if op == b"HMSG":
            self._pending = _message_args(rest, headers=True)
            return None
        if op == b"PING":
            return PING
        if op == b"PONG":
            return PONG
        if op == b"+OK":
            return OK
        if op == b"-ERR":
            return Err(rest.decode("utf-8", errors="replace").strip().strip("'"))
        if op == b"INFO":
            try:
                fields = json.loads(rest)
            except ValueError as exc:
                raise ProtocolError(f"INFO is not JSON: {exc}") from None
            if not isinstance(fields, dict):
                raise ProtocolError("INFO is not a JSON object")
            return Info(fields)
        if not line:
            return None  # a stray empty line: harmless
        raise ProtocolError(f"unknown operation {line[:40]!r}")


def _message_args(rest: bytes, *, headers: bool) -> tuple[str, int, str | None, int, int]:
    """(subject, sid, reply, header bytes, total bytes) of a MSG or HMSG line."""
    args = rest.split()
    try:
        if headers:
            if len(args) == 4:
                subject, sid, hdr, total = args
                reply = None
            elif len(args) == 5:
                subject, sid, reply_b, hdr, total = args
                reply = reply_b.decode()
            else:
                raise ValueError(f"{len(args)} arguments")
            hdr_len, total_len = int(hdr), int(total)
        else:
            if len(args) == 3:
                subject, sid, total = args
                reply = None
            elif len(args) == 4:
                subject, sid, reply_b, total = args
                reply = reply_b.decode()
            else:
                raise ValueError(f"{len(args)} arguments")
            hdr_len, total_len = 0, int(total)
        number = int(sid)
    except ValueError as exc:
        raise ProtocolError(f"malformed message line {rest[:80]!r}: {exc}") from None
    if not 0 <= hdr_len <= total_len <= MAX_MESSAGE:
        raise ProtocolError(f"message sizes {hdr_len}/{total_len} out of range")
    if headers and hdr_len < len(_HEADER_START) + 2:
        raise ProtocolError(f"header block of {hdr_len} bytes is too short")
    return subject.decode(), number, reply, hdr_len, total_len
