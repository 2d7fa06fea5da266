"""The commands of the instance operations: ``signal-with-start``, ``pause`` and
``resume`` (of an instance or a workflow type), ``retry``, ``rerun``."""

from __future__ import annotations

from typing import Any

import click
import trio

from ..core import RETRYABLE, parse_duration
from ..runtime import BULK_RATE, Client, InstanceInfo
from ._app import App, cli, pass_app
from ._errors import ExitCode
from ._inputs import VERSION, given_payload, id_argument, name_argument, payload_options
from ._options import BoundedNumber
from ._output import clock
from ._settings import MAX_SECONDS, Bounds

__all__ = ["delete", "pause", "paused_line", "rerun", "resume", "retry", "signal_with_start"]


@cli.command("signal-with-start")
@click.argument("workflow_type", metavar="TYPE", callback=name_argument("workflow type"))
@click.argument("instance_id", metavar="ID", callback=id_argument)
@click.argument("name", callback=name_argument("signal name"))
@payload_options("--data", "payload", "data", "payload")
@payload_options("--input", "input_value", "input", "input")
@click.option("--version", type=VERSION, help="A version to start (default: the newest).")
@click.option(
    "--signal-id",
    callback=id_argument,
    help="Makes a repeated call count once (within the broker's duplicate window).",
)
@pass_app
def signal_with_start(
    app: App,
    workflow_type: str,
    instance_id: str,
    name: str,
    payload: Any,
    payload_file: str | None,
    input_value: Any,
    input_value_file: str | None,
    version: int | None,
    signal_id: str | None,
) -> ExitCode:
    """Send signal NAME to instance ID, starting it as TYPE (with --input) if it does not exist.

    One message: a repeated call with the same --signal-id counts once. An ID
    that belongs to an instance of another type is refused (exit 4).
    """
    payload = given_payload("--data", "payload", "data", payload, payload_file)
    input_value = given_payload("--input", "input_value", "input", input_value, input_value_file)

    async def run(client: Client) -> ExitCode:
        existed = await client.signal_with_start(
            workflow_type,
            instance_id,
            name,
            payload,
            input=input_value,
            version=version or 0,
            signal_id=signal_id,
        )
        return app.result(
            {"id": instance_id, "signal": name, "started": not existed},
            f"sent {name} to {instance_id}" + ("" if existed else " (starting it)"),
        )

    return app.run(run)


def paused_line(info: InstanceInfo) -> str:
    """How ``status`` shows a pause: by whom, when, why, and what it holds."""
    paused = info.paused or {}
    line = f"by {paused.get('by') or '?'} at {clock(float(paused.get('at', 0.0)))}"
    if paused.get("by_type"):
        line += f" (with its type {info.type})"
    if paused.get("reason"):
        line += f": {paused['reason']}"
    if info.held:
        line += f"; {info.held} event(s) held"
    return line


_REASON = click.option("--reason", default="", help="Recorded in the instance's history.")
_BY = click.option("--by", help="Who acts, for the history (default: user@host).")
_TYPE = click.option(
    "--type",
    "workflow_type",
    callback=name_argument("workflow type"),
    help="Act on the workflow type TYPE (all its versions) instead of one instance.",
)


def _requested(app: App, info: InstanceInfo, verb: str, unchanged: str | None) -> ExitCode:
    """Report a request sent to one instance (``unchanged``: why it changes nothing)."""
    if app.json:
        app.document({"id": info.id, "requested": verb, "status": str(info.status)})
    elif unchanged is not None:
        app.warn(unchanged)
    else:
        app.show(f"{verb} requested for {info.id}")
    return ExitCode.OK


def _target(instance_id: str | None, workflow_type: str | None) -> None:
    if (instance_id is None) == (workflow_type is None):
        raise click.UsageError("give an instance ID or --type TYPE (one of them)")


@cli.command()
@click.argument("instance_id", metavar="[ID]", required=False, callback=id_argument)
@_TYPE
@click.option("--running", is_flag=True, help="With --type: pause its running instances too.")
@_REASON
@_BY
@pass_app
def pause(
    app: App,
    instance_id: str | None,
    workflow_type: str | None,
    running: bool,
    reason: str,
    by: str | None,
) -> ExitCode:
    """Pause instance ID (or, with --type, a workflow type): nothing new is dispatched.

    Tasks already out run to their end; their results, the timers that come
    due and the signals that arrive are kept until `resume`. A paused type
    stores its new starts, and begins them when it is resumed.
    """
    _target(instance_id, workflow_type)
    if running and workflow_type is None:
        raise click.UsageError("--running goes with --type")

    async def run(client: Client) -> ExitCode:
        if workflow_type is not None:
            sent = await client.pause_type(workflow_type, reason, by=by, running=running)
            more = f"; {sent} running instance(s) paused with it" if running else ""
            return app.result(
                {"type": workflow_type, "paused": True, "instances": sent},
                f"paused {workflow_type}{more}",
            )
        assert instance_id is not None
        info = await client.pause(instance_id, reason, by=by)
        unchanged = f"{instance_id} is already paused" if info.paused is not None else None
        return _requested(app, info, "pause", unchanged)

    return app.run(run)


