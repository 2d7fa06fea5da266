"""A failure as data: what a step, a child or an instance failed with.

Events (a worker's failed result), commands (a child's report to its
parent) and states all carry one, so it sits below all three.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["MAX_CAUSES", "ErrorInfo"]

#: The longest chain of causes an error keeps (see ``ErrorInfo``). Above
#: ``MAX_CHILD_DEPTH`` (``_steps/_child.py``), so that a chain of children
#: keeps every cause; far enough below the codec's nesting limit (32) for an
#: error stored inside a state's step or outbox.
MAX_CAUSES: Final = 20


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A failure as data: the error's type name, message and traceback.

    ``cause`` is the error behind this one, as data (a child workflow's).
    """

    type: str
    message: str
    traceback: str = ""
    non_retryable: bool = False
    cause: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.cause is not None:
            # A cause comes from the network (a worker's result) or from a
            # child, whose error has causes of its own: kept to a bounded
            # chain of known fields, so that the error fits the codec's
            # nesting limit wherever it is stored (state, history, results).
            object.__setattr__(self, "cause", _bounded_cause(self.cause, MAX_CAUSES))

    def to_data(self) -> dict[str, Any]:
        data = {
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
            "non_retryable": self.non_retryable,
        }
        if self.cause is not None:
            data["cause"] = dict(self.cause)
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ErrorInfo:
        cause = data.get("cause")
        return cls(
            str(data.get("type", "Error")),
            str(data.get("message", "")),
            str(data.get("traceback", "")),
            bool(data.get("non_retryable", False)),
            dict(cause) if isinstance(cause, Mapping) else None,
        )


def _bounded_cause(cause: Mapping[str, Any], levels: int) -> dict[str, Any]:
    """``cause`` as ``ErrorInfo.to_data`` gives it, with at most ``levels`` errors in its chain.

    Only the fields of an error are kept; the innermost one kept says so if
    deeper causes were dropped (its message names them all anyway: each
    child's error message quotes its own child's).
    """
    links: list[Mapping[str, Any]] = []
    current: Any = cause
    while isinstance(current, Mapping) and len(links) < levels:
        links.append(current)
        current = current.get("cause")
    bounded: dict[str, Any] | None = None
    for number, link in enumerate(reversed(links)):
        message = str(link.get("message", ""))
        if number == 0 and isinstance(current, Mapping):
            message += f" (its causes are not kept: a chain of more than {levels})"
        data: dict[str, Any] = {
            "type": str(link.get("type", "Error")),
            "message": message,
            "traceback": str(link.get("traceback", "")),
            "non_retryable": bool(link.get("non_retryable", False)),
        }
        if bounded is not None:
            data["cause"] = bounded
        bounded = data
    assert bounded is not None  # ``cause`` itself is a mapping: one link at least
    return bounded
