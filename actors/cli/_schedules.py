"""``schedules create|list|describe|pause|unpause|trigger|backfill|delete``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click
import yaml

from ..core import InvalidScheduleError, parse_time, schedule_from_data
from ..runtime import Client, schedule_summary
from ._app import App, cli, pass_app
from ._errors import CliError, ExitCode
from ._inputs import given_payload, name_argument, payload_options, read_text
from ._output import new_table

__all__ = ["schedules"]


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _time_option(value: str | None, flag: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_time(_number_or_text(value), flag)
    except InvalidScheduleError as exc:
        raise click.BadParameter(str(exc)) from None


def _number_or_text(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


@cli.group()
def schedules() -> None:
    """Start workflows on cron expressions and intervals: create, pause, trigger, backfill."""


@schedules.command("create")
@click.argument("file", required=False, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--id", "schedule_id", callback=name_argument("schedule id"), help="Its id.")
@click.option("--workflow", callback=name_argument("workflow type"), help="The workflow type.")
@click.option("--version", type=click.IntRange(min=1), help="A version (default: the newest).")
@click.option("--cron", multiple=True, help="A cron expression (repeatable).")
@click.option("--timezone", help="The time zone of the cron expressions (default UTC).")
@click.option("--every", multiple=True, help="An interval: 30s, 15m, 1h, 1d (repeatable).")
@click.option("--offset", help="The intervals' offset from the epoch (default 0).")
@click.option("--jitter", help="Put each start off by up to this long (default 0).")
@click.option("--start-at", help="No fire before this time (ISO 8601 or seconds).")
@click.option("--end-at", help="No fire after this time (ISO 8601 or seconds).")
@click.option(
    "--overlap",
    type=click.Choice(
        ["skip", "buffer_one", "buffer_all", "cancel_other", "terminate_other", "allow_all"]
    ),
    help="What a fire does while the last run still runs (default skip).",
)
@click.option("--catchup-window", help="How late a missed fire may still run (default 1h).")
@payload_options("--input", "input_value", "input", "workflow input (JSON)")
@pass_app
def schedules_create(app: App, /, file: str | None, **options: Any) -> ExitCode:
    """Create a schedule from FILE (YAML or JSON; - is stdin), the options, or both.

    The options set (or override) the file's fields. It fires from now on.
    """
    data: dict[str, Any] = {}
    if file is not None:
        loaded = yaml.safe_load(read_text(file))
        if not isinstance(loaded, dict):
            raise CliError(f"{file}: a schedule is a map (id, workflow, spec...)", ExitCode.INVALID)
        data = loaded
    spec = data.setdefault("spec", {}) if isinstance(data.get("spec", {}), dict) else {}
    simple = {"schedule_id": "id", "workflow": "workflow", "version": "version"}
    for option, key in simple.items():
        if options[option] is not None:
            data[key] = options[option]
    if options["overlap"] is not None:
        data["overlap"] = options["overlap"]
    if options["catchup_window"] is not None:
        data["catchup_window"] = options["catchup_window"]
    if options["cron"]:
        spec["cron"] = list(options["cron"])
    for option in ("timezone", "jitter"):
        if options[option] is not None:
            spec[option] = options[option]
    for option in ("start_at", "end_at"):
        if options[option] is not None:
            spec[option] = _number_or_text(options[option])
    if options["every"]:
        spec["intervals"] = [
            {"every": every, "offset": options["offset"] or 0} for every in options["every"]
        ]
    payload = given_payload(
        "--input", "input_value", "input", options["input_value"], options["input_value_file"]
    )
    if payload is not None:
        data["input"] = payload
    try:
        schedule = schedule_from_data(data)
    except InvalidScheduleError as exc:
        raise CliError(f"invalid schedule: {exc}", ExitCode.INVALID) from None

    async def create(client: Client) -> ExitCode:
        state = await client.schedules.create(schedule)
        return app.result(
            schedule_summary(state),
            f"created schedule {schedule.id}; next fire {_when(state.next_fire())}",
        )

    return app.run(create)


@schedules.command("list")
@pass_app
def schedules_list(app: App) -> ExitCode:
    """List every schedule: its workflow, next fire, whether paused and its counts."""

    async def listing(client: Client) -> ExitCode:
        rows = [schedule_summary(state) for state in await client.schedules.list()]
        if app.json:
            app.document(rows)
        elif not rows:
            app.show("no schedules")
        else:
            table = new_table(
                "id", "workflow", "next fire", "paused", "started", "skipped", "missed"
            )
            for row in rows:
                table.add_row(
                    row["id"],
                    row["workflow"],
                    _when(row["next_fire"]),
                    "yes" if row["paused"] else "",
                    str(row["started"]),
                    str(row["skipped"]),
                    str(row["missed"]),
                )
            app.show(table)
        return ExitCode.OK

    return app.run(listing)


ID = click.argument("schedule_id", metavar="ID", callback=name_argument("schedule id"))


@schedules.command("describe")
@ID
@click.option(
    "--next",
    "upcoming",
    type=click.IntRange(1, 100),
    default=5,
    show_default=True,
    help="How many next fire times to show.",
)
@pass_app
def schedules_describe(app: App, schedule_id: str, upcoming: int) -> ExitCode:
    """Show a schedule, its next fire times and its recent runs with their outcomes."""

    async def describe(client: Client) -> ExitCode:
        description = await client.schedules.describe(schedule_id, upcoming=upcoming)
        data = description.to_data()
        if app.json:
            app.document(data)
            return ExitCode.OK
        paused = f"paused ({data['note']})" if data["paused"] else "active"
        app.show(f"{schedule_id}: starts {data['workflow']}, {paused}, overlap {data['overlap']}")
        app.show(f"started {data['started']}, skipped {data['skipped']}, missed {data['missed']}")
        app.show("next fires: " + (", ".join(_when(t) for t in data["next_fires"]) or "none"))
        table = new_table("fire", "kind", "instance", "status")
        for run in data["runs"]:
            table.add_row(
                _when(run["fire"]), run["kind"], run["instance"], run["status"] or "pending"
            )
        app.show(table)
        return ExitCode.OK

    return app.run(describe)


def _pausing(name: str, paused: bool, doc: str) -> None:
    """Define ``schedules pause`` or ``unpause`` (the same but for which)."""

    @schedules.command(name, help=doc)
    @ID
    @click.option("--note", default="", help="Why (shown by describe).")
    @pass_app
    def command(app: App, schedule_id: str, note: str) -> ExitCode:
        async def change(client: Client) -> ExitCode:
            operation = client.schedules.pause if paused else client.schedules.unpause
            await operation(schedule_id, note)
            return app.result(
                {"id": schedule_id, "paused": paused, "note": note}, f"{name}d {schedule_id}"
            )

        return app.run(change)


_pausing("pause", True, "Stop the schedule's fires until unpaused (triggers and backfills run).")
_pausing("unpause", False, "Fire again from now on (the fires that fell in the pause are not run).")


@schedules.command("trigger")
@ID
@pass_app
def schedules_trigger(app: App, schedule_id: str) -> ExitCode:
    """Run the schedule's workflow now (under its overlap policy); print the instance id."""

    async def trigger(client: Client) -> ExitCode:
        started = await client.schedules.trigger(schedule_id)
        return app.result({"id": schedule_id, "instance": started}, started)

    return app.run(trigger)


@schedules.command("backfill")
@ID
@click.option("--from", "start", required=True, help="The range's start (ISO 8601 or seconds).")
@click.option("--to", "end", required=True, help="The range's end, included.")
@pass_app
def schedules_backfill(app: App, schedule_id: str, start: str, end: str) -> ExitCode:
    """Run every fire of the schedule's spec from --from to --to; print how many."""
    begin = _time_option(start, "--from")
    finish = _time_option(end, "--to")
    assert begin is not None
    assert finish is not None

    async def backfill(client: Client) -> ExitCode:
        count = await client.schedules.backfill(schedule_id, begin, finish)
        return app.result(
            {"id": schedule_id, "fires": count}, f"backfill of {count} fires asked for"
        )

    return app.run(backfill)


@schedules.command("delete")
@ID
@pass_app
def schedules_delete(app: App, schedule_id: str) -> ExitCode:
    """Delete the schedule (the runs it started go on)."""

    async def delete(client: Client) -> ExitCode:
        await client.schedules.delete(schedule_id)
        return app.result({"id": schedule_id, "deleted": True}, f"deleted {schedule_id}")

    return app.run(delete)
