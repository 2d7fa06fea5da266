"""The TLS context of a connection's files: readable, usable, or refused by name.

Shared by both NATS clients under the JetStream transport: files that cannot
be read or are not PEM are refused before anything is sent to a server.
"""

from __future__ import annotations

import ssl

from ._errors import InvalidSpecError
from ._options import ConnectOptions

__all__ = ["no_tls_message", "tls_context", "wants_tls"]


def _file_error(exc: OSError) -> str:
    """What is wrong with a TLS file, in a few words (``ssl`` says little for a bad one)."""
    if isinstance(exc, ssl.SSLError):
        return f"not a usable PEM file ({exc.reason or exc})"
    return exc.strerror or str(exc)


def wants_tls(opts: ConnectOptions) -> bool:
    """Whether TLS files were given: then every server must use TLS, whatever its scheme."""
    return opts.tls_ca_file is not None or opts.tls_cert_file is not None


def tls_context(opts: ConnectOptions) -> ssl.SSLContext | None:
    """The TLS context of the files given; ``None`` for the system's defaults.

    Raises :class:`InvalidSpecError` naming the file that cannot be read
    or is not what it should be (PEM), before anything is sent.
    """
    if not wants_tls(opts):
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


def no_tls_message(scheme: str, netloc: str) -> str:
    """Why a server that offers no TLS is refused (its URL's ``scheme`` and ``netloc``)."""
    why = "the URL says tls://" if scheme == "tls" else "TLS files were given"
    return (
        f"the server at {scheme}://{netloc} offers no TLS, and {why}: "
        "refusing to connect in the clear"
    )
