"""What a failure means to the command line: its exit code and the line that reports it.

The one place that maps errors to exit codes. Client commands map with
:func:`client_error` to an :class:`ExitCode` (docs/cli.md, "Exit codes"),
by the exit code each error's class carries (:mod:`actors.errors`);
the services (``orchestrator``, ``worker``) end with :data:`SERVICE_ERROR`
for anything that keeps them from serving (docs/operations.md, "Exit code
2"), reported by :func:`service_error` and :func:`service_usage`; ``dev``
and ``demo`` end with :data:`RUN_FAILED` for what fails once they run
(:func:`run_failure`). None prints a traceback for a mistake of the user's
or a broker that is down; a bug (an error not listed here) still raises.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Final

import click
import trio

from transport import (
    AuthorizationError,
    ConnectionLostError,
    InvalidSpecError,
    StorageFullError,
    TooLargeError,
    TransportError,
    TransportTimeoutError,
)

from .._groups import leaves
from ..core import DefinitionError
from ..errors import ActorsError, BrokerError, RequestError, SizeLimitError
from ..observability import ProbesPortError
from ..runtime import WorkflowError
from ..testing import NatsServerError
from ._config import ConfigError

__all__ = [
    "RUN_FAILED",
    "SERVICE_ERROR",
    "CliError",
    "DemoError",
    "ExitCode",
    "ModuleError",
    "client_error",
    "run_failure",
    "service_error",
    "service_usage",
]


class ExitCode(enum.IntEnum):
    """What a client command's exit code means; docs/cli.md has the same table."""

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


#: ``dev``'s and ``demo``'s exit code for what fails once they run.
RUN_FAILED: Final = 1
#: A service's exit code for whatever keeps it from serving: a usage error, a
#: file it cannot read, a broker it cannot reach or that refuses it. One code,
#: so that a supervisor reads the reason before restarting in a loop.
SERVICE_ERROR: Final = 2


class CliError(RequestError):
    """A failure to report in one line (plus ``details``) and exit with ``code``."""

    def __init__(self, message: str, code: ExitCode, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.exit_code = int(code)  # this report's, not its class's (see ActorsError)
        self.details = tuple(details)


class DemoError(Exception):
    """The demo could not run (a service died); the message says which."""


class ModuleError(RequestError, ValueError):
    """A module of activities could not be imported, or holds none; the message says which."""


def client_error(exc: BaseException, url: str) -> CliError | None:
    """The report of an error a client command's user can act on; ``None`` for a bug.

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


def service_error(exc: BaseException) -> str | None:
    """Why a service cannot serve, in one line, for an error that ends it with
    :data:`SERVICE_ERROR`: the broker (unreachable, refusing, failing; inside
    the service's nurseries too), options that contradict each other, a file
    of the connection that cannot be read. ``None`` for anything else (a bug).
    """
    if isinstance(exc, TransportError | ConfigError | ProbesPortError):
        # InvalidSpecError (user and token) is a TransportError too.
        return str(exc)
    if isinstance(exc, BaseExceptionGroup):
        found = [service_error(leaf) for leaf in leaves(exc)]
        if found and all(line is not None for line in found):
            return found[0]
    return None


def service_usage(exc: click.ClickException) -> str:
    """A service's usage error in the words its documentation uses.

    ``argument --ack-wait: must be a number above 0 ...``,
    ``unrecognized arguments: --bogus``, ``the following arguments are
    required: --activities``; anything else as click says it.
    """
    if isinstance(exc, click.NoSuchOption):
        return f"unrecognized arguments: {exc.option_name}"
    if isinstance(exc, click.BadParameter) and exc.param is not None:
        flag = max(exc.param.opts, key=len)
        if isinstance(exc, click.MissingParameter):
            return f"the following arguments are required: {flag}"
        return f"argument {flag}: {exc.message}"
    return exc.format_message()


#: What fails ``dev`` or ``demo`` once they run: the broker or the embedded
#: server, an example workflow, a wait that ran out, a port or host that
#: cannot be bound, a service process that died.
_RUN_FAILURES: Final = (
    TransportError,
    NatsServerError,
    WorkflowError,
    trio.TooSlowError,
    OSError,
    DemoError,
)


def run_failure(exc: BaseException) -> str | None:
    """The line (``TypeName: message``) for a failure of ``dev`` or ``demo``; ``None``
    for anything else (a bug). Inside Trio's nurseries' groups too: the first leaf.
    """
    found = leaves(exc)
    if all(isinstance(leaf, _RUN_FAILURES) for leaf in found):
        return f"{type(found[0]).__name__}: {found[0]}"
    return None
