"""The commands on stored instances: ``status``, ``list``, ``history``; ``signal``,
``cancel`` and ``terminate``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import click
import trio
from rich.table import Table

from ..core import InstanceStatus
from ..runtime import HISTORY_LIMIT, MAX_LIMIT, Client, InstanceInfo, InstanceSummary
from ..wire import dumps
from ._app import App, cli, pass_app
from ._errors import CliError, ExitCode
from ._inputs import count_option, given_payload, id_argument, name_argument, payload_options
from ._operations import paused_line
from ._output import clock, error_line, json_view, new_table, span, status_text

__all__ = ["cancel", "history", "list_", "signal", "status", "terminate"]


async def _existing(client: Client, instance_id: str) -> InstanceInfo:
    """The instance's state; :class:`CliError` (not found) if there is none."""
    info = await client.status(instance_id)
    if info is None:
        raise CliError(f"no instance {instance_id!r}", ExitCode.NOT_FOUND)
    return info


@cli.command()
@click.argument("instance_id", metavar="ID", callback=id_argument)
@pass_app
def status(app: App, instance_id: str) -> ExitCode:
    """Show an instance: status, input, output or error, and its steps."""

    async def run(client: Client) -> ExitCode:
        info = await _existing(client, instance_id)
        if app.json:
            app.document(info.to_data())
            return ExitCode.OK
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_row("id", info.id)
        grid.add_row("type", f"{info.type} v{info.version}")
        grid.add_row("status", status_text(str(info.status)))
        if info.compensation:
            grid.add_row("compensation", info.compensation)
        if info.queued:
            grid.add_row("queued behind", info.queued)
        if info.run > 1:
            grid.add_row("run", str(info.run))
        if info.paused is not None:
            grid.add_row("paused", paused_line(info))
        grid.add_row("created", clock(info.created_at))
        grid.add_row(
            "updated", f"{clock(info.updated_at)}  (+{span(info.updated_at - info.created_at)})"
        )
        grid.add_row("input", json_view(info.input))
        if info.output is not None:
            grid.add_row("output", json_view(info.output))
        if info.error is not None:
            grid.add_row("error", f"{info.error.type}: {info.error.message}")
        app.show(grid)
        if info.steps:
            table = new_table("step", "status", "attempt", "scheduled", "finished", "error")
            for key, step in info.steps.items():
                scheduled = step.get("scheduled_at")
                finished = step.get("finished_at")
                table.add_row(
                    key,
                    str(step.get("status", "")),
                    str(step.get("attempt", "")),
                    f"+{span(scheduled - info.created_at)}" if scheduled else "",
                    f"+{span(finished - info.created_at)}" if finished else "",
                    error_line(step.get("error")),
                )
            app.show(table)
        return ExitCode.OK

    return app.run(run)


@cli.command("list")
@click.option("--type", "workflow_type", callback=name_argument("workflow type"))
@click.option(
    "--status",
    "status_name",
    type=click.Choice([str(s) for s in InstanceStatus]),
    help="Only instances in this status.",
)
@count_option("--limit", default=50, most=MAX_LIMIT, help="Show the latest N that match.")
@pass_app
def list_(app: App, workflow_type: str | None, status_name: str | None, limit: int) -> ExitCode:
    """List the latest instances (in the order they started), optionally filtered."""

    async def run(client: Client) -> ExitCode:
        # The client pages oldest first: count the matches, then take the last page.
        _, total = await client.count_and_list(
            workflow_type=workflow_type, status=status_name, limit=0
        )
        page: list[InstanceSummary] = []
        if total:
            page, total = await client.count_and_list(
                workflow_type=workflow_type,
                status=status_name,
                limit=limit,
                offset=max(0, total - limit),
            )
        if app.json:
            app.document(
                {
                    "total": total,
                    "instances": [
                        {
                            "id": s.id,
                            "type": s.type,
                            "version": s.version,
                            "status": str(s.status),
                            "created_at": s.created_at,
                            "updated_at": s.updated_at,
                        }
                        for s in page
                    ],
                }
            )
            return ExitCode.OK
        table = new_table("id", "type", "status", "started", "updated")
        for s in page:
            table.add_row(
                s.id,
                f"{s.type} v{s.version}",
                status_text(str(s.status)),
                clock(s.created_at),
                f"+{span(s.updated_at - s.created_at)}",
            )
        if page:
            app.show(table)
        app.show(f"{len(page)} of {total} matching instances")
        return ExitCode.OK

    return app.run(run)