@cli.command()
@click.argument("instance_id", metavar="[ID]", required=False, callback=id_argument)
@_TYPE
@_REASON
@_BY
@pass_app
def resume(
    app: App, instance_id: str | None, workflow_type: str | None, reason: str, by: str | None
) -> ExitCode:
    """Resume instance ID (or, with --type, a workflow type and the instances paused with it)."""
    _target(instance_id, workflow_type)

    async def run(client: Client) -> ExitCode:
        if workflow_type is not None:
            sent = await client.resume_type(workflow_type, reason, by=by)
            return app.result(
                {"type": workflow_type, "paused": False, "instances": sent},
                f"resumed {workflow_type}; {sent} instance(s) sent a resume",
            )
        assert instance_id is not None
        info = await client.resume(instance_id, reason, by=by)
        unchanged = (
            f"{instance_id} is not paused: nothing to resume" if info.paused is None else None
        )
        return _requested(app, info, "resume", unchanged)

    return app.run(run)


class _Duration(click.ParamType):  # type: ignore[type-arg]
    """A duration: seconds, or with units (``90s``, ``1h``, ``1h30m``, ``2d``)."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if not 0 < seconds <= MAX_SECONDS:
            self.fail(f"must be more than 0 and at most {MAX_SECONDS:g} seconds", param, ctx)
        return seconds


@cli.command()
@click.argument("instance_id", metavar="[ID]", required=False, callback=id_argument)
@click.option(
    "--from",
    "step",
    callback=name_argument("step id"),
    help="The top-level step to run again from (default: the first that did not complete).",
)
@click.option("--type", "workflow_type", callback=name_argument("workflow type"),
              help="Without ID: retry the instances of this type that match.")  # fmt: skip
@click.option(
    "--status",
    "status_name",
    type=click.Choice(sorted(str(status) for status in RETRYABLE)),
    help="Without ID: retry the instances in this status (default: failed).",
)
@click.option(
    "--since",
    type=_Duration(),
    help="Without ID: only those that ended this recently (1h, 30m, 2d).",
)
@click.option("--rate", type=BoundedNumber(Bounds("float", 0, above=True, high=1000)),
              default=BULK_RATE, show_default=True,
              help="Without ID: instances retried a second, at most.")  # fmt: skip
@click.option("--yes", "-y", is_flag=True, help="Without ID: do not ask for confirmation.")
@_REASON
@_BY
@pass_app
def retry(
    app: App,
    instance_id: str | None,
    step: str | None,
    workflow_type: str | None,
    status_name: str | None,
    since: float | None,
    rate: float,
    yes: bool,
    reason: str,
    by: str | None,
) -> ExitCode:
    """Run a failed, cancelled or terminated instance ID again, from its failed step.

    The steps before it are kept with their outputs, and it runs as the
    instance's next run (same id, same history). Without ID, retries every
    instance that matches --type, --status and --since, after saying how
    many and asking (--yes does not ask), paced at --rate a second.
    """
    bulk = workflow_type is not None or status_name is not None or since is not None
    if (instance_id is None) == (not bulk):
        raise click.UsageError("give an instance ID, or --type/--status/--since (not both)")

    async def run(client: Client) -> ExitCode:
        if instance_id is not None:
            try:
                run_number = await client.retry(instance_id, step=step, reason=reason, by=by)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="'--from'") from None
            return app.result(
                {"id": instance_id, "run": run_number},
                f"retry requested for {instance_id}: run {run_number}",
            )

        def confirm(count: int) -> bool:
            what = f"{count} {status_name or 'failed'} instance(s)"
            if workflow_type is not None:
                what += f" of {workflow_type}"
            if count == 0:
                app.warn(f"no {what.partition(' ')[2]} to retry")
                return False
            if yes or app.json:
                return True
            return click.confirm(f"retry {what}?", err=True)

        retried = await client.retry_matching(
            workflow_type=workflow_type,
            status=status_name or "failed",
            since=since,
            step=step,
            reason=reason,
            by=by,
            rate=rate,
            chosen=confirm,
        )
        return app.result(
            {"retried": retried, "count": len(retried)}, f"retried {len(retried)} instance(s)"
        )

    return app.run(run)


@cli.command()
@click.argument("instance_id", metavar="ID", callback=id_argument)
@click.option(
    "--id", "new_id", callback=id_argument, help="The new instance's id (default: a random one)."
)
@pass_app
def rerun(app: App, instance_id: str, new_id: str | None) -> ExitCode:
    """Start a new instance with the same type, version and input as instance ID."""

    async def run(client: Client) -> ExitCode:
        started = await client.rerun(instance_id, id=new_id)
        return app.result({"id": started, "rerun_of": instance_id}, started)

    return app.run(run)


@cli.command()
@click.argument("instance_id", metavar="ID", callback=id_argument)
@click.option("--wait", is_flag=True, help="Wait until it is removed.")
@pass_app
def delete(app: App, instance_id: str, wait: bool) -> ExitCode:
    """Remove a finished instance now: its state, its history and its index entries."""

    async def run(client: Client) -> ExitCode:
        info = await client.delete(instance_id)
        if wait:
            with trio.fail_after(60):
                await client.wait_for_removal(instance_id)
        return app.result(
            {"id": instance_id, "status": str(info.status), "removed": wait},
            f"{'removed' if wait else 'removal requested for'} {instance_id}",
        )

    return app.run(run)
