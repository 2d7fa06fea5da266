"""Concurrency limits in the core: how they are written, and the queued status."""

from __future__ import annotations

from dataclasses import replace

import pytest

from actors.core import (
    CancelRequested,
    DefinitionError,
    ExpressionError,
    InstanceStatus,
    Pause,
    RecordHistory,
    ScheduleActivity,
    SignalReceived,
    SlotGranted,
    StartRequested,
    TerminateRequested,
    admit_instance,
    decide,
    key_values,
    load_definition,
    parse_definition,
    queue_instance,
    step_limit,
)
from actors.wire import decode_state, decode_task, encode_state, encode_task, state_to_data

LIMITED = """
type: order
concurrency:
  - {key: input.customer, limit: 1}
  - {key: "'all'", limit: 20}
steps:
  - {id: gate, wait_signal: go}
  - {id: charge, activity: charge}
"""


def test_limits_round_trip_through_the_canonical_form() -> None:
    definition = load_definition(LIMITED)
    assert [(limit.key.source, limit.limit) for limit in definition.concurrency] == [
        ("input.customer", 1),
        ("'all'", 20),
    ]
    data = definition.to_data()
    assert data["concurrency"] == [
        {"key": "input.customer", "limit": 1},
        {"key": "'all'", "limit": 20},
    ]
    assert parse_definition(data) == definition
    plain = {key: value for key, value in data.items() if key != "concurrency"}
    assert "concurrency" not in parse_definition(plain).to_data()


@pytest.mark.parametrize(
    ("concurrency", "message"),
    [
        ("[]", "concurrency: must be a list of at least one limit"),
        ("{key: a, limit: 1}", "concurrency: must be a list of at least one limit"),
        ("[{key: a}]", "concurrency[0].limit: must be from 1 to 1000000"),
        ("[{key: a, limit: 0}]", "concurrency[0].limit: must be from 1 to 1000000"),
        ("[{key: a, limit: yes}]", "concurrency[0].limit: must be an integer"),
        ("[{limit: 1}]", "concurrency[0].key: required: a key expression"),
        ("[{key: 'a[', limit: 1}]", "concurrency[0].key:"),
        ("[{key: a, limit: 1, per: b}]", "concurrency[0].per: unknown field"),
        ("[" + ", ".join(["{key: a, limit: 1}"] * 9) + "]", "9 limits; at most 8"),
    ],
)
def test_bad_limits_are_refused_with_their_path(concurrency: str, message: str) -> None:
    text = f"type: t\nconcurrency: {concurrency}\nsteps: [{{id: a, activity: x}}]\n"
    with pytest.raises(DefinitionError) as caught:
        load_definition(text)
    assert any(message in str(error) for error in caught.value.errors), caught.value.errors


def test_key_values_are_strings_or_numbers() -> None:
    definition = load_definition(LIMITED)
    assert key_values(definition, "i", {"customer": "c-1"}) == ["c-1", "all"]
    assert key_values(definition, "i", {"customer": 7}) == [7, "all"]
    for bad in (None, True, [1], {"a": 1}):
        with pytest.raises(ExpressionError, match=r"concurrency\[0\]\.key"):
            key_values(definition, "i", {"customer": bad})
    with pytest.raises(ExpressionError, match="characters"):
        key_values(definition, "i", {"customer": "x" * 257})


def test_a_queued_instance_keeps_signals_starts_when_admitted_and_ends_unstarted() -> None:
    definition = load_definition(LIMITED)
    start = StartRequested("o1", "order", 1, {"customer": "c"})
    queued, commands = queue_instance(definition, None, start, "behind c", 1.0)
    assert queued.status is InstanceStatus.QUEUED
    assert not queued.status.terminal
    assert queued.queued == "behind c"
    assert queued.steps == {}
    assert [c.kind for c in commands] == ["flow.queued"]  # type: ignore[union-attr]
    assert decode_state(encode_state(queued)) == queued
    # Queued behind the same limit again: nothing changes.
    assert queue_instance(definition, queued, None, "behind c", 2.0) == (queued, [])
    # Step events are nothing to it; a signal is kept.
    kept, _ = decide(definition, queued, SignalReceived("go", 1, seq=5), 2.0)
    assert kept is not None
    assert kept.signals == {"go": (1,)}
    running, commands = decide(definition, kept, SlotGranted("workflow.order.x"), 3.0)
    assert running is not None
    assert running.status is InstanceStatus.RUNNING
    assert running.queued is None
    # The kept signal was taken as the gate began: the activity is scheduled.
    assert running.steps["charge"].status.value == "scheduled"
    # An admission again, or of a running instance, changes nothing.
    assert admit_instance(definition, running, 4.0) == (running, [])
    for stop, status in (
        (CancelRequested("no"), InstanceStatus.CANCELLED),
        (TerminateRequested("no"), InstanceStatus.TERMINATED),
    ):
        ended, _ = decide(definition, queued, stop, 5.0)
        assert ended is not None
        assert ended.status is status
        assert ended.steps == {}


