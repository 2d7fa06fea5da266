"""The command line's group: its options, and the :class:`App` they set up for every command.

Every command of ``python -m actors`` (and of the ``actors`` script) is a
command of :data:`cli`. The client commands (``start``, ``status``, ...)
connect with the group's options (``python -m actors --url URL status ID``)
through :meth:`App.run`; ``orchestrator`` and ``worker`` have the same
connection options of their own, and take those given before them too
(see :mod:`actors.cli._main`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import click
import trio

from transport import MEMORY_SCHEME, ConnectOptions, InvalidSpecError, parse_url

from ..runtime import Client
from ..wire import Layout
from ._config import ConfigError
from ._connection import check_connect_files, connect_options, connection_options
from ._errors import CliError, ExitCode
from ._options import Group, config_option, setting_option
from ._output import Output
from ._settings import SETTINGS, default_of

__all__ = ["CONTEXT", "App", "cli", "pass_app"]

#: The name the command line's connection shows in the server's monitoring.
_CLIENT_NAME: Final = "actors-cli"
#: What every command's context shares: ``-h`` for help, and room for the help's lines.
CONTEXT: Final[dict[str, Any]] = {
    "help_option_names": ["-h", "--help"],
    "max_content_width": 100,
}


class App(Output):
    """What the group's options set up, handed to every command as click's ``obj``.

    ``main`` creates it before parsing so that errors raised anywhere (option
    callbacks included) are reported in the format the user asked for.
    """

    def __init__(self) -> None:
        super().__init__()
        self.url: str = SETTINGS["url"].default
        self.options = ConnectOptions(name=_CLIENT_NAME)
        self.replicas: int = default_of(Layout, "replicas")

    def run(self, command: Callable[[Client], Awaitable[ExitCode]]) -> ExitCode:
        """Connect to the engine, run ``command`` with a client, return its exit code.

        Raises :class:`CliError` for a ``memory://`` URL (a memory broker
        lives in one process, so the CLI's would be empty and gone when it
        exits) and for a file of the connection that cannot be read.
        Transport and client errors propagate to :func:`actors.cli.main`.
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


@click.group(cls=Group, context_settings=CONTEXT)
@config_option
@connection_options
# The replicas of the engine's assets, as every engine process provisions them.
@setting_option("replicas", default=default_of(Layout, "replicas"))
@setting_option("connect_timeout")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")
@pass_app
def cli(
    app: App, /, url: str, replicas: int, connect_timeout: float, as_json: bool, **given: Any
) -> None:
    """Run the engine's services; register definitions; start, inspect, signal and stop instances.

    'orchestrator' and 'worker' are the engine's services; 'dev' runs the
    whole engine in one process and 'demo' runs the examples. Every other
    command needs a running engine: a NATS server with an orchestrator and
    workers. Exit codes: 0 done, 1 a workflow did not complete, 2 broker
    unreachable, 3 not found, 4 invalid command or input, 5 still running
    when a wait ran out. A service exits 2 for whatever keeps it from serving.
    """
    app.json = as_json
    app.url = url
    app.replicas = replicas
    try:
        app.options = connect_options(given, _CLIENT_NAME, connect_timeout=connect_timeout)
    except InvalidSpecError as exc:
        raise click.UsageError(str(exc)) from None
