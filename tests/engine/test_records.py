"""What activities record is the running test's own (``tests/records.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from flow import SEEN, Seen, note, result_of

import actors

if TYPE_CHECKING:
    from conftest import Engine


@actors.activity
async def noted(value: Any) -> Any:
    note("noted", value)
    return value


@pytest.mark.parametrize("run", [1, 2])
async def test_a_test_sees_only_the_records_of_its_own_activities(
    engine: Engine, seen: Seen, run: int
) -> None:
    # The same instance id in every run, on both transports: a record left by
    # another run (kept in a module-level dict, say) would show here.
    await engine.client.register({"type": "noting", "steps": [{"id": "s", "activity": "noted"}]})
    await engine.client.start("noting", run, id="the-same-id")
    assert await result_of(engine, "the-same-id") == run
    assert seen.ran == {"the-same-id": [("noted", run)]}


def test_records_outside_the_fixture_that_makes_them_are_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="the test needs the fixture that makes them"):
        SEEN.get()
