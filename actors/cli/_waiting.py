"""``start`` and ``result``: start instances, and wait for their outcomes.

Both may handle many instances at once (``start --count N``, ``result ID...``):
at most :data:`CONCURRENCY` broker calls are in flight, waits share the
client's one watch, and a progress bar on stderr follows them.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import click
import trio
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..core import InvalidNameError, check_instance_id
from ..runtime import MAX_LIMIT, Client, InstanceInfo
from ..wire import dumps
from ._app import App, cli, pass_app
from ._errors import CliError, ExitCode
from ._inputs import (
    VERSION,
    count_option,
    given_payload,
    id_argument,
    name_argument,
    payload_options,
)
from ._options import BoundedNumber
from ._output import json_view, new_table, span, status_text
from ._settings import MAX_SECONDS, Bounds

__all__ = ["CONCURRENCY", "result", "start"]

#: How many broker calls a command with many instances has in flight at once.
CONCURRENCY: Final = 64


@dataclass
class _Outcome:
    """Where an instance stands once a wait is over (or ran out)."""

    id: str
    #: ``None`` while not stored: the start is pending (``start``).
    info: InstanceInfo | None
    #: False for an id that names no instance (``result``): status ``unknown``.
    found: bool = True

    @property
    def status(self) -> str:
        if not self.found:
            return "unknown"
        return "pending" if self.info is None else str(self.info.status)

    def to_data(self) -> dict[str, Any]:
        """The outcome as JSON: the same keys whatever the status (``None`` if unknown)."""
        info = self.info
        return {
            "id": self.id,
            "status": self.status,
            "type": None if info is None else info.type,
            "version": None if info is None else info.version,
            "output": None if info is None else info.output,
            "error": None if info is None or info.error is None else info.error.to_data(),
            "compensation": None if info is None else info.compensation,
            "duration": (
                info.updated_at - info.created_at
                if info is not None and info.status.terminal
                else None
            ),
        }


def _exit_code(outcomes: Iterable[_Outcome]) -> ExitCode:
    """The exit code of waits: not found, then timed out, then not completed."""
    statuses = {outcome.status for outcome in outcomes}
    if "unknown" in statuses:
        return ExitCode.NOT_FOUND
    if statuses & {"pending", "running", "compensating"}:
        return ExitCode.TIMED_OUT
    if statuses - {"completed"}:
        return ExitCode.NOT_COMPLETED
    return ExitCode.OK


async def _wait_all(
    client: Client,
    outcomes: list[_Outcome],
    seconds: float | None,
    progress: Progress | None,
) -> None:
    """Wait until each found outcome's instance is terminal, ``seconds`` at most.

    Fills in every outcome's ``info``: the final state, or the latest one
    (still running) of those the time limit cut short.
    """
    limiter = trio.CapacityLimiter(CONCURRENCY)
    task = None if progress is None else progress.add_task("finished", total=len(outcomes))

    def done() -> None:
        if progress is not None and task is not None:
            progress.advance(task)

    async def wait_one(outcome: _Outcome) -> None:
        if outcome.info is None or not outcome.info.status.terminal:
            # Client.wait registers with the client's one shared watch: a
            # thousand waiters cost a thousand entries, not a thousand watches.
            outcome.info = await client.wait(outcome.id)
        done()

    with trio.move_on_after(math.inf if seconds is None else seconds):
        async with trio.open_nursery() as nursery:
            for outcome in outcomes:
                if outcome.found:
                    nursery.start_soon(wait_one, outcome)
                else:
                    done()

    async def refresh(outcome: _Outcome) -> None:
        async with limiter:
            outcome.info = await client.status(outcome.id)
            if outcome.info is None and not await client.start_pending(outcome.id):
                # Stored between the two looks, or its start was refused
                # (dead-lettered): then there is no such instance.
                outcome.info = await client.status(outcome.id)
                outcome.found = outcome.info is not None

    # Those the time limit cut short: show where they are now.
    async with trio.open_nursery() as nursery:
        for outcome in outcomes:
            if outcome.found and (outcome.info is None or not outcome.info.status.terminal):
                nursery.start_soon(refresh, outcome)


@asynccontextmanager
async def _progress_bar(app: App, many: bool) -> AsyncIterator[Progress | None]:
    """A rich progress bar on stderr for many instances (``None`` for one).

    Refreshed by a Trio task: rich's own auto-refresh would be a thread.
    """
    if not many:
        yield None
        return
    progress = Progress(
        TextColumn("{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=app.err,
        auto_refresh=False,
    )

    async def tick() -> None:
        while True:
            progress.refresh()
            await trio.sleep(0.1)

    with progress:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tick)
            try:
                yield progress
            finally:
                nursery.cancel_scope.cancel()
        progress.refresh()


def _show_outcomes(app: App, outcomes: list[_Outcome], elapsed: float, single: bool) -> None:
    """Print the outcomes (one document with ``--json``), and a stderr line for failures."""
    if app.json:
        app.document(outcomes[0].to_data() if single else [o.to_data() for o in outcomes])
        return
    if single:
        outcome = outcomes[0]
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_row("id", outcome.id)
        grid.add_row("status", status_text(outcome.status))
        info = outcome.info
        if info is not None:
            if info.status.terminal:
                grid.add_row("duration", span(info.updated_at - info.created_at))
            if info.compensation:
                grid.add_row("compensation", info.compensation)
            if info.output is not None:
                grid.add_row("output", json_view(info.output))
            if info.error is not None:
                grid.add_row("error", f"{info.error.type}: {info.error.message}")
        app.show(grid)
    else:
        table = new_table("id", "status", "duration", "output / error")
        for outcome in outcomes:
            info = outcome.info
            duration = ""
            detail = ""
            if info is not None:
                if info.status.terminal:
                    duration = span(info.updated_at - info.created_at)
                if info.error is not None:
                    detail = f"{info.error.type}: {info.error.message}"
                elif info.output is not None:
                    detail = dumps(info.output)
            table.add_row(outcome.id, status_text(outcome.status), duration, detail)
        app.show(table)
        counts = Counter(outcome.status for outcome in outcomes)
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        app.show(f"{len(outcomes)} instances: {summary} ({span(elapsed)})")
    failed = [o for o in outcomes if o.status != "completed"]
    if single and failed:
        outcome = failed[0]
        if outcome.status == "unknown":
            click.echo(f"error: no instance {outcome.id!r}", err=True)
        elif outcome.status == "pending":
            click.echo(
                f"error: {outcome.id} is pending: the broker accepted its start, but no "
                "orchestrator has picked it up yet (is one running?)",
                err=True,
            )
        elif outcome.status in ("running", "compensating"):
            click.echo(f"error: {outcome.id} is still {outcome.status}", err=True)
        else:
            error = outcome.info.error if outcome.info is not None else None
            why = f": {error.type}: {error.message}" if error is not None else ""
            click.echo(f"error: workflow {outcome.id} {outcome.status}{why}", err=True)
    elif failed:
        click.echo(f"error: {len(failed)} of {len(outcomes)} instances did not complete", err=True)


@cli.command()
@click.argument("workflow_type", metavar="TYPE", callback=name_argument("workflow type"))
@payload_options("--input", "input_value", "input", "input")
@click.option(
    "--id",
    "instance_id",
    callback=id_argument,
    help="The instance id, which makes the start idempotent (default: a random one). "
    "With --count N the ids are ID-1 ... ID-N.",
)
@click.option("--version", type=VERSION, help="A version (default: the newest).")
@count_option(
    "--count", default=1, most=MAX_LIMIT, help="Start this many instances with the same input."
)
@click.option("--wait", is_flag=True, help="Wait until they end; print their results.")
@click.option(
    "--timeout",
    type=BoundedNumber(Bounds("float", 0, above=True, high=MAX_SECONDS)),
    help="With --wait: seconds to wait at most (exit 5 if still running or pending).",
)
@pass_app
def start(
    app: App,
    workflow_type: str,
    input_value: Any,
    input_value_file: str | None,
    instance_id: str | None,
    version: int | None,
    count: int,
    wait: bool,
    timeout: float | None,
) -> ExitCode:
    """Start an instance of workflow TYPE and print its id.

    With --wait, wait for it to end and print its status and output (or
    error); the exit code is 1 if it did not complete. An --id that belongs
    to an instance of another type is refused (exit 4).
    """
    input_value = given_payload("--input", "input_value", "input", input_value, input_value_file)
    if timeout is not None and not wait:
        raise click.UsageError("--timeout bounds --wait: give both")
    if instance_id is not None and count > 1:
        ids: list[str | None] = [f"{instance_id}-{n}" for n in range(1, count + 1)]
        try:
            for one in ids:
                check_instance_id(one)
        except InvalidNameError as exc:
            raise click.BadParameter(str(exc), param_hint="'--id'") from None
    else:
        ids = [instance_id] * count

    async def run(client: Client) -> ExitCode:
        # Check the type once, so that N starts of an unknown type fail as one error.
        await client.definition(workflow_type, version or 0)
        began = time.perf_counter()
        started: list[str] = [""] * count
        async with _progress_bar(app, wait and count > 1) as progress:
            task = None if progress is None else progress.add_task("started", total=count)
            limiter = trio.CapacityLimiter(CONCURRENCY)

            async def start_one(n: int) -> None:
                async with limiter:
                    started[n] = await client.start(
                        workflow_type, input_value, id=ids[n], version=version or 0
                    )
                if progress is not None and task is not None:
                    progress.advance(task)

            async with trio.open_nursery() as nursery:
                for n in range(count):
                    nursery.start_soon(start_one, n)
            if not wait:
                if app.json:
                    app.document({"id": started[0]} if count == 1 else [{"id": i} for i in started])
                else:
                    for one in started:
                        app.line(one)
                return ExitCode.OK
            outcomes = [_Outcome(one, None) for one in started]
            await _wait_all(client, outcomes, timeout, progress)
        _show_outcomes(app, outcomes, time.perf_counter() - began, single=count == 1)
        return _exit_code(outcomes)

    return app.run(run)


@cli.command()
@click.argument("instance_ids", metavar="ID...", nargs=-1, required=True, callback=id_argument)
@click.option(
    "--wait",
    "wait_seconds",
    metavar="S",
    type=BoundedNumber(Bounds("float", 0, high=MAX_SECONDS)),
    help="Wait S seconds at most (exit 5 if still running); 0: do not wait. "
    "Default: as long as it takes.",
)
@pass_app
def result(app: App, instance_ids: tuple[str, ...], wait_seconds: float | None) -> ExitCode:
    """Wait for instances to end; print each one's status and output (or error).

    With several ids, waits for all of them (with a progress bar) and
    prints a table. The exit code is 3 if an id names no instance, else 5
    if one is still running, else 1 if one did not complete.
    """
    ids = list(dict.fromkeys(instance_ids))  # each once, in the order given

    async def run(client: Client) -> ExitCode:
        began = time.perf_counter()
        outcomes = [_Outcome(one, None) for one in ids]
        limiter = trio.CapacityLimiter(CONCURRENCY)

        async def look(outcome: _Outcome) -> None:
            async with limiter:
                outcome.info = await client.status(outcome.id)
            outcome.found = outcome.info is not None

        # An unknown id would be waited for until it appears: find those first.
        async with trio.open_nursery() as nursery:
            for outcome in outcomes:
                nursery.start_soon(look, outcome)
        if len(ids) == 1 and not outcomes[0].found:
            raise CliError(f"no instance {ids[0]!r}", ExitCode.NOT_FOUND)
        if wait_seconds != 0:
            async with _progress_bar(app, len(ids) > 1) as progress:
                await _wait_all(client, outcomes, wait_seconds, progress)
        _show_outcomes(app, outcomes, time.perf_counter() - began, single=len(ids) == 1)
        return _exit_code(outcomes)

    return app.run(run)
