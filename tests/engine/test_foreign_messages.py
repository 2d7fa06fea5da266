"""Messages as clients and workers in other languages write them, on both transports.

A program written from ``docs/wire.md`` alone, with another language's CBOR
or JSON library, writes valid messages that this package never writes itself:
a map header in a wider form than needed (npm's cbor-x writes ``b9 00 03``),
a JSON value with whitespace around it, null for a field it has no value for.
The engine must apply them as they are meant, and dead-letter, with a reason
naming the field, a message whose field has the wrong type rather than read
it as something else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import cbor2
import trio
import trio.testing
from flow import instance_id, kinds, result_of, wait_for_step

import actors
from actors.wire import result_msg_id, result_subject, signal_subject, start_msg_id
from actors.wire._names import plain_start_subject

if TYPE_CHECKING:
    from conftest import Engine


@actors.activity
async def foreign_served(value: Any) -> Any:
    """Served so that the worker has an activity; the tests run none."""
    return value


def text(value: str) -> bytes:
    return cbor2.dumps(value)


def plain_envelope(kind: str, body: dict[str, Any]) -> bytes:
    """An envelope as a plain CBOR library writes it, in the shortest form."""
    return cbor2.dumps({"version": 1, "kind": kind, "body": body})


def cbor_x_envelope(kind: str, body: dict[str, Any]) -> bytes:
    """An envelope as npm's cbor-x writes it: every map header in the 2-byte form."""
    fields = b"".join(text(key) + cbor2.dumps(value) for key, value in body.items())
    return (
        b"\xb9\x00\x03"
        + text("version")
        + b"\x01"
        + text("kind")
        + text(kind)
        + text("body")
        + b"\xb9"
        + len(body).to_bytes(2, "big")
        + fields
    )


GATE = {"type": "foreign_gate", "steps": [{"id": "wait", "wait_signal": "go"}]}


async def test_a_start_with_a_wide_map_header_is_applied(engine: Engine) -> None:
    """Regression: a start whose envelope began ``b9 00 03`` was dead-lettered; now
    the instance starts with its id and input, and runs to its end."""
    await engine.client.register(GATE)
    instance = instance_id()
    start = cbor_x_envelope("workflow.start", {"id": instance, "input": {"n": 1}})
    assert start[:3] == bytes.fromhex("b90003")
    await engine.transport.publish(
        plain_start_subject("foreign_gate"), start, msg_id=start_msg_id(instance)
    )
    await wait_for_step(engine, instance, "wait", "waiting")
    info = await engine.client.status(instance)
    assert info is not None
    assert info.input == {"n": 1}
    await engine.client.signal(instance, "go", "on")
    assert await result_of(engine, instance) == "on"
    assert engine.orchestrator.stats["deadletters"] == 0


async def test_a_signal_whose_body_is_a_json_number_with_whitespace_is_applied(
    engine: Engine,
) -> None:
    """Regression: a signal whose body was ``  -5\n`` (any JSON value, whitespace
    around it) was dead-lettered; now the waiting step takes -5 as its payload."""
    await engine.client.register(GATE)
    instance = await engine.client.start("foreign_gate", None)
    await wait_for_step(engine, instance, "wait", "waiting")
    await engine.transport.publish(signal_subject(instance, "go"), b"  -5\n")
    assert await result_of(engine, instance) == -5
    assert engine.orchestrator.stats["deadletters"] == 0


async def test_an_error_with_a_string_non_retryable_is_dead_lettered_naming_the_field(
    engine: Engine, clock: trio.testing.MockClock | None
) -> None:
    """Regression: ``non_retryable: "false"`` in a foreign worker's error was read as
    true (the step failed without retry) and ``traceback: null`` as ``"None"``. Now
    the first is dead-lettered with a reason naming the field and leaves the instance
    as it was; the corrected result (null traceback, boolean false) is retried."""
    await engine.client.register(
        {
            "type": "foreign_work",
            "steps": [
                {
                    "id": "pay",
                    "activity": "foreign_unserved",  # served by the test, as a foreign worker
                    "retry": {"max_attempts": 2, "initial_interval": "200ms"},
                }
            ],
        }
    )
    instance = await engine.client.start("foreign_work", {"amount": 5})
    await wait_for_step(engine, instance, "pay", "scheduled")
    error = {"type": "Declined", "message": "card declined", "traceback": None}
    bad = plain_envelope(
        "activity.result",
        {
            "instance": instance,
            "step": "pay",
            "attempt": 1,
            "error": {**error, "non_retryable": "false"},
        },
    )
    subject = result_subject(instance, "pay", ok=False)
    await engine.transport.publish(subject, bad, msg_id=result_msg_id(instance, "pay", 1))
    [letter] = await engine.deadletters(1)
    assert letter["subject"] == subject
    assert "field 'error.non_retryable' must be a boolean" in letter["reason"]
    assert "got string 'false'" in letter["reason"]
    info = await engine.client.status(instance)
    assert info is not None
    step = info.steps["pay"]
    assert (step["status"], step["attempt"]) == ("scheduled", 1)

    # The worker sends it again, right: the attempt failed, and is retried.
    good = plain_envelope(
        "activity.result",
        {
            "instance": instance,
            "step": "pay",
            "attempt": 1,
            "error": {**error, "non_retryable": False},
        },
    )
    await engine.transport.publish(
        subject, good, msg_id=f"{result_msg_id(instance, 'pay', 1)}-again"
    )
    with trio.fail_after(60):
        await engine.client.wait_for(instance, lambda info: info.steps["pay"]["attempt"] == 2)
    done = plain_envelope(
        "activity.result", {"instance": instance, "step": "pay", "attempt": 2, "output": "paid"}
    )
    await engine.transport.publish(
        result_subject(instance, "pay", ok=True), done, msg_id=result_msg_id(instance, "pay", 2)
    )
    assert await result_of(engine, instance) == "paid"
    history = await engine.history(instance)
    [failure] = [record for record in history if record["kind"] == "activity.failed"]
    assert failure["detail"]["error"] == {
        "type": "Declined",
        "message": "card declined",
        "traceback": "",
        "non_retryable": False,
    }
    assert "activity.retry_scheduled" in await kinds(engine, instance)
    assert engine.orchestrator.stats["deadletters"] == 1
