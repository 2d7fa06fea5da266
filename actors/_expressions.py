"""Mappings and conditions: JMESPath expressions compiled once, never ``eval``.

JMESPath is a query language with no loops, no recursion and no side effects,
so an expression over a bounded document finishes in bounded time. What is
left to guard is the compiler: the parser recurses once per nesting level, so
an expression's length and bracket depth are capped before it is parsed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import jmespath
import jmespath.exceptions
import jmespath.parser

__all__ = ["MAX_EXPRESSION_DEPTH", "MAX_EXPRESSION_LENGTH", "Expression", "ExpressionError"]

MAX_EXPRESSION_LENGTH: Final = 4096
MAX_EXPRESSION_DEPTH: Final = 32
_OPENERS: Final = frozenset("([{")
_CLOSERS: Final = frozenset(")]}")


class ExpressionError(ValueError):
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
        try:
            return self._parsed.search(context)
        except jmespath.exceptions.JMESPathError as exc:
            raise ExpressionError(
                f"expression {self.source!r} failed: {_first_line(exc)}"
            ) from None
        except RecursionError:
            raise ExpressionError(f"expression {self.source!r} recursed too deeply") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expression) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
