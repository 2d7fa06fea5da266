"""The entry points: :func:`main` (``python -m actors``, the ``actors`` script) and
:func:`run_service` (``python -m actors.orchestrator``, ``python -m actors.worker``).

Every command is a command of :data:`actors.cli._app.cli`, registered by the
``@cli.command()`` that defines it in its module (imported below): adding
a command is writing that one function. Its settings' options come from
:data:`actors.cli._settings.SETTINGS`, and the config file's tables follow
from the commands (:func:`config_tables`): nothing else lists them.

The client commands report errors with their :class:`~actors.cli._errors.ExitCode`
(usage errors exit 4). The services keep the conventions of services
wherever they are started from: exit 2 and one line naming the service for
anything that keeps them from serving, the line a supervisor logs. So
:func:`main` hands ``orchestrator`` and ``worker`` to :func:`run_service`,
with the group's options given before them (``--url X orchestrator``) as
if given after.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final

import click

from .._groups import leaves

# The command modules register their commands when imported: nothing else names them.
from . import (  # noqa: F401
    _definitions,
    _demo,
    _dev,
    _flow,
    _instances,
    _operations,
    _schedules,
    _services,
    _waiting,
    _workers,
)
from ._app import App, cli
from ._config import ConfigError, config_path, load_config
from ._errors import SERVICE_ERROR, ExitCode, client_error, service_usage
from ._options import is_service, settings_of, table_of

__all__ = ["PROG", "SERVICES", "config_tables", "main", "run_service"]

#: The command line's name when run as a module, and in messages of calls in this process.
PROG: Final = "python -m actors"
#: The commands that run as services (see the module's docstring): orchestrator, worker.
SERVICES: Final[Mapping[str, click.Command]] = {
    name: command for name, command in cli.commands.items() if is_service(command)
}


def config_tables(command: click.Command = cli) -> dict[str, set[str]]:
    """Each table of the config file, with the keys of the commands it configures."""
    tables: dict[str, set[str]] = {}

    def visit(one: click.Command) -> None:
        tables.setdefault(table_of(one), set()).update(settings_of(one))
        if isinstance(one, click.Group):
            for sub in one.commands.values():
                visit(sub)

    visit(command)
    return tables


def _default_map(command: click.Command, values: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Click's ``default_map`` for ``command`` (and its subcommands) from the file's tables."""
    own = values.get(table_of(command), {})
    defaults: dict[str, Any] = {k: v for k, v in own.items() if k in settings_of(command)}
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            inner = _default_map(sub, values)
            if inner:
                defaults[name] = inner
    return defaults


def _file_defaults(args: Sequence[str], command: click.Command) -> dict[str, Any]:
    """The ``default_map`` of ``command`` from the config file ``args`` or ``ACTORS_CONFIG`` name.

    Click ranks an option's sources as the settings are documented: the
    command line, then its ``ACTORS_*`` variable, then the ``default_map``,
    then the default. The file is found before click parses (its values
    are those defaults), by looking for ``--config`` among all of ``args``
    up to ``--``. Raises :class:`ConfigError` for a file that is missing or
    wrong (anywhere, for any command).
    """
    path = config_path(args)
    if path is None:
        return {}
    return _default_map(command, load_config(path, config_tables()))


def run_service(name: str, argv: Sequence[str] | None = None, *, prog_name: str) -> int:
    """Run service ``name`` (``orchestrator``, ``worker``) with ``argv``; the exit code.

    ``argv`` defaults to ``sys.argv[1:]``; ``prog_name`` is how the service
    was started, for help and messages. Never raises for a mistake of the
    user's or a broker that is down: a usage error, a config file that is
    wrong and a broker that cannot be reached or refuses the service end it
    with code 2 and one line on stderr that starts with ``name:``.
    """
    command = SERVICES[name]
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        defaults = _file_defaults(args, command)
        returned = command.main(
            args, prog_name=prog_name, standalone_mode=False, default_map=defaults
        )
    except ConfigError as exc:
        print(f"{name}: {exc} (see {prog_name} --help)", file=sys.stderr)
        return SERVICE_ERROR
    except click.ClickException as exc:
        ctx = getattr(exc, "ctx", None)  # a usage error's; not every ClickException has one
        where = prog_name if ctx is None else ctx.command_path
        print(f"{name}: {service_usage(exc)} (see {where} --help)", file=sys.stderr)
        return SERVICE_ERROR
    # A service returns its exit code; --help returns 0 or None.
    return int(returned) if isinstance(returned, int) else 0


def _command_at(args: Sequence[str]) -> int | None:
    """Where the command's name is in ``args``, past the group's options; ``None`` if not there.

    Parsed as click parses the group: an option that takes a value skips the
    next token too.
    """
    takes_value = {
        opt
        for param in cli.params
        if isinstance(param, click.Option) and not param.is_flag
        for opt in param.opts
    }
    index = 0
    while index < len(args):
        token = args[index]
        if token == "--":
            return index + 1 if index + 1 < len(args) else None
        if not token.startswith("-") or token == "-":
            return index
        index += 2 if token in takes_value else 1
    return None


def main(argv: Sequence[str] | None = None, *, prog_name: str | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit code.

    ``prog_name`` is how the command line was started (default: the
    script's name, or :data:`PROG` for an ``argv`` given in this process).
    Never raises for a mistake of the user's or an unreachable broker:
    those print to stderr and map to an :class:`ExitCode`. Usage errors
    exit 4, not click's 2, so that 2 always means the broker. A bug still
    raises. ``orchestrator`` and ``worker`` run as services
    (:func:`run_service`).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if prog_name is None:
        prog_name = os.path.basename(sys.argv[0]) if argv is None else PROG
    at = _command_at(args)
    if at is not None and args[at] in SERVICES and not {"-h", "--help"} & set(args[:at]):
        # The group's options become the service's, before its own (which win).
        before = args[: at - 1] if args[at - 1 : at] == ["--"] else args[:at]
        name = args[at]
        return run_service(name, [*before, *args[at + 1 :]], prog_name=f"{prog_name} {name}")
    app = App()
    # The group's callback sets this; click reports some usage errors (an
    # unknown command) before that callback runs, and they are JSON too.
    app.json = "--json" in args
    try:
        defaults = _file_defaults(args, cli)
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
        found = leaves(exc)
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in found):
            return ExitCode.INTERRUPTED
        # Trio wraps what fails in a nursery in a group: report its first leaf we know.
        for leaf in found:
            report = client_error(leaf, app.url)
            if report is not None:
                app.error(report.message, report.code, report.details)
                return report.code
        raise
    # A command returns its exit code; --help and the like return 0 or None.
    return int(returned) if isinstance(returned, int) else ExitCode.OK
