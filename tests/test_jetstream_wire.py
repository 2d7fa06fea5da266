"""The JetStream wire helpers that parse what the server sends."""

from __future__ import annotations

import pytest

from transport._jetstream_wire import _reply_meta


def test_reply_meta_reads_both_ack_subject_forms():
    # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
    assert _reply_meta("$JS.ACK.S.c.2.41.7.1700000000000000000.3") == (2, 41, 7, 3)
    # $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>.<r>
    v2 = "$JS.ACK.hub.ACC.S.c.1.42.8.1700000000000000000.0.token"
    assert _reply_meta(v2) == (1, 42, 8, 0)


@pytest.mark.parametrize(
    "reply",
    [None, "", "_INBOX.abc.1", "$JS.ACK.S.c", "$JS.ACK.S.c.x.41.7.1.3", "$JS.API.X.Y.1.2.3.4.5"],
)
def test_reply_meta_refuses_what_is_not_a_delivery(reply):
    assert _reply_meta(reply) is None
