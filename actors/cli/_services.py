"""``orchestrator`` and ``worker``: the engine's services, as commands of the command line.

``python -m actors orchestrator``, the ``actors orchestrator`` script and
``python -m actors.orchestrator`` all run :func:`orchestrator` (the worker
alike), with the same flags, ``ACTORS_*`` variables and TOML keys. Each
setting fills one field of the service's config (:data:`ORCHESTRATOR_FIELDS`,
:data:`WORKER_FIELDS`), and its default is that field's default.

A service's mistakes end it with exit code 2 and one line on stderr, never a
traceback (:mod:`actors.cli._errors`): a usage error (``orchestrator:
argument --ack-wait: must be a number above 0 ..., not nan (see python -m
actors.orchestrator --help)``), a file it cannot read, a broker it cannot
reach or that refuses it. Once serving, SIGTERM (or Ctrl-C) drains it.
"""

from __future__ import annotations

import gc
import importlib
import logging
import re
import signal
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import ModuleType
from typing import Any, Final, Protocol, TypeVar

import click
import trio

from transport import Transport, open_transport

from ..observability import Metrics, Probes, tracing
from ..runtime import (
    ActivitySpec,
    Orchestrator,
    OrchestratorConfig,
    Worker,
    WorkerConfig,
    collect_activities,
)
from ._app import CONTEXT, cli
from ._connection import check_connect_files, connect_options, connection_options
from ._errors import SERVICE_ERROR, ModuleError, service_error
from ._logs import setup_logging
from ._options import Decorated, config_option, setting_option
from ._settings import default_of

__all__ = [
    "GC_THRESHOLDS",
    "ORCHESTRATOR_FIELDS",
    "WORKER_FIELDS",
    "activities_of",
    "build",
    "orchestrator",
    "tune_gc",
    "worker",
]

log = logging.getLogger("actors")

#: The orchestrator's settings, each with the field of ``OrchestratorConfig`` it fills.
ORCHESTRATOR_FIELDS: Final[Mapping[str, str]] = {
    "replicas": "layout.replicas",
    "ack_wait": "layout.ack_wait",
    "passivate_after": "passivate_after",
    "max_idle_actors": "max_idle_actors",
    "start_wait": "start_wait",
    "max_waiting_events": "max_waiting_events",
    "lease": "lease",
    "retention": "retention",
    "retention_by_type": "retention_by_type",
    "removal_rate": "removal_rate",
    "partitions": "layout.partitions",
    "drain_timeout": "drain_timeout",
    "max_input": "limits.max_input",
    "max_output": "limits.max_output",
    "max_state": "limits.max_state",
}
#: The worker's settings, each with the field of ``WorkerConfig`` it fills.
WORKER_FIELDS: Final[Mapping[str, str]] = {
    "replicas": "layout.replicas",
    "concurrency": "concurrency",
    "threads": "threads",
    "ack_wait": "ack_wait",
    "drain_timeout": "drain_timeout",
    "presence_interval": "presence_interval",
}

_Config = TypeVar("_Config")


def build(config: type[_Config], fields: Mapping[str, str], values: Mapping[str, Any]) -> _Config:
    """A ``config`` holding the settings' ``values`` (by key), each in its field of ``fields``.

    A field path goes into nested configs (``layout.ack_wait``). Raises
    ``ValueError`` for values the config refuses together.
    """
    return _make(config, {path: values[key] for key, path in fields.items()})


def _make(config: type[_Config], by_path: Mapping[str, Any]) -> _Config:
    own: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for path, value in by_path.items():
        head, _, rest = path.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            own[head] = value
    defaults = config()
    for head, inner in nested.items():
        own[head] = _make(type(getattr(defaults, head)), inner)
    return config(**own)


def _service_options(config: type, fields: Mapping[str, str]) -> Callable[[Decorated], Decorated]:
    """The options of a service: the file, the connection, its ``fields``' settings, logs."""

    def decorate(command: Decorated) -> Decorated:
        command = setting_option("trace_file")(command)
        command = setting_option("metrics_host")(command)
        command = setting_option("metrics_port")(command)
        command = setting_option("log_format")(command)
        command = setting_option("log_level")(command)
        for key, path in reversed(list(fields.items())):
            command = setting_option(key, default=default_of(config, path))(command)
        return config_option(connection_options(command))

    return decorate


