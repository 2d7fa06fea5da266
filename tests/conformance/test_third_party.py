"""``transport.testing`` used as a third party would: a test module of its own, no conftest.

Each test writes a test module into an empty folder (no ``pyproject.toml``, so
none of this project's pytest settings: no Trio mode, no fixtures) and runs
pytest on it in a subprocess: the suite must bring what it needs, and find
what a transport gets wrong.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: A transport of "its own": the memory broker behind a proxy, so nothing of
#: this project's test set-up comes along; ``BROKEN`` makes it forget message ids.
MODULE = """
import contextlib

import pytest

from transport import open_transport
from transport.testing import Connect, TransportTests

BROKEN = {broken}


class Proxy:
    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def publish(self, subject, data, *, msg_id=None, **options):
        if BROKEN:
            msg_id = None
        return await self._inner.publish(subject, data, msg_id=msg_id, **options)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        await self._inner.aclose()


@contextlib.asynccontextmanager
async def open_mine():
    async with open_transport("memory://") as inner:
        yield Proxy(inner)


class TestMine(TransportTests):
    @pytest.fixture
    def connect(self) -> Connect:
        return open_mine

    @pytest.fixture
    def virtual_time(self) -> bool:
        return True
"""

#: A transport whose ``aclose`` also cancels the block it was opened for: the
#: rest of a test that closes it would be skipped, silently.
CANCELLING = """
import contextlib

import pytest
import trio

from transport import open_transport
from transport.testing import Connect, TransportTests


class Cancelling:
    def __init__(self, inner, scope):
        self._inner = inner
        self._scope = scope

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def aclose(self):
        await self._inner.aclose()
        self._scope.cancel()


@contextlib.asynccontextmanager
async def open_mine():
    async with open_transport("memory://") as inner, trio.open_nursery() as nursery:
        yield Cancelling(inner, nursery.cancel_scope)


class TestMine(TransportTests):
    @pytest.fixture
    def connect(self) -> Connect:
        return open_mine
"""


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _counts(output: str) -> dict[str, int]:
    return {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|errors?)", output)}


def test_a_transport_of_its_own_passes_the_whole_suite(tmp_path: Path) -> None:
    (tmp_path / "test_mine.py").write_text(MODULE.format(broken=False))
    ran = _pytest(tmp_path, "-vv")
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    # Every test of the suite ran and passed, async ones included (none
    # skipped as "async def functions are not natively supported").
    tests = [line for line in ran.stdout.splitlines() if line.startswith("test_mine.py::")]
    assert len(tests) > 100
    assert all(re.search(r" PASSED +\[", line) for line in tests), ran.stdout[-3000:]
    assert _counts(ran.stdout) == {"passed": len(tests)}, ran.stdout[-3000:]


def test_the_suite_finds_what_a_transport_gets_wrong(tmp_path: Path) -> None:
    (tmp_path / "test_mine.py").write_text(MODULE.format(broken=True))
    ran = _pytest(tmp_path, "-k", "duplicate or msg_id")
    assert ran.returncode == 1, ran.stdout[-3000:] + ran.stderr[-3000:]
    failed = set(re.findall(r"FAILED \S+::(test_\w+)", ran.stdout))
    assert {
        "test_publish_with_a_repeated_msg_id_is_a_duplicate_with_the_same_seq",
        "test_delayed_publish_with_a_repeated_msg_id_is_delivered_once",
    } <= failed, ran.stdout[-3000:]
    # The failure shows the values compared, not a bare AssertionError.
    assert "AssertionError: assert PubAck(" in ran.stdout, ran.stdout[-3000:]


def test_the_suite_finds_an_aclose_that_cancels_the_block_around_it(tmp_path: Path) -> None:
    (tmp_path / "test_mine.py").write_text(CANCELLING)
    # The operations test checkpoints after aclose every time; the channels test
    # only when its deliveries are not all in hand yet, so it cannot be relied on.
    ran = _pytest(tmp_path, "-k", "operations_after_aclose")
    assert ran.returncode == 1, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert _counts(ran.stdout) == {"failed": 1}, ran.stdout[-3000:]
    assert "aclose() cancelled the block it was called in" in ran.stdout, ran.stdout[-3000:]


def test_a_subclass_without_connect_is_told_what_to_provide(tmp_path: Path) -> None:
    (tmp_path / "test_none.py").write_text(
        "from transport.testing import TransportTests\n\n\n"
        "class TestNothing(TransportTests):\n    pass\n"
    )
    ran = _pytest(tmp_path, "-k", "test_kv_get_of_a_missing_key_returns_none")
    assert ran.returncode == 1
    assert "give it a `connect` fixture" in ran.stdout, ran.stdout[-3000:]
