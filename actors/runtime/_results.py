"""A worker's report of an attempt: its result (or error) published until the broker stores it.

:func:`publish_result` publishes the attempt's outcome on its result
subject with a message id unique to the attempt (so a publish retried
after a lost answer is stored once), and returns only once the broker has
stored it: while the broker is away it keeps the task alive and tries
again, backing off. An output that cannot travel (not encodable, or over
a size limit) is reported instead as a non-retryable error of the attempt,
since running it again would give the same output. :func:`error_info`
turns an activity's exception into what the result carries.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from typing import Any, Final

import trio

from transport import Delivery, TooLargeError, Transport, TransportClosedError, TransportError

from ..core import ErrorInfo
from ..wire import (
    CodecError,
    PayloadTooLargeError,
    Task,
    encode_result,
    result_msg_id,
    result_subject,
)
from ._activity import ActivityError

__all__ = ["PUBLISH_RETRY", "error_info", "publish_result"]

log = logging.getLogger("actors.worker")

#: The first wait before a failed publish is tried again.
PUBLISH_RETRY: Final = 0.5
#: The longest wait between two tries of a result's publish.
PUBLISH_RETRY_MAX: Final = 5.0
#: How much of an error's traceback travels (its end: the innermost frames).
TRACEBACK_LIMIT: Final = 16 * 1024


async def publish_result(
    transport: Transport,
    delivery: Delivery,
    task: Task,
    output: Any,
    error: ErrorInfo | None,
    ack_wait: float,
    headers: Mapping[str, str] | None = None,
) -> ErrorInfo | None:
    """Publish the outcome of ``task``'s attempt; the error as reported (``None``: it completed).

    Returns once the broker has stored it; raises only
    :class:`~transport.TransportClosedError` (the worker is closing). The
    task ``delivery`` is kept alive while the broker is away; it is not acked.
    """
    try:
        data = encode_result(
            task.instance_id, task.work.step, task.work.attempt, output=output, error=error
        )
    except (CodecError, PayloadTooLargeError) as exc:
        # The output itself cannot travel; running again would not help.
        error = ErrorInfo(type(exc).__name__, f"the activity's output: {exc}", non_retryable=True)
        data = encode_result(task.instance_id, task.work.step, task.work.attempt, error=error)
    subject = result_subject(task.instance_id, task.work.step, ok=error is None)
    msg_id = result_msg_id(task.instance_id, task.work.step, task.work.attempt)
    # While the broker is away a publish fails at once: back off (to a
    # third of the ack wait, so the keep-alives still come in time)
    # rather than retry, and warn, twice a second.
    retry = PUBLISH_RETRY
    longest = max(PUBLISH_RETRY, min(PUBLISH_RETRY_MAX, ack_wait / 3))
    while True:
        try:
            await transport.publish(subject, data, msg_id=msg_id, headers=headers)
            break
        except TooLargeError as exc:
            error = ErrorInfo(
                "PayloadTooLarge", f"the activity's output: {exc}", non_retryable=True
            )
            data = encode_result(task.instance_id, task.work.step, task.work.attempt, error=error)
            subject = result_subject(task.instance_id, task.work.step, ok=False)
        except TransportClosedError:
            raise
        except TransportError as exc:
            # Keep the result: the task stays in hand (and alive) until
            # the broker takes it, or the drain deadline hands it back.
            log.warning(
                "could not publish a result (%s); retrying",
                exc,
                extra={
                    "instance": task.instance_id,
                    "step": task.work.step,
                    "attempt": task.work.attempt,
                    "activity": task.work.activity,
                },
            )
            await delivery.in_progress()
            await trio.sleep(retry)
            retry = min(2 * retry, longest)
    return error


def error_info(exc: Exception) -> ErrorInfo:
    """What a result carries of ``exc``: its type (or an :class:`ActivityError`'s), message,
    traceback (its last :data:`TRACEBACK_LIMIT` characters) and whether it is retryable."""
    if isinstance(exc, ActivityError):
        kind, non_retryable = exc.type, exc.non_retryable
    else:
        kind, non_retryable = type(exc).__name__, False
    text = "".join(traceback.format_exception(exc))
    return ErrorInfo(kind, str(exc) or kind, text[-TRACEBACK_LIMIT:], non_retryable)
