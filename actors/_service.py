"""What the service entry points share: flags, environment, logging, signals.

Every flag has an ``ACTORS_*`` environment variable (``--url`` is
``ACTORS_NATS_URL``, ``--ack-wait`` is ``ACTORS_ACK_WAIT``); a flag given
on the command line wins.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, Protocol

import trio

from transport import ConnectOptions, Transport, TransportError, open_transport

__all__ = ["add_connection_flags", "connect_options", "run_main", "run_service", "setup_logging"]

DEFAULT_URL: Final = "nats://127.0.0.1:4222"
log = logging.getLogger("actors")


def env_default(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"ACTORS_{name}", default)


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=env_default("NATS_URL", DEFAULT_URL),
        help="broker URL: nats://host:port (comma-separated for a cluster), tls://, "
        "or memory:// (env ACTORS_NATS_URL)",
    )
    parser.add_argument("--user", default=env_default("NATS_USER"))
    parser.add_argument("--password", default=env_default("NATS_PASSWORD"))
    parser.add_argument("--token", default=env_default("NATS_TOKEN"))
    parser.add_argument("--creds", default=env_default("NATS_CREDS"), help="a .creds file")
    parser.add_argument("--tls-ca", default=env_default("NATS_TLS_CA"))
    parser.add_argument("--tls-cert", default=env_default("NATS_TLS_CERT"))
    parser.add_argument("--tls-key", default=env_default("NATS_TLS_KEY"))
    parser.add_argument(
        "--replicas",
        type=int,
        default=int(env_default("REPLICAS", "1") or 1),
        help="replicas of every stream and bucket (3 on a cluster)",
    )
    parser.add_argument(
        "--log-level", default=env_default("LOG_LEVEL", "INFO"), help="DEBUG, INFO, WARNING"
    )


def connect_options(args: argparse.Namespace, name: str) -> ConnectOptions:
    return ConnectOptions(
        user=args.user,
        password=args.password,
        token=args.token,
        credentials_file=args.creds,
        tls_ca_file=args.tls_ca,
        tls_cert_file=args.tls_cert,
        tls_key_file=args.tls_key,
        name=name,
    )


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
        stream=sys.stderr,
    )


async def run_service(
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


class Service(Protocol):
    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...
    def shutdown(self) -> None: ...


def run_main(
    args: argparse.Namespace,
    name: str,
    make: Callable[[Transport], Service],
    *,
    grace: float,
) -> int:
    """Connect, run the service ``make`` builds until a signal, drain; the exit code.

    A broker that cannot be reached (or refuses the credentials) ends the
    process with code 2 and a one-line reason, not a traceback.
    """

    async def main() -> None:
        async with open_transport(args.url, connect_options(args, name)) as transport:

            async def serve(nursery: trio.Nursery) -> Callable[[], None]:
                service = make(transport)
                await nursery.start(service.run)
                return service.shutdown

            await run_service(serve, grace=grace)

    try:
        trio.run(main)
    except TransportError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    return 0
