"""Settings as click options, and the values the command line takes.

:func:`setting_option` makes the option of a :class:`~actors.cli._settings.Setting`:
its flag, variable, type (a number within its bounds, a text among its
choices, a list), help and default all come from the setting, so that every
command that has it takes it the same way. :class:`Command` is the class of
every command of the command line: it lets a list setting take several
values after one flag (``--only a b``), as it always has.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click

from ._settings import CONFIG_ENV, SETTINGS, Bounds, Setting

__all__ = [
    "BoundedNumber",
    "Command",
    "config_option",
    "is_service",
    "Group",
    "OneOf",
    "SettingOption",
    "setting_option",
    "settings_of",
    "table_of",
]

Decorated = TypeVar("Decorated", bound=Callable[..., Any])

if TYPE_CHECKING:
    # Generic in click 8.2 and later only: subscripted for the type checker alone.
    _NumberBase = click.ParamType[int | float]
    _TextBase = click.ParamType[str]
else:
    _NumberBase = click.ParamType
    _TextBase = click.ParamType


class BoundedNumber(_NumberBase):
    """A number option within :class:`~actors.cli._settings.Bounds` (finite, and in range).

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


class OneOf(_TextBase):
    """A text among ``choices`` (any case, if ``any_case``: then given as the choice is)."""

    name = "choice"

    def __init__(self, choices: Sequence[str], any_case: bool = False) -> None:
        self.choices = tuple(choices)
        self.any_case = any_case

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        compared = value.upper() if self.any_case and isinstance(value, str) else value
        if compared not in self.choices:
            self.fail(f"invalid choice: {value!r} (choose from {', '.join(self.choices)})")
        return compared


class _ListItem(_TextBase):
    """One item of a list setting; its variable is split at commas (empty items dropped)."""

    name = "text"
    envvar_list_splitter = ","

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return value

    def split_envvar_value(self, rv: str) -> Sequence[str]:
        return [item for item in rv.split(",") if item]


class SettingOption(click.Option):
    """The option of a setting: the setting is kept on it, for the config file's tables."""

    def __init__(self, *args: Any, setting: Setting, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setting = setting


#: A default this module reads from the setting (``None`` is a default: none).
_SETTINGS_OWN: Final[Any] = object()


def setting_option(
    key: str, *, default: Any = _SETTINGS_OWN, help: str | None = None, **extra: Any
) -> Callable[[Decorated], Decorated]:
    """The option of setting ``key``, for a command.

    ``default`` is the command's own: the default of the config field the
    setting fills (see :func:`actors.cli._settings.default_of`); without
    it, the setting's. ``help`` replaces the setting's help, for a command
    that uses it differently. A number's bounds are appended to the help.
    ``extra`` goes to ``click.option`` (``required=True``).
    """
    setting = SETTINGS[key]
    if default is _SETTINGS_OWN:
        default = setting.default
    text = help or setting.help
    metavar = setting.metavar
    kwargs: dict[str, Any] = {}
    if setting.bounds is not None:
        kwargs["type"] = BoundedNumber(setting.bounds)
        text = f"{text} {setting.bounds.describe().capitalize()}."
    elif setting.choices:
        kwargs["type"] = OneOf(setting.choices, setting.any_case)
        metavar = metavar or f"[{'|'.join(setting.choices)}]"
    elif setting.kind == "list":
        kwargs["type"] = _ListItem()
        kwargs["multiple"] = True
    if default is not None:
        kwargs["default"] = default
        kwargs["show_default"] = True
    return click.option(
        setting.flag,
        key,
        cls=SettingOption,
        setting=setting,
        envvar=setting.variable,
        show_envvar=True,
        metavar=metavar,
        help=text,
        **kwargs,
        **extra,
    )


def settings_of(command: click.Command) -> set[str]:
    """The keys of the settings ``command`` has options for."""
    return {param.setting.key for param in command.params if isinstance(param, SettingOption)}


def is_service(command: click.Command) -> bool:
    """Whether ``command`` runs as a service (see :class:`Command`)."""
    return isinstance(command, Command) and command.service


def table_of(command: click.Command) -> str:
    """The config file's table of ``command``: a service's own (its name), else ``cli``."""
    return (command.name or "cli") if is_service(command) else "cli"


def _spread(args: Sequence[str], flags: frozenset[str]) -> list[str]:
    """``args`` with each list flag's values each after a flag of their own.

    ``--only a b --x`` becomes ``--only a --only b --x``: the values run to
    the next token that starts with ``-``, as argparse's ``nargs="+"`` had them.
    """
    spread: list[str] = []
    index = 0
    while index < len(args):
        token = args[index]
        spread.append(token)
        index += 1
        if token == "--":
            spread.extend(args[index:])
            break
        if token in flags:
            first = True
            while index < len(args) and not args[index].startswith("-"):
                if not first:
                    spread.append(token)
                spread.append(args[index])
                first = False
                index += 1
    return spread


class Command(click.Command):
    """A command of the command line.

    A ``service`` runs as the engine's services do (``actors.cli._main.run_service``):
    the services' exit codes, and a table of its own in the config file,
    named after it. A list setting's flag takes every value up to the next
    option (``--activities a b``), and may be given again to add more.
    """

    def __init__(self, *args: Any, service: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.service = service

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        flags = frozenset(
            param.setting.flag
            for param in self.params
            if isinstance(param, SettingOption) and param.setting.kind == "list"
        )
        return super().parse_args(ctx, _spread(args, flags) if flags else args)


class Group(click.Group):
    """A group of the command line, whose commands are :class:`Command` s by default."""

    command_class = Command


def config_option(command: Decorated) -> Decorated:
    """The ``--config FILE`` option (read before click parses: see ``actors.cli._main``)."""
    return click.option(
        "--config",
        envvar=CONFIG_ENV,
        show_envvar=True,
        metavar="FILE",
        expose_value=False,
        help="A TOML file of settings: keys are the long options with underscores, at the "
        "top or in the command's table. Options and ACTORS_* variables override it.",
    )(command)
