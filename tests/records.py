"""What a test's own activities did, recorded for that test alone.

Activities that a test serves in its own process (the ``engine`` fixtures)
note what they ran, or set an event the test waits for, in an object a
fixture makes afresh for each test; they find it through a context
variable. A record left by another test, or by the other transport's run of
the same test, is never seen, and ids need not differ between tests.

A module declares its records once and a fixture that makes them::

    SEEN = Records("seen", Seen)  # Seen: a dataclass of the module's records
    seen = SEEN.fixture("seen", autouse=True)

and its activities write to ``SEEN.get()``. The fixture is synchronous, so
it runs before the test's Trio run begins, and every task of that run, the
engine's workers and the threads of sync activities included, inherits
the variable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

import pytest

T = TypeVar("T")

__all__ = ["Records"]


class Records(Generic[T]):
    """A kind of records, made by ``factory``, one per test (see the module)."""

    def __init__(self, name: str, factory: Callable[[], T]) -> None:
        self._name = name
        self._factory = factory
        self._current: ContextVar[T] = ContextVar(name)

    def get(self) -> T:
        """The running test's records; ``RuntimeError`` outside :meth:`fresh`."""
        try:
            return self._current.get()
        except LookupError:
            raise RuntimeError(
                f"no {self._name!r} records: the test needs the fixture that makes them"
            ) from None

    @contextmanager
    def fresh(self) -> Iterator[T]:
        """New records, current until the block ends."""
        records = self._factory()
        token = self._current.set(records)
        try:
            yield records
        finally:
            self._current.reset(token)

    def fixture(self, name: str, *, autouse: bool = False) -> Any:
        """A pytest fixture ``name`` that makes these records afresh for each test
        (:meth:`fresh`) and gives them to the test. Assign it to a module-level
        name (the same, by convention) for pytest to find it."""

        def make() -> Iterator[T]:
            with self.fresh() as records:
                yield records

        return pytest.fixture(make, name=name, autouse=autouse)
