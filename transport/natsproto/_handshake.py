"""Opening one connection to one server: TCP, the server's INFO, TLS if
needed, CONNECT, and the first PONG that says the server accepted us.

``tls://`` (or TLS files) means TLS or nothing: a server that neither
requires nor offers TLS is refused before anything is sent to it, so no
credential ever travels in the clear. A server that offers TLS without
requiring it (``allow_non_tls``) is spoken to over TLS all the same.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import trio

from .._errors import ConnectionLostError
from .._options import ConnectOptions
from .._tlsfiles import no_tls_message
from ._auth import credentials
from ._protocol import PING_FRAME, PONG, Err, Event, Info, Parser, ProtocolError, connect_frame
from ._servers import Server

__all__ = ["AuthRefusedError", "Handshake", "NoTlsError", "handshake", "is_auth_error"]

_RECEIVE = 65536
#: What the client calls itself in CONNECT.
_LANG = "python-trio"
_VERSION = "1.0"

#: ``-ERR`` texts (lower case) that mean the server does not accept these credentials.
_AUTH_ERRORS = (
    "authorization violation",
    "user authentication expired",
    "user authentication revoked",
    "account authentication expired",
)


def is_auth_error(text: str) -> bool:
    """Whether an ``-ERR`` text says the credentials are refused."""
    lowered = text.lower()
    return any(marker in lowered for marker in _AUTH_ERRORS)


class AuthRefusedError(ConnectionLostError):
    """The server refused the credentials (``-ERR 'Authorization Violation'``)."""


class NoTlsError(ConnectionLostError):
    """A server that must be spoken to over TLS offers none."""


@dataclass
class Handshake:
    """A connection the server accepted, ready for a session."""

    server: Server
    stream: trio.abc.Stream
    #: The parser that read the handshake: it may hold the start of what follows.
    parser: Parser
    info: dict[str, Any]
    #: Events read after the accepting PONG, to be handled first.
    leftover: list[Event]


def server_version(info: dict[str, Any]) -> tuple[int, int, int]:
    """The server's version from its INFO (``(0, 0, 0)`` if it does not say)."""
    parts = str(info.get("version", "")).split("-")[0].split(".")
    numbers = [int(p) if p.isdigit() else 0 for p in parts[:3]]
    while len(numbers) < 3:
        numbers.append(0)
    return numbers[0], numbers[1], numbers[2]


async def _next_events(stream: trio.abc.Stream, parser: Parser) -> list[Event]:
    while True:
        data = await stream.receive_some(_RECEIVE)
        if not data:
            raise ConnectionLostError("the server closed the connection during the handshake")
        events = parser.feed(data)
        if events:
            return events


async def handshake(
    server: Server, options: ConnectOptions, tls: ssl.SSLContext | None, *, tls_always: bool
) -> Handshake:
    """Connect to ``server`` and introduce ourselves; the accepted connection.

    Bounded by the caller's deadline. Raises :class:`AuthRefusedError` if
    the credentials are refused, :class:`NoTlsError` if TLS is wanted and
    the server has none, :class:`ConnectionLostError` or ``OSError`` if the
    server cannot be reached or breaks off, :class:`ProtocolError` if it
    does not speak NATS, and :class:`InvalidSpecError` for unusable
    credential files. Nothing is left open when it raises.
    """
    tcp = await trio.open_tcp_stream(server.host, server.port)
    stream: trio.abc.Stream = tcp
    try:
        parser = Parser()
        events = await _next_events(tcp, parser)
        first = events.pop(0)
        if not isinstance(first, Info):
            raise ProtocolError(f"the server began with {first!r}, not INFO")
        info = first.fields
        wanted = tls_always or server.url.scheme == "tls"
        use_tls = bool(info.get("tls_required"))
        if wanted and not use_tls:
            if not info.get("tls_available"):
                raise NoTlsError(no_tls_message(server.url.scheme, server.netloc))
            use_tls = True
        if use_tls:
            context = tls if tls is not None else ssl.create_default_context()
            secure = trio.SSLStream(tcp, context, server_hostname=server.tls_hostname or None)
            stream = secure
            await secure.do_handshake()
        if not info.get("headers"):
            raise ProtocolError(f"{server.netloc} does not support headers (nats-server 2.2+)")
        fields: dict[str, Any] = {
            "verbose": False,
            "pedantic": False,
            "tls_required": use_tls,
            "name": options.name,
            "lang": _LANG,
            "version": _VERSION,
            "protocol": 1,
            "echo": True,
            "headers": True,
            "no_responders": True,
        }
        fields.update(credentials(options, server.url, info.get("nonce")))
        await stream.send_all(connect_frame(fields) + PING_FRAME)
        while True:
            for index, event in enumerate(events):
                if event is PONG:
                    return Handshake(server, stream, parser, info, events[index + 1 :])
                if isinstance(event, Err):
                    if is_auth_error(event.text):
                        raise AuthRefusedError(f"{server.netloc} refused the credentials")
                    raise ConnectionLostError(f"{server.netloc} said: {event.text}")
                if isinstance(event, Info):
                    info = {**info, **event.fields}
            events = await _next_events(stream, parser)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
