"""The TOML file of settings, and the order in which every command reads a setting.

Every command resolves each of its settings the same way, first match wins:

1. its flag on the command line (``--ack-wait 5``);
2. its environment variable (``ACTORS_ACK_WAIT=5``; the connection settings
   are ``ACTORS_NATS_URL``, ``ACTORS_NATS_USER``, ...);
3. the TOML file given by ``--config FILE`` or ``ACTORS_CONFIG``: the key
   in the command's table (``[orchestrator]``, ``[worker]``, ``[cli]`` for
   every other command), else the same key at the top level;
4. the built-in default.

Click ranks an option's sources in that order when the file's values are
its ``default_map``; this module reads and checks the file. The file's keys
are the settings' keys (:data:`actors.cli._settings.SETTINGS`). Every key of
the file is checked, whichever command reads it, so that one shared file is
either right for all of them or rejected by the first: an unknown key, a key
in a table whose commands have no such setting, or a value of the wrong type
or out of its bounds is a :class:`ConfigError` naming the file and the key.
A top-level key that only other tables' commands use is ignored
(``activities`` at the top is the worker's business, not the orchestrator's).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from ..errors import RequestError
from ._settings import CONFIG_ENV, SETTINGS

__all__ = ["ConfigError", "config_path", "load_config"]


class ConfigError(RequestError):
    """The config file is missing, not TOML, or holds a key or value it may not.

    The message names the file (and the key), ready to print as a usage error.
    """


def config_path(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> str | None:
    """The config file named by ``--config FILE`` in ``argv``, else by ``ACTORS_CONFIG``.

    Only the tokens before a lone ``--`` are looked at. An empty value means
    no file (``ACTORS_CONFIG=`` turns an inherited one off).
    """
    environ = os.environ if environ is None else environ
    found: str | None = None
    tokens = list(argv)
    for index, token in enumerate(tokens):
        if token == "--":
            break
        if token == "--config" and index + 1 < len(tokens):
            found = tokens[index + 1]
        elif token.startswith("--config="):
            found = token.partition("=")[2]
    if found is None:
        found = environ.get(CONFIG_ENV)
    return found or None


def load_config(path: str, tables: Mapping[str, Collection[str]]) -> dict[str, dict[str, Any]]:
    """What the settings file ``path`` gives each table: table -> key -> checked value.

    ``tables`` names each table and the keys its commands have. A table's
    own values override the top level's. Floats given as TOML integers are
    returned as floats. Raises :class:`ConfigError` for a file that cannot
    be read or parsed, and for any key or value in it (in any table) that
    no command would accept.
    """
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None

    top: dict[str, Any] = {}
    own: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if key in tables:
            if not isinstance(value, dict):
                raise ConfigError(f"config file {path}: [{key}] must be a table")
            own[key] = {k: _check(path, key, tables[key], k, v) for k, v in value.items()}
        else:
            top[key] = _check(path, None, (), key, value)

    result: dict[str, dict[str, Any]] = {}
    for table, keys in tables.items():
        result[table] = {k: v for k, v in top.items() if k in keys}
        result[table].update(own.get(table, {}))
    return result


_EXPECTED = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "list": "a list of strings",
}


def _check(path: str, table: str | None, keys: Collection[str], key: str, value: Any) -> Any:
    where = f"[{table}] " if table else ""
    setting = SETTINGS.get(key)
    if setting is None:
        raise ConfigError(f"config file {path}: unknown key {where}{key!r}")
    if table is not None and key not in keys:
        raise ConfigError(f"config file {path}: {table} has no setting {where}{key!r}")
    ok: bool
    # bool is an int in Python, but ``replicas = true`` is a mistake, not 1.
    if setting.kind == "str":
        ok = isinstance(value, str)
    elif setting.kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif setting.kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            value = float(value)
    else:
        ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
    if not ok:
        raise ConfigError(
            f"config file {path}: {where}{key!r} must be {_EXPECTED[setting.kind]}, not {value!r}"
        )
    if setting.bounds is not None:
        try:
            value = setting.bounds.check(value)
        except ValueError as exc:
            raise ConfigError(f"config file {path}: {where}{key!r} {exc}") from None
    compared = value.upper() if setting.any_case else value
    if setting.choices and compared not in setting.choices:
        raise ConfigError(
            f"config file {path}: {where}{key!r} must be one of "
            f"{', '.join(setting.choices)}, not {value!r}"
        )
    return value
