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
from ._config import Defaults
from ._service import add_connection_flags, parse_service_args, run_main, setup_logging
from ._wire import Layout
from ._worker import Worker, WorkerConfig

__all__ = ["main"]


def _parser(defaults: Defaults) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m actors.worker", description=__doc__)
    add_connection_flags(parser, defaults)
    modules = defaults.get_list("activities")
    parser.add_argument(
        "--activities",
        nargs="+",
        default=modules,
        required=not modules,
        metavar="MODULE",
        help="modules whose @activity functions to serve (env ACTORS_ACTIVITIES, comma-separated)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        default=defaults.get_list("only"),
        metavar="ACTIVITY",
        help="serve only these activity names (env ACTORS_ONLY, comma-separated)",
    )
    parser.add_argument("--concurrency", type=int, default=defaults.get("concurrency", 16))
    parser.add_argument("--threads", type=int, default=defaults.get("threads", 16))
    parser.add_argument(
        "--ack-wait",
        type=float,
        default=defaults.get("ack_wait", 30.0),
        help="seconds before a task held by a dead worker is redelivered",
    )
    parser.add_argument("--drain-timeout", type=float, default=defaults.get("drain_timeout", 10.0))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a worker with ``argv`` (default ``sys.argv[1:]``); the exit code.

    Usage errors (flags, variables, config file, modules without
    activities) exit 2 through argparse; so does a broker that cannot be
    reached or refuses the credentials.
    """
    parser, args = parse_service_args(_parser, "worker", argv)
    setup_logging(args.log_level, args.log_format)
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
