"""TLS for the NATS connection: TLS or nothing when it is asked for, and readable files.

nats-py upgrades a connection to TLS only when the server demands it; a
``tls://`` URL (or TLS files) must mean TLS whatever the server says, so the
client here refuses to speak in the clear to a server that offers none.
"""

from __future__ import annotations

import ssl
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient

from .._errors import InvalidSpecError
from .._options import ConnectOptions

__all__ = ["NoTlsError", "TlsOrNothingClient", "is_auth_refusal", "tls_context"]


def _file_error(exc: OSError) -> str:
    """What is wrong with a TLS file, in a few words (``ssl`` says little for a bad one)."""
    if isinstance(exc, ssl.SSLError):
        return f"not a usable PEM file ({exc.reason or exc})"
    return exc.strerror or str(exc)


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
                    why = "the URL says tls://" if scheme == "tls" else "TLS files were given"
                    raise NoTlsError(
                        f"the server at {scheme}://{server.uri.netloc} offers no TLS, and {why}: "
                        "refusing to connect in the clear"
                    )
                info["tls_required"] = True  # what makes nats-py start TLS, read after this
        await super()._process_info(info, initial_connection)


def tls_context(opts: ConnectOptions) -> ssl.SSLContext | None:
    """The TLS context of the files given; ``None`` for the system's defaults.

    Raises :class:`InvalidSpecError` naming the file that cannot be read
    or is not what it should be (PEM), before anything is sent.
    """
    if opts.tls_ca_file is None and opts.tls_cert_file is None:
        return None
    try:
        ctx = ssl.create_default_context(cafile=opts.tls_ca_file)
    except OSError as exc:  # ssl.SSLError is one too
        why = _file_error(exc)
        raise InvalidSpecError(f"TLS CA bundle {opts.tls_ca_file}: {why}") from None
    if opts.tls_cert_file is not None and opts.tls_key_file is not None:
        try:
            ctx.load_cert_chain(opts.tls_cert_file, opts.tls_key_file)
        except OSError as exc:
            raise InvalidSpecError(
                f"TLS client certificate {opts.tls_cert_file} with key "
                f"{opts.tls_key_file}: {_file_error(exc)}"
            ) from None
    return ctx
