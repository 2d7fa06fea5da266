"""Scenario 10 of the fault-injection suite: payloads at the size limits, to the byte.

``tests/engine/test_limits.py`` shows that what is far over a limit fails;
this module pins the boundaries: limit - 1, the limit and limit + 1 byte,
on every path a payload takes. What each limit measures (``actors.Limits``):

* ``max_input``: the encoded start message, as the client sends it and as
  the orchestrator receives it (CBOR envelope or JSON object), and the
  encoded signal message, likewise;
* ``max_output``: the CBOR encoding of the output value, the same for a
  step's result and for the workflow's output;
* the broker: data plus the header block against the server's
  ``max_payload`` (1 MiB by default).

At the limit passes; one byte over fails with the error of its path (the
client's :class:`actors.LimitExceededError`, an instance failed with
``InputTooLarge`` or ``OutputTooLarge``, a dead letter, or the transport's
``TooLargeError``); the connection stays up, as the next operation on it
shows; and nothing is left half-written: the state is absent, or a clean
failed one.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
import trio
from bad_messages import InProcess, in_process, wait_deadletters
from flow import history_to_the_end
from natsserver import NatsServer
from processes import read_states
from records import Records

import actors
from actors import InstanceStatus
from actors.wire import (
    STATES_BUCKET,
    StartMessage,
    encode_result,
    encode_signal,
    encode_start,
    signal_subject,
    start_msg_id,
)
from actors.wire._names import plain_start_subject
from transport import ConnectionState, TooLargeError

#: The orchestrator's and the client's limits (small: the tests move little data).
M = 4096
LIMITS = actors.Limits(max_input=M, max_output=M, max_state=64 * 1024)
#: The broker's largest message (nats-server's default max_payload).
MAX_PAYLOAD = 1024 * 1024

#: Runs of each activity of this module in one test, by name.
RUNS: Records[Counter[str]] = Records("runs", Counter)


runs = RUNS.fixture("runs", autouse=True)


@actors.activity
async def edge_one(value: Any) -> int:
    RUNS.get()["edge_one"] += 1
    return 1


@actors.activity
async def edge_sized(size: int) -> str:
    """A string whose CBOR encoding is ``size`` bytes."""
    RUNS.get()["edge_sized"] += 1
    return "x" * padding(size, lambda pad: cbor2.dumps("x" * pad))


@actors.activity
async def edge_result_sized(size: int) -> str:
    """An output that makes this attempt's result message ``size`` bytes."""
    info = actors.activity_info()
    RUNS.get()["edge_result_sized"] += 1

    def message(pad: int) -> bytes:
        return encode_result(info.instance_id, info.step, info.attempt, output="x" * pad)

    return "x" * padding(size, message)


ONE = {"type": "edge_one", "steps": [{"id": "only", "activity": "edge_one", "input": "`1`"}]}
SIGNAL = {"type": "edge_signal", "steps": [{"id": "wait", "wait_signal": "go"}]}
#: A step's output checked alone: the workflow's output is the next step's 1.
STEP_OUTPUT = {
    "type": "edge_step_output",
    "steps": [
        {"id": "make", "activity": "edge_sized", "retry": {"max_attempts": 3}},
        {"id": "after", "activity": "edge_one", "input": "`1`"},
    ],
}
#: The workflow's output is the last step's output.
LAST_OUTPUT = {"type": "edge_last_output", "steps": [{"id": "make", "activity": "edge_sized"}]}
#: The workflow's output wraps the step's in a list: one byte more than the step's.
WRAPPED_OUTPUT = {**LAST_OUTPUT, "type": "edge_wrapped_output", "output": "[steps.make.output]"}
BROKER = {"type": "edge_broker", "steps": [{"id": "make", "activity": "edge_result_sized"}]}


def padding(size: int, build: Callable[[int], bytes]) -> int:
    """The ``pad`` for which ``build(pad)`` is exactly ``size`` bytes.

    Approached from below: ``build`` may refuse what is over the codec's ceiling,
    and a length's CBOR header grows with it.
    """
    pad = max(0, size - len(build(0)) - 16)
    for _ in range(8):
        got = len(build(pad))
        if got == size:
            return pad
        pad += size - got
    raise AssertionError(f"no padding makes {size} bytes")


