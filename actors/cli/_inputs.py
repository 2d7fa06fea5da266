"""What the client commands read: payloads (JSON, or files of JSON or YAML), ids and names.

Every value is checked before a command connects, so that a mistake is a
usage error (exit 4) and nothing is sent: a payload must be a value the
engine carries (strict JSON within its bounds), a file at most
:data:`MAX_FILE_BYTES` of UTF-8, an id or a name a valid subject token.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Final

import click
import yaml

from ..core import MAX_VERSION, InvalidNameError, check_instance_id, check_name
from ..wire import DEFAULT_LIMITS, JsonError, check_payload, loads
from ._errors import CliError, ExitCode
from ._options import BoundedNumber, Decorated
from ._settings import Bounds

__all__ = [
    "MAX_FILE_BYTES",
    "VERSION",
    "format_of",
    "given_payload",
    "id_argument",
    "name_argument",
    "payload_options",
    "read_text",
]

#: The most bytes read from a file or stdin: the largest message the engine
#: carries (and the HTTP API's largest body). A bigger one is refused unread.
MAX_FILE_BYTES: Final = DEFAULT_LIMITS.max_bytes
#: A definition's version, as ``--version`` takes it.
VERSION: Final = BoundedNumber(Bounds("int", 1, high=MAX_VERSION))


def count_option(
    flag: str, *, default: int, help: str, most: int | None = None
) -> Callable[[Decorated], Decorated]:
    """An option for how many (of instances, of records): 1 to ``most`` (or more), ``default``."""
    return click.option(
        flag, type=click.IntRange(min=1, max=most), default=default, show_default=True, help=help
    )


def _payload(text: str, what: str) -> Any:
    """``text`` as strict JSON holding a payload the engine carries; ``ValueError`` saying why.

    ``what`` names the value in the message (``input``, ``data``).
    """
    value = loads(text)
    check_payload(value, what)
    return value


def payload_options(
    option: str, dest: str, what: str, label: str
) -> Callable[[Decorated], Decorated]:
    """A payload's two options: ``--OPTION JSON``, and ``--OPTION-file F`` (or ``-``, stdin).

    The value given is parsed at once (:func:`_payload`); the file's is read
    by :func:`given_payload` in the command, which also refuses both.
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

    def decorate(command: Decorated) -> Decorated:
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


def given_payload(option: str, dest: str, what: str, value: Any, path: str | None) -> Any:
    """The payload of :func:`payload_options`: the option's, the file's, or ``None``.

    Raises ``click.UsageError`` if both are given, :class:`CliError` for a
    file that cannot be read or holds no payload.
    """
    given = click.get_current_context().get_parameter_source(dest)
    if path is None:
        return value
    if given is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError(f"give {option} or {option}-file, not both")
    return _payload_file(path, what)


def id_argument(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Argument/option callback: the instance id (or ids) checked before connecting."""
    values = value if isinstance(value, tuple) else (value,)
    for one in values:
        if one is not None:
            try:
                check_instance_id(one)
            except InvalidNameError as exc:
                raise click.BadParameter(str(exc)) from None
    return value


def name_argument(what: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """Argument/option callback: a name (``workflow type``, ``signal name``) checked."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None:
            try:
                check_name(what, value)
            except InvalidNameError as exc:
                raise click.BadParameter(str(exc)) from None
        return value

    return check


def read_text(path: str) -> str:
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


def format_of(path: str) -> str:
    """The format a definition file is read in: ``json`` if named so, else ``yaml``."""
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
    text = read_text(path)
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
