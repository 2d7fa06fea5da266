"""The benchmark's workload for Celery: the app and its ``increment`` task.

A module of its own, holding the app and the task and nothing else, because
the worker imports it by name (``celery -A celery_workload worker``) and the
client (``celery_bench.py``) imports the same. Both find Redis, the broker
and the result backend, at the URL in the ``BENCH_CELERY_REDIS`` environment
variable; the worker prints :data:`WORKER_READY` once it consumes tasks.
"""

from __future__ import annotations

import os
from typing import Any, Final

import peer_common
from celery import Celery  # type: ignore[import-untyped]
from celery.signals import worker_ready  # type: ignore[import-untyped]

#: The environment variable holding the Redis URL.
REDIS_URL_VARIABLE: Final = "BENCH_CELERY_REDIS"
#: What the worker prints when it is ready.
WORKER_READY: Final = "worker ready"

app = Celery("bench_compare")


def configure(redis_url: str) -> None:
    """Broker and result backend at ``redis_url``; every other setting is Celery's default."""
    app.conf.update(
        broker_url=redis_url,
        result_backend=redis_url,
        # Celery 5 warns unless this is said; it is the current default behaviour.
        broker_connection_retry_on_startup=True,
    )


if REDIS_URL_VARIABLE in os.environ:
    configure(os.environ[REDIS_URL_VARIABLE])


@app.task(name="bench.increment")  # type: ignore[untyped-decorator]
def increment(value: dict[str, Any]) -> dict[str, Any]:
    """Return the input with its counter incremented (as ``actors.examples.activities``)."""
    return peer_common.increment(value)


@worker_ready.connect  # type: ignore[untyped-decorator]
def announce(**_: object) -> None:
    """Say so on stdout: the driver waits for this line before it starts workflows."""
    print(WORKER_READY, flush=True)
