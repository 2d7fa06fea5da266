"""Names of workflow types, steps, activities and instances, and step keys.

Every name becomes a subject token and a key-value key part, so names keep
to a conservative alphabet: no dots, wildcards or whitespace. A step key
names one running copy of a step: its id, ``@i`` for the item of each map
around it, and ``~undo`` for its compensation.
"""

from __future__ import annotations

import re
from typing import Final

from ..errors import RequestError

__all__ = [
    "ID_PATTERN",
    "NAME_PATTERN",
    "UNDO_SUFFIX",
    "InvalidNameError",
    "check_instance_id",
    "check_name",
    "check_step_key",
]

_NAME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
_KEY_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}(?:@[0-9]{1,9}){0,8}(?:~undo)?")


class InvalidNameError(RequestError, ValueError, http_type="InvalidName"):
    """A type, step, activity or instance name that cannot be a subject token."""


def check_name(what: str, name: object) -> str:
    """Return ``name`` if it is a valid type, step or activity name; else raise.

    Valid: a letter, then up to 63 letters, digits, ``_`` or ``-``.
    """
    rule = "is not a valid name: use a letter, then up to 63 letters, digits, '_' or '-'"
    return _matched(what, name, _NAME_RE, rule, shown=80)


#: Suffix of the key under which a step's compensation runs.
UNDO_SUFFIX: Final = "~undo"


def check_step_key(key: object) -> str:
    """Return ``key`` if it names a step copy or its compensation; else raise.

    A key is a step id, then ``@i`` for each map item around it, then
    ``~undo`` for its compensation: ``charge``, ``ship@12``, ``pay@3@0~undo``.
    """
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise InvalidNameError(f"step key {str(key)[:100]!r} is not valid")
    return key


def check_instance_id(instance_id: object) -> str:
    """Return ``instance_id`` if valid (1-128 of ``A-Za-z0-9_-``); else raise."""
    rule = "is not valid: use 1 to 128 letters, digits, '_' or '-'"
    return _matched("instance id", instance_id, _ID_RE, rule, shown=140)


def _matched(what: str, value: object, pattern: re.Pattern[str], rule: str, *, shown: int) -> str:
    """``value`` if it is a string ``pattern`` matches in full; else :class:`InvalidNameError`.

    The error names ``what``, then the first ``shown`` characters of the
    value and the ``rule`` it breaks.
    """
    if not isinstance(value, str):
        raise InvalidNameError(f"{what} must be a string, not {type(value).__name__}")
    if not pattern.fullmatch(value):
        raise InvalidNameError(f"{what} {value[:shown]!r} {rule}")
    return value


#: The patterns of names and instance ids, as JSON Schema writes them.
NAME_PATTERN: Final = f"^{_NAME_RE.pattern}$"
ID_PATTERN: Final = f"^{_ID_RE.pattern}$"
