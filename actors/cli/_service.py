"""What the service entry points share: flags, environment, config file, logging, signals.

Every flag has an ``ACTORS_*`` environment variable (``--url`` is
``ACTORS_NATS_URL``, ``--ack-wait`` is ``ACTORS_ACK_WAIT``) and a key of the
optional TOML file (``--config FILE`` or ``ACTORS_CONFIG``): a flag given on
the command line wins, then the variable, then the file, then the built-in
default (see :mod:`actors.cli._config`).

A service's mistakes end it with exit code 2 and one line on stderr, never a
traceback: a usage error (``orchestrator: argument --ack-wait: must be a
number above 0 ..., not nan (see python -m actors.orchestrator --help)``),
a file it cannot read, a broker it cannot reach or that refuses it.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import logging
import re
import signal
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from types import ModuleType
from typing import Any, Final, NoReturn, Protocol

import trio

from transport import ConnectOptions, InvalidSpecError, Transport, TransportError, open_transport

from ..errors import RequestError
from ..runtime import ActivitySpec, collect_activities
from ._config import (
    KEYS,
    ConfigError,
    Defaults,
    EntryPoint,
    check_connect_files,
    config_path,
    env_name,
    load_config,
)

__all__ = [
    "JsonFormatter",
    "ModuleError",
    "ServiceParser",
    "TextFormatter",
    "activities_of",
    "add_connection_flags",
    "add_setting",
    "connect_options",
    "parse_service_args",
    "run_main",
    "run_service",
    "setup_logging",
]

DEFAULT_URL: Final = "nats://127.0.0.1:4222"
#: The ``extra`` fields of a log record that the formatters show when present.
LOG_FIELDS: Final = ("instance", "step", "attempt", "activity")
log = logging.getLogger("actors")


class ServiceParser(argparse.ArgumentParser):
    """argparse, reporting a usage error on one line that names the service.

    ``orchestrator: argument --replicas: must be an integer from 1 to 5,
    not 7 (see python -m actors.orchestrator --help)``, exit code 2: a
    supervisor's log gets the reason, not a screen of usage.
    """

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.name = name

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.name}: {message} (see {self.prog} --help)\n")


def add_setting(
    parser: argparse.ArgumentParser,
    defaults: Defaults,
    key: str,
    builtin: float | None,
    help: str,
) -> None:
    """The flag of numeric setting ``key`` (``--ack-wait`` for ``ack_wait``), within its bounds.

    Its default is the variable, else the file, else ``builtin``. Its value
    is parsed, then checked against the key's bounds; argparse does that to
    the flag and to a default that is a string (a variable's value), so a
    bad variable is reported like a bad flag. A file's value is checked
    when the file is read.
    """
    bounds = KEYS[key].bounds
    assert bounds is not None, key

    def convert(text: str) -> int | float:
        try:
            return bounds.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parser.add_argument(
        f"--{key.replace('_', '-')}",
        type=convert,
        default=defaults.get(key, builtin),
        help=f"{help} (env {env_name(key)})",
    )


def add_connection_flags(parser: argparse.ArgumentParser, defaults: Defaults) -> None:
    """The flags every service has: config file, connection, replicas, logs."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="a TOML file of settings (env ACTORS_CONFIG); flags and ACTORS_* variables "
        "override it",
    )
    parser.add_argument(
        "--url",
        default=defaults.get("url", DEFAULT_URL),
        help="broker URL: nats://host:port (comma-separated for a cluster), tls://, "
        "or memory:// (env ACTORS_NATS_URL)",
    )
    parser.add_argument("--user", default=defaults.get("user"))
    parser.add_argument(
        "--password", default=defaults.get("password"), help="(env ACTORS_NATS_PASSWORD)"
    )
    parser.add_argument("--token", default=defaults.get("token"))
    parser.add_argument("--creds", default=defaults.get("creds"), help="a .creds file")
    parser.add_argument("--tls-ca", default=defaults.get("tls_ca"))
    parser.add_argument("--tls-cert", default=defaults.get("tls_cert"))
    parser.add_argument("--tls-key", default=defaults.get("tls_key"))
    add_setting(
        parser,
        defaults,
        "replicas",
        1,
        "replicas of every stream and bucket, 1 to 5 (3 on a cluster)",
    )
    parser.add_argument(
        "--log-level",
        default=defaults.get("log_level", "INFO"),
        help="DEBUG, INFO, WARNING, ERROR",
    )
    parser.add_argument(
        "--log-format",
        default=defaults.get("log_format", "text"),
        help="text, or json: one JSON object a line (env ACTORS_LOG_FORMAT)",
    )