def sized_start(instance_id: str, size: int) -> tuple[str, bytes]:
    """An input, and the start message carrying it, of exactly ``size`` bytes."""
    pad = padding(size, lambda n: encode_start(StartMessage(instance_id, "x" * n)))
    data = encode_start(StartMessage(instance_id, "x" * pad))
    assert len(data) == size
    return "x" * pad, data


def sized_json_start(instance_id: str, size: int) -> tuple[str, bytes]:
    def build(n: int) -> bytes:
        return json.dumps({"id": instance_id, "input": "x" * n}).encode()

    pad = padding(size, build)
    assert len(build(pad)) == size
    return "x" * pad, build(pad)


def sized_signal(size: int) -> tuple[str, bytes]:
    pad = padding(size, lambda n: encode_signal("x" * n))
    return "x" * pad, encode_signal("x" * pad)


async def result_of(engine: InProcess, instance_id: str) -> Any:
    with trio.fail_after(60):
        return await engine.client.result(instance_id)


async def failure_of(engine: InProcess, instance_id: str) -> actors.ErrorInfo:
    with pytest.raises(actors.WorkflowFailedError) as failed:
        await result_of(engine, instance_id)
    return failed.value.error


#: A history reader's consumer per call (a durable name read again resumes).
_READERS = itertools.count()


async def history_kinds(engine: InProcess, instance_id: str) -> list[str]:
    """The kinds of the instance's history records (``Client.history``), once the
    terminal one is there: it is published just after the state, and a consumer of
    the history waits for it."""
    with trio.fail_after(30):
        await history_to_the_end(engine.transport, instance_id, f"edges{next(_READERS)}")
    kinds = [r["kind"] for r in await engine.client.history(instance_id)]
    assert kinds[-1] in ("workflow.completed", "workflow.failed"), kinds
    return kinds


async def assert_clean_failure(engine: InProcess, instance_id: str, kind: str) -> None:
    """The stored state is a failed one, with ``kind``, holding none of the payloads, and
    nothing of it is outstanding: no step scheduled, no command waiting to go out."""
    (state,) = (await read_states(engine.transport, [instance_id])).values()
    assert state.status is InstanceStatus.FAILED
    assert state.error is not None
    assert state.error.type == kind
    assert state.output is None
    assert all(step.status.value != "scheduled" for step in state.steps.values())
    assert all(type(command).__name__ == "RecordHistory" for command in state.outbox), state.outbox
    kinds = await history_kinds(engine, instance_id)
    assert kinds.count("workflow.failed") == 1


async def assert_still_serving(engine: InProcess, instance_id: str) -> None:
    """A further start on the same transport and client runs to the end."""
    await engine.client.register(ONE)
    await engine.client.start("edge_one", None, id=instance_id)
    assert await result_of(engine, instance_id) == 1


def module() -> Any:
    return sys.modules[__name__]


# -- max_input: starts -------------------------------------------------------------------


async def test_a_start_at_the_input_limit_through_the_client(engine_url: str) -> None:
    """The client sends a start message of ``max_input`` bytes and refuses one of
    ``max_input`` + 1 with ``LimitExceededError`` (InputTooLarge), sending nothing:
    no state, no history. The same client goes on serving."""
    async with in_process(engine_url, module(), limits=LIMITS) as engine:
        await engine.client.register(ONE)
        accepted = {}
        for size in (M - 1, M):
            instance_id = f"client-{size}"
            accepted[instance_id], _ = sized_start(instance_id, size)
            await engine.client.start("edge_one", accepted[instance_id], id=instance_id)
        refused = f"client-{M + 1}"
        payload, _ = sized_start(refused, M + 1)
        with pytest.raises(actors.LimitExceededError) as caught:
            await engine.client.start("edge_one", payload, id=refused)
        assert caught.value.kind == "InputTooLarge"
        assert str(caught.value) == f"the start message is {M + 1} bytes, over the {M}-byte limit"
        for instance_id, value in accepted.items():
            assert await result_of(engine, instance_id) == 1
            info = await engine.client.status(instance_id)
            assert info is not None
            assert info.input == value
        await assert_still_serving(engine, "client-after")
        assert await engine.client.status(refused) is None
        assert await engine.client.history(refused) == []