@cli.command(service=True, context_settings=CONTEXT)
@_service_options(OrchestratorConfig, ORCHESTRATOR_FIELDS)
def orchestrator(url: str, log_level: str, log_format: str, **values: Any) -> int:
    """Run an orchestrator service.

    Run as many as you like against one NATS: they share the events. SIGTERM
    (or Ctrl-C) stops taking events and drains those in hand within
    --drain-timeout seconds; what is left is handed back to the others.
    """
    setup_logging(log_level, log_format)
    config = _configured(OrchestratorConfig, ORCHESTRATOR_FIELDS, values)
    return _serve(
        "orchestrator",
        url,
        values,
        config.drain_timeout,
        lambda t, m: Orchestrator(t, config, metrics=m),
    )


@cli.command(service=True, context_settings=CONTEXT)
@_service_options(WorkerConfig, WORKER_FIELDS)
@setting_option("only")
@setting_option("activities", required=True)
def worker(
    url: str,
    log_level: str,
    log_format: str,
    activities: tuple[str, ...],
    only: tuple[str, ...],
    **values: Any,
) -> int:
    """Run an activity worker: every @activity function of the --activities modules.

    Run as many as you like, on any machine that reaches NATS: workers
    serving one activity type share its tasks. SIGTERM (or Ctrl-C) stops
    taking tasks and finishes those in hand within --drain-timeout seconds;
    what is left is handed back.
    """
    setup_logging(log_level, log_format)
    try:
        specs = activities_of(activities)
    except ModuleError as exc:
        raise click.UsageError(str(exc)) from None
    if only:
        unknown = set(only) - {spec.name for spec in specs}
        if unknown:
            raise click.UsageError(f"no such activities: {', '.join(sorted(unknown))}")
        specs = [spec for spec in specs if spec.name in only]
    try:
        Worker.check(specs)
    except RuntimeError as exc:
        raise click.UsageError(str(exc)) from None
    config = _configured(WorkerConfig, WORKER_FIELDS, values)
    return _serve(
        "worker",
        url,
        values,
        config.drain_timeout,
        lambda t, m: Worker(t, specs, config, metrics=m),
    )


def _configured(
    config: type[_Config], fields: Mapping[str, str], values: Mapping[str, Any]
) -> _Config:
    """:func:`build`, with values the config refuses together as a usage error."""
    try:
        return build(config, fields, values)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


# -- activities ------------------------------------------------------------------------

#: A module's dotted name, as ``import`` takes it (no relative names).
_MODULE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def activities_of(names: Sequence[str]) -> list[ActivitySpec]:
    """Every activity of the modules named; :class:`ModuleError` in one line if one fails.

    The line says why: not a module name, not found, what its code raised
    while it was imported (with the file and line that raised it), no
    ``@activity`` function in it, or two activities of one name.
    """
    modules = _import_modules(names)
    try:
        for name, module in zip(names, modules, strict=True):
            if not collect_activities([module]):
                raise ModuleError(f"module {name} has no @activity functions")
        return collect_activities(modules)
    except ValueError as exc:  # two activities of one name
        raise ModuleError(str(exc)) from None


def _import_modules(names: Sequence[str]) -> list[ModuleType]:
    modules = []
    for name in names:
        if not _MODULE_NAME.fullmatch(name):
            raise ModuleError(f"{name!r} is not a module name (like myapp.activities)")
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            raise ModuleError(f"cannot import {name}: {exc}") from None
        except Exception as exc:
            # The module's own code failed: say where, as a traceback would
            # (a SyntaxError says it itself).
            where = ""
            if not isinstance(exc, SyntaxError):
                frame = traceback.extract_tb(exc.__traceback__)[-1]
                where = f" ({frame.filename}, line {frame.lineno})"
            raise ModuleError(f"cannot import {name}: {type(exc).__name__}: {exc}{where}") from None
    return modules


# -- running a service -----------------------------------------------------------------


