"""Definitions built in Python, producing the same plain data as YAML or JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from ._definition import Definition, RetryPolicy, Timeouts, parse_definition

__all__ = ["WorkflowBuilder"]


class WorkflowBuilder:
    """Builds a definition step by step::

        definition = (
            WorkflowBuilder("order", version=1)
            .step("reserve", "reserve_stock", input="{order: input.order_id}",
                  retry={"max_attempts": 5, "initial_interval": "1s"})
            .step("charge", "charge_card", timeout={"start_to_close": "30s"})
            .output("{charged: steps.charge.output}")
            .build()
        )

    Nothing is checked until :meth:`build`, which validates exactly as
    registration does and raises ``DefinitionError`` with field paths.
    """

    def __init__(self, workflow_type: str, version: int = 1, *, description: str = "") -> None:
        self._data: dict[str, Any] = {"type": workflow_type, "version": version, "steps": []}
        if description:
            self._data["description"] = description

    def step(
        self,
        step_id: str,
        activity: str,
        *,
        input: str | None = None,
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        timeout: Timeouts | Mapping[str, Any] | None = None,
    ) -> Self:
        """Append an activity step; ``input`` is an expression (see docs/definitions.md)."""
        step: dict[str, Any] = {"id": step_id, "activity": activity}
        if input is not None:
            step["input"] = input
        if retry is not None:
            step["retry"] = retry.to_data() if isinstance(retry, RetryPolicy) else dict(retry)
        if timeout is not None:
            step["timeout"] = timeout.to_data() if isinstance(timeout, Timeouts) else dict(timeout)
        self._data["steps"].append(step)
        return self

    def output(self, expression: str) -> Self:
        """Set the workflow's output mapping."""
        self._data["output"] = expression
        return self

    def to_data(self) -> dict[str, Any]:
        """The plain data built so far (what YAML or JSON would hold)."""
        return {
            key: [dict(step) for step in value] if key == "steps" else value
            for key, value in self._data.items()
        }

    def build(self) -> Definition:
        """Validate and compile. Raises ``DefinitionError``."""
        return parse_definition(self.to_data())
