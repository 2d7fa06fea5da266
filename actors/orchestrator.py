"""``python -m actors.orchestrator``: the orchestrator service.

Run as many as you like against one NATS: they share the events. SIGTERM
(or Ctrl-C) stops taking events and drains those in hand within
``--drain-timeout`` seconds; what is left is handed back to the others.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._orchestrator import Orchestrator, OrchestratorConfig
from ._service import add_connection_flags, env_default, run_main, setup_logging
from ._wire import Layout

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m actors.orchestrator", description=__doc__)
    add_connection_flags(parser)
    parser.add_argument(
        "--ack-wait",
        type=float,
        default=float(env_default("ACK_WAIT", "30") or 30),
        help="seconds before an event held by a dead orchestrator is redelivered",
    )
    parser.add_argument(
        "--passivate-after",
        type=float,
        default=float(env_default("PASSIVATE_AFTER", "30") or 30),
        help="seconds an idle instance actor stays in memory",
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=float(env_default("DRAIN_TIMEOUT", "10") or 10)
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.log_level)
    config = OrchestratorConfig(
        layout=Layout(replicas=args.replicas, ack_wait=args.ack_wait),
        passivate_after=args.passivate_after,
        drain_timeout=args.drain_timeout,
    )

    return run_main(
        args,
        "orchestrator",
        lambda transport: Orchestrator(transport, config),
        grace=config.drain_timeout + 5,
    )


if __name__ == "__main__":
    sys.exit(main())
