"""Settings of the entry points: flags, ``ACTORS_*`` variables and a TOML file.

Every entry point (``python -m actors.orchestrator``, ``python -m
actors.worker`` and the ``python -m actors`` command line) resolves each
setting the same way, first match wins:

1. its flag on the command line (``--ack-wait 5``);
2. its environment variable (``ACTORS_ACK_WAIT=5``; the connection settings
   are ``ACTORS_NATS_URL``, ``ACTORS_NATS_USER``, ... see :func:`env_name`);
3. the TOML file given by ``--config FILE`` or ``ACTORS_CONFIG``: the key
   in the entry point's table (``[orchestrator]``, ``[worker]``, ``[cli]``),
   else the same key at the top level;
4. the built-in default.

The file's keys are the long flags with underscores (``ack_wait``,
``tls_ca``). Every key of the file is checked, whichever entry point reads
it, so that one shared file is either right for all of them or rejected by
the first: an unknown key, a key in a table whose entry point has no such
setting, or a value of the wrong type or out of its bounds is a
:class:`ConfigError` naming the file and the key. A top-level key that only
other entry points use is ignored (``activities`` at the top is the
worker's business, not the orchestrator's).

A number's bounds (:class:`Bounds`) are stated once, on its :class:`Key`,
and every entry point checks flags and variables against the same ones;
the files a connection reads (``--creds``, ``--tls-*``) are checked before
connecting (:func:`check_connect_files`), whether or not the server would
ask for them.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from transport import ConnectOptions
from transport._specs import MAX_PARTITIONS

from ..errors import RequestError
from ..wire import Layout

__all__ = [
    "CONFIG_ENV",
    "ENTRY_POINTS",
    "KEYS",
    "MAX_SECONDS",
    "Bounds",
    "ConfigError",
    "Defaults",
    "Key",
    "check_connect_files",
    "config_path",
    "env_name",
    "load_config",
]

#: The variable naming the TOML file when ``--config`` is not given.
CONFIG_ENV: Final = "ACTORS_CONFIG"

EntryPoint = Literal["orchestrator", "worker", "cli"]
ENTRY_POINTS: Final[tuple[EntryPoint, ...]] = ("orchestrator", "worker", "cli")

KeyType = Literal["str", "int", "float", "bool", "list"]

_ALL: Final[frozenset[EntryPoint]] = frozenset(ENTRY_POINTS)
_SERVICES: Final[frozenset[EntryPoint]] = frozenset({"orchestrator", "worker"})
_ORCHESTRATOR: Final[frozenset[EntryPoint]] = frozenset({"orchestrator"})
_WORKER: Final[frozenset[EntryPoint]] = frozenset({"worker"})
# ``dev`` is a CLI command: it reads the log settings from the [cli] table.
_LOGGING: Final[frozenset[EntryPoint]] = _ALL


#: The longest duration any setting or option takes, in seconds (about 31
#: years; JetStream's durations end at 2**63 nanoseconds, about 292).
MAX_SECONDS: Final = 1e9


@dataclass(frozen=True)
class Bounds:
    """The numbers a setting or option takes: an int or a finite float, within bounds.

    At least ``low`` (or more than it, if ``above``), at most ``high``;
    ``None`` for no bound. :meth:`parse` reads text (a flag, a variable)
    and :meth:`check` a value; both raise ``ValueError`` with a message
    that says what is allowed.
    """

    kind: Literal["int", "float"]
    low: float | None = None
    above: bool = False
    high: float | None = None

    def describe(self) -> str:
        """What is allowed, in words: ``an integer from 1 to 5``, ``a number above 0 ...``."""
        number = "an integer" if self.kind == "int" else "a number"
        low, high = self.low, self.high
        if low is not None and high is not None and not self.above:
            return f"{number} from {_shown(low)} to {_shown(high)}"
        parts = []
        if low is not None:
            parts.append(f"above {_shown(low)}" if self.above else f"of at least {_shown(low)}")
        if high is not None:
            parts.append(f"at most {_shown(high)}")
        return " ".join([number, " and ".join(parts)]).strip()

    def parse(self, text: str) -> int | float:
        """``text`` as this kind of number, checked; ``ValueError`` if it is not one."""
        try:
            value: int | float = int(text) if self.kind == "int" else float(text)
        except ValueError:
            raise ValueError(f"invalid {self.kind} value: {text!r}") from None
        return self.check(value)

    def check(self, value: int | float) -> int | float:
        """``value`` (a float as this kind), if within bounds; else ``ValueError``."""
        if self.kind == "float":
            value = float(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"must be {self.describe()}, not {value}")
        low, high = self.low, self.high
        if (low is not None and (value <= low if self.above else value < low)) or (
            high is not None and value > high
        ):
            raise ValueError(f"must be {self.describe()}, not {_shown(value)}")
        return value


def _shown(number: float) -> str:
    """A bound or a value as a person writes it: ``1000000000``, not ``1e+09``; ``0.5``."""
    if isinstance(number, int) or (number.is_integer() and abs(number) < 1e18):
        return str(int(number))
    return repr(number)


_SECONDS: Final = Bounds("float", 0, high=MAX_SECONDS)
_POSITIVE_SECONDS: Final = Bounds("float", 0, above=True, high=MAX_SECONDS)
_LIMIT_BYTES: Final = Bounds("int", 1024)


@dataclass(frozen=True)
class Key:
    """One setting of the file: its TOML type and the entry points that have it."""

    type: KeyType
    used_by: frozenset[EntryPoint]
    #: The values allowed, when only a few are (checked for the file here,
    #: and for flags and variables by the entry point).
    choices: tuple[str, ...] = ()
    #: A number's bounds (checked for the file here, and by every entry point).
    bounds: Bounds | None = None


#: Every key a config file may hold. Tests check that it matches the flags.
KEYS: Final[Mapping[str, Key]] = {
    # connection: every entry point
    "url": Key("str", _ALL),
    "user": Key("str", _ALL),
    "password": Key("str", _ALL),
    "token": Key("str", _ALL),
    "creds": Key("str", _ALL),
    "tls_ca": Key("str", _ALL),
    "tls_cert": Key("str", _ALL),
    "tls_key": Key("str", _ALL),
    # JetStream keeps 1 to 5 replicas of a stream.
    "replicas": Key("int", _ALL, bounds=Bounds("int", 1, high=5)),
    # logs
    "log_level": Key("str", _LOGGING, ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
    "log_format": Key("str", _LOGGING, ("text", "json")),
    # the services
    "ack_wait": Key("float", _SERVICES, bounds=_POSITIVE_SECONDS),
    "drain_timeout": Key("float", _SERVICES, bounds=_SECONDS),
    "passivate_after": Key("float", _ORCHESTRATOR, bounds=_SECONDS),
    "max_idle_actors": Key("int", _ORCHESTRATOR, bounds=Bounds("int", 0)),
    "start_wait": Key("float", _ORCHESTRATOR, bounds=_SECONDS),
    "max_waiting_events": Key("int", _ORCHESTRATOR, bounds=Bounds("int", 0)),
    "lease": Key("float", _ORCHESTRATOR, bounds=_POSITIVE_SECONDS),
    "partitions": Key("int", _ORCHESTRATOR, bounds=Bounds("int", 1, high=MAX_PARTITIONS)),
    "max_input": Key("int", _ORCHESTRATOR, bounds=_LIMIT_BYTES),
    "max_output": Key("int", _ORCHESTRATOR, bounds=_LIMIT_BYTES),
    # No state over the broker's largest message could be stored.
    "max_state": Key("int", _ORCHESTRATOR, bounds=Bounds("int", 1024, high=Layout().max_payload)),
    "activities": Key("list", _WORKER),
    "only": Key("list", _WORKER),
    # A worker runs this many tasks of each activity type (and threads):
    # each is a task (or a thread) made at start.
    "concurrency": Key("int", _WORKER, bounds=Bounds("int", 1, high=10_000)),
    "threads": Key("int", _WORKER, bounds=Bounds("int", 1, high=10_000)),
    # the command line
    "connect_timeout": Key("float", frozenset({"cli"}), bounds=_POSITIVE_SECONDS),
}

# The connection variables predate the file and keep their NATS_ prefix.
_ENV_NAMES: Final[Mapping[str, str]] = {
    name: f"NATS_{name.upper()}"
    for name in ("url", "user", "password", "token", "creds", "tls_ca", "tls_cert", "tls_key")
}


def env_name(key: str) -> str:
    """The environment variable of setting ``key``: ``ACTORS_NATS_URL`` for ``url``."""
    return "ACTORS_" + _ENV_NAMES.get(key, key.upper())


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


def load_config(path: str, entry: EntryPoint) -> dict[str, Any]:
    """The settings file ``path`` gives entry point ``entry``: key -> checked value.

    The entry point's table overrides the top level. Floats given as TOML
    integers are returned as floats. Raises :class:`ConfigError` for a file
    that cannot be read or parsed, and for any key or value in it (in any
    table) that no entry point would accept.
    """
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None

    top: dict[str, Any] = {}
    tables: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if key in ENTRY_POINTS:
            if not isinstance(value, dict):
                raise ConfigError(f"config file {path}: [{key}] must be a table")
            tables[key] = {k: _check(path, key, k, v) for k, v in value.items()}
        else:
            top[key] = _check(path, None, key, value)

    mine = {k: v for k, v in top.items() if entry in KEYS[k].used_by}
    mine.update(tables.get(entry, {}))
    return mine


def _check(path: str, table: str | None, key: str, value: Any) -> Any:
    where = f"[{table}] " if table else ""
    spec = KEYS.get(key)
    if spec is None:
        raise ConfigError(f"config file {path}: unknown key {where}{key!r}")
    if table is not None and table not in spec.used_by:
        raise ConfigError(f"config file {path}: {table} has no setting {where}{key!r}")
    expected = {
        "str": "a string",
        "int": "an integer",
        "float": "a number",
        "bool": "true or false",
        "list": "a list of strings",
    }[spec.type]
    ok: bool
    # bool is an int in Python, but ``replicas = true`` is a mistake, not 1.
    if spec.type == "str":
        ok = isinstance(value, str)
    elif spec.type == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif spec.type == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif spec.type == "bool":
        ok = isinstance(value, bool)
    else:
        ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
    if not ok:
        raise ConfigError(f"config file {path}: {where}{key!r} must be {expected}, not {value!r}")
    if spec.bounds is not None:
        try:
            value = spec.bounds.check(value)
        except ValueError as exc:
            raise ConfigError(f"config file {path}: {where}{key!r} {exc}") from None
    # Log levels are case-insensitive everywhere else; so here.
    shown = value.upper() if key == "log_level" else value
    if spec.choices and shown not in spec.choices:
        raise ConfigError(
            f"config file {path}: {where}{key!r} must be one of "
            f"{', '.join(spec.choices)}, not {value!r}"
        )
    return value


#: The files of a connection: the option that names each, and its setting's flag.
_CONNECT_FILES: Final = (
    ("credentials_file", "--creds"),
    ("tls_ca_file", "--tls-ca"),
    ("tls_cert_file", "--tls-cert"),
    ("tls_key_file", "--tls-key"),
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


class Defaults:
    """The default of each flag of an argparse entry point: variable, else file, else built-in.

    ``values`` is what :func:`load_config` returned (empty without a file).
    A variable's value is returned as the string it is, so that argparse
    converts it with the flag's ``type`` and reports a bad one like a bad
    flag; a file's value is already checked and typed.
    """

    def __init__(self, values: Mapping[str, Any], environ: Mapping[str, str] | None = None):
        self.values = dict(values)
        self._environ = os.environ if environ is None else environ

    def env(self, key: str) -> str | None:
        """The variable of ``key``, if set and not empty (as click treats them)."""
        return self._environ.get(env_name(key)) or None

    def get(self, key: str, builtin: Any = None) -> Any:
        """The default of setting ``key``: its variable, its file value, or ``builtin``."""
        variable = self.env(key)
        if variable is not None:
            return variable
        return self.values.get(key, builtin)

    def get_list(self, key: str) -> list[str] | None:
        """A list setting: its variable split at commas, its file list, or ``None``."""
        variable = self.env(key)
        if variable is not None:
            return [item for item in variable.split(",") if item] or None
        value = self.values.get(key)
        return list(value) if value else None
