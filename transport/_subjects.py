"""Subject-filter algebra, shared by the transports.

NATS refuses configurations whose filters could claim the same message twice
(two streams, two work-queue consumers) or that repeat themselves (one
consumer's filters). These helpers answer those questions on the patterns
alone, without enumerating subjects.
"""

from __future__ import annotations

import re

from ._errors import InvalidSpecError
from ._specs import subject_matches

_KEY_TOKEN = re.compile(r"^[-/_=A-Za-z0-9]+$")


def subjects_collide(a: str, b: str) -> bool:
    """True if some literal subject matches both filter patterns ``a`` and ``b``."""
    ta = a.split(".")
    tb = b.split(".")
    for i in range(min(len(ta), len(tb))):
        x, y = ta[i], tb[i]
        if x == ">" or y == ">":
            # ">" takes one or more tokens, and the other pattern has at least one here.
            return True
        if x != "*" and y != "*" and x != y:
            return False
    return len(ta) == len(tb)


def subject_is_subset(a: str, b: str) -> bool:
    """True if every subject matching pattern ``a`` also matches pattern ``b``."""
    ta = a.split(".")
    tb = b.split(".")
    for i, y in enumerate(tb):
        if i >= len(ta):
            return False
        x = ta[i]
        if y == ">":
            return True
        if x == ">":
            return False
        if y == "*":
            continue
        if x != y:
            return False
    return len(ta) == len(tb)


def check_consumer_filters(
    durable: str, filters: tuple[str, ...], stream: str, stream_subjects: tuple[str, ...]
) -> None:
    """Raise :class:`InvalidSpecError` if a consumer's filters repeat themselves
    or one of them takes no subject of its stream.

    nats-server accepts a filter outside the stream silently (a consumer that
    never receives anything); both transports refuse it instead.
    """
    for i, a in enumerate(filters):
        for b in filters[i + 1 :]:
            if subject_is_subset(a, b) or subject_is_subset(b, a):
                raise InvalidSpecError(f"consumer {durable}: filters {a!r} and {b!r} overlap")
        if not any(subjects_collide(a, s) for s in stream_subjects):
            raise InvalidSpecError(f"consumer {durable}: filter {a!r} is outside stream {stream}")


def any_collide(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """True if some subject matches a pattern of ``a`` and a pattern of ``b``."""
    return any(subjects_collide(x, y) for x in a for y in b)


class SubjectFilter:
    """A set of filter patterns, matched with a per-subject memo.

    Actor mailboxes reuse a modest set of subjects, so remembering the verdict
    per subject turns the token-by-token match into one dict lookup. The memo
    is cleared when it grows large, which bounds it.
    """

    __slots__ = ("_all", "_memo", "patterns")

    _MEMO_LIMIT = 4096

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.patterns = patterns
        # No patterns means "everything the stream holds".
        self._all = not patterns or ">" in patterns
        self._memo: dict[str, bool] = {}

    def __call__(self, subject: str) -> bool:
        if self._all:
            return True
        verdict = self._memo.get(subject)
        if verdict is None:
            verdict = any(subject_matches(p, subject) for p in self.patterns)
            if len(self._memo) >= self._MEMO_LIMIT:
                self._memo.clear()
            self._memo[subject] = verdict
        return verdict


def check_key_pattern(pattern: str) -> str:
    """Return ``pattern`` if it is a valid key pattern (``*`` and a final ``>``), else raise."""
    tokens = pattern.split(".")
    for i, token in enumerate(tokens):
        if token == "*" or (token == ">" and i == len(tokens) - 1):
            continue
        if not _KEY_TOKEN.match(token):
            raise InvalidSpecError(f"invalid key pattern {pattern!r}")
    return pattern
