"""The wire forms of the instance operations: their subjects, pause and resume bodies,
and signal-with-start's start body."""

from __future__ import annotations

import json

import pytest

from actors.core import PauseRequested, ResumeRequested
from actors.wire import (
    MessageError,
    StartMessage,
    admit_subject,
    cancel_subject,
    decode_pause,
    decode_resume,
    decode_start,
    encode,
    encode_pause,
    encode_resume,
    encode_start,
    pause_subject,
    resume_subject,
    retry_subject,
    signal_subject,
    start_subject,
    timer_subject,
)


def test_every_instance_event_is_published_on_its_documented_subject() -> None:
    # docs/wire.md, "Subjects": clients and other programs publish on these.
    assert start_subject("i-1", "order") == "instance.i-1.start.order"
    assert cancel_subject("i-1") == "instance.i-1.cancel"
    assert signal_subject("i-1", "go") == "instance.i-1.signal.go"
    assert timer_subject("i-1") == "instance.i-1.timer"
    assert admit_subject("i-1") == "instance.i-1.admit"
    assert pause_subject("i-1") == "instance.i-1.pause"
    assert resume_subject("i-1") == "instance.i-1.resume"
    assert retry_subject("i-1") == "instance.i-1.retry"


def test_a_pause_and_a_resume_carry_who_why_and_whether_by_type() -> None:
    assert decode_pause(encode_pause("ann", "audit", by_type=True)) == PauseRequested(
        "ann", "audit", by_type=True
    )
    assert decode_resume(encode_resume("bob", "done")) == ResumeRequested("bob", "done")
    # Every field may be left out; each kind is read only as itself.
    assert decode_pause(encode("workflow.pause", {})) == PauseRequested()
    assert decode_resume(encode("workflow.resume", {})) == ResumeRequested()
    with pytest.raises(MessageError):
        decode_resume(encode_pause("ann", "audit"))
    with pytest.raises(MessageError, match="'type'"):
        decode_pause(encode("workflow.pause", {"type": "yes"}))


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
