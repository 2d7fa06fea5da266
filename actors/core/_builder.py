"""Definitions built in Python, producing the same plain data as YAML or JSON."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Self

from ._definition import Definition
from ._parse import parse_definition
from ._steps import RetryPolicy, Timeouts

__all__ = ["Steps", "WorkflowBuilder"]


class Steps:
    """A sequence of steps under construction: a branch, a map's body, a workflow.

    Each method appends one step and returns the sequence, so calls chain.
    Nothing is checked until the workflow is built, which validates exactly
    as registration does.
    """

    def __init__(self) -> None:
        self._steps: list[dict[str, Any]] = []

    def step(
        self,
        step_id: str,
        activity: str,
        *,
        input: str | None = None,
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        timeout: Timeouts | Mapping[str, Any] | None = None,
        compensate: str | None = None,
        compensate_input: str | None = None,
    ) -> Self:
        """Append an activity step; ``input`` is an expression (see docs/definitions.md).

        ``compensate`` names the activity that undoes it, given
        ``compensate_input`` (an expression; by default the step's output).
        """
        step: dict[str, Any] = {"id": step_id, "activity": activity}
        if input is not None:
            step["input"] = input
        if retry is not None:
            step["retry"] = retry.to_data() if isinstance(retry, RetryPolicy) else dict(retry)
        if timeout is not None:
            step["timeout"] = timeout.to_data() if isinstance(timeout, Timeouts) else dict(timeout)
        if compensate is not None:
            step["compensate"] = {"activity": compensate}
            if compensate_input is not None:
                step["compensate"]["input"] = compensate_input
        return self._add(step)

    def sleep(self, step_id: str, duration: str | float) -> Self:
        """Append a durable sleep of ``duration`` (``"10m"``, or seconds)."""
        return self._add({"id": step_id, "sleep": duration})

    def sleep_until(self, step_id: str, expression: str) -> Self:
        """Append a durable sleep until the time ``expression`` gives."""
        return self._add({"id": step_id, "sleep_until": expression})

    def wait_signal(self, step_id: str, signal: str, *, timeout: str | float | None = None) -> Self:
        """Append a wait for signal ``signal`` (its payload is the step's output)."""
        step: dict[str, Any] = {"id": step_id, "wait_signal": signal}
        if timeout is not None:
            step["timeout"] = timeout
        return self._add(step)

    def child(
        self, step_id: str, workflow: str, *, input: str | None = None, version: int = 0
    ) -> Self:
        """Append a child workflow of type ``workflow`` (``version`` 0: the newest)."""
        step: dict[str, Any] = {"id": step_id, "workflow": workflow}
        if version:
            step["version"] = version
        if input is not None:
            step["input"] = input
        return self._add(step)

    def parallel(self, step_id: str, branches: Mapping[str, Steps]) -> Self:
        """Append a parallel step running every branch (named by its key) at once."""
        return self._add(
            {
                "id": step_id,
                "parallel": [
                    {"id": name, "steps": body.to_list()} for name, body in branches.items()
                ],
            }
        )

    def map(self, step_id: str, items: str, body: Steps, *, concurrency: int = 10) -> Self:
        """Append a map running ``body`` for each item of the list ``items`` gives."""
        return self._add(
            {"id": step_id, "map": items, "concurrency": concurrency, "steps": body.to_list()}
        )

    def choice(
        self,
        step_id: str,
        choices: Sequence[tuple[str, Steps]],
        *,
        default: Steps | None = None,
    ) -> Self:
        """Append a choice: the first ``(condition, branch)`` whose condition holds runs.

        Without a match ``default`` runs; with none, the step fails.
        """
        step: dict[str, Any] = {
            "id": step_id,
            "choice": [{"when": when, "steps": body.to_list()} for when, body in choices],
        }
        if default is not None:
            step["default"] = default.to_list()
        return self._add(step)

    def to_list(self) -> list[dict[str, Any]]:
        """The steps as plain data (what YAML or JSON would hold)."""
        return [dict(step) for step in self._steps]

    def _add(self, step: dict[str, Any]) -> Self:
        self._steps.append(step)
        return self


class WorkflowBuilder(Steps):
    """Builds a definition step by step::

        definition = (
            WorkflowBuilder("order", version=1)
            .step("reserve", "reserve_stock", input="{order: input.order_id}",
                  retry={"max_attempts": 5, "initial_interval": "1s"},
                  compensate="release_stock")
            .parallel("notify", {
                "mail": Steps().step("mail", "send_mail"),
                "sms": Steps().step("sms", "send_sms"),
            })
            .output("{reserved: steps.reserve.output}")
            .build()
        )

    Nothing is checked until :meth:`build`, which validates exactly as
    registration does and raises ``DefinitionError`` with field paths.
    """

    def __init__(self, workflow_type: str, version: int = 1, *, description: str = "") -> None:
        super().__init__()
        self._top: dict[str, Any] = {"type": workflow_type, "version": version}
        if description:
            self._top["description"] = description

    def output(self, expression: str) -> Self:
        """Set the workflow's output mapping."""
        self._top["output"] = expression
        return self

    def to_data(self) -> dict[str, Any]:
        """The plain definition built so far (what YAML or JSON would hold)."""
        return {**self._top, "steps": self.to_list()}

    def build(self) -> Definition:
        """Validate and compile. Raises ``DefinitionError``."""
        return parse_definition(self.to_data())
