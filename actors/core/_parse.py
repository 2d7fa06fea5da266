"""Validating plain data into a :class:`~._definition.Definition`.

:func:`parse_definition` walks the data with a :class:`Checker`, which keeps
the path of the field being read and collects every problem it meets, so
that one attempt reports them all. What a definition and a list of steps
look like is checked here; each kind of step checks its own fields, in its
module under ``_steps/`` (reached through ``_steps.syntax``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

import yaml

from ._definition import (
    MAX_NESTING,
    MAX_STEPS,
    MAX_VERSION,
    Definition,
    DefinitionError,
    FieldError,
)
from ._expressions import Expression, ExpressionError, kind_of
from ._flow import parse_concurrency
from ._keys import InvalidNameError, check_name
from ._steps import STEP_KEYS, Step, syntax

__all__ = ["Checker", "load_definition", "parse_definition", "parse_duration"]

_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_TOP_KEYS: Final = frozenset({"type", "version", "steps", "output", "description", "concurrency"})


def parse_duration(value: object) -> float:
    """Seconds from ``1.5``, ``"500ms"``, ``"30s"``, ``"1m30s"``, ``"2h"``, ``"1d"``.

    Raises ``ValueError`` for anything else, negative numbers included.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float (and maybe for repr)
            raise ValueError("the number is too large to be a duration") from None
        if seconds < 0 or seconds != seconds or seconds == float("inf"):
            raise ValueError(f"{value!r} is not a duration (a finite number >= 0 is needed)")
        return seconds
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError(f"{value!r} is not a duration")
    text = value.strip()
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration (examples: 500ms, 30s, 1m30s, 2h, 1d)")
    return total


def load_definition(text: str | bytes, *, format: str = "yaml") -> Definition:
    """Parse a definition from YAML (a superset of JSON) or strict JSON text.

    Raises :class:`DefinitionError` for text that does not parse, as for a
    definition that is not valid.
    """
    if format not in ("json", "yaml"):
        raise ValueError(f"unknown definition format {format!r}: use yaml or json")
    try:
        data = json.loads(text) if format == "json" else yaml.safe_load(text)
    # ValueError: JSONDecodeError, and an integer literal of more than 4300
    # digits (Python's int/str conversion limit) in either format.
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise DefinitionError([FieldError("", f"not valid {format}: {exc}")]) from None
    return parse_definition(data)


def parse_definition(data: object) -> Definition:
    """Validate plain data and build the :class:`Definition`.

    Raises :class:`DefinitionError` listing every problem found, each with
    its field path.
    """
    checker = Checker()
    definition = checker.definition(data)
    if checker.errors or definition is None:
        raise DefinitionError(checker.errors or [FieldError("", "invalid definition")])
    return definition