@pytest.mark.parametrize(
    ("paused", "stop", "status"),
    [
        (False, CancelRequested("no"), InstanceStatus.CANCELLED),
        (False, TerminateRequested("no"), InstanceStatus.TERMINATED),
        # Paused, a cancel resumes it first; a terminate ends it as it is.
        (True, CancelRequested("no"), InstanceStatus.CANCELLED),
        (True, TerminateRequested("no"), InstanceStatus.TERMINATED),
    ],
)
def test_an_instance_that_ends_while_queued_no_longer_waits_behind_a_limit(
    paused: bool, stop: CancelRequested | TerminateRequested, status: InstanceStatus
) -> None:
    """What it waited behind was still shown (by status, the API and the CLI)
    once it had ended."""
    definition = load_definition(LIMITED)
    start = StartRequested("o1", "order", 1, {"customer": "c"})
    if paused:
        start = replace(start, pause=Pause("ops", "type paused", 0.0, by_type=True))
    queued, _ = queue_instance(definition, None, start, "behind c", 1.0)
    assert (queued.paused is not None) == paused
    ended, commands = decide(definition, queued, stop, 2.0)
    assert ended is not None
    assert ended.status is status
    assert ended.queued is None
    assert "queued" not in state_to_data(ended)
    assert not [c for c in commands if not isinstance(c, RecordHistory)]


def test_an_instance_failed_while_queued_no_longer_waits_behind_a_limit() -> None:
    """Its definition gone when it is admitted: it fails, waiting for nothing."""
    definition = load_definition(LIMITED)
    start = StartRequested("o1", "order", 1, {"customer": "c"})
    queued, _ = queue_instance(definition, None, start, "behind c", 1.0)
    failed, _ = admit_instance(None, queued, 2.0)
    assert failed.status is InstanceStatus.FAILED
    assert failed.queued is None


STEP_LIMIT = """
type: pay
steps:
  - {id: charge, activity: charge, concurrency: {key: input.account, limit: 2}}
  - {id: mail, activity: mail, concurrency: {limit: 1}}
"""


def test_step_limits_round_trip_and_name_their_activity() -> None:
    definition = load_definition(STEP_LIMIT)
    assert definition.limited_steps
    steps = definition.to_data()["steps"]
    assert steps[0]["concurrency"] == {"key": "input.account", "limit": 2}
    assert steps[1]["concurrency"] == {"limit": 1}
    assert parse_definition(definition.to_data()) == definition
    found = step_limit(definition, "charge")
    assert found is not None
    assert found[0] == "charge"
    assert found[1].limit == 2
    assert step_limit(definition, "nothing") is None
    assert not load_definition(LIMITED).limited_steps


def test_a_step_key_without_a_value_fails_the_attempt_unretried() -> None:
    definition = load_definition(STEP_LIMIT)
    start = StartRequested("p", "pay", 1, {"amount": 3})
    state, commands = decide(definition, None, start, 1.0)
    assert state is not None
    assert state.status is InstanceStatus.FAILED
    assert state.error is not None
    assert state.error.type == "InvalidConcurrencyKey"
    assert "input.account" in state.error.message
    assert not [c for c in commands if type(c).__name__ == "ScheduleActivity"]


def test_a_rate_limit_rides_on_its_tasks() -> None:
    definition = load_definition(
        "type: r\nsteps: [{id: call, activity: api, "
        "rate: {limit: 20, period: 1s, burst: 5, key: input.tenant}}]\n"
    )
    assert parse_definition(definition.to_data()) == definition
    _, commands = decide(definition, None, StartRequested("i", "r", 1, {"tenant": "t"}), 1.0)
    (task,) = [c for c in commands if isinstance(c, ScheduleActivity)]
    assert task.rate == {
        "activity": "api",
        "key": "input.tenant",
        "value": "t",
        "limit": 20,
        "period": 1.0,
        "burst": 5,
    }
    assert decode_task(encode_task("i", "r", task)).work == task


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("concurrency: {key: a}", "concurrency.limit: must be from 1 to 1000000"),
        ("concurrency: [{key: a, limit: 1}]", "concurrency: a concurrency limit"),
        ("concurrency: {limit: 1, rate: 2}", "concurrency.rate: unknown field"),
        ("rate: {limit: 20}", "rate.period: required"),
        ("rate: {limit: 20, period: 2d}", "rate.period: must be at most a day"),
        ("rate: {limit: 0, period: 1s}", "rate.limit: must be from 1"),
        ("rate: {limit: 1, period: 1s, burst: 0}", "rate.burst: must be from 1"),
        ("rate: {limit: 1, period: 1s, every: 2}", "rate.every: unknown field"),
    ],
)
def test_bad_step_limits_are_refused_with_their_path(field: str, message: str) -> None:
    text = f"type: t\nsteps: [{{id: a, activity: x, {field}}}]\n"
    with pytest.raises(DefinitionError) as caught:
        load_definition(text)
    assert any(message in str(error) for error in caught.value.errors), caught.value.errors
