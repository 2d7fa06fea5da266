"""Assertion rewriting for the suite's modules, which are not test modules of their own."""

from __future__ import annotations

import pkgutil
import sys
from collections.abc import Iterable

import pytest


def rewrite_assertions(package: str, path: Iterable[str]) -> None:
    """Have pytest rewrite the assertions of ``package``'s modules not imported yet.

    Called before they are imported, as pytest rewrites a test module's: a
    failed check then shows the values it compared, not a bare AssertionError.
    """
    names = (f"{package}.{module.name}" for module in pkgutil.iter_modules(path))
    pytest.register_assert_rewrite(*(name for name in names if name not in sys.modules))
