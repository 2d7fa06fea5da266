"""The command on worker presence: ``workers``, the live worker processes and what they serve."""

from __future__ import annotations

from ..runtime import Client
from ._app import App, cli, pass_app
from ._errors import ExitCode
from ._output import clock, new_table, span

__all__ = ["workers"]


@cli.command()
@pass_app
def workers(app: App) -> ExitCode:
    """List the live workers: the activity types each serves, its tasks, when it was last seen."""

    async def run(client: Client) -> ExitCode:
        found = await client.workers()
        if app.json:
            app.document([worker.to_data() for worker in found])
            return ExitCode.OK
        now = client.transport.now()
        table = new_table("worker", "host", "pid", "serves", "per type", "running", "seen", "since")
        for worker in found:
            table.add_row(
                worker.id,
                worker.host,
                str(worker.pid),
                ", ".join(worker.activities),
                str(worker.concurrency),
                str(worker.running),
                f"{span(max(0.0, now - worker.seen))} ago",
                clock(worker.started_at),
            )
        if found:
            app.show(table)
        app.show(f"live workers: {len(found)}")
        return ExitCode.OK

    return app.run(run)
