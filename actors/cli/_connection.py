"""The connection settings: the options of every command that reaches a broker.

The client commands (through the group's options), the orchestrator and the
worker take the same flags, variables and file keys for the broker's URL,
the credentials and TLS, and make the same
:class:`~transport.ConnectOptions` of them (:func:`connect_options`), whose
files are read before connecting (:func:`check_connect_files`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from transport import ConnectOptions

from ._config import ConfigError
from ._options import Decorated, setting_option
from ._settings import SETTINGS

__all__ = [
    "CONNECT_FIELDS",
    "CONNECTION",
    "check_connect_files",
    "connect_options",
    "connection_options",
]

#: The settings that fill a :class:`~transport.ConnectOptions`, and the field of each.
CONNECT_FIELDS: Final[Mapping[str, str]] = {
    "user": "user",
    "password": "password",
    "token": "token",
    "creds": "credentials_file",
    "tls_ca": "tls_ca_file",
    "tls_cert": "tls_cert_file",
    "tls_key": "tls_key_file",
}
#: The connection's settings, in the order of the options.
CONNECTION: Final = ("url", *CONNECT_FIELDS)


def connection_options(command: Decorated) -> Decorated:
    """Add the connection's options to ``command``: ``--url``, the credentials, TLS."""
    for key in reversed(CONNECTION):
        command = setting_option(key)(command)
    return command


def connect_options(values: Mapping[str, Any], name: str, **extra: Any) -> ConnectOptions:
    """The connection's options from the settings' ``values`` (by key), named ``name``.

    ``extra`` sets other fields (``connect_timeout``). Raises
    ``InvalidSpecError`` for options that contradict each other (a user and
    a token); the files are checked by :func:`check_connect_files`.
    """
    given = {field: values[key] for key, field in CONNECT_FIELDS.items()}
    return ConnectOptions(name=name, **given, **extra)


#: The files of a connection: the field that names each, and what to call it.
_CONNECT_FILES: Final = (
    *(
        (field, SETTINGS[key].flag)
        for key, field in CONNECT_FIELDS.items()
        if SETTINGS[key].metavar == "FILE"
    ),
    ("nkey_seed_file", "the NKey seed file"),
)


def check_connect_files(options: ConnectOptions) -> None:
    """Raise :class:`ConfigError` for the first file of ``options`` that cannot be read.

    Checked before connecting: nats-py reads a credentials file only if the
    server asks for credentials, so a mistyped path would otherwise pass
    unnoticed until a server that needs it came along.
    """
    for attribute, flag in _CONNECT_FILES:
        path = getattr(options, attribute)
        if path is None:
            continue
        try:
            with open(path, "rb") as file:
                file.read(1)
        except OSError as exc:
            raise ConfigError(f"{flag} {path}: {exc.strerror or exc}") from None
