"""What a client tells the server to prove who it is: the CONNECT command's
credentials.

One of: a user and password, a token (from the options, or from the server's
URL: ``nats://user:pass@host``, ``nats://token@host``), an NKey (its public
key and the server's nonce signed with its seed), or a ``.creds`` file (a
user JWT and the seed that signs the nonce). Files are read at every
connection, so credentials rotated on disk are picked up on the next
reconnect. The ``nkeys`` package does the signing.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote

import nkeys  # type: ignore[import-untyped]  # the package ships no types

from .._errors import InvalidSpecError
from .._options import ConnectOptions

__all__ = ["credentials", "read_creds", "read_seed"]


def _read(kind: str, path: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidSpecError(f"{kind} {path}: {why}") from None


def read_seed(path: str) -> bytes:
    """The NKey seed held in the file ``path`` (the first word starting with ``S``).

    Raises :class:`InvalidSpecError` naming the file if it cannot be read or
    holds no seed.
    """
    for word in _read("NKey seed file", path).split():
        if word.startswith("S"):
            return word.encode()
    raise InvalidSpecError(f"NKey seed file {path}: no seed in it")


def _block(lines: list[str], marker: str) -> str | None:
    """The first non-empty line after the ``-----BEGIN ... <marker> ...-----`` line."""
    for i, line in enumerate(lines):
        if "BEGIN" in line and marker in line and line.strip().startswith("-"):
            for following in lines[i + 1 :]:
                if following.strip():
                    return following.strip()
    return None


def read_creds(path: str) -> tuple[str, bytes]:
    """The user JWT and the NKey seed of the ``.creds`` file ``path``.

    Raises :class:`InvalidSpecError` naming the file if it cannot be read or
    lacks either part.
    """
    lines = _read("credentials file", path).splitlines()
    jwt = _block(lines, "JWT")
    seed = _block(lines, "SEED")
    if jwt is None or seed is None or jwt.startswith("-") or seed.startswith("-"):
        raise InvalidSpecError(f"credentials file {path}: no user JWT and seed in it")
    return jwt, seed.encode()


def _sign(seed: bytes, nonce: str, where: str) -> tuple[str, str]:
    """(public key, signature of ``nonce``) for ``seed``; base64url without padding."""
    try:
        keys = nkeys.from_seed(bytearray(seed))
        signature = keys.sign(nonce.encode())
        public = keys.public_key.decode()
    except Exception as exc:  # nkeys raises its own and binascii errors alike
        raise InvalidSpecError(f"{where}: not a usable NKey seed ({exc})") from None
    return public, base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


def credentials(options: ConnectOptions, url: SplitResult, nonce: str | None) -> dict[str, Any]:
    """The credential fields of CONNECT for ``url``, given the server's ``nonce``.

    The options' credentials come first; a URL's user info is used when the
    options give neither user nor token. Raises :class:`InvalidSpecError` for
    a seed or ``.creds`` file that cannot be read or used.
    """
    fields: dict[str, Any] = {}
    if options.user is not None:
        fields["user"] = options.user
        fields["pass"] = options.password or ""
    elif options.token is not None:
        fields["auth_token"] = options.token
    elif url.username is not None:
        if url.password is not None:
            fields["user"] = unquote(url.username)
            fields["pass"] = unquote(url.password)
        else:
            fields["auth_token"] = unquote(url.username)
    if options.credentials_file is not None:
        jwt, seed = read_creds(options.credentials_file)
        fields["jwt"] = jwt
        _, fields["sig"] = _sign(seed, nonce or "", f"credentials file {options.credentials_file}")
    elif options.nkey_seed_file is not None:
        seed = read_seed(options.nkey_seed_file)
        where = f"NKey seed file {options.nkey_seed_file}"
        fields["nkey"], fields["sig"] = _sign(seed, nonce or "", where)
    return fields