class Checker:
    """Walks plain data, collecting :class:`FieldError` s with their paths.

    The reading methods record a problem and return ``None`` (or an empty
    list) for a field they cannot accept, so that the walk goes on and
    finds the others. A step whose fields have any problem is left out of
    the steps returned (the definition as a whole is refused anyway).
    """

    def __init__(self) -> None:
        self.errors: list[FieldError] = []
        self._path: list[str] = []
        #: Valid step ids met so far, anywhere in the definition.
        self._seen: set[str] = set()
        self._count = 0

    @contextmanager
    def at(self, part: str) -> Iterator[None]:
        """Read field ``part`` of the current one (``"[2]"``: an item of a list)."""
        self._path.append(part)
        try:
            yield
        finally:
            self._path.pop()

    def error(self, message: str) -> None:
        """Record a problem with the current field."""
        path = "".join(
            part if part.startswith("[") or i == 0 else f".{part}"
            for i, part in enumerate(self._path)
        )
        self.errors.append(FieldError(path, message))

    def mapping(self, data: object, allowed: frozenset[str], what: str) -> dict[str, Any] | None:
        """``data`` as a mapping of its ``allowed`` fields; any other field is a problem."""
        if not isinstance(data, Mapping):
            self.error(f"{what} must be a mapping, not {kind_of(data)}")
            return None
        for key in data:
            if not isinstance(key, str) or key not in allowed:
                with self.at(_key_text(key)):
                    self.error(f"unknown field (expected one of: {', '.join(sorted(allowed))})")
        return {k: v for k, v in data.items() if isinstance(k, str) and k in allowed}

    def name(self, data: Mapping[str, Any], key: str, what: str) -> str | None:
        """Required field ``key``: a valid name (see ``check_name``)."""
        with self.at(key):
            if key not in data:
                self.error("required")
                return None
            try:
                return check_name(what, data[key])
            except InvalidNameError as exc:
                self.error(str(exc))
                return None

    def expression(
        self, data: Mapping[str, Any], key: str, *, required: str | None = None
    ) -> Expression | None:
        """Field ``key`` compiled as an expression; ``None`` if absent (or invalid).

        ``required``: what the expression must give (``"a condition"``); then
        its absence is a problem too, that says so.
        """
        if data.get(key) is None:
            if required is not None:
                with self.at(key):
                    self.error(f"required: {required}")
            return None
        with self.at(key):
            try:
                return Expression(data[key])
            except ExpressionError as exc:
                self.error(str(exc))
                return None

    def duration(self, data: Mapping[str, Any], key: str, *, positive: bool) -> float | None:
        """Field ``key`` in seconds (see :func:`parse_duration`); ``None`` if absent or invalid."""
        if data.get(key) is None:
            return None
        with self.at(key):
            try:
                seconds = parse_duration(data[key])
            except ValueError as exc:
                self.error(str(exc))
                return None
            if positive and seconds <= 0:
                self.error("must be more than zero")
                return None
            return seconds

    def integer(
        self,
        data: Mapping[str, Any],
        key: str,
        default: int,
        low: int,
        high: int,
        out_of_range: str,
    ) -> int | None:
        """Field ``key`` (``default`` if absent): an integer from ``low`` to ``high``."""
        value = data.get(key, default)
        with self.at(key):
            if isinstance(value, bool) or not isinstance(value, int):
                self.error(f"must be an integer, not {kind_of(value)}")
                return None
            if not low <= value <= high:
                self.error(out_of_range)
                return None
            return value

    def number(
        self, data: Mapping[str, Any], key: str, default: float, low: float, high: float
    ) -> float | None:
        """Field ``key`` (``default`` if absent): a number from ``low`` to ``high``."""
        value = data.get(key, default)
        with self.at(key):
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.error(f"must be a number, not {kind_of(value)}")
                return None
            if not low <= value <= high:
                self.error(f"must be from {low} to {high}")
                return None
            return float(value)

    def version(self, data: Mapping[str, Any], *, newest: bool) -> int | None:
        """Field ``version``: a version number; with ``newest``, 0 (the default) for the newest."""
        if newest:
            return self.integer(
                data,
                "version",
                0,
                0,
                MAX_VERSION,
                f"must be from 1 to {MAX_VERSION} (or 0 for the newest)",
            )
        return self.integer(data, "version", 1, 1, MAX_VERSION, f"must be from 1 to {MAX_VERSION}")

    def definition(self, data: object) -> Definition | None:
        """The whole definition; ``None`` if anything in it has a problem."""
        top = self.mapping(data, _TOP_KEYS, "a definition")
        if top is None:
            return None
        workflow_type = self.name(top, "type", "workflow type")
        version = self.version(top, newest=False)
        description = top.get("description", "")
        if not isinstance(description, str):
            with self.at("description"):
                self.error("must be a string")
        steps = self.steps(top.get("steps"))
        output = self.expression(top, "output")
        concurrency = parse_concurrency(self, top.get("concurrency"))
        if self.errors or workflow_type is None or version is None:
            return None
        return Definition(
            type=workflow_type,
            version=version,
            steps=tuple(steps),
            output=output,
            description=description,
            concurrency=concurrency,
        )

    def steps(self, data: object, depth: int = 0, *, empty: bool = False) -> list[Step]:
        """A list of steps (at ``steps`` of the current path).

        ``depth`` counts the parallel, map and choice steps around it.
        ``empty`` allows an empty list (a choice's branches).
        """
        with self.at("steps"):
            if data is None:
                self.error("required: a list of at least one step")
                return []
            if not isinstance(data, list) or (not data and not empty):
                self.error("must be a list of at least one step")
                return []
            if not self.counted(len(data)):
                return []
        return self.sequence(data, "steps", depth)

    def counted(self, steps: int) -> bool:
        """Count ``steps`` more steps; ``False`` (a problem) once the definition has too many."""
        self._count += steps
        if self._count > MAX_STEPS:
            self.error(f"{self._count} steps; the limit is {MAX_STEPS} in all")
            return False
        return True

    def sequence(self, data: list[Any], key: str, depth: int) -> list[Step]:
        """The steps in list ``data`` (at ``key``), already counted."""
        steps: list[Step] = []
        for i, item in enumerate(data):
            with self.at(key), self.at(f"[{i}]"):
                step = self._step(item, depth)
                # Duplicates are found among valid ids even when their step has
                # other problems, so that every problem is reported at once.
                step_id = item.get("id") if isinstance(item, Mapping) else None
                if isinstance(step_id, str) and _valid_name(step_id):
                    if step_id in self._seen:
                        with self.at("id"):
                            # Unique across the whole definition, nested steps too.
                            self.error(f"duplicate step id {step_id!r}")
                    self._seen.add(step_id)
                if step is not None:
                    steps.append(step)
        return steps

    def nest(self, depth: int) -> int | None:
        """The depth inside a parallel, map or choice step at ``depth``; ``None`` if too deep."""
        if depth >= MAX_NESTING:
            self.error(f"parallel, map and choice steps nest at most {MAX_NESTING} deep")
            return None
        return depth + 1

    def branches(
        self, data: object, key: str, allowed: frozenset[str], what: str
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """Each branch at ``key`` (of a parallel or choice step) with its index.

        ``data`` must be a list of at least one branch, each a mapping of its
        ``allowed`` fields (see :meth:`mapping`); a branch that is not is a
        problem, and left out. The caller reads each branch at its path
        (``parallel[2]``): it is at it until it asks for the next.
        """
        with self.at(key):
            if not isinstance(data, list) or not data:
                self.error("must be a list of at least one branch")
                return
            if len(data) > MAX_STEPS:
                self.error(f"{len(data)} branches; the limit is {MAX_STEPS}")
                return
            for i, item in enumerate(data):
                with self.at(f"[{i}]"):
                    branch = self.mapping(item, allowed, what)
                    if branch is not None:
                        yield i, branch

    def _step(self, data: object, depth: int) -> Step | None:
        if not isinstance(data, Mapping):
            self.error(f"a step must be a mapping, not {kind_of(data)}")
            return None
        keys = [key for key in STEP_KEYS if key in data]
        if len(keys) != 1:
            self.error(
                "a step needs exactly one of: "
                + ", ".join(STEP_KEYS)
                + (f" (it has {', '.join(keys)})" if keys else "")
            )
            return None
        key = keys[0]
        before = len(self.errors)
        fields, parse = syntax(key)
        step = self.mapping(data, fields, f"a {key} step")
        if step is None:
            return None
        parsed = parse(self, step, self.name(step, "id", "step id"), depth)
        return parsed if len(self.errors) == before else None


def _valid_name(name: str) -> bool:
    try:
        check_name("name", name)
    except InvalidNameError:
        return False
    return True


def _key_text(key: object) -> str:
    """A mapping key as a path part; never fails, never long."""
    try:
        return str(key)[:64]
    except ValueError:  # an int too large to print
        return f"<{type(key).__name__} key>"