def parse_service_args(
    build: Callable[[Defaults], argparse.ArgumentParser],
    entry: EntryPoint,
    argv: Sequence[str] | None,
) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """Parse a service's ``argv`` (default ``sys.argv[1:]``) over its variables and file.

    ``build`` makes the parser from the defaults (see
    :class:`actors.cli._config.Defaults`). A config file that is missing, not
    TOML or wrong, and a log level or format not known, are usage errors:
    the parser prints them (one line) and exits with code 2.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    values: dict[str, Any] = {}
    path = config_path(arguments)
    if path is not None:
        try:
            values = load_config(path, entry)
        except ConfigError as exc:
            # The file's own values are unusable: report with a parser of built-ins.
            build(Defaults({})).error(str(exc))
    parser = build(Defaults(values))
    args = parser.parse_args(arguments)
    # argparse checks ``choices`` on flags only, not on defaults from the
    # variables: check the final values, wherever they came from.
    for key in ("log_level", "log_format"):
        value = getattr(args, key)
        choices = KEYS[key].choices
        if (value.upper() if key == "log_level" else value) not in choices:
            parser.error(
                f"argument --{key.replace('_', '-')}: invalid choice: {value!r} "
                f"(choose from {', '.join(choices)})"
            )
    return parser, args


def connect_options(args: argparse.Namespace, name: str) -> ConnectOptions:
    """The connection's options from the parsed flags.

    Raises ``InvalidSpecError`` for options that contradict each other (a
    user and a token) and :class:`ConfigError` for a file that cannot be
    read (see :func:`actors.cli._config.check_connect_files`).
    """
    options = ConnectOptions(
        user=args.user,
        password=args.password,
        token=args.token,
        credentials_file=args.creds,
        tls_ca_file=args.tls_ca,
        tls_cert_file=args.tls_cert,
        tls_key_file=args.tls_key,
        name=name,
    )
    check_connect_files(options)
    return options


class ModuleError(RequestError, ValueError):
    """A module of activities could not be imported, or holds none; the message says which."""


#: A module's dotted name, as ``import`` takes it (no relative names).
_MODULE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def activities_of(names: Sequence[str]) -> list[ActivitySpec]:
    """Every activity of the modules named; :class:`ModuleError` in one line if one fails.

    The line says why: not a module name, not found, what its code raised
    while it was imported (with the file and line that raised it), no
    ``@activity`` function in it, or two activities of one name.
    """
    modules = _import_modules(names)
    try:
        for name, module in zip(names, modules, strict=True):
            if not collect_activities([module]):
                raise ModuleError(f"module {name} has no @activity functions")
        return collect_activities(modules)
    except ValueError as exc:  # two activities of one name
        raise ModuleError(str(exc)) from None


def _import_modules(names: Sequence[str]) -> list[ModuleType]:
    modules = []
    for name in names:
        if not _MODULE_NAME.fullmatch(name):
            raise ModuleError(f"{name!r} is not a module name (like myapp.activities)")
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            raise ModuleError(f"cannot import {name}: {exc}") from None
        except Exception as exc:
            # The module's own code failed: say where, as a traceback would
            # (a SyntaxError says it itself).
            where = ""
            if not isinstance(exc, SyntaxError):
                frame = traceback.extract_tb(exc.__traceback__)[-1]
                where = f" ({frame.filename}, line {frame.lineno})"
            raise ModuleError(f"cannot import {name}: {type(exc).__name__}: {exc}{where}") from None
    return modules


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        name: value for name in LOG_FIELDS if (value := getattr(record, name, None)) is not None
    }


class TextFormatter(logging.Formatter):
    """``time LEVEL logger[pid]: message key=value ...``: the fields of :data:`LOG_FIELDS`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = " ".join(f"{name}={value}" for name, value in _fields(record).items())
        return f"{line} {fields}" if fields else line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message``, ``pid``, the fields of :data:`LOG_FIELDS` that the record has,
    and ``exception`` (the formatted traceback) when it has one.
    """

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        data.update(_fields(record))
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exception"] = record.exc_text
        # default=str: a field is whatever a caller put in ``extra``; never fail to log it.
        return json.dumps(data, ensure_ascii=False, default=str)


def setup_logging(level: str, log_format: str = "text") -> None:
    """Log to stderr at ``level`` in ``log_format`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler])


async def run_service(
    serve: Callable[[trio.Nursery], Awaitable[Callable[[], None]]], *, grace: float
) -> None:
    """Run a service until SIGTERM or SIGINT, then drain it.

    ``serve`` starts the service in the nursery it is given and returns its
    ``shutdown`` function. On a signal, ``shutdown`` is called and the
    service has ``grace`` seconds to finish before it is cancelled; a second
    signal cancels at once.
    """
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as inner:
                shutdown = await serve(inner)
                log.info("ready")
                outer.start_soon(_on_signals, signals, shutdown, inner.cancel_scope, grace)
            # The service returned (drained, or failed): stop listening.
            outer.cancel_scope.cancel()


async def _on_signals(
    signals: AsyncIterator[int],
    shutdown: Callable[[], None],
    scope: trio.CancelScope,
    grace: float,
) -> None:
    count = 0
    async for signum in signals:
        count += 1
        log.info("%s: shutting down", signal.Signals(signum).name)
        if count == 1:
            shutdown()
            scope.deadline = trio.current_time() + grace
        else:
            scope.cancel()


class Service(Protocol):
    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...
    def shutdown(self) -> None: ...


def run_main(
    args: argparse.Namespace,
    name: str,
    make: Callable[[Transport], Service],
    *,
    grace: float,
) -> int:
    """Connect, run the service ``make`` builds until a signal, drain; the exit code.

    A broker that cannot be reached (or refuses the credentials), options
    that contradict each other and a file the connection cannot read end
    the process with code 2 and a one-line reason, not a traceback.
    """
    try:
        options = connect_options(args, name)
    except (InvalidSpecError, ConfigError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2

    async def main() -> None:
        async with open_transport(args.url, options) as transport:

            async def serve(nursery: trio.Nursery) -> Callable[[], None]:
                service = make(transport)
                await nursery.start(service.run)
                return service.shutdown

            await run_service(serve, grace=grace)

    tune_gc()
    try:
        trio.run(main)
    except TransportError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as group:
        # A broker failure while serving comes out of the service's nurseries.
        broker, other = group.split(TransportError)
        if broker is None or other is not None:
            raise
        print(f"{name}: {_first_leaf(broker)}", file=sys.stderr)
        return 2
    return 0


#: Allocations between young collections (CPython's default is 700), and how
#: many collections of each generation before the next one is collected.
GC_THRESHOLDS: Final = (20_000, 20, 20)


def tune_gc() -> None:
    """Make the cyclic garbage collector run less often in a long-lived service.

    A service allocates many short-lived objects per event and keeps many
    long-lived ones (actors, cached states, imported modules); each full
    collection walks all of those. Freezing what exists at start-up keeps
    the modules out of every later walk, and a larger first threshold makes
    collections rarer. Memory is still reclaimed: reference counting frees
    most objects at once, and cycles are collected, only in bigger batches.
    Measured: about 7% less orchestrator CPU per workflow (docs/performance.md).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception in ``group`` that is not itself a group."""
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