@pytest.mark.parametrize("encoding", ["cbor", "json"])
async def test_a_raw_start_at_the_input_limit(
    engine_url: str, encoding: str, runs: Counter[str]
) -> None:
    """A start published raw (CBOR envelope or JSON object, as docs/wire.md allows) of
    ``max_input`` bytes runs; one of ``max_input`` + 1 creates the instance failed with
    ``InputTooLarge``, its input not stored, no step run."""
    sized = sized_start if encoding == "cbor" else sized_json_start
    async with in_process(engine_url, module(), limits=LIMITS) as engine:
        await engine.client.register(ONE)
        inputs = {}
        for size in (M - 1, M, M + 1):
            instance_id = f"raw-{encoding}-{size}"
            inputs[instance_id], data = sized(instance_id, size)
            assert len(data) == size
            await engine.transport.publish(
                plain_start_subject("edge_one"), data, msg_id=start_msg_id(instance_id)
            )
        for size in (M - 1, M):
            instance_id = f"raw-{encoding}-{size}"
            assert await result_of(engine, instance_id) == 1
            info = await engine.client.status(instance_id)
            assert info is not None
            assert info.input == inputs[instance_id]
        over = f"raw-{encoding}-{M + 1}"
        error = await failure_of(engine, over)
        assert error.type == "InputTooLarge"
        assert error.message == f"the start message is {M + 1} bytes, over the {M}-byte limit"
        await assert_clean_failure(engine, over, "InputTooLarge")
        info = await engine.client.status(over)
        assert info is not None
        assert info.input is None
        assert info.steps == {}
        assert await history_kinds(engine, over) == ["workflow.failed"]
        assert runs["edge_one"] == 2
        await assert_still_serving(engine, f"raw-{encoding}-after")


# -- max_input: signals ------------------------------------------------------------------


async def test_a_signal_at_the_input_limit(engine_url: str) -> None:
    """A signal message of ``max_input`` bytes is taken, from the client and raw; the
    client refuses ``max_input`` + 1 (sending nothing), and one published raw goes to
    dead letters with its size in the reason while the instance goes on waiting, with
    nothing of the signal kept."""
    async with in_process(engine_url, module(), limits=LIMITS) as engine:
        await engine.client.register(SIGNAL)
        for instance_id in ("sig-client", "sig-raw"):
            await engine.client.start("edge_signal", None, id=instance_id)
        with trio.fail_after(30):
            for instance_id in ("sig-client", "sig-raw"):
                await engine.client.wait_for(
                    instance_id, lambda info: info.steps.get("wait", {}).get("status") == "waiting"
                )

        over, _ = sized_signal(M + 1)
        with pytest.raises(actors.LimitExceededError) as caught:
            await engine.client.signal("sig-client", "go", over)
        assert caught.value.kind == "InputTooLarge"
        assert str(caught.value) == f"signal 'go' is {M + 1} bytes, over the {M}-byte limit"
        at_limit, data = sized_signal(M)
        assert len(data) == M
        await engine.client.signal("sig-client", "go", at_limit)
        assert await result_of(engine, "sig-client") == at_limit

        subject = signal_subject("sig-raw", "go")
        _, cbor_over = sized_signal(M + 1)
        json_over = json.dumps("x" * (M + 1 - 2)).encode()
        assert len(json_over) == M + 1
        for data in (cbor_over, json_over):
            await engine.transport.publish(subject, data)
        with trio.fail_after(30):
            letters = await wait_deadletters(engine.transport, 2)
        assert [letter["reason"] for letter in letters] == [
            f"instance sig-raw: signal 'go' is {M + 1} bytes, over the {M}-byte limit"
        ] * 2
        (state,) = (await read_states(engine.transport, ["sig-raw"])).values()
        assert state.status is InstanceStatus.RUNNING
        assert state.steps["wait"].status.value == "waiting"
        assert state.signals == {}
        assert state.seen_signals == ()
        under, data = sized_signal(M - 1)
        await engine.transport.publish(subject, data)
        assert await result_of(engine, "sig-raw") == under
        await assert_still_serving(engine, "sig-after")


# -- max_output: a step's output and the workflow's ----------------------------------


