"""How the client commands print: tables and text for a person, or one JSON document.

:class:`Output` writes on stdout and stderr (``--json`` makes errors JSON
objects too); the functions format the values the commands show: statuses,
times, durations, errors and JSON values.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import click
from rich.console import Console, RenderableType
from rich.json import JSON
from rich.table import Table
from rich.text import Text

from ..wire import dumps
from ._errors import ExitCode

__all__ = ["Output", "clock", "error_line", "json_view", "span", "status_text", "new_table"]

#: The width of tables written to a pipe or a file (unless ``COLUMNS`` says otherwise).
_PIPE_WIDTH: Final = 200


class Output:
    """Where a client command prints, and how (``json``: one JSON document)."""

    def __init__(self) -> None:
        self.json = False
        # Markup and emoji codes off: instance data must print as it is (a
        # "[red]" in an output is text, not a style).
        self.out = Console(markup=False, emoji=False, highlight=False, soft_wrap=False)
        self.err = Console(stderr=True, markup=False, emoji=False, highlight=False)
        if not self.out.is_terminal and "COLUMNS" not in os.environ:
            # Piped output goes to programs, files and pagers: rich would wrap
            # it at 80 columns; give tables room to keep a row on one line.
            self.out.width = _PIPE_WIDTH

    def document(self, data: Any) -> None:
        """Print ``data`` as the command's one JSON document on stdout.

        Standard JSON whatever the data holds: values JSON lacks are spelled
        as the HTTP API spells them (see :func:`actors.wire.dumps`).
        """
        sys.stdout.write(dumps(data, indent=2) + "\n")
        sys.stdout.flush()

    def show(self, *renderables: RenderableType | str) -> None:
        """Print human output on stdout."""
        self.out.print(*renderables)

    def result(self, data: Any, text: RenderableType | str) -> ExitCode:
        """Print a command's result, ``data`` with ``--json`` and ``text`` without; ``OK``.

        For the commands whose result is one document or one line: the
        caller returns what this returns. A line (``str``) is printed as it
        is, never wrapped (it may be an id a script reads).
        """
        if self.json:
            self.document(data)
        elif isinstance(text, str):
            self.line(text)
        else:
            self.show(text)
        return ExitCode.OK

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


def json_view(value: Any) -> RenderableType:
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


def new_table(*columns: str) -> Table:
    """A table whose first column is a name or id: folded if need be, never cut short."""
    made = Table()
    made.add_column(columns[0], overflow="fold")
    for column in columns[1:]:
        made.add_column(column)
    return made


def status_text(status: str) -> Text:
    """An instance's status, coloured on a terminal."""
    return Text(status, style=_STATUS_STYLES.get(status, ""))


def clock(at: float | None) -> str:
    """A time (seconds since the epoch) as local date and time; ``""`` for none."""
    if not at:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def span(seconds: float) -> str:
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


def error_line(error: Mapping[str, Any] | None) -> str:
    """An error's data (``{"type", "message", ...}``) on one line; ``""`` for none."""
    if not error:
        return ""
    return f"{error.get('type', 'Error')}: {error.get('message', '')}"
