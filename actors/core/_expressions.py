"""Mappings and conditions: JMESPath expressions compiled once, never ``eval``.

JMESPath is a query language with no loops, no recursion and no side effects,
so an expression over a bounded document finishes. Two things are left to
guard. The compiler: the parser recurses once per nesting level, so an
expression's length and bracket depth are capped before it is parsed. And
the cost of evaluating: bounded is not cheap, since each projection can
multiply what the one before produced (``input[].[@,@][].[@,@][]...``
doubles a list per 8 characters: a 200-character expression would build
2**25 copies). Evaluation is metered: every step of the interpreter, and
every element that flattening, slicing, joining, comparing or printing
touches, counts against ``MAX_EVALUATION_COST``; an expression that would
go past it fails with :class:`ExpressionError` instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

import jmespath
import jmespath.exceptions
import jmespath.functions
import jmespath.parser
import jmespath.visitor

from ..errors import RequestError

if TYPE_CHECKING:
    from jmespath.visitor import _TreeNode

__all__ = [
    "MAX_EVALUATION_COST",
    "MAX_EXPRESSION_DEPTH",
    "MAX_EXPRESSION_LENGTH",
    "Expression",
    "ExpressionError",
    "kind_of",
]

MAX_EXPRESSION_LENGTH: Final = 4096
MAX_EXPRESSION_DEPTH: Final = 32
#: The most work one evaluation may do (see the module docstring): far more
#: than an expression over data within the engine's size limits needs, and
#: about a second of one core at worst.
MAX_EVALUATION_COST: Final = 1_000_000
#: The longest reason quoted from a jmespath error (which may quote a whole value).
_MAX_REASON: Final = 300
#: Characters of a string that count as one unit (copying them is cheap).
_CHARS_PER_UNIT: Final = 16
_OPENERS: Final = frozenset("([{")
_CLOSERS: Final = frozenset(")]}")


class ExpressionError(RequestError, ValueError, http_type="InvalidDefinition"):
    """An expression that does not compile, or failed on the data it was given."""


class Expression:
    """A compiled JMESPath expression and the text it came from.

    Two expressions are equal when their texts are.
    """

    __slots__ = ("_parsed", "source")

    def __init__(self, source: str) -> None:
        """Compile ``source``. Raises :class:`ExpressionError` with the reason."""
        if not isinstance(source, str):
            raise ExpressionError(f"an expression must be a string, not {type(source).__name__}")
        if not source.strip():
            raise ExpressionError("an expression must not be empty")
        if len(source) > MAX_EXPRESSION_LENGTH:
            raise ExpressionError(
                f"expression is {len(source)} characters long; the limit is {MAX_EXPRESSION_LENGTH}"
            )
        depth = 0
        for char in source:
            if char in _OPENERS:
                depth += 1
                if depth > MAX_EXPRESSION_DEPTH:
                    raise ExpressionError(
                        f"expression nests deeper than {MAX_EXPRESSION_DEPTH} brackets"
                    )
            elif char in _CLOSERS:
                depth = max(0, depth - 1)
        try:
            self._parsed = jmespath.compile(source)
        except jmespath.exceptions.JMESPathError as exc:
            raise ExpressionError(f"invalid expression {source!r}: {_first_line(exc)}") from None
        except RecursionError:
            raise ExpressionError(f"expression {source!r} nests too deeply") from None
        self.source = source

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        """The expression's value over ``context``.

        Raises :class:`ExpressionError` if evaluation fails (a function given
        the wrong type, for example); a missing field is ``None``, not an error.
        """
        interpreter = _Metered(MAX_EVALUATION_COST)
        try:
            return interpreter.visit(self._parsed.parsed, context)
        except jmespath.exceptions.JMESPathError as exc:
            raise ExpressionError(
                f"expression {self.source!r} failed: {_first_line(exc)}"
            ) from None
        except _TooExpensiveError:
            raise ExpressionError(
                f"expression {self.source!r} is too expensive: it would take more than "
                f"{MAX_EVALUATION_COST} steps on this data"
            ) from None
        except RecursionError:
            raise ExpressionError(f"expression {self.source!r} recursed too deeply") from None
        except (TypeError, ValueError, ArithmeticError) as exc:
            # What jmespath lets through from Python: ordering a string
            # against a number, ceil() of infinity, floor() of NaN.
            raise ExpressionError(
                f"expression {self.source!r} failed: {type(exc).__name__}: {exc}"
            ) from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expression) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def _first_line(exc: Exception) -> str:
    # Clipped: jmespath's type errors quote the whole value they were given.
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return line if len(line) <= _MAX_REASON else line[:_MAX_REASON] + "..."


class _TooExpensiveError(Exception):
    """An evaluation used up its budget."""


class _Metered(jmespath.visitor.TreeInterpreter):
    """jmespath's interpreter, charging its work against a budget.

    Each visited node costs 1 (a projection visits its right side once per
    element, ``map`` and ``sort_by`` their expression once per element).
    What Python does without visiting costs its size, charged before it is
    done: the elements flattened or sliced, the characters joined, and the
    whole of any value compared for equality or turned into a string
    (values can share parts, ``[@,@]`` twice over holds its input four
    times, so that size is counted by walking them, within the budget).
    """

    def __init__(self, budget: int) -> None:
        super().__init__(jmespath.visitor.Options(custom_functions=_MeteredFunctions(self)))
        self.left = budget

    def charge(self, cost: int) -> None:
        self.left -= cost
        if self.left < 0:
            raise _TooExpensiveError

    def size(self, value: Any) -> int:
        """How much ``value`` holds, shared parts counted each time; raises past the budget."""
        total = 0
        stack = [value]
        while stack:
            item = stack.pop()
            # Counted before its parts are stacked: the stack never holds
            # more than the budget allows.
            total += 1 + (len(item) // _CHARS_PER_UNIT if isinstance(item, str) else 0)
            if isinstance(item, list | dict):
                total += len(item)
            if total > self.left:
                raise _TooExpensiveError
            if isinstance(item, list):
                stack.extend(item)
            elif isinstance(item, dict):
                stack.extend(item.values())
        return total

    def visit(self, node: _TreeNode, *args: Any, **kwargs: Any) -> Any:
        self.charge(1)
        return super().visit(node, *args, **kwargs)

    def visit_flatten(self, node: _TreeNode, value: Any) -> Any:
        base = self.visit(node["children"][0], value)
        if not isinstance(base, list):
            return None
        self.charge(len(base) + sum(len(item) for item in base if isinstance(item, list)))
        merged: list[Any] = []
        for item in base:
            if isinstance(item, list):
                merged.extend(item)
            else:
                merged.append(item)
        return merged

    def visit_slice(self, node: _TreeNode, value: Any) -> Any:
        if isinstance(value, list):
            self.charge(len(value))
        return super().visit_slice(node, value)

    def visit_comparator(self, node: _TreeNode, value: Any) -> Any:
        left = self.visit(node["children"][0], value)
        right = self.visit(node["children"][1], value)
        self.charge(self.size(left) + self.size(right))
        compare = self.COMPARATOR_FUNC[node["value"]]
        if node["value"] in ("eq", "ne"):
            return compare(left, right)
        # Ordering is for numbers and strings only (as in jmespath).
        if not (_orderable(left) and _orderable(right)):
            return None
        return compare(left, right)


def _orderable(value: Any) -> bool:
    return isinstance(value, int | float | str) and not isinstance(value, bool)


class _MeteredFunctions(jmespath.functions.Functions):
    """jmespath's functions, charging an interpreter for what they copy or walk."""

    def __init__(self, interpreter: _Metered) -> None:
        self._interpreter = interpreter

    def call_function(self, function_name: str, resolved_args: Iterable[Any]) -> Any:
        resolved_args = list(resolved_args)
        meter = self._interpreter
        if function_name in ("to_string", "contains"):
            # Both walk whole values (printing, comparing for equality).
            meter.charge(sum(meter.size(arg) for arg in resolved_args))
        elif function_name == "join" and len(resolved_args) == 2:
            separator, parts = resolved_args
            if isinstance(parts, list) and isinstance(separator, str):
                meter.charge(
                    len(parts) * (1 + len(separator) // _CHARS_PER_UNIT)
                    + sum(len(part) // _CHARS_PER_UNIT for part in parts if isinstance(part, str))
                )
        else:
            # Type checks, sorts, copies, merges: about one unit per element.
            meter.charge(
                sum(
                    len(arg) // _CHARS_PER_UNIT if isinstance(arg, str) else len(arg)
                    for arg in resolved_args
                    if isinstance(arg, list | dict | str)
                )
            )
        return super().call_function(function_name, resolved_args)


def kind_of(value: object) -> str:
    """What a JSON value is, as an error message names it ("a list", "null")."""
    return {
        type(None): "null",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)
