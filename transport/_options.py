"""Connection options and the transport URL.

A transport is chosen by URL: ``memory://`` for the in-process broker, or one
or more ``nats://``/``tls://`` server URLs (comma-separated for a cluster).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from ._errors import InvalidSpecError


@dataclass(frozen=True, kw_only=True)
class ConnectOptions:
    """How to reach and authenticate to a NATS cluster. Built once, passed down.

    Credentials embedded in a URL (``nats://user:pass@host``) work too.
    """

    user: str | None = None
    password: str | None = None
    token: str | None = None
    #: A file holding an NKey seed (``SU...``).
    nkey_seed_file: str | None = None
    #: A ``.creds`` file (JWT and NKey seed).
    credentials_file: str | None = None
    #: TLS: the CA bundle to trust, and a client certificate and key if the server asks.
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    #: The name the connection shows in the server's monitoring.
    name: str = "actors"
    connect_timeout: float = 5.0
    #: Reconnect forever, waiting this long between attempts at first ...
    reconnect_wait: float = 0.25
    #: ... doubling up to this long.
    max_reconnect_wait: float = 5.0
    #: Deadline of one broker request (publish acknowledgement, KV write, API call).
    request_timeout: float = 5.0
    #: Seconds between pings to the server. A connection that leaves two pings
    #: unanswered is dropped at the third and reconnected: a connection that
    #: went silent without closing (a firewall or NAT that forgot it) is
    #: replaced within two to three intervals, not nats-py's 4 to 6 minutes.
    ping_interval: float = 5.0
    #: The NATS client under the JetStream transport: ``"trio"`` (a client
    #: of the NATS protocol written for Trio, in the transport's own
    #: thread) or ``"nats-py"`` (nats-py on an asyncio loop in a thread of
    #: its own). ``None``: the ``ACTORS_NATS_CLIENT`` environment
    #: variable if set, else :data:`DEFAULT_NATS_CLIENT`.
    client: str | None = None

    def __post_init__(self) -> None:
        if self.client is not None:
            check_nats_client(self.client, "client")
        if self.user is not None and self.token is not None:
            raise InvalidSpecError("give either user/password or token, not both")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise InvalidSpecError(
                "a TLS client certificate needs its key, and a key its certificate"
            )
        for kind in (
            "connect_timeout",
            "reconnect_wait",
            "max_reconnect_wait",
            "request_timeout",
            "ping_interval",
        ):
            if getattr(self, kind) <= 0:
                raise InvalidSpecError(f"{kind} must be positive")

    def nats_client(self) -> str:
        """The NATS client to use: :attr:`client`, ``ACTORS_NATS_CLIENT`` or the default.

        Raises :class:`InvalidSpecError` for an unknown name in the variable.
        """
        if self.client is not None:
            return self.client
        chosen = os.environ.get(NATS_CLIENT_VARIABLE, "").strip()
        if not chosen:
            return DEFAULT_NATS_CLIENT
        return check_nats_client(chosen, NATS_CLIENT_VARIABLE)


#: The NATS clients the JetStream transport can run on.
NATS_CLIENTS = ("trio", "nats-py")
#: The one used when neither the options nor the environment choose.
DEFAULT_NATS_CLIENT = "trio"
#: The environment variable that chooses when the options do not.
NATS_CLIENT_VARIABLE = "ACTORS_NATS_CLIENT"


def check_nats_client(name: str, where: str) -> str:
    """Return ``name`` if it names a NATS client, else raise :class:`InvalidSpecError`."""
    if name not in NATS_CLIENTS:
        choices = " or ".join(repr(c) for c in NATS_CLIENTS)
        raise InvalidSpecError(f"{where}: unknown NATS client {name!r}: use {choices}")
    return name


MEMORY_SCHEME = "memory"
NATS_SCHEMES = ("nats", "tls")


def parse_url(url: str) -> tuple[str, list[str]]:
    """Split a transport URL into its kind (``"memory"`` or ``"nats"``) and servers.

    Raises :class:`InvalidSpecError` for an unknown scheme or a malformed server.
    """
    url = url.strip()
    if urlsplit(url).scheme == MEMORY_SCHEME:
        return MEMORY_SCHEME, []
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if not servers:
        raise InvalidSpecError("empty transport URL")
    for server in servers:
        parts = urlsplit(server)
        if parts.scheme not in NATS_SCHEMES:
            raise InvalidSpecError(
                f"unknown transport URL {server!r}: use memory://, nats://host:port or tls://host:port"
            )
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            raise InvalidSpecError(f"bad port in {server!r}") from exc
        if not parts.hostname:
            raise InvalidSpecError(f"no host in {server!r}")
    return "nats", servers