async def test_a_step_output_at_the_output_limit(engine_url: str, runs: Counter[str]) -> None:
    """An activity output whose encoding is ``max_output`` bytes is applied; one byte
    more fails the step at once (no retry, though the step allows three attempts) with
    ``OutputTooLarge`` naming the output's size. Regression: the result message had 1
    KiB of slack, so outputs up to about ``max_output`` + 900 bytes passed too (and
    the message gave the size of the whole message)."""
    async with in_process(engine_url, module(), limits=LIMITS) as engine:
        await engine.client.register(STEP_OUTPUT)
        for size in (M - 1, M, M + 1, M + 500):
            await engine.client.start("edge_step_output", size, id=f"step-{size}")
        for size in (M - 1, M):
            assert await result_of(engine, f"step-{size}") == 1
            info = await engine.client.status(f"step-{size}")
            assert info is not None
            assert len(cbor2.dumps(info.steps["make"]["output"])) == size
        for size in (M + 1, M + 500):
            error = await failure_of(engine, f"step-{size}")
            assert error.type == "OutputTooLarge"
            assert (
                f"the output in the result of step 'make' is {size} bytes, "
                f"over the {M}-byte limit" in error.message
            )
            info = await engine.client.status(f"step-{size}")
            assert info is not None
            assert info.steps["make"]["status"] == "failed"
            assert info.steps["make"]["attempt"] == 1
            assert "after" not in info.steps
        assert runs["edge_sized"] == 4


async def test_a_workflow_output_at_the_output_limit(engine_url: str) -> None:
    """The workflow's output is measured as a step's is: an output of ``max_output``
    bytes completes the instance, one byte more fails it with ``OutputTooLarge``, at
    once and stored without its payloads. Regression: the workflow's output was
    measured inside an envelope (27 bytes more), so a last step's output of
    ``max_output`` bytes, applied as the step's, failed the workflow."""
    async with in_process(engine_url, module(), limits=LIMITS) as engine:
        await engine.client.register(LAST_OUTPUT)
        await engine.client.register(WRAPPED_OUTPUT)
        for size in (M - 1, M):
            await engine.client.start("edge_last_output", size, id=f"last-{size}")
        # The wrapped output is one byte longer than the step's: M - 1, M, M + 1.
        for size in (M - 2, M - 1, M):
            await engine.client.start("edge_wrapped_output", size, id=f"wrapped-{size + 1}")
        for instance_id in ("last-4095", "last-4096", "wrapped-4095", "wrapped-4096"):
            output = await result_of(engine, instance_id)
            size = int(instance_id.rpartition("-")[2])
            assert len(cbor2.dumps(output)) == size
        error = await failure_of(engine, f"wrapped-{M + 1}")
        assert error.type == "OutputTooLarge"
        assert error.message == (
            f"LimitExceededError: the workflow's output is {M + 1} bytes, over the {M}-byte limit"
        )
        await assert_clean_failure(engine, f"wrapped-{M + 1}", "OutputTooLarge")
        (state,) = (await read_states(engine.transport, [f"wrapped-{M + 1}"])).values()
        assert state.input is None
        assert all(step.output is None for step in state.steps.values())
        await assert_still_serving(engine, "output-after")


async def test_a_workflow_output_past_the_codecs_ceiling_fails_the_instance(
    engine_url: str,
) -> None:
    """An output expression that makes more than the codec's 1 MiB out of outputs that
    fit (four copies of a 300 kB one) is an output over the limit like any other: the
    instance fails with ``OutputTooLarge``, nothing is dead-lettered. Regression: at
    419d3c1 the codec's error escaped the limit checks, the event was retried and
    dead-lettered, and the instance stayed running for good (a later net for codec
    errors fails it as ``UnencodableValue``; the output limit now names it)."""
    limits = actors.Limits(max_input=M, max_output=512 * 1024, max_state=MAX_PAYLOAD)
    copies = ", ".join(["steps.make.output"] * 4)
    flow = {**LAST_OUTPUT, "type": "edge_huge_output", "output": f"[{copies}]"}
    async with in_process(engine_url, module(), limits=limits) as engine:
        await engine.client.register(flow)
        await engine.client.start("edge_huge_output", 300_000, id="huge")
        error = await failure_of(engine, "huge")
        assert error.type == "OutputTooLarge"
        assert "the workflow's output is" in error.message
        await assert_clean_failure(engine, "huge", "OutputTooLarge")
        assert engine.orchestrator.stats["deadletters"] == 0
        await assert_still_serving(engine, "huge-after")


# -- the broker's largest message ---------------------------------------------------------


