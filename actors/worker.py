"""``python -m actors.worker --activities my.module``: an activity worker.

Serves every activity (functions marked with ``@actors.activity``) found in
the given modules. Run as many as you like, on any machine that reaches
NATS: workers serving one activity type share its tasks. SIGTERM (or
Ctrl-C) stops taking tasks and finishes those in hand within
``--drain-timeout`` seconds; what is left is handed back.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ._activity import collect_activities
from ._service import add_connection_flags, env_default, run_main, setup_logging
from ._wire import Layout
from ._worker import Worker, WorkerConfig

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m actors.worker", description=__doc__)
    add_connection_flags(parser)
    modules = env_default("ACTIVITIES")
    parser.add_argument(
        "--activities",
        nargs="+",
        default=modules.split(",") if modules else None,
        required=not modules,
        metavar="MODULE",
        help="modules whose @activity functions to serve (env ACTORS_ACTIVITIES, comma-separated)",
    )
    parser.add_argument(
        "--only", nargs="+", metavar="ACTIVITY", help="serve only these activity names"
    )
    parser.add_argument(
        "--concurrency", type=int, default=int(env_default("CONCURRENCY", "16") or 16)
    )
    parser.add_argument("--threads", type=int, default=int(env_default("THREADS", "16") or 16))
    parser.add_argument(
        "--ack-wait",
        type=float,
        default=float(env_default("ACK_WAIT", "30") or 30),
        help="seconds before a task held by a dead worker is redelivered",
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=float(env_default("DRAIN_TIMEOUT", "10") or 10)
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        specs = collect_activities(importlib.import_module(name) for name in args.activities)
    except (ImportError, ValueError) as exc:
        parser.error(str(exc))
    if args.only:
        unknown = set(args.only) - {spec.name for spec in specs}
        if unknown:
            parser.error(f"no such activities: {', '.join(sorted(unknown))}")
        specs = [spec for spec in specs if spec.name in args.only]
    if not specs:
        parser.error("no @activity functions found in " + ", ".join(args.activities))
    config = WorkerConfig(
        layout=Layout(replicas=args.replicas),
        concurrency=args.concurrency,
        threads=args.threads,
        ack_wait=args.ack_wait,
        drain_timeout=args.drain_timeout,
    )

    return run_main(
        args,
        "worker",
        lambda transport: Worker(transport, specs, config),
        grace=config.drain_timeout + 5,
    )


if __name__ == "__main__":
    sys.exit(main())
