"""``python -m actors.orchestrator``: the orchestrator service.

Run as many as you like against one NATS: they share the events. SIGTERM
(or Ctrl-C) stops taking events and drains those in hand within
``--drain-timeout`` seconds; what is left is handed back to the others.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .cli import (
    Defaults,
    ServiceParser,
    add_connection_flags,
    add_setting,
    parse_service_args,
    run_main,
    setup_logging,
)
from .core import Limits
from .runtime import Orchestrator, OrchestratorConfig
from .wire import Layout

__all__ = ["main"]


def _parser(defaults: Defaults) -> argparse.ArgumentParser:
    parser = ServiceParser(
        "orchestrator", prog="python -m actors.orchestrator", description=__doc__
    )
    add_connection_flags(parser, defaults)
    for key, builtin, what in (
        ("ack_wait", 30.0, "seconds before an event held by a dead orchestrator is redelivered"),
        ("passivate_after", 30.0, "seconds an idle instance actor stays in memory"),
        (
            "max_idle_actors",
            10_000,
            "idle instance actors kept in memory at most; past it the longest idle exits",
        ),
        (
            "start_wait",
            None,
            "seconds an event for an instance not stored yet waits for its start before it "
            "goes to dead letters (default: the streams' duplicate window, 120)",
        ),
        (
            "max_waiting_events",
            1000,
            "events held back at once waiting for their instance; past it they go to dead "
            "letters at once",
        ),
        (
            "lease",
            10.0,
            "seconds a partition's lease lasts unrenewed: a crashed orchestrator's "
            "partitions move to the others this long after its last renewal",
        ),
        (
            "partitions",
            16,
            "partitions of the instances, 1 to 1024, for an events stream created now (an "
            "existing stream keeps its own)",
        ),
        ("drain_timeout", 10.0, "seconds to finish the events in hand once told to stop"),
    ):
        add_setting(parser, defaults, key, builtin, what)
    limits = Limits()
    for name, what in (
        ("max_input", "a start, a task's or a child's input, a signal"),
        ("max_output", "an activity's or a child's result, the workflow's output"),
        ("max_state", "an instance's stored state"),
    ):
        builtin = getattr(limits, name)
        add_setting(parser, defaults, name, builtin, f"bytes at most in {what} (default {builtin})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the orchestrator with ``argv`` (default ``sys.argv[1:]``); the exit code.

    Usage errors (flags, variables, config file) exit 2 through argparse, in
    one line; so does a broker that cannot be reached or refuses the
    credentials.
    """
    parser, args = parse_service_args(_parser, "orchestrator", argv)
    setup_logging(args.log_level, args.log_format)
    try:
        config = OrchestratorConfig(
            layout=Layout(
                replicas=args.replicas, ack_wait=args.ack_wait, partitions=args.partitions
            ),
            passivate_after=args.passivate_after,
            max_idle_actors=args.max_idle_actors,
            start_wait=args.start_wait,
            max_waiting_events=args.max_waiting_events,
            lease=args.lease,
            drain_timeout=args.drain_timeout,
            limits=Limits(args.max_input, args.max_output, args.max_state),
        )
    except ValueError as exc:
        parser.error(str(exc))

    return run_main(
        args,
        "orchestrator",
        lambda transport: Orchestrator(transport, config),
        grace=config.drain_timeout + 5,
    )


if __name__ == "__main__":
    sys.exit(main())
