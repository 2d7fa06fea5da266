"""Size limits on input, output and state, on both transports.

The orchestrator here runs with small limits so that the tests move little
data. Whatever is over a limit fails the instance whole, before anything of
it is written or published, with an error that names the limit.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest
import trio
from flow import failure_of, kinds, result_of, wait_for_step
from records import Records

import actors
from actors import InstanceStatus
from actors.wire import StartMessage, encode_start, start_msg_id
from actors.wire._names import plain_start_subject

if TYPE_CHECKING:
    from conftest import Engine

LIMITS = actors.Limits(max_input=4096, max_output=4096, max_state=16384)

#: Runs of each activity in one test, by name.
RUNS: Records[Counter[str]] = Records("runs", Counter)


runs = RUNS.fixture("runs", autouse=True)


@pytest.fixture
def orchestrator_options() -> dict[str, Any]:
    return {"limits": LIMITS}


@actors.activity
async def sized(value: Any) -> str:
    """Return a string of ``value`` bytes."""
    RUNS.get()["sized"] += 1
    return "x" * int(value)


@actors.activity
async def echo(value: Any) -> Any:
    RUNS.get()["echo"] += 1
    return value


async def test_a_start_over_the_input_limit(engine: Engine, runs: Counter[str]) -> None:
    await engine.client.register({"type": "big-in", "steps": [{"id": "e", "activity": "echo"}]})
    # A client with the same limit refuses it before sending anything.
    async with actors.Client(engine.transport, limits=LIMITS) as client:
        with pytest.raises(actors.LimitExceededError, match="over the 4096-byte limit"):
            await client.start("big-in", "y" * 5000, id="refused")
        with pytest.raises(actors.LimitExceededError):
            await client.signal("refused", "go", "y" * 5000)
    assert await engine.client.status("refused") is None
    # A start that comes another way is failed by the orchestrator.
    data = encode_start(StartMessage("sent-raw", "y" * 5000))
    await engine.transport.publish(
        plain_start_subject("big-in"), data, msg_id=start_msg_id("sent-raw")
    )
    error = await failure_of(engine, "sent-raw")
    assert error.type == "InputTooLarge"
    assert "the start message is" in error.message
    info = await engine.client.status("sent-raw")
    assert info is not None
    assert info.input is None
    assert runs["echo"] == 0


async def test_an_output_over_the_limit_fails_the_step_without_retry(
    engine: Engine, runs: Counter[str]
) -> None:
    await engine.client.register(
        {
            "type": "big-out",
            "steps": [{"id": "s", "activity": "sized", "retry": {"max_attempts": 5}}],
        }
    )
    instance = await engine.client.start("big-out", 6000)
    error = await failure_of(engine, instance)
    assert error.type == "OutputTooLarge"
    assert "the result of step 's'" in error.message
    assert runs["sized"] == 1
    # Just under the limit is fine.
    small = await engine.client.start("big-out", 3000)
    assert len(await result_of(engine, small)) == 3000


@actors.activity
async def undo(value: Any) -> str:
    RUNS.get()["undo"] += 1
    return "undone"


async def test_a_task_over_the_input_limit_is_never_published(
    engine: Engine, runs: Counter[str]
) -> None:
    """The step fails before its task goes out, and what was done is undone."""
    await engine.client.register(
        {
            "type": "big-task",
            "steps": [
                {
                    "id": "s",
                    "activity": "sized",
                    "compensate": {"activity": "undo", "input": "`1`"},
                },
                {
                    "id": "both",
                    "activity": "echo",
                    "input": "[steps.s.output, steps.s.output]",
                    "retry": {"max_attempts": 3},
                },
            ],
        }
    )
    instance = await engine.client.start("big-task", 3000)
    error = await failure_of(engine, instance)
    assert error.type == "InputTooLarge"
    assert "the input of step 'both' is" in error.message
    assert (runs["echo"], runs["undo"]) == (0, 1)
    history = await engine.history(instance)
    failed = [r["detail"] for r in history if r["kind"] == "activity.failed"]
    assert [(d["step"], d["attempt"], d["error"]["type"]) for d in failed] == [
        ("both", 1, "InputTooLarge")
    ]
    info = await engine.client.status(instance)
    assert info is not None
    assert info.compensation == "completed"


async def test_a_state_over_the_limit_fails_the_instance_small(engine: Engine) -> None:
    await engine.client.register(
        {
            "type": "big-state",
            "steps": [
                {
                    "id": "each",
                    "map": "input",
                    "concurrency": 1,
                    "steps": [{"id": "s", "activity": "sized"}],
                }
            ],
        }
    )
    instance = await engine.client.start("big-state", [3000] * 8)
    error = await failure_of(engine, instance)
    assert error.type == "StateTooLarge"
    assert "the instance state is" in error.message
    info = await engine.client.status(instance)
    assert info is not None
    assert info.status is InstanceStatus.FAILED
    # Recorded without the payloads that overflowed.
    assert info.input is None
    assert "workflow.failed" in await kinds(engine, instance)


async def test_an_oversized_signal_is_dead_lettered_and_the_instance_waits_on(
    engine: Engine,
) -> None:
    await engine.client.register(
        {"type": "big-signal", "steps": [{"id": "w", "wait_signal": "go"}]}
    )
    instance = await engine.client.start("big-signal", None)
    await wait_for_step(engine, instance, "w", "waiting")
    await engine.client.signal(instance, "go", "y" * 5000)
    (letter,) = await engine.deadletters(1)
    assert "signal 'go' is" in letter["reason"]
    await engine.client.signal(instance, "go", "small")
    with trio.fail_after(60):
        assert await result_of(engine, instance) == "small"


def test_a_state_limit_over_the_brokers_largest_message_is_refused() -> None:
    """Such a state could not even be failed in place: refuse the setting up front."""
    too_big = actors.Limits(max_state=2 * 1024 * 1024)
    with pytest.raises(ValueError, match="must not be over the broker's largest message"):
        actors.OrchestratorConfig(limits=too_big)