async def test_a_raw_publish_over_the_brokers_largest_message(engine_url: str) -> None:
    """One byte over the broker's largest message (1 MiB) is refused with the
    transport's ``TooLargeError``, on both transports; the same transport and client
    go on working."""
    async with in_process(engine_url, module(), limits=LIMITS) as engine:
        await engine.client.register(ONE)
        with pytest.raises(TooLargeError):
            await engine.transport.publish(
                plain_start_subject("edge_one"), b"{" * (MAX_PAYLOAD + 1)
            )
        assert engine.transport.state is ConnectionState.CONNECTED
        await assert_still_serving(engine, "broker-after")


async def test_headers_count_against_the_servers_max_payload(
    fresh_nats_server: NatsServer,
) -> None:
    """Against nats-server, what counts is data plus the header block (a message id,
    a KV compare-and-set revision). Exactly ``max_payload`` is stored; one byte more
    is refused with ``TooLargeError`` and the connection stays up. Regression:
    nats-py checked only the data, the server answered the message with an error and
    closed the connection, and nats-py does not reconnect after one: the transport
    was closed for good (an orchestrator or worker stopped by one message near 1 MiB
    that carried a message id). Through a client with limits above the broker's, a
    start message of exactly 1 MiB is refused the same way, nothing stored."""
    async with in_process(fresh_nats_server.url, module(), limits=LIMITS) as engine:
        await engine.client.register(ONE)
        msg_id = start_msg_id("broker-exact")
        # NATS/1.0, one "Nats-Msg-Id: <id>" line, and an empty line.
        header_block = len(b"NATS/1.0\r\n\r\n") + len(f"Nats-Msg-Id: {msg_id}\r\n")
        _, exact = sized_json_start("broker-exact", MAX_PAYLOAD - header_block)
        _, over = sized_json_start("broker-over", MAX_PAYLOAD - header_block + 1)
        subject = plain_start_subject("edge_one")
        with pytest.raises(TooLargeError, match="max_payload"):
            await engine.transport.publish(subject, over, msg_id=msg_id)
        assert engine.transport.state is ConnectionState.CONNECTED
        ack = await engine.transport.publish(subject, exact, msg_id=msg_id)
        assert not ack.duplicate
        # Far over max_input: the orchestrator fails it, small.
        error = await failure_of(engine, "broker-exact")
        assert error.type == "InputTooLarge"
        await assert_clean_failure(engine, "broker-exact", "InputTooLarge")
        assert await engine.client.status("broker-over") is None

        # A compare-and-set write of a value the bucket allows (1 MiB) but whose
        # revision header takes it over the server's limit.
        states = await engine.transport.kv(STATES_BUCKET)
        with pytest.raises(TooLargeError, match="max_payload"):
            await states.create("broker-kv", b"x" * MAX_PAYLOAD)
        assert await states.get("broker-kv") is None

        async with actors.Client(
            engine.transport, limits=actors.Limits(max_input=2 * MAX_PAYLOAD)
        ) as permissive:
            payload, data = sized_start("broker-client", MAX_PAYLOAD)
            assert len(data) == MAX_PAYLOAD
            with pytest.raises(TooLargeError, match="max_payload"):
                await permissive.start("edge_one", payload, id="broker-client")
            # One byte more is past the codec's own ceiling.
            payload = "x" * (len(payload) + 1)
            with pytest.raises(actors.PayloadTooLargeError):
                await permissive.start("edge_one", payload, id="broker-client")
        assert engine.transport.state is ConnectionState.CONNECTED
        assert await engine.client.status("broker-client") is None
        await assert_still_serving(engine, "broker-after")


async def test_an_output_the_broker_cannot_carry_fails_the_step_and_the_worker_serves_on(
    fresh_nats_server: NatsServer,
) -> None:
    """An activity output that the codec accepts but whose result message, with its
    message id header, is over the server's ``max_payload``: the worker reports the
    step failed (``PayloadTooLarge``, no retry) instead of losing its connection, and
    runs the next workflow. Regression: the worker's transport was closed for good by
    the server, and the worker stopped."""
    async with in_process(fresh_nats_server.url, module(), limits=LIMITS) as engine:
        await engine.client.register(BROKER)
        await engine.client.register(ONE)
        await engine.client.start("edge_broker", MAX_PAYLOAD - 8, id="broker-output")
        error = await failure_of(engine, "broker-output")
        assert error.type == "PayloadTooLarge"
        assert "max_payload" in error.message
        assert engine.worker.stats["failed"] == 1
        await assert_still_serving(engine, "broker-output-after")
