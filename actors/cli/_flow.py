"""The command on flow control: ``slots``, the holders and queues of concurrency limits."""

from __future__ import annotations

from ..runtime import Client
from ._app import App, cli, pass_app
from ._errors import ExitCode
from ._output import new_table

__all__ = ["slots"]

#: Waiting instances (or attempts) shown per key value; ``--json`` shows them all.
_SHOWN: int = 5


@cli.command()
@pass_app
def slots(app: App) -> ExitCode:
    """List the key values of concurrency limits in use: who holds a slot, who waits, in order."""

    async def run(client: Client) -> ExitCode:
        found = await client.slots()
        if app.json:
            app.document({"slots": [info.to_data() for info in found]})
            return ExitCode.OK
        table = new_table("limit of", "key", "value", "held", "holders", "queued", "next")
        for info in found:
            waiting = ", ".join(info.queue[:_SHOWN]) + (" …" if len(info.queue) > _SHOWN else "")
            table.add_row(
                f"{info.scope} {info.name}",
                info.key or "(none)",
                str(info.value),
                f"{len(info.holders)}/{info.limit}",
                ", ".join(info.holders[:_SHOWN]),
                str(len(info.queue)),
                waiting,
            )
        if found:
            app.show(table)
        app.show(f"{len(found)} key values in use")
        return ExitCode.OK

    return app.run(run)
