"""Dead letters: what a service cannot process, recorded with its reason, then acked.

Orchestrators write the events they cannot process to ``deadletter.events``
and workers the tasks they cannot run to ``deadletter.tasks`` (durability
rule 7: one bad message never stops a service). Both write them here, so
that a letter's form, its bounds and its message id are the same whoever
writes it; ``docs/wire.md`` ("Dead letters") documents them.
"""

from __future__ import annotations

import logging
from typing import Final

from transport import Delivery, Transport, TransportError

from ..wire import deadletter_msg_id, deadletter_subject, encode_deadletter

__all__ = ["DEADLETTER_SAMPLE", "MAX_REASON", "deadletter"]

#: Bytes of a dead message kept in its letter (enough to diagnose it).
DEADLETTER_SAMPLE: Final = 64 * 1024
#: Characters of the reason kept in a letter.
MAX_REASON: Final = 2000


async def deadletter(
    transport: Transport,
    delivery: Delivery,
    reason: str,
    *,
    source: str,
    subject: str,
    retry_delay: float,
    log: logging.Logger,
) -> None:
    """Record ``delivery`` in ``deadletter.{source}`` with ``reason``, then ack it.

    The letter names ``subject``, where the message was published (so that
    it can be published again as it is), and keeps the first
    :data:`MAX_REASON` characters of ``reason`` and :data:`DEADLETTER_SAMPLE`
    bytes of the message. Its message id is the message's stream sequence,
    so that a letter written again after a crash is stored once.

    If the broker refuses the letter, the message is handed back (nak,
    delivered again after ``retry_delay`` seconds) rather than lost. Errors
    of the ack or the nak are the transport's and propagate.
    """
    log.warning("dead letter from %s: %s", subject, reason)
    letter = encode_deadletter(
        subject, reason[:MAX_REASON], delivery.data[:DEADLETTER_SAMPLE], delivery.num_delivered
    )
    try:
        await transport.publish(
            deadletter_subject(source),
            letter,
            msg_id=deadletter_msg_id(source, delivery.stream_seq),
        )
    except TransportError as exc:
        log.warning("could not record a dead letter (%s); handing the message back", exc)
        await delivery.nak(retry_delay)
        return
    await delivery.ack()
