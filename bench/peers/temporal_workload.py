"""The benchmark's workload for Temporal: three ``increment`` activities in a row.

A module of its own, holding nothing but the workflow and the activity,
because Temporal's workflow sandbox imports the workflow's module again for
every run: it must be importable by name and free of side effects.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

#: How long one attempt may run; the activity is instant, so any value works.
START_TO_CLOSE = timedelta(seconds=30)


@activity.defn
async def increment(value: dict[str, Any]) -> dict[str, Any]:
    """Return the input with its counter incremented (as ``actors.examples.activities``)."""
    return {**value, "count": value.get("count", 0) + 1}


@workflow.defn
class CountWorkflow:
    """``actors/examples/count.yaml`` for Temporal: each activity's output is the next's input."""

    @workflow.run
    async def run(self, value: dict[str, Any]) -> dict[str, Any]:
        for _ in range(3):
            value = await workflow.execute_activity(
                increment, value, start_to_close_timeout=START_TO_CLOSE
            )
        return value
