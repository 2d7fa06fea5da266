"""``python -m actors``: the command line of a running engine.

Every command but ``demo`` talks to an engine through a NATS server: it
connects (the same flags and ``ACTORS_*`` variables as the services), does
one thing through :class:`actors.Client`, prints one result and exits with a
code that says how it went (:class:`ExitCode`). Output is a rich table or
text by default, and exactly one JSON document on stdout with ``--json``;
errors go to stderr, one line each (a JSON object with ``--json``), never a
traceback for a mistake of the user's or a broker that is down.

The commands are built here on :data:`cli`; ``actors/__main__.py`` adds the
``demo`` (which lives there) and is the entry point.
"""

from __future__ import annotations

import enum
import math
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click
import trio
import yaml
from rich.console import Console, RenderableType
from rich.json import JSON
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from transport import (
    AuthorizationError,
    ConnectionLostError,
    ConnectOptions,
    InvalidSpecError,
    StorageFullError,
    TooLargeError,
    TransportError,
    TransportTimeoutError,
)
from transport._options import MEMORY_SCHEME, parse_url

from ..core import (
    MAX_VERSION,
    Definition,
    DefinitionError,
    InstanceStatus,
    InvalidNameError,
    check_instance_id,
    check_name,
    load_definition,
)
from ..errors import ActorsError, BrokerError, RequestError, SizeLimitError
from ..runtime import (
    MAX_LIMIT,
    Client,
    InstanceInfo,
    InstanceSummary,
    UnknownWorkflowTypeError,
    VersionConflictError,
)
from ..wire import DEFAULT_LIMITS, JsonError, Layout, check_payload, dumps, loads
from ._config import (
    CONFIG_ENV,
    KEYS,
    MAX_SECONDS,
    Bounds,
    ConfigError,
    check_connect_files,
    config_path,
    load_config,
)
from ._service import DEFAULT_URL

__all__ = ["App", "BoundedNumber", "CliError", "ExitCode", "cli", "main"]

PROG: Final = "python -m actors"
_Decorated = TypeVar("_Decorated", bound=Callable[..., Any])
#: How many broker calls a command with many instances has in flight at once.
_CONCURRENCY: Final = 64
#: The width of tables written to a pipe or a file (unless ``COLUMNS`` says otherwise).
_PIPE_WIDTH: Final = 200
#: The most bytes read from a file or stdin: the largest message the engine
#: carries (and the HTTP API's largest body). A bigger one is refused unread.
MAX_FILE_BYTES: Final = DEFAULT_LIMITS.max_bytes


class ExitCode(enum.IntEnum):
    """What the process's exit code means; docs/cli.md has the same table."""

    OK = 0
    #: A workflow waited for did not complete: it failed, or was cancelled or terminated.
    NOT_COMPLETED = 1
    #: The broker could not be reached, refused the credentials, or stopped answering.
    UNREACHABLE = 2
    #: No such workflow type (or version), or no such instance.
    NOT_FOUND = 3
    #: The command was wrong: usage, JSON, a definition, a name, a size, a URL.
    INVALID = 4
    #: A wait ran out (``--timeout``, ``result --wait``) with the instance still running
    #: (or, after ``start``, still pending: no orchestrator has picked its start up).
    TIMED_OUT = 5
    #: Ctrl-C.
    INTERRUPTED = 130


