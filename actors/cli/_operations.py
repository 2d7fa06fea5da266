"""The commands of the instance operations: ``signal-with-start`` (and, beside it,
``pause``, ``resume``, ``retry``, ``rerun`` and ``delete``)."""

from __future__ import annotations

from typing import Any

import click

from ..runtime import Client
from ._app import App, cli, pass_app
from ._errors import ExitCode
from ._inputs import VERSION, given_payload, id_argument, name_argument, payload_options

__all__ = ["signal_with_start"]


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
        if app.json:
            app.document({"id": instance_id, "signal": name, "started": not existed})
        else:
            app.show(f"sent {name} to {instance_id}" + ("" if existed else " (starting it)"))
        return ExitCode.OK

    return app.run(run)