class _Service(Protocol):
    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...
    def shutdown(self) -> None: ...


def _serve(
    name: str,
    url: str,
    values: Mapping[str, Any],
    drain: float,
    make: Callable[[Transport, Metrics | None], _Service],
) -> int:
    """Connect, run the service ``make`` builds until a signal, drain; the exit code.

    With a ``metrics_port`` among the ``values``, the service counts its
    metrics and serves them with its probes (:func:`observed`).

    The service has ``drain`` seconds (its ``drain_timeout``) and 5 more to
    stop once signalled. A broker that cannot be reached (or refuses the
    credentials), options that contradict each other and a file the
    connection cannot read end the process with :data:`SERVICE_ERROR` and a
    one-line reason, not a traceback.
    """
    try:
        options = connect_options(values, name)
        check_connect_files(options)
    except Exception as exc:
        if (reason := service_error(exc)) is None:
            raise
        return _report(name, reason)

    async def main() -> None:
        async with open_transport(url, options) as transport:

            async def serve(nursery: trio.Nursery) -> Callable[[], None]:
                port: int | None = values.get("metrics_port")
                if port is None:
                    service = make(transport, None)
                    await nursery.start(service.run)
                    return service.shutdown
                metrics = Metrics()
                service = make(transport, metrics)
                probes = Probes(metrics, transport, host=values["metrics_host"], port=port)
                await nursery.start(probes.run, service)
                return probes.shutdown

            await serve_until_stopped(serve, grace=drain + 5)

    try:
        stop_tracing = _tracing(values.get("trace_file"), name)
    except (tracing.TracingUnavailableError, OSError) as exc:
        return _report(name, f"--trace-file: {exc}")
    tune_gc()
    try:
        trio.run(main)
    except Exception as exc:
        if (reason := service_error(exc)) is None:
            raise
        return _report(name, reason)
    finally:
        stop_tracing()
    return 0


def _tracing(path: str | None, name: str) -> Callable[[], None]:
    """Spans written to ``path`` if given (see ``export_to_file``); how to stop."""
    if path is None:
        return lambda: None
    return tracing.export_to_file(path, f"actors-{name}")


def _report(name: str, reason: str) -> int:
    """Say why service ``name`` cannot serve, in one line; its exit code."""
    print(f"{name}: {reason}", file=sys.stderr)
    return SERVICE_ERROR


async def serve_until_stopped(
    serve: Callable[[trio.Nursery], Awaitable[Callable[[], None]]], *, grace: float
) -> None:
    """Run a service until SIGTERM or SIGINT, then drain it.

    ``serve`` starts the service in the nursery it is given and returns its
    ``shutdown`` function. On a signal, ``shutdown`` is called and the
    service has ``grace`` seconds to finish before it is cancelled; a second
    signal cancels at once.
    """
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as inner:
                shutdown = await serve(inner)
                log.info("ready")
                outer.start_soon(_on_signals, signals, shutdown, inner.cancel_scope, grace)
            # The service returned (drained, or failed): stop listening.
            outer.cancel_scope.cancel()


async def _on_signals(
    signals: AsyncIterator[int],
    shutdown: Callable[[], None],
    scope: trio.CancelScope,
    grace: float,
) -> None:
    count = 0
    async for signum in signals:
        count += 1
        log.info("%s: shutting down", signal.Signals(signum).name)
        if count == 1:
            shutdown()
            scope.deadline = trio.current_time() + grace
        else:
            scope.cancel()


#: Allocations between young collections (CPython's default is 700), and how
#: many collections of each generation before the next one is collected.
GC_THRESHOLDS: Final = (20_000, 20, 20)


def tune_gc() -> None:
    """Make the cyclic garbage collector run less often in a long-lived service.

    A service allocates many short-lived objects per event and keeps many
    long-lived ones (actors, cached states, imported modules); each full
    collection walks all of those. Freezing what exists at start-up keeps
    the modules out of every later walk, and a larger first threshold makes
    collections rarer. Memory is still reclaimed: reference counting frees
    most objects at once, and cycles are collected, only in bigger batches.
    Measured: about 7% less orchestrator CPU per workflow (docs/performance.md).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
