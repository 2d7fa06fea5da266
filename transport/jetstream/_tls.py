"""TLS for the NATS connection: TLS or nothing when it is asked for, and readable files.

nats-py upgrades a connection to TLS only when the server demands it; a
``tls://`` URL (or TLS files) must mean TLS whatever the server says, so the
client here refuses to speak in the clear to a server that offers none.
"""

from __future__ import annotations

from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient

from .._tlsfiles import no_tls_message, tls_context

__all__ = ["NoTlsError", "TlsOrNothingClient", "is_auth_refusal", "tls_context"]


def is_auth_refusal(exc: BaseException | None) -> bool:
    """True for the server's "Authorization Violation", however nats-py wraps it
    (it raises AuthorizationError in some paths and a plain Error in others)."""
    return isinstance(exc, nats.errors.AuthorizationError) or (
        isinstance(exc, nats.errors.Error) and "authorization violation" in str(exc).lower()
    )


class NoTlsError(nats.errors.Error):
    """A server that must be spoken to over TLS offered none."""


class TlsOrNothingClient(NatsClient):
    """nats-py's client, refusing to talk in the clear to a server that must use TLS.

    nats-py upgrades a connection to TLS only when the server's INFO says
    ``tls_required``: given ``tls://`` (or a CA bundle) and a server without
    TLS, misconfigured or an impostor, it would go on in the clear and send
    the credentials so. Here the INFO of every connection, first or
    reconnect, is checked before anything is sent: a server that must use
    TLS and requires it is left to nats-py; one that offers it without
    requiring it (``allow_non_tls``) is spoken to over TLS all the same; one
    that offers none fails the attempt with :class:`NoTlsError`.
    """

    def __init__(self, *, tls_always: bool) -> None:
        super().__init__()
        #: TLS files were given: every server must use TLS, whatever its scheme.
        self._tls_always = tls_always

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        server = self._current_server
        # initial_connection: the INFO that opens a connection (not a later
        # update about the cluster), read before CONNECT is written.
        if initial_connection and server is not None and not info.get("tls_required"):
            scheme = server.uri.scheme
            if self._tls_always or scheme == "tls":
                if not info.get("tls_available"):
                    raise NoTlsError(no_tls_message(scheme, server.uri.netloc))
                info["tls_required"] = True  # what makes nats-py start TLS, read after this
        await super()._process_info(info, initial_connection)
