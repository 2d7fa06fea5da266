"""The command line: ``python -m actors`` (the ``actors`` script) and every command of it.

One click group (:data:`cli`) holds every command: the client commands
(``definitions``, ``start``, ``status``, ...), the engine's services
(``orchestrator``, ``worker``), ``dev`` and ``demo``. Every setting is
defined once (:data:`SETTINGS`): its flag, ``ACTORS_*`` variable, TOML key,
bounds and help; its default is the engine config's. :func:`main` runs the
command line, :func:`run_service` one service (``python -m actors.orchestrator``).
"""

from ._app import cli as cli
from ._dev import DevOptions as DevOptions
from ._dev import run_dev as run_dev
from ._errors import CliError as CliError
from ._errors import ExitCode as ExitCode
from ._errors import ModuleError as ModuleError
from ._logs import setup_logging as setup_logging
from ._main import main as main
from ._main import run_service as run_service
from ._options import BoundedNumber as BoundedNumber
from ._services import activities_of as activities_of
from ._settings import SETTINGS as SETTINGS
from ._settings import Bounds as Bounds
from ._settings import Setting as Setting

__all__ = [
    "SETTINGS",
    "BoundedNumber",
    "Bounds",
    "CliError",
    "DevOptions",
    "ExitCode",
    "ModuleError",
    "Setting",
    "activities_of",
    "cli",
    "main",
    "run_dev",
    "run_service",
    "setup_logging",
]
