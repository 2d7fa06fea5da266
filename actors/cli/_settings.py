"""Every setting of the command line, each defined once.

A setting is what an entry point reads from three places besides its
default: a flag (``--ack-wait``), an ``ACTORS_*`` environment variable
(``ACTORS_ACK_WAIT``) and a key of the TOML file (``ack_wait``). All three
names, its type, its bounds and its help text come from its one
:class:`Setting` in :data:`SETTINGS`; :mod:`actors.cli._options` turns it
into the option of each command that has it, and the file's tables
(``[orchestrator]``, ``[worker]``, ``[cli]``) accept exactly the keys of
the commands they configure.

Defaults are written once too. A setting that fills a field of an engine
config (``OrchestratorConfig``, ``WorkerConfig``, ``Layout``, ``Limits``,
``ConnectOptions``) has no default here: the command that fills the field
names it (:data:`actors.cli._services.ORCHESTRATOR_FIELDS`, ...) and takes
the field's own default (:func:`default_of`), so the command line can never
disagree with ``OrchestratorConfig()``. Only what no config holds (the URL,
the log settings, the command line's connect timeout) has its default here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from transport import MAX_PARTITIONS

from ..wire import PRESENCE_TTL, Layout

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_URL",
    "MAX_SECONDS",
    "SETTINGS",
    "Bounds",
    "Setting",
    "default_of",
    "shown",
]

#: The variable naming the TOML file when ``--config`` is not given.
CONFIG_ENV: Final = "ACTORS_CONFIG"
#: Where every entry point looks for the broker unless told otherwise.
DEFAULT_URL: Final = "nats://127.0.0.1:4222"
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
            return f"{number} from {shown(low)} to {shown(high)}"
        parts = []
        if low is not None:
            parts.append(f"above {shown(low)}" if self.above else f"of at least {shown(low)}")
        if high is not None:
            parts.append(f"at most {shown(high)}")
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
            raise ValueError(f"must be {self.describe()}, not {shown(value)}")
        return value


def shown(number: float) -> str:
    """A bound or a value as a person writes it: ``1000000000``, not ``1e+09``; ``0.5``."""
    if isinstance(number, int) or (number.is_integer() and abs(number) < 1e18):
        return str(int(number))
    return repr(number)


SettingKind = Literal["str", "int", "float", "list"]


@dataclass(frozen=True)
class Setting:
    """One setting: its names, type, bounds, help and (if no config holds it) default.

    ``key`` is the TOML key; the flag is ``--`` and the key with ``-`` for
    ``_``, the variable ``ACTORS_`` and the key in capitals unless
    ``variable`` names another. A number has ``bounds``; a text may be
    limited to ``choices`` (compared without case if ``any_case``).
    """

    key: str
    kind: SettingKind
    help: str
    default: Any = None
    bounds: Bounds | None = None
    choices: tuple[str, ...] = ()
    any_case: bool = False
    variable: str = ""
    metavar: str | None = None

    def __post_init__(self) -> None:
        if (self.kind in ("int", "float")) != (self.bounds is not None):
            raise TypeError(f"setting {self.key}: a number has bounds, and only a number")
        if not self.variable:
            object.__setattr__(self, "variable", f"ACTORS_{self.key.upper()}")

    @property
    def flag(self) -> str:
        """The long flag: ``--ack-wait`` for ``ack_wait``."""
        return "--" + self.key.replace("_", "-")


_SECONDS: Final = Bounds("float", 0, high=MAX_SECONDS)
_POSITIVE_SECONDS: Final = Bounds("float", 0, above=True, high=MAX_SECONDS)
_LIMIT_BYTES: Final = Bounds("int", 1024)
#: Tasks and threads are each made at start: a bound keeps a typo from exhausting memory.
_WORKERS: Final = Bounds("int", 1, high=10_000)


def _connection(key: str, help: str, **kwargs: Any) -> Setting:
    # The connection variables predate the file and keep their NATS_ prefix.
    return Setting(key, "str", help, variable=f"ACTORS_NATS_{key.upper()}", **kwargs)


_ALL: Final = (
    # -- the connection: every command that reaches a broker ----------------------
    _connection(
        "url",
        "The broker: nats://host:port (comma-separated for a cluster) or tls://host:port.",
        default=DEFAULT_URL,
    ),
    _connection("user", "User name (with --password)."),
    _connection("password", "Password (the variable keeps it out of ps)."),
    _connection("token", "Authentication token (not with --user)."),
    _connection("creds", "A .creds file (JWT and NKey seed).", metavar="FILE"),
    _connection("tls_ca", "CA bundle to trust.", metavar="FILE"),
    _connection("tls_cert", "Client certificate (with --tls-key).", metavar="FILE"),
    _connection("tls_key", "The client certificate's key.", metavar="FILE"),
    Setting(
        "replicas",
        "int",
        "Replicas of every stream and bucket (3 on a cluster); give every process the same value.",
        # JetStream keeps 1 to 5 replicas of a stream.
        bounds=Bounds("int", 1, high=5),
    ),
    Setting(
        "connect_timeout",
        "float",
        "Seconds to wait for the server; a command gives up after about twice this.",
        # Shorter than a service's (ConnectOptions' 5): a person is waiting.
        default=2.0,
        bounds=_POSITIVE_SECONDS,
    ),
    # -- logs ----------------------------------------------------------------
    Setting(
        "log_level",
        "str",
        "The engine's log level (its logs go to stderr).",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        any_case=True,
    ),
    Setting(
        "log_format",
        "str",
        "Log lines as text, or as one JSON object each.",
        default="text",
        choices=("text", "json"),
    ),
    # -- both services ---------------------------------------------------------
    Setting(
        "ack_wait",
        "float",
        "Seconds before what a process that stopped answering held (an event, a task) "
        "is delivered again.",
        bounds=_POSITIVE_SECONDS,
    ),
    Setting(
        "drain_timeout",
        "float",
        "Seconds to finish what is in hand once told to stop.",
        bounds=_SECONDS,
    ),
    # -- observability: every service ------------------------------------------------
    Setting(
        "metrics_port",
        "int",
        "Serve /metrics (Prometheus), /healthz and /readyz on this port (0: a free one, "
        "logged); none by default.",
        bounds=Bounds("int", 0, high=65_535),
    ),
    Setting(
        "metrics_host",
        "str",
        "The address the metrics and probes port listens on.",
        default="0.0.0.0",
    ),
    Setting(
        "trace_file",
        "str",
        "Write each finished trace span to this file as a JSON line (needs the actors[otel] "
        "extra); for debugging and tests.",
        metavar="FILE",
    ),
    # -- the orchestrator ---------------------------------------------------------
    Setting(
        "passivate_after",
        "float",
        "Seconds an idle instance actor stays in memory.",
        bounds=_SECONDS,
    ),
    Setting(
        "max_idle_actors",
        "int",
        "Idle instance actors kept in memory at most; past it the longest idle exits.",
        bounds=Bounds("int", 0),
    ),
    Setting(
        "start_wait",
        "float",
        "Seconds an event for an instance not stored yet waits for its start before it goes "
        "to dead letters (default: the streams' duplicate window, "
        f"{shown(Layout().duplicate_window)}).",
        bounds=_SECONDS,
    ),
    Setting(
        "max_waiting_events",
        "int",
        "Events held back at once waiting for their instance; past it they go to dead "
        "letters at once.",
        bounds=Bounds("int", 0),
    ),
    Setting(
        "lease",
        "float",
        "Seconds a partition's lease lasts unrenewed: a crashed orchestrator's partitions "
        "move to the others this long after its last renewal.",
        bounds=_POSITIVE_SECONDS,
    ),
    Setting(
        "retention",
        "float",
        "Seconds a finished instance's state and history are kept before they are removed "
        "(unless its type has its own in --retention-by-type).",
        bounds=_POSITIVE_SECONDS,
    ),
    Setting(
        "retention_by_type",
        "list",
        "A workflow type's own retention, TYPE=DURATION (order=1d, refund=3600s); repeat "
        "the flag (the variable: comma-separated).",
        metavar="TYPE=DURATION",
    ),
    Setting(
        "removal_rate",
        "float",
        "Finished instances an orchestrator removes a second at most once their retention "
        "is over (so that many at once do not slow the running ones).",
        bounds=Bounds("float", 0, above=True, high=1e6),
    ),
    Setting(
        "partitions",
        "int",
        "Partitions of the instances, for an events stream created now (an existing stream "
        "keeps its own).",
        bounds=Bounds("int", 1, high=MAX_PARTITIONS),
    ),
    Setting(
        "max_input",
        "int",
        "Bytes at most in a start, a task's or a child's input, a signal.",
        bounds=_LIMIT_BYTES,
    ),
    Setting(
        "max_output",
        "int",
        "Bytes at most in an activity's or a child's result, the workflow's output.",
        bounds=_LIMIT_BYTES,
    ),
    Setting(
        "max_state",
        "int",
        "Bytes at most in an instance's stored state.",
        # No state over the broker's largest message could be stored.
        bounds=Bounds("int", 1024, high=Layout().max_payload),
    ),
    # -- the worker -------------------------------------------------------------
    Setting(
        "activities",
        "list",
        "Modules whose @activity functions to serve (the variable: comma-separated).",
        metavar="MODULE...",
    ),
    Setting(
        "only",
        "list",
        "Serve only these activity names (the variable: comma-separated).",
        metavar="ACTIVITY...",
    ),
    Setting(
        "concurrency",
        "int",
        "Activities of each type run at once.",
        bounds=_WORKERS,
    ),
    Setting(
        "threads",
        "int",
        "Threads for sync activities.",
        bounds=_WORKERS,
    ),
    Setting(
        "presence_interval",
        "float",
        "Seconds between rewrites of the worker's presence entry (who serves what); it is "
        "taken for dead three intervals after the last.",
        bounds=Bounds("float", 0, above=True, high=PRESENCE_TTL / 3),
    ),
)

#: Every setting by its key: all that a config file may hold.
SETTINGS: Final[Mapping[str, Setting]] = {setting.key: setting for setting in _ALL}


def default_of(config: type, path: str) -> Any:
    """The default of field ``path`` (``layout.ack_wait``) of dataclass ``config``.

    Read from ``config()`` itself, so that a command's default is the
    engine's, never a copy of it.
    """
    value: Any = config()
    for name in path.split("."):
        value = getattr(value, name)
    return value
