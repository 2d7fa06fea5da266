"""The command line: ``python -m actors`` and the services' entry points, with their settings."""

from ._commands import BoundedNumber as BoundedNumber
from ._commands import CliError as CliError
from ._commands import ExitCode as ExitCode
from ._commands import cli as cli
from ._commands import main as main
from ._config import Bounds as Bounds
from ._config import Defaults as Defaults
from ._dev import DevOptions as DevOptions
from ._dev import run_dev as run_dev
from ._service import ModuleError as ModuleError
from ._service import ServiceParser as ServiceParser
from ._service import activities_of as activities_of
from ._service import add_connection_flags as add_connection_flags
from ._service import add_setting as add_setting
from ._service import parse_service_args as parse_service_args
from ._service import run_main as run_main
from ._service import setup_logging as setup_logging

__all__ = [
    "BoundedNumber",
    "Bounds",
    "CliError",
    "Defaults",
    "DevOptions",
    "ExitCode",
    "ModuleError",
    "ServiceParser",
    "activities_of",
    "add_connection_flags",
    "add_setting",
    "cli",
    "main",
    "parse_service_args",
    "run_dev",
    "run_main",
    "setup_logging",
]
