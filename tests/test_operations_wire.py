"""The wire forms of the instance operations: signal-with-start's start body."""

from __future__ import annotations

import json

import pytest

from actors.wire import MessageError, StartMessage, decode_start, encode_start


def test_a_signal_with_start_round_trips_in_cbor_and_reads_from_json() -> None:
    message = StartMessage("cart-7", {"owner": "ann"}, 2, signal=("add", {"sku": "pear"}))
    assert decode_start(encode_start(message)) == message
    body = {"id": "cart-7", "input": 1, "signal": {"name": "add"}}
    assert decode_start(json.dumps(body).encode()).signal == ("add", None)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"input": 1, "signal": {"name": "add"}}, "signal-with-start needs an id"),
        ({"id": "c", "signal": {"name": "a b"}}, "signal: "),
        ({"id": "c", "signal": {"payload": 1}}, "signal: "),
        ({"id": "c", "signal": "add"}, "'signal'"),
        (
            {"id": "c", "parent": {"id": "p", "step": "s"}, "signal": {"name": "add"}},
            "in a child's start",
        ),
    ],
)
def test_a_malformed_signal_with_start_is_refused(body: dict[str, object], reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        decode_start(json.dumps(body).encode())
