"""``python -m actors.worker --activities my.module``: an activity worker.

Serves every activity (functions marked with ``@actors.activity``) found in
the given modules. Run as many as you like, on any machine that reaches
NATS: workers serving one activity type share its tasks. SIGTERM (or
Ctrl-C) stops taking tasks and finishes those in hand within
``--drain-timeout`` seconds; what is left is handed back.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .cli import (
    Defaults,
    ModuleError,
    ServiceParser,
    activities_of,
    add_connection_flags,
    add_setting,
    parse_service_args,
    run_main,
    setup_logging,
)
from .runtime import Worker, WorkerConfig
from .wire import Layout

__all__ = ["main"]


def _parser(defaults: Defaults) -> argparse.ArgumentParser:
    parser = ServiceParser("worker", prog="python -m actors.worker", description=__doc__)
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
    for key, builtin, what in (
        ("concurrency", 16, "activities of each type run at once, 1 to 10000"),
        ("threads", 16, "threads for sync activities, 1 to 10000"),
        ("ack_wait", 30.0, "seconds before a task held by a dead worker is redelivered"),
        ("drain_timeout", 10.0, "seconds to finish the tasks in hand once told to stop"),
    ):
        add_setting(parser, defaults, key, builtin, what)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a worker with ``argv`` (default ``sys.argv[1:]``); the exit code.

    Usage errors (flags, variables, config file, modules that do not import
    or hold no activities) exit 2 through argparse, in one line; so does a
    broker that cannot be reached or refuses the credentials.
    """
    parser, args = parse_service_args(_parser, "worker", argv)
    setup_logging(args.log_level, args.log_format)
    try:
        specs = activities_of(args.activities)
    except ModuleError as exc:
        parser.error(str(exc))
    if args.only:
        unknown = set(args.only) - {spec.name for spec in specs}
        if unknown:
            parser.error(f"no such activities: {', '.join(sorted(unknown))}")
        specs = [spec for spec in specs if spec.name in args.only]
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