class CliError(RequestError):
    """A failure to report in one line (plus ``details``) and exit with ``code``."""

    def __init__(self, message: str, code: ExitCode, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.exit_code = int(code)  # this report's, not its class's (see ActorsError)
        self.details = tuple(details)


# -- output -------------------------------------------------------------------------


class App:
    """What the group's options set up, handed to every command as click's ``obj``.

    ``main`` creates it before parsing so that errors raised anywhere (option
    callbacks included) are reported in the format the user asked for.
    """

    def __init__(self) -> None:
        self.json = False
        self.url = DEFAULT_URL
        self.options = ConnectOptions(name="actors-cli")
        self.replicas = 1
        # Markup and emoji codes off: instance data must print as it is (a
        # "[red]" in an output is text, not a style).
        self.out = Console(markup=False, emoji=False, highlight=False, soft_wrap=False)
        self.err = Console(stderr=True, markup=False, emoji=False, highlight=False)
        if not self.out.is_terminal and "COLUMNS" not in os.environ:
            # Piped output goes to programs, files and pagers: rich would wrap
            # it at 80 columns; give tables room to keep a row on one line.
            self.out.width = _PIPE_WIDTH

    # -- printing --------------------------------------------------------------

    def document(self, data: Any) -> None:
        """Print ``data`` as the command's one JSON document on stdout.

        Standard JSON whatever the data holds: values JSON lacks are spelled
        as the HTTP API spells them (see :func:`actors.wire._json.plain`).
        """
        sys.stdout.write(dumps(data, indent=2) + "\n")
        sys.stdout.flush()

    def show(self, *renderables: RenderableType | str) -> None:
        """Print human output on stdout."""
        self.out.print(*renderables)

    def line(self, text: str) -> None:
        """Print one plain line on stdout (ids: no wrapping, nothing added)."""
        click.echo(text)

    def warn(self, text: str) -> None:
        """A note on stderr that does not change the exit code (silent with ``--json``)."""
        if not self.json:
            click.echo(f"note: {text}", err=True)

    def error(self, message: str, code: ExitCode, details: Sequence[str] = ()) -> None:
        """Report a failure on stderr: ``error: ...`` lines, or a JSON object."""
        if self.json:
            error = {"code": int(code), "reason": code.name.lower(), "message": message}
            if details:
                error["details"] = list(details)
            click.echo(dumps({"error": error}), err=True)
            return
        click.echo(f"error: {message}", err=True)
        for detail in details:
            click.echo(f"  {detail}", err=True)

    # -- running a command -------------------------------------------------------

    def run(self, command: Callable[[Client], Awaitable[ExitCode]]) -> ExitCode:
        """Connect to the engine, run ``command`` with a client, return its exit code.

        Raises :class:`CliError` for a ``memory://`` URL (a memory broker
        lives in one process, so the CLI's would be empty and gone when it
        exits) and for a file of the connection that cannot be read.
        Transport and client errors propagate to :func:`main`.
        """
        try:
            kind, _ = parse_url(self.url)
        except InvalidSpecError as exc:
            raise CliError(str(exc), ExitCode.INVALID) from None
        if kind == MEMORY_SCHEME:
            raise CliError(
                "memory:// is a broker inside one process: this command's would start "
                "empty and vanish when it exits. Give the nats:// URL of the engine's "
                "server (only 'demo' runs on memory://)",
                ExitCode.INVALID,
            )
        try:
            check_connect_files(self.options)
        except ConfigError as exc:
            raise CliError(str(exc), ExitCode.INVALID) from None

        async def session() -> ExitCode:
            layout = Layout(replicas=self.replicas)
            async with Client.connect(self.url, self.options, layout=layout) as client:
                return await command(client)

        return trio.run(session)


pass_app = click.make_pass_decorator(App)


def _json_view(value: Any) -> RenderableType:
    """A JSON value for a human: indented (and highlighted on a terminal)."""
    return JSON(dumps(value), indent=2)


_STATUS_STYLES: Final = {
    "completed": "green",
    "pending": "yellow",
    "running": "cyan",
    "compensating": "yellow",
    "failed": "red",
    "cancelled": "magenta",
    "terminated": "magenta",
    "unknown": "red",
}


def _table(*columns: str) -> Table:
    """A table whose first column is a name or id: folded if need be, never cut short."""
    table = Table()
    table.add_column(columns[0], overflow="fold")
    for column in columns[1:]:
        table.add_column(column)
    return table


def _status_text(status: str) -> Text:
    return Text(status, style=_STATUS_STYLES.get(status, ""))


def _clock(at: float | None) -> str:
    if not at:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _span(seconds: float) -> str:
    """A duration for a human: ``0.042s``, ``12.5s``, ``3m07.2s``, ``2h05m``, ``1d03h``."""
    if seconds < 10:
        return f"{seconds:.3f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)}m{rest:04.1f}s"
    hours, minutes = divmod(int(minutes), 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _error_line(error: Mapping[str, Any] | None) -> str:
    if not error:
        return ""
    return f"{error.get('type', 'Error')}: {error.get('message', '')}"


# -- values from the command line -------------------------------------------------------


if TYPE_CHECKING:
    # Generic in click 8.2 and later only: subscripted for the type checker alone.
    _NumberBase = click.ParamType[int | float]
else:
    _NumberBase = click.ParamType


class BoundedNumber(_NumberBase):
    """A number option within :class:`~actors.cli._config.Bounds` (finite, and in range).

    Also checks the values a config file gives (already typed), so that a
    file's bad value is reported like a bad option.
    """

    def __init__(self, bounds: Bounds) -> None:
        self.bounds = bounds
        self.name = bounds.kind

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            if isinstance(value, str):
                return self.bounds.parse(value)
            return self.bounds.check(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _setting(key: str) -> BoundedNumber:
    """The option type of numeric setting ``key`` (its bounds are the services' too)."""
    bounds = KEYS[key].bounds
    assert bounds is not None, key
    return BoundedNumber(bounds)


_VERSION: Final = BoundedNumber(Bounds("int", 1, high=MAX_VERSION))


def _payload(text: str, what: str) -> Any:
    """``text`` as strict JSON holding a payload the engine carries; ``ValueError`` saying why.

    ``what`` names the value in the message (``input``, ``data``).
    """
    value = loads(text)
    check_payload(value, what)
    return value


def _payload_options(
    option: str, dest: str, what: str, label: str
) -> Callable[[_Decorated], _Decorated]:
    """A payload's two options: ``--OPTION JSON``, and ``--OPTION-file F`` (or ``-``, stdin).

    The value given is parsed at once (:func:`_payload`); the file's is read
    by :func:`_given_payload` in the command, which also refuses both.
    ``what`` names the payload in errors (``input.count``), ``label`` in
    the help.
    """

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        try:
            return _payload(value, what)
        except JsonError as exc:
            raise click.BadParameter(str(exc)) from None

    def decorate(command: _Decorated) -> _Decorated:
        with_file = click.option(
            f"{option}-file",
            f"{dest}_file",
            type=click.Path(dir_okay=False, allow_dash=True),
            help=f"Read the {label} from a file (JSON, or YAML if named .yaml/.yml; - is stdin).",
        )(command)
        return click.option(option, dest, metavar="JSON", callback=parse, help=f"The {label}.")(
            with_file
        )

    return decorate


def _given_payload(option: str, dest: str, what: str, value: Any, path: str | None) -> Any:
    """The payload of :func:`_payload_options`: the option's, the file's, or ``None``.

    Raises ``click.UsageError`` if both are given, :class:`CliError` for a
    file that cannot be read or holds no payload.
    """
    given = click.get_current_context().get_parameter_source(dest)
    if path is None:
        return value
    if given is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError(f"give {option} or {option}-file, not both")
    return _payload_file(path, what)


def _id_argument(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Argument/option callback: the instance id (or ids) checked before connecting."""
    values = value if isinstance(value, tuple) else (value,)
    for one in values:
        if one is not None:
            try:
                check_instance_id(one)
            except InvalidNameError as exc:
                raise click.BadParameter(str(exc)) from None
    return value


def _name_argument(what: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None:
            try:
                check_name(what, value)
            except InvalidNameError as exc:
                raise click.BadParameter(str(exc)) from None
        return value

    return check


def _read_text(path: str) -> str:
    """A file's text (``-`` is stdin), at most :data:`MAX_FILE_BYTES`; else :class:`CliError`."""
    name = "stdin" if path == "-" else path
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
        else:
            with open(path, "rb") as file:
                data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", ExitCode.INVALID) from None
    if len(data) > MAX_FILE_BYTES:
        raise CliError(
            f"{name} is over {MAX_FILE_BYTES} bytes, more than the engine carries in a message",
            ExitCode.INVALID,
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"{name} is not UTF-8 text: {exc}", ExitCode.INVALID) from None


def _format_of(path: str) -> str:
    # YAML is a superset of JSON: anything not named .json (stdin too) is read as YAML.
    return "json" if path.lower().endswith(".json") else "yaml"


class _PayloadLoader(yaml.SafeLoader):
    """YAML without YAML 1.1's implicit dates: ``2024-01-01`` is the text it is.

    A payload is JSON's data, which has no date type, and YAML 1.2 reads
    such a scalar as a string too. (Resolvers are per class: copied, not shared.)
    """


_PayloadLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _yaml_problem(exc: Exception) -> str:
    """What PyYAML found wrong, on one line: ``expected ... (line 2, column 1)``."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        where = exc.problem_mark
        at = "" if where is None else f" (line {where.line + 1}, column {where.column + 1})"
        context = f"{exc.context}: " if exc.context else ""
        return f"{context}{exc.problem}{at}"
    return " ".join(str(exc).split())


def _payload_file(path: str, what: str) -> Any:
    """The payload in file ``path``: YAML if named ``.yaml``/``.yml``, else JSON; ``-`` is stdin.

    Raises :class:`CliError` (invalid) saying what is wrong, and where.
    """
    text = _read_text(path)
    name = "stdin" if path == "-" else path
    try:
        if path.lower().endswith((".yaml", ".yml")):
            try:
                value = yaml.load(text, Loader=_PayloadLoader)  # a SafeLoader
            except (yaml.YAMLError, RecursionError) as exc:
                raise CliError(
                    f"{name} is not valid YAML: {_yaml_problem(exc)}", ExitCode.INVALID
                ) from None
            check_payload(value, what)
            return value
        return _payload(text, what)
    except JsonError as exc:
        raise CliError(f"{name}: {exc}", ExitCode.INVALID) from None


# -- the group ---------------------------------------------------------------------


def _connection_option(
    flag: str, env: str, help: str, **kwargs: Any
) -> Callable[[_Decorated], _Decorated]:
    """A group option read from ``ACTORS_<env>`` when not given, as the services do."""
    return click.option(flag, envvar=f"ACTORS_{env}", show_envvar=True, help=help, **kwargs)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    envvar=CONFIG_ENV,
    show_envvar=True,
    metavar="FILE",
    help="A TOML file of settings: keys are the long options with underscores, at the "
    "top or in a [cli] table. Options and ACTORS_* variables override it.",
)
@_connection_option(
    "--url",
    "NATS_URL",
    "The engine's NATS server: nats://host:port (comma-separated for a cluster) "
    "or tls://host:port.",
    default=DEFAULT_URL,
    show_default=True,
)
@_connection_option("--user", "NATS_USER", "User name (with --password).")
@_connection_option("--password", "NATS_PASSWORD", "Password (the variable keeps it out of ps).")
@_connection_option("--token", "NATS_TOKEN", "Authentication token.")
@_connection_option("--creds", "NATS_CREDS", "A .creds file (JWT and NKey seed).")
@_connection_option("--tls-ca", "NATS_TLS_CA", "CA bundle to trust.")
@_connection_option("--tls-cert", "NATS_TLS_CERT", "Client certificate (with --tls-key).")
@_connection_option("--tls-key", "NATS_TLS_KEY", "Client certificate's key.")
@_connection_option(
    "--replicas",
    "REPLICAS",
    "Replicas of the engine's streams and buckets, 1 to 5: the services' value (3 on a cluster).",
    type=_setting("replicas"),
    default=1,
    show_default=True,
)
@_connection_option(
    "--connect-timeout",
    "CONNECT_TIMEOUT",
    "Seconds to wait for the server; the command gives up after about twice this.",
    type=_setting("connect_timeout"),
    default=2.0,
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")
@pass_app
def cli(
    app: App,
    config: str | None,
    url: str,
    user: str | None,
    password: str | None,
    token: str | None,
    creds: str | None,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    replicas: int,
    connect_timeout: float,
    as_json: bool,
) -> None:
    """Register workflow definitions; start, inspect, signal and stop instances.

    Every command but 'demo' needs a running engine: a NATS server with an
    orchestrator and workers. Exit codes: 0 done, 1 a workflow did not
    complete, 2 broker unreachable, 3 not found, 4 invalid command or input,
    5 still running when a wait ran out.
    """
    del config  # main() read the file before parsing: it is the options' default_map
    app.json = as_json
    app.url = url
    app.replicas = replicas
    try:
        app.options = ConnectOptions(
            user=user,
            password=password,
            token=token,
            credentials_file=creds,
            tls_ca_file=tls_ca,
            tls_cert_file=tls_cert,
            tls_key_file=tls_key,
            name="actors-cli",
            connect_timeout=connect_timeout,
        )
    except InvalidSpecError as exc:
        raise click.UsageError(str(exc)) from None


# -- definitions ----------------------------------------------------------------------


@cli.group()
def definitions() -> None:
    """Register, list and show workflow definitions."""


@definitions.command("register")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@pass_app
def definitions_register(app: App, files: tuple[str, ...]) -> ExitCode:
    """Register the definitions in FILE... (YAML, or JSON if named .json; - is stdin).

    Every file is checked before anything is registered: if one is invalid,
    each problem is printed with its field path and nothing is registered.
    Registering the same content again is a no-op ("unchanged").
    """
    parsed: list[tuple[str, Definition]] = []
    problems: list[str] = []
    for path in files:
        text = _read_text(path)
        try:
            parsed.append((path, load_definition(text, format=_format_of(path))))
        except DefinitionError as exc:
            name = "stdin" if path == "-" else path
            problems.extend(f"{name}: {error}" for error in exc.errors)
    if problems:
        raise CliError(
            "invalid definition: nothing was registered", ExitCode.INVALID, details=problems
        )

    async def register(client: Client) -> ExitCode:
        known = await client.definitions()
        rows: list[dict[str, Any]] = []
        for path, definition in parsed:
            before = definition.version in known.get(definition.type, [])
            try:
                await client.register(definition)
            except VersionConflictError as exc:
                done = ", ".join(f"{r['type']} v{r['version']}" for r in rows) or "nothing"
                raise CliError(
                    f"{path}: {exc}", ExitCode.INVALID, details=[f"registered before it: {done}"]
                ) from None
            known.setdefault(definition.type, []).append(definition.version)
            rows.append(
                {
                    "file": path,
                    "type": definition.type,
                    "version": definition.version,
                    "status": "unchanged" if before else "registered",
                }
            )
        if app.json:
            app.document(rows)
        else:
            table = _table("file", "type", "version", "status")
            for row in rows:
                table.add_row(row["file"], row["type"], str(row["version"]), row["status"])
            app.show(table)
        return ExitCode.OK

    return app.run(register)


@definitions.command("list")
@pass_app
def definitions_list(app: App) -> ExitCode:
    """List every registered workflow type with its versions."""

    async def listing(client: Client) -> ExitCode:
        rows: list[dict[str, Any]] = []
        for workflow_type, versions in (await client.definitions()).items():
            try:
                latest: Definition | None = await client.definition(workflow_type, versions[-1])
            except UnknownWorkflowTypeError:
                # Stored, but this engine cannot read it (written by a newer one?).
                latest = None
            rows.append(
                {
                    "type": workflow_type,
                    "versions": versions,
                    "latest": versions[-1],
                    "steps": None if latest is None else len(latest.steps),
                    "description": "(unreadable)" if latest is None else latest.description,
                }
            )
        if app.json:
            app.document(rows)
        elif not rows:
            app.show("no definitions registered")
        else:
            table = _table("type", "versions", "latest", "steps", "description")
            for row in rows:
                table.add_row(
                    row["type"],
                    ", ".join(map(str, row["versions"])),
                    str(row["latest"]),
                    "" if row["steps"] is None else str(row["steps"]),
                    row["description"],
                )
            app.show(table)
        return ExitCode.OK

    return app.run(listing)


@definitions.command("show")
@click.argument("workflow_type", metavar="TYPE", callback=_name_argument("workflow type"))
@click.option("--version", type=_VERSION, help="A version (default: the newest).")
@pass_app
def definitions_show(app: App, workflow_type: str, version: int | None) -> ExitCode:
    """Show a registered definition in its canonical form, every default spelled out."""

    async def show(client: Client) -> ExitCode:
        definition = await client.definition(workflow_type, version or 0)
        data = definition.to_data()
        if app.json:
            app.document(data)
            return ExitCode.OK
        versions = (await client.definitions()).get(workflow_type, [])
        app.show(
            f"{workflow_type} v{definition.version}"
            f"  (versions registered: {', '.join(map(str, versions))})"
        )
        # A stable, readable form: the keys in the canonical order, not sorted.
        app.line(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip())
        return ExitCode.OK

    return app.run(show)


# -- starting and waiting ------------------------------------------------------------------


@dataclass
class _Outcome:
    """Where an instance stands once a wait is over (or ran out)."""

    id: str
    #: ``None`` while not stored: the start is pending (``start``).
    info: InstanceInfo | None
    #: False for an id that names no instance (``result``): status ``unknown``.
    found: bool = True

    @property
    def status(self) -> str:
        if not self.found:
            return "unknown"
        return "pending" if self.info is None else str(self.info.status)

    def to_data(self) -> dict[str, Any]:
        """The outcome as JSON: the same keys whatever the status (``None`` if unknown)."""
        info = self.info
        return {
            "id": self.id,
            "status": self.status,
            "type": None if info is None else info.type,
            "version": None if info is None else info.version,
            "output": None if info is None else info.output,
            "error": None if info is None or info.error is None else info.error.to_data(),
            "compensation": None if info is None else info.compensation,
            "duration": (
                info.updated_at - info.created_at
                if info is not None and info.status.terminal
                else None
            ),
        }


def _exit_code(outcomes: Iterable[_Outcome]) -> ExitCode:
    """The exit code of waits: not found, then timed out, then not completed."""
    statuses = {outcome.status for outcome in outcomes}
    if "unknown" in statuses:
        return ExitCode.NOT_FOUND
    if statuses & {"pending", "running", "compensating"}:
        return ExitCode.TIMED_OUT
    if statuses - {"completed"}:
        return ExitCode.NOT_COMPLETED
    return ExitCode.OK


async def _wait_all(
    client: Client,
    outcomes: list[_Outcome],
    seconds: float | None,
    progress: Progress | None,
) -> None:
    """Wait until each found outcome's instance is terminal, ``seconds`` at most.

    Fills in every outcome's ``info``: the final state, or the latest one
    (still running) of those the time limit cut short.
    """
    limiter = trio.CapacityLimiter(_CONCURRENCY)
    task = None if progress is None else progress.add_task("finished", total=len(outcomes))

    def done() -> None:
        if progress is not None and task is not None:
            progress.advance(task)

    async def wait_one(outcome: _Outcome) -> None:
        if outcome.info is None or not outcome.info.status.terminal:
            # Client.wait registers with the client's one shared watch: a
            # thousand waiters cost a thousand entries, not a thousand watches.
            outcome.info = await client.wait(outcome.id)
        done()

    with trio.move_on_after(math.inf if seconds is None else seconds):
        async with trio.open_nursery() as nursery:
            for outcome in outcomes:
                if outcome.found:
                    nursery.start_soon(wait_one, outcome)
                else:
                    done()

    async def refresh(outcome: _Outcome) -> None:
        async with limiter:
            outcome.info = await client.status(outcome.id)
            if outcome.info is None and not await client.start_pending(outcome.id):
                # Stored between the two looks, or its start was refused
                # (dead-lettered): then there is no such instance.
                outcome.info = await client.status(outcome.id)
                outcome.found = outcome.info is not None

    # Those the time limit cut short: show where they are now.
    async with trio.open_nursery() as nursery:
        for outcome in outcomes:
            if outcome.found and (outcome.info is None or not outcome.info.status.terminal):
                nursery.start_soon(refresh, outcome)


@asynccontextmanager
async def _progress_bar(app: App, many: bool) -> AsyncIterator[Progress | None]:
    """A rich progress bar on stderr for many instances (``None`` for one).

    Refreshed by a Trio task: rich's own auto-refresh would be a thread.
    """
    if not many:
        yield None
        return
    progress = Progress(
        TextColumn("{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=app.err,
        auto_refresh=False,
    )

    async def tick() -> None:
        while True:
            progress.refresh()
            await trio.sleep(0.1)

    with progress:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tick)
            try:
                yield progress
            finally:
                nursery.cancel_scope.cancel()
        progress.refresh()


def _show_outcomes(app: App, outcomes: list[_Outcome], elapsed: float, single: bool) -> None:
    """Print the outcomes (one document with ``--json``), and a stderr line for failures."""
    if app.json:
        app.document(outcomes[0].to_data() if single else [o.to_data() for o in outcomes])
        return
    if single:
        outcome = outcomes[0]
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_row("id", outcome.id)
        grid.add_row("status", _status_text(outcome.status))
        info = outcome.info
        if info is not None:
            if info.status.terminal:
                grid.add_row("duration", _span(info.updated_at - info.created_at))
            if info.compensation:
                grid.add_row("compensation", info.compensation)
            if info.output is not None:
                grid.add_row("output", _json_view(info.output))
            if info.error is not None:
                grid.add_row("error", f"{info.error.type}: {info.error.message}")
        app.show(grid)
    else:
        table = _table("id", "status", "duration", "output / error")
        for outcome in outcomes:
            info = outcome.info
            duration = ""
            detail = ""
            if info is not None:
                if info.status.terminal:
                    duration = _span(info.updated_at - info.created_at)
                if info.error is not None:
                    detail = f"{info.error.type}: {info.error.message}"
                elif info.output is not None:
                    detail = dumps(info.output)
            table.add_row(outcome.id, _status_text(outcome.status), duration, detail)
        app.show(table)
        counts = Counter(outcome.status for outcome in outcomes)
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        app.show(f"{len(outcomes)} instances: {summary} ({_span(elapsed)})")
    failed = [o for o in outcomes if o.status != "completed"]
    if single and failed:
        outcome = failed[0]
        if outcome.status == "unknown":
            click.echo(f"error: no instance {outcome.id!r}", err=True)
        elif outcome.status == "pending":
            click.echo(
                f"error: {outcome.id} is pending: the broker accepted its start, but no "
                "orchestrator has picked it up yet (is one running?)",
                err=True,
            )
        elif outcome.status in ("running", "compensating"):
            click.echo(f"error: {outcome.id} is still {outcome.status}", err=True)
        else:
            error = outcome.info.error if outcome.info is not None else None
            why = f": {error.type}: {error.message}" if error is not None else ""
            click.echo(f"error: workflow {outcome.id} {outcome.status}{why}", err=True)
    elif failed:
        click.echo(f"error: {len(failed)} of {len(outcomes)} instances did not complete", err=True)


@cli.command()
@click.argument("workflow_type", metavar="TYPE", callback=_name_argument("workflow type"))
@_payload_options("--input", "input_value", "input", "input")
@click.option(
    "--id",
    "instance_id",
    callback=_id_argument,
    help="The instance id, which makes the start idempotent (default: a random one). "
    "With --count N the ids are ID-1 ... ID-N.",
)
@click.option("--version", type=_VERSION, help="A version (default: the newest).")
@click.option(
    "--count",
    type=click.IntRange(min=1, max=MAX_LIMIT),
    default=1,
    show_default=True,
    help="Start this many instances with the same input.",
)
@click.option("--wait", is_flag=True, help="Wait until they end; print their results.")
@click.option(
    "--timeout",
    type=BoundedNumber(Bounds("float", 0, above=True, high=MAX_SECONDS)),
    help="With --wait: seconds to wait at most (exit 5 if still running or pending).",
)
@pass_app
def start(
    app: App,
    workflow_type: str,
    input_value: Any,
    input_value_file: str | None,
    instance_id: str | None,
    version: int | None,
    count: int,
    wait: bool,
    timeout: float | None,
) -> ExitCode:
    """Start an instance of workflow TYPE and print its id.

    With --wait, wait for it to end and print its status and output (or
    error); the exit code is 1 if it did not complete. An --id that belongs
    to an instance of another type is refused (exit 4).
    """
    input_value = _given_payload("--input", "input_value", "input", input_value, input_value_file)
    if timeout is not None and not wait:
        raise click.UsageError("--timeout bounds --wait: give both")
    if instance_id is not None and count > 1:
        ids: list[str | None] = [f"{instance_id}-{n}" for n in range(1, count + 1)]
        try:
            for one in ids:
                check_instance_id(one)
        except InvalidNameError as exc:
            raise click.BadParameter(str(exc), param_hint="'--id'") from None
    else:
        ids = [instance_id] * count

    async def run(client: Client) -> ExitCode:
        # Check the type once, so that N starts of an unknown type fail as one error.
        await client.definition(workflow_type, version or 0)
        began = time.perf_counter()
        started: list[str] = [""] * count
        async with _progress_bar(app, wait and count > 1) as progress:
            task = None if progress is None else progress.add_task("started", total=count)
            limiter = trio.CapacityLimiter(_CONCURRENCY)

            async def start_one(n: int) -> None:
                async with limiter:
                    started[n] = await client.start(
                        workflow_type, input_value, id=ids[n], version=version or 0
                    )
                if progress is not None and task is not None:
                    progress.advance(task)

            async with trio.open_nursery() as nursery:
                for n in range(count):
                    nursery.start_soon(start_one, n)
            if not wait:
                if app.json:
                    app.document({"id": started[0]} if count == 1 else [{"id": i} for i in started])
                else:
                    for one in started:
                        app.line(one)
                return ExitCode.OK
            outcomes = [_Outcome(one, None) for one in started]
            await _wait_all(client, outcomes, timeout, progress)
        _show_outcomes(app, outcomes, time.perf_counter() - began, single=count == 1)
        return _exit_code(outcomes)

    return app.run(run)


@cli.command()
@click.argument("instance_ids", metavar="ID...", nargs=-1, required=True, callback=_id_argument)
@click.option(
    "--wait",
    "wait_seconds",
    metavar="S",
    type=BoundedNumber(Bounds("float", 0, high=MAX_SECONDS)),
    help="Wait S seconds at most (exit 5 if still running); 0: do not wait. "
    "Default: as long as it takes.",
)
@pass_app
def result(app: App, instance_ids: tuple[str, ...], wait_seconds: float | None) -> ExitCode:
    """Wait for instances to end; print each one's status and output (or error).

    With several ids, waits for all of them (with a progress bar) and
    prints a table. The exit code is 3 if an id names no instance, else 5
    if one is still running, else 1 if one did not complete.
    """
    ids = list(dict.fromkeys(instance_ids))  # each once, in the order given

    async def run(client: Client) -> ExitCode:
        began = time.perf_counter()
        outcomes = [_Outcome(one, None) for one in ids]
        limiter = trio.CapacityLimiter(_CONCURRENCY)

        async def look(outcome: _Outcome) -> None:
            async with limiter:
                outcome.info = await client.status(outcome.id)
            outcome.found = outcome.info is not None

        # An unknown id would be waited for until it appears: find those first.
        async with trio.open_nursery() as nursery:
            for outcome in outcomes:
                nursery.start_soon(look, outcome)
        if len(ids) == 1 and not outcomes[0].found:
            raise CliError(f"no instance {ids[0]!r}", ExitCode.NOT_FOUND)
        if wait_seconds != 0:
            async with _progress_bar(app, len(ids) > 1) as progress:
                await _wait_all(client, outcomes, wait_seconds, progress)
        _show_outcomes(app, outcomes, time.perf_counter() - began, single=len(ids) == 1)
        return _exit_code(outcomes)

    return app.run(run)


# -- inspecting -------------------------------------------------------------------------


async def _existing(client: Client, instance_id: str) -> InstanceInfo:
    """The instance's state; :class:`CliError` (not found) if there is none."""
    info = await client.status(instance_id)
    if info is None:
        raise CliError(f"no instance {instance_id!r}", ExitCode.NOT_FOUND)
    return info


@cli.command()
@click.argument("instance_id", metavar="ID", callback=_id_argument)
@pass_app
def status(app: App, instance_id: str) -> ExitCode:
    """Show an instance: status, input, output or error, and its steps."""

    async def run(client: Client) -> ExitCode:
        info = await _existing(client, instance_id)
        if app.json:
            app.document(info.to_data())
            return ExitCode.OK
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_row("id", info.id)
        grid.add_row("type", f"{info.type} v{info.version}")
        grid.add_row("status", _status_text(str(info.status)))
        if info.compensation:
            grid.add_row("compensation", info.compensation)
        grid.add_row("created", _clock(info.created_at))
        grid.add_row(
            "updated", f"{_clock(info.updated_at)}  (+{_span(info.updated_at - info.created_at)})"
        )
        grid.add_row("input", _json_view(info.input))
        if info.output is not None:
            grid.add_row("output", _json_view(info.output))
        if info.error is not None:
            grid.add_row("error", f"{info.error.type}: {info.error.message}")
        app.show(grid)
        if info.steps:
            table = _table("step", "status", "attempt", "scheduled", "finished", "error")
            for key, step in info.steps.items():
                scheduled = step.get("scheduled_at")
                finished = step.get("finished_at")
                table.add_row(
                    key,
                    str(step.get("status", "")),
                    str(step.get("attempt", "")),
                    f"+{_span(scheduled - info.created_at)}" if scheduled else "",
                    f"+{_span(finished - info.created_at)}" if finished else "",
                    _error_line(step.get("error")),
                )
            app.show(table)
        return ExitCode.OK

    return app.run(run)


@cli.command("list")
@click.option("--type", "workflow_type", callback=_name_argument("workflow type"))
@click.option(
    "--status",
    "status_name",
    type=click.Choice([str(s) for s in InstanceStatus]),
    help="Only instances in this status.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=MAX_LIMIT),
    default=50,
    show_default=True,
    help="Show the latest N that match.",
)
@pass_app
def list_(app: App, workflow_type: str | None, status_name: str | None, limit: int) -> ExitCode:
    """List the latest instances (in the order they started), optionally filtered."""

    async def run(client: Client) -> ExitCode:
        # The client pages oldest first: count the matches, then take the last page.
        _, total = await client.count_and_list(
            workflow_type=workflow_type, status=status_name, limit=0
        )
        page: list[InstanceSummary] = []
        if total:
            page, total = await client.count_and_list(
                workflow_type=workflow_type,
                status=status_name,
                limit=limit,
                offset=max(0, total - limit),
            )
        if app.json:
            app.document(
                {
                    "total": total,
                    "instances": [
                        {
                            "id": s.id,
                            "type": s.type,
                            "version": s.version,
                            "status": str(s.status),
                            "created_at": s.created_at,
                            "updated_at": s.updated_at,
                        }
                        for s in page
                    ],
                }
            )
            return ExitCode.OK
        table = _table("id", "type", "status", "started", "updated")
        for s in page:
            table.add_row(
                s.id,
                f"{s.type} v{s.version}",
                _status_text(str(s.status)),
                _clock(s.created_at),
                f"+{_span(s.updated_at - s.created_at)}",
            )
        if page:
            app.show(table)
        app.show(f"{len(page)} of {total} matching instances")
        return ExitCode.OK

    return app.run(run)


#: Detail keys ``history`` shows in columns of their own.
_HISTORY_COLUMNS: Final = frozenset({"step", "attempt", "error"})
#: Seconds ``history`` waits for a finished instance's last records to be readable.
_HISTORY_SETTLE: Final = 2.0


async def _settled_history(client: Client, info: InstanceInfo, limit: int) -> list[dict[str, Any]]:
    """The instance's history; for a finished instance, up to its final record.

    The orchestrator stores a state before it publishes that change's
    records, so a read right after an instance ended can miss the last few:
    read again (briefly) until the ``workflow.<status>`` record is there.
    """
    if not info.status.terminal:
        return await client.history(info.id, limit=limit)
    final = f"workflow.{info.status}"
    with trio.move_on_after(_HISTORY_SETTLE):
        while True:
            records = await client.history(info.id, limit=limit)
            if len(records) >= limit or any(r.get("kind") == final for r in records):
                return records
            await trio.sleep(0.05)
    return await client.history(info.id, limit=limit)


@cli.command()
@click.argument("instance_id", metavar="ID", callback=_id_argument)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Show the first N records at most.",
)
@pass_app
def history(app: App, instance_id: str, limit: int) -> ExitCode:
    """Show an instance's history: every record, times relative to the first."""

    async def run(client: Client) -> ExitCode:
        info = await _existing(client, instance_id)
        records = await _settled_history(client, info, limit)
        if app.json:
            app.document(records)
            return ExitCode.OK
        table = Table("seq", "time", "kind", "step", "attempt", "error", "detail")
        first = records[0].get("at", 0.0) if records else 0.0
        for record in records:
            detail = record.get("detail") or {}
            rest = {k: v for k, v in detail.items() if k not in _HISTORY_COLUMNS}
            attempt = detail.get("attempt")
            table.add_row(
                str(record.get("seq", "")),
                f"+{_span(record.get('at', first) - first)}",
                str(record.get("kind", "")),
                str(detail.get("step", "")),
                "" if attempt is None else str(attempt),
                _error_line(detail.get("error")),
                " ".join(f"{k}={dumps(v)}" for k, v in rest.items()),
            )
        app.show(table)
        return ExitCode.OK

    return app.run(run)


# -- acting on instances ------------------------------------------------------------------


@cli.command()
@click.argument("instance_id", metavar="ID", callback=_id_argument)
@click.argument("name", callback=_name_argument("signal name"))
@_payload_options("--data", "payload", "data", "payload")
@pass_app
def signal(
    app: App, instance_id: str, name: str, payload: Any, payload_file: str | None
) -> ExitCode:
    """Send signal NAME to an instance (kept until the instance waits for it)."""
    payload = _given_payload("--data", "payload", "data", payload, payload_file)

    async def run(client: Client) -> ExitCode:
        info = await _existing(client, instance_id)
        if info.status.terminal:
            app.warn(f"{instance_id} is {info.status}: the signal will not be used")
        await client.signal(instance_id, name, payload)
        if app.json:
            app.document({"id": instance_id, "signal": name, "status": str(info.status)})
        else:
            app.show(f"sent {name} to {instance_id}")
        return ExitCode.OK

    return app.run(run)


def _stop(app: App, instance_id: str, reason: str, terminate: bool) -> ExitCode:
    verb = "terminate" if terminate else "cancel"

    async def run(client: Client) -> ExitCode:
        info = await _existing(client, instance_id)
        if info.status.terminal:
            app.warn(f"{instance_id} is already {info.status}: nothing to {verb}")
        elif terminate:
            await client.terminate(instance_id, reason)
        else:
            await client.cancel(instance_id, reason)
        if app.json:
            app.document(
                {
                    "id": instance_id,
                    "requested": verb,
                    "status": str(info.status),
                    "sent": not info.status.terminal,
                }
            )
        elif not info.status.terminal:
            app.show(f"{verb} requested for {instance_id}")
        return ExitCode.OK

    return app.run(run)


@cli.command()
@click.argument("instance_id", metavar="ID", callback=_id_argument)
@click.option("--reason", default="", help="Recorded in the instance's history.")
@pass_app
def cancel(app: App, instance_id: str, reason: str) -> ExitCode:
    """Cancel an instance: its completed steps are compensated, then it ends cancelled."""
    return _stop(app, instance_id, reason, terminate=False)


@cli.command()
@click.argument("instance_id", metavar="ID", callback=_id_argument)
@click.option("--reason", default="", help="Recorded in the instance's history.")
@pass_app
def terminate(app: App, instance_id: str, reason: str) -> ExitCode:
    """Stop an instance at once, without compensation."""
    return _stop(app, instance_id, reason, terminate=True)


# -- the entry point ---------------------------------------------------------------------


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _classify(exc: BaseException, url: str) -> CliError | None:
    """The report of an error the user can act on; ``None`` for a bug (let it raise).

    By the error's class, never by a list of the engine's errors: an
    :class:`~actors.errors.ActorsError` carries its exit code (``None`` for
    the engine's own faults, which are bugs). A transport error is the
    broker's (:class:`~actors.errors.BrokerError`'s code), save a message
    over the broker's size and a spec or URL it refuses, which are the
    command's; its message is that of the first of its classes, in method
    resolution order, that has one below.
    """
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, ActorsError):
        if exc.exit_code is None:
            return None
        if isinstance(exc, DefinitionError):
            problems = [str(error) for error in exc.errors]
            return CliError("invalid definition", ExitCode(exc.exit_code), problems)
        return CliError(str(exc), ExitCode(exc.exit_code))
    if not isinstance(exc, TransportError):
        return None
    unreachable = f"cannot reach the broker at {url}: {exc}"
    reports: dict[type[TransportError], tuple[type[ActorsError], str]] = {
        AuthorizationError: (BrokerError, f"{url}: the server refused the credentials"),
        ConnectionLostError: (BrokerError, unreachable),
        TransportTimeoutError: (BrokerError, unreachable),
        StorageFullError: (
            BrokerError,
            f"the broker at {url} is out of storage and refused the write ({exc}); "
            "nothing was stored: retry once space is freed (see docs/operations.md)",
        ),
        TooLargeError: (SizeLimitError, str(exc)),
        InvalidSpecError: (RequestError, str(exc)),
        TransportError: (BrokerError, f"the broker at {url} failed: {exc}"),
    }
    kind, message = next(reports[cls] for cls in type(exc).__mro__ if cls in reports)
    assert kind.exit_code is not None, kind
    return CliError(message, ExitCode(kind.exit_code))


#: The group's options a config file may set (the file's keys are their names).
_GROUP_KEYS: Final = (
    "url", "user", "password", "token", "creds", "tls_ca", "tls_cert", "tls_key",
    "replicas", "connect_timeout",
)  # fmt: skip
#: The ``dev`` command's options a config file may set.
_DEV_KEYS: Final = ("log_level", "log_format")


def _config_defaults(args: Sequence[str]) -> dict[str, Any]:
    """Click's ``default_map`` from the config file ``args`` or ``ACTORS_CONFIG`` name.

    Click ranks an option's sources as we want: the command line, then its
    ``ACTORS_*`` variable, then the ``default_map``, then the default. The
    file is found before click parses (its values are those defaults), by
    looking for ``--config`` among all of ``args`` up to ``--``. Raises
    :class:`ConfigError` for a file that is missing or wrong.
    """
    path = config_path(args)
    if path is None:
        return {}
    values = load_config(path, "cli")
    defaults: dict[str, Any] = {key: values[key] for key in _GROUP_KEYS if key in values}
    dev = {key: values[key] for key in _DEV_KEYS if key in values}
    if dev:
        defaults["dev"] = dev
    return defaults


def main(argv: Sequence[str] | None = None, *, prog_name: str = PROG) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit code.

    Never raises for a mistake of the user's or an unreachable broker: those
    print to stderr and map to an :class:`ExitCode`. Usage errors exit 4,
    not click's 2, so that 2 always means the broker. A bug still raises.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    app = App()
    # The group's callback sets this; click reports some usage errors (an
    # unknown command) before that callback runs, and they are JSON too.
    app.json = "--json" in args
    try:
        defaults = _config_defaults(args)
    except ConfigError as exc:
        app.error(str(exc), ExitCode.INVALID)
        return ExitCode.INVALID
    try:
        returned = cli.main(
            args=args,
            prog_name=prog_name,
            standalone_mode=False,
            obj=app,
            default_map=defaults,
        )
    except click.UsageError as exc:
        # One line, as every other error: what is wrong, and where help is.
        hint = "" if exc.ctx is None else f" (see '{exc.ctx.command_path} --help')"
        app.error(exc.format_message() + ("" if app.json else hint), ExitCode.INVALID)
        return ExitCode.INVALID
    except click.ClickException as exc:
        app.error(exc.format_message(), ExitCode.INVALID)
        return ExitCode.INVALID
    except (click.Abort, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    except BaseException as exc:
        leaves = _leaves(exc)
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            return ExitCode.INTERRUPTED
        # Trio wraps what fails in a nursery in a group: report its first leaf we know.
        for leaf in leaves:
            report = _classify(leaf, app.url)
            if report is not None:
                app.error(report.message, report.code, report.details)
                return report.code
        raise
    # A command returns its exit code; --help and the like return 0 or None.
    return int(returned) if isinstance(returned, int) else ExitCode.OK