#: Detail keys ``history`` shows in columns of their own.
_HISTORY_COLUMNS: Final = frozenset({"step", "attempt", "error"})
#: Seconds ``history`` waits for a finished instance's last records to be readable.
_HISTORY_SETTLE: Final = 2.0


async def _settled_history(client: Client, info: InstanceInfo, limit: int) -> list[dict[str, Any]]:
    """The instance's history; for a finished instance, up to its final record.

    The orchestrator stores a state before it publishes that change's
    records, so a read right after an instance ended can miss the last few:
    read again (briefly) until the ``workflow.<status>`` record is there.
    """
    if not info.status.terminal:
        return await client.history(info.id, limit=limit)
    final = f"workflow.{info.status}"
    with trio.move_on_after(_HISTORY_SETTLE):
        while True:
            records = await client.history(info.id, limit=limit)
            if len(records) >= limit or any(r.get("kind") == final for r in records):
                return records
            await trio.sleep(0.05)
    return await client.history(info.id, limit=limit)


@cli.command()
@click.argument("instance_id", metavar="ID", callback=id_argument)
@count_option("--limit", default=HISTORY_LIMIT, help="Show the first N records at most.")
@pass_app
def history(app: App, instance_id: str, limit: int) -> ExitCode:
    """Show an instance's history: every record, times relative to the first."""

    async def run(client: Client) -> ExitCode:
        info = await _existing(client, instance_id)
        records = await _settled_history(client, info, limit)
        if app.json:
            app.document(records)
            return ExitCode.OK
        table = Table("seq", "time", "kind", "step", "attempt", "error", "detail")
        first = records[0].get("at", 0.0) if records else 0.0
        for record in records:
            detail = record.get("detail") or {}
            rest = {k: v for k, v in detail.items() if k not in _HISTORY_COLUMNS}
            attempt = detail.get("attempt")
            table.add_row(
                str(record.get("seq", "")),
                f"+{span(record.get('at', first) - first)}",
                str(record.get("kind", "")),
                str(detail.get("step", "")),
                "" if attempt is None else str(attempt),
                error_line(detail.get("error")),
                " ".join(f"{k}={dumps(v)}" for k, v in rest.items()),
            )
        app.show(table)
        return ExitCode.OK

    return app.run(run)


# -- acting on instances ------------------------------------------------------------------


@cli.command()
@click.argument("instance_id", metavar="ID", callback=id_argument)
@click.argument("name", callback=name_argument("signal name"))
@payload_options("--data", "payload", "data", "payload")
@pass_app
def signal(
    app: App, instance_id: str, name: str, payload: Any, payload_file: str | None
) -> ExitCode:
    """Send signal NAME to an instance (kept until the instance waits for it)."""
    payload = given_payload("--data", "payload", "data", payload, payload_file)

    async def run(client: Client) -> ExitCode:
        info = await _existing(client, instance_id)
        if info.status.terminal:
            app.warn(f"{instance_id} is {info.status}: the signal will not be used")
        await client.signal(instance_id, name, payload)
        return app.result(
            {"id": instance_id, "signal": name, "status": str(info.status)},
            f"sent {name} to {instance_id}",
        )

    return app.run(run)


def _stop(app: App, instance_id: str, reason: str, terminate: bool) -> ExitCode:
    verb = "terminate" if terminate else "cancel"

    async def run(client: Client) -> ExitCode:
        info = await _existing(client, instance_id)
        if info.status.terminal:
            app.warn(f"{instance_id} is already {info.status}: nothing to {verb}")
        elif terminate:
            await client.terminate(instance_id, reason)
        else:
            await client.cancel(instance_id, reason)
        if app.json:
            app.document(
                {
                    "id": instance_id,
                    "requested": verb,
                    "status": str(info.status),
                    "sent": not info.status.terminal,
                }
            )
        elif not info.status.terminal:
            app.show(f"{verb} requested for {instance_id}")
        return ExitCode.OK

    return app.run(run)


def _stop_command(command: Callable[[App, str, str], ExitCode]) -> click.Command:
    """``command`` as a command of the group: ``NAME ID [--reason R]``."""
    reason = click.option("--reason", default="", help="Recorded in the instance's history.")
    instance = click.argument("instance_id", metavar="ID", callback=id_argument)
    return cli.command()(instance(reason(pass_app(command))))


@_stop_command
def cancel(app: App, instance_id: str, reason: str) -> ExitCode:
    """Cancel an instance: its completed steps are compensated, then it ends cancelled."""
    return _stop(app, instance_id, reason, terminate=False)


@_stop_command
def terminate(app: App, instance_id: str, reason: str) -> ExitCode:
    """Stop an instance at once, without compensation."""
    return _stop(app, instance_id, reason, terminate=True)
