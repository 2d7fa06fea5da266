"""The decoders of ``actors.wire._messages`` check the type of every field.

A message from a worker, client or engine in another language is read as it
says, or refused: a wrong type is a :class:`MessageError` whose reason names
the field by its path (``error.cause.non_retryable``), never converted into
something else (``"false"`` is not true, null is not ``"None"``). An optional
field may be absent or null, both meaning its default.
"""

from __future__ import annotations

import copy
from typing import Any, get_args

import cbor2
import pytest

from actors.core import (
    ActivityCompleted,
    ActivityFailed,
    CancelActivity,
    CancelChild,
    Command,
    ErrorInfo,
    InstanceState,
    InstanceStatus,
    NotifyParent,
    RecordHistory,
    ScheduleActivity,
    StartChild,
    StartTimer,
    StepState,
    StepStatus,
    TimerFired,
    TimerKind,
)
from actors.wire import (
    ActivityCancel,
    MessageError,
    StartMessage,
    Task,
    decode_activity_cancel,
    decode_cancel,
    decode_deadletter,
    decode_history,
    decode_result,
    decode_start,
    decode_state,
    decode_status,
    decode_task,
    decode_terminate,
    decode_timer,
    encode_activity_cancel,
    encode_deadletter,
    encode_history,
    encode_history_records,
    encode_result,
    encode_state,
    encode_task,
    encode_timer,
    state_to_data,
)

#: Values of other wire types than the one a field must hold.
WRONG_FOR_STRING = [5, 1.5, True, False, [], {}, b"x"]
WRONG_FOR_BOOLEAN = ["false", "true", "", 0, 1, 1.5, [], {}]
WRONG_FOR_INTEGER = ["1", 1.5, True, False, [], {}, b"1"]
WRONG_FOR_NUMBER = ["1.5", True, [], {}, b"1"]
WRONG_FOR_MAP = ["boom", 5, True, [], b"x"]
#: A field value meaning: leave the field out.
DROP: Any = object()


def envelope(kind: str, body: Any) -> bytes:
    """An envelope as a plain CBOR library writes it, without any checks."""
    return cbor2.dumps({"version": 1, "kind": kind, "body": body})


def with_field(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``body`` with the field at ``path`` (``a.b[2].c``) set, or dropped."""
    copied = copy.deepcopy(body)
    steps: list[str | int] = []
    for part in path.split("."):
        name, _, index = part.partition("[")
        steps.append(name)
        if index:
            steps.append(int(index.rstrip("]")))
    target: Any = copied
    for step in steps[:-1]:
        target = target[step]
    if value is DROP:
        target.pop(steps[-1], None)
    else:
        target[steps[-1]] = value
    return copied


def refusal(decoder: Any, data: bytes) -> str:
    with pytest.raises(MessageError) as caught:
        decoder(data)
    return str(caught.value)


def each_wrong_field(fields: dict[str, list[Any]]) -> pytest.MarkDecorator:
    """Run the test once per ``(name, value)``: each field with each wrong value for it."""
    cases = [(name, value) for name, values in fields.items() for value in values]
    return pytest.mark.parametrize(("name", "value"), cases)


# --- results and their errors ----------------------------------------------------------

RESULT = {"instance": "i-1", "step": "pay@2", "attempt": 3}


def failed(error: Any) -> bytes:
    return envelope("activity.result", {**RESULT, "error": error})


def test_a_result_round_trips() -> None:
    error = ErrorInfo("Boom", "it broke", "trace", True, {"type": "Inner", "message": "m"})
    assert decode_result(encode_result("i-1", "pay@2", 3, error=error)) == (
        "i-1",
        ActivityFailed("pay@2", 3, error),
    )
    assert decode_result(encode_result("i-1", "pay@2", 3, output=[1])) == (
        "i-1",
        ActivityCompleted("pay@2", 3, [1]),
    )


@pytest.mark.parametrize(
    "error",
    [
        {"type": "E"},
        {"type": "E", "message": None, "traceback": None, "non_retryable": None, "cause": None},
        {"type": "E", "message": "", "traceback": "", "non_retryable": False, "extra": [1]},
    ],
    ids=["absent", "null", "given"],
)
def test_an_error_s_optional_fields_may_be_absent_or_null(error: dict[str, Any]) -> None:
    _, event = decode_result(failed(error))
    assert event == ActivityFailed("pay@2", 3, ErrorInfo("E", "", "", False, None))


def test_a_null_traceback_is_empty_not_the_string_none() -> None:
    """Regression: ``traceback: null`` from a foreign worker became ``"None"``."""
    _, event = decode_result(failed({"type": "E", "message": "m", "traceback": None}))
    assert isinstance(event, ActivityFailed)
    assert event.error.traceback == ""


def test_a_string_non_retryable_is_refused_not_taken_for_true() -> None:
    """Regression: ``non_retryable: "false"`` was ``bool("false")``, true: the error
    was taken as non-retryable and the step failed at once."""
    reason = refusal(decode_result, failed({"type": "E", "message": "m", "non_retryable": "false"}))
    assert reason == ("field 'error.non_retryable' must be a boolean or null, got string 'false'")


@each_wrong_field(
    {
        "type": [None, DROP, *WRONG_FOR_STRING],
        "message": WRONG_FOR_STRING,
        "traceback": WRONG_FOR_STRING,
        "non_retryable": WRONG_FOR_BOOLEAN,
        "cause": WRONG_FOR_MAP,
    }
)
def test_every_error_field_of_another_type_is_refused_by_name(name: str, value: Any) -> None:
    error = with_field({"type": "E", "message": "m"}, name, value)
    assert f"field 'error.{name}'" in refusal(decode_result, failed(error))


def test_the_whole_cause_chain_is_checked_and_named_by_its_path() -> None:
    inner = {"type": "Inner", "message": "m", "non_retryable": "false"}
    chain = {"type": "Top", "cause": {"type": "Middle", "cause": inner}}
    assert refusal(decode_result, failed(chain)).startswith(
        "field 'error.cause.cause.non_retryable' must be a boolean"
    )
    no_type = {"type": "Top", "cause": {"message": "no type"}}
    assert "field 'error.cause.type' is missing" in refusal(decode_result, failed(no_type))


def test_a_cause_chain_s_nulls_become_defaults() -> None:
    inner = {"type": "Inner", "message": None, "traceback": None, "non_retryable": None}
    chain = {"type": "Top", "message": "m", "cause": {"type": "Middle", "cause": inner}}
    _, event = decode_result(failed(chain))
    assert isinstance(event, ActivityFailed)
    assert event.error.cause == {
        "type": "Middle",
        "message": "",
        "traceback": "",
        "non_retryable": False,
        "cause": {"type": "Inner", "message": "", "traceback": "", "non_retryable": False},
    }


def test_a_null_error_is_a_completed_result() -> None:
    body = {**RESULT, "error": None, "output": {"ok": 1}}
    assert decode_result(envelope("activity.result", body)) == (
        "i-1",
        ActivityCompleted("pay@2", 3, {"ok": 1}),
    )


@each_wrong_field(
    {
        "instance": [None, DROP, *WRONG_FOR_STRING],
        "step": [None, DROP, *WRONG_FOR_STRING],
        "attempt": [None, DROP, *WRONG_FOR_INTEGER],
    }
)
def test_every_result_field_of_another_type_is_refused_by_name(name: str, value: Any) -> None:
    body = with_field({**RESULT, "output": 1}, name, value)
    assert f"field {name!r}" in refusal(decode_result, envelope("activity.result", body))


# --- timers, cancels, terminations ------------------------------------------------------

TIMER = {"instance": "i-1", "kind": "retry", "step": "s", "attempt": 2}


def test_a_timer_round_trips() -> None:
    timer = StartTimer(TimerKind.SIGNAL_TIMEOUT, "w@1", 1, 5.0)
    assert decode_timer(encode_timer("i-1", timer)) == (
        "i-1",
        TimerFired(TimerKind.SIGNAL_TIMEOUT, "w@1", 1),
    )


@each_wrong_field(
    {
        "instance": [None, DROP, *WRONG_FOR_STRING],
        "kind": [None, DROP, "bogus", "RETRY", *WRONG_FOR_STRING],
        "step": [None, DROP, *WRONG_FOR_STRING],
        "attempt": [None, DROP, *WRONG_FOR_INTEGER],
    }
)
def test_every_timer_field_of_another_type_is_refused_by_name(name: str, value: Any) -> None:
    body = with_field(TIMER, name, value)
    assert f"field {name!r}" in refusal(decode_timer, envelope("workflow.timer", body))


@pytest.mark.parametrize(
    ("decoder", "kind"),
    [(decode_cancel, "workflow.cancel"), (decode_terminate, "workflow.terminate")],
)
def test_a_cancel_s_reason_is_a_string_absent_or_null(decoder: Any, kind: str) -> None:
    assert decoder(envelope(kind, {"reason": "why"})) == "why"
    assert decoder(envelope(kind, {})) == ""
    assert decoder(envelope(kind, {"reason": None})) == ""
    for value in WRONG_FOR_STRING:
        reason = refusal(decoder, envelope(kind, {"reason": value}))
        assert reason.startswith("field 'reason' must be a string or null, got")


# --- withdrawn tasks ----------------------------------------------------------------------

WITHDRAWAL = {"instance": "i-1", "step": "ship@3", "attempt": 2, "reason": "cancelled"}


def test_a_withdrawal_round_trips_and_its_reason_is_optional() -> None:
    data = encode_activity_cancel("i-1", "ship@3", 2, "cancelled")
    assert decode_activity_cancel(data) == ActivityCancel("i-1", "ship@3", 2, "cancelled")
    for missing in (DROP, None):
        body = with_field(WITHDRAWAL, "reason", missing)
        decoded = decode_activity_cancel(envelope("activity.cancel", body))
        assert decoded == ActivityCancel("i-1", "ship@3", 2, "")


@each_wrong_field(
    {
        "instance": [None, DROP, *WRONG_FOR_STRING],
        "step": [None, DROP, *WRONG_FOR_STRING],
        "attempt": [None, DROP, *WRONG_FOR_INTEGER],
        "reason": WRONG_FOR_STRING,
    }
)
def test_every_withdrawal_field_of_another_type_is_refused_by_name(name: str, value: Any) -> None:
    body = with_field(WITHDRAWAL, name, value)
    assert f"field {name!r}" in refusal(decode_activity_cancel, envelope("activity.cancel", body))


def test_a_withdrawal_is_not_taken_for_a_task() -> None:
    data = encode_activity_cancel("i-1", "s", 1, "")
    assert "activity.cancel" in refusal(decode_task, data)


# --- tasks ------------------------------------------------------------------------------

TASK = {
    "instance": "i-1",
    "type": "order",
    "step": "ship@3",
    "attempt": 1,
    "activity": "ship",
    "input": {"sku": "a"},
    "scheduled_at": 100.5,
    "schedule_to_start": 10,
    "start_to_close": 30.0,
    "heartbeat": None,
}


def test_a_task_round_trips() -> None:
    work = ScheduleActivity("ship@3", 2, "ship", [1], 100.5, None, 30.0, 2.5)
    assert decode_task(encode_task("i-1", "order", work)) == Task("i-1", "order", work)


def test_a_task_s_optional_fields_may_be_absent_or_null() -> None:
    for missing in (DROP, None):
        body = TASK
        for name in ("type", "input", "schedule_to_start", "start_to_close", "heartbeat"):
            body = with_field(body, name, missing)
        task = decode_task(envelope("activity.task", body))
        assert task == Task(
            "i-1", "", ScheduleActivity("ship@3", 1, "ship", None, 100.5, None, 300.0, None)
        )


@each_wrong_field(
    {
        "instance": [None, DROP, *WRONG_FOR_STRING],
        "type": WRONG_FOR_STRING,
        "step": [None, DROP, *WRONG_FOR_STRING],
        "attempt": [None, DROP, *WRONG_FOR_INTEGER],
        "activity": [None, DROP, *WRONG_FOR_STRING],
        "scheduled_at": [None, DROP, *WRONG_FOR_NUMBER],
        "schedule_to_start": WRONG_FOR_NUMBER,
        "start_to_close": WRONG_FOR_NUMBER,
        "heartbeat": WRONG_FOR_NUMBER,
    }
)
def test_every_task_field_of_another_type_is_refused_by_name(name: str, value: Any) -> None:
    body = with_field(TASK, name, value)
    assert f"field {name!r}" in refusal(decode_task, envelope("activity.task", body))


# --- starts (CBOR; JSON ones are in test_messages_json.py) ------------------------------


def test_a_start_s_optional_fields_may_be_absent_or_null() -> None:
    nulls = {"id": None, "input": None, "version": None, "parent": None, "depth": None}
    assert decode_start(envelope("workflow.start", nulls)) == StartMessage(None, None)
    assert decode_start(envelope("workflow.start", {})) == StartMessage(None, None)
    child = {"id": "c", "parent": {"id": "p", "step": "s"}, "depth": None}
    assert decode_start(envelope("workflow.start", child)) == StartMessage(
        "c", None, 0, "p", "s", 1
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"version": "2"}, "field 'version' must be a positive integer or 0, got string '2'"),
        ({"version": True}, "field 'version' must be a positive integer or 0, got true"),
        ({"version": False}, "field 'version' must be a positive integer or 0, got false"),
        ({"version": 1.0}, "field 'version' must be a positive integer or 0, got number 1.0"),
        ({"version": -1}, "field 'version' must be a positive integer or 0, got integer -1"),
        ({"id": 5}, "instance id must be a string"),
        ({"id": "c", "parent": "p"}, "field 'parent' must be a map or null, got string 'p'"),
        ({"parent": {"id": "p", "step": "s"}}, "a child's start needs an id"),
        ({"id": "c", "parent": {"id": 5, "step": "s"}}, "parent: instance id must be a string"),
        ({"id": "c", "parent": {"id": "p"}}, "parent: step key 'None' is not valid"),
        ({"id": "c", "parent": {"id": "p", "step": "s"}, "depth": True}, "field 'depth'"),
        ({"id": "c", "parent": {"id": "p", "step": "s"}, "depth": 0}, "field 'depth'"),
        ({"id": "c", "parent": {"id": "p", "step": "s"}, "depth": "2"}, "field 'depth'"),
    ],
    ids=repr,
)
def test_a_start_field_of_another_type_is_refused_by_name(
    body: dict[str, Any], reason: str
) -> None:
    assert reason in refusal(decode_start, envelope("workflow.start", body))


# --- history ----------------------------------------------------------------------------


def test_history_records_round_trip_and_a_null_detail_is_empty() -> None:
    one = RecordHistory(1, "workflow.started", 1.5, {"type": "t"})
    assert decode_history(encode_history("i", one)) == [
        {"instance": "i", "seq": 1, "kind": "workflow.started", "at": 1.5, "detail": {"type": "t"}}
    ]
    body = {"records": [{"seq": 2, "kind": "k", "at": 3, "detail": None}]}
    assert decode_history(envelope("history.records", body)) == [
        {"seq": 2, "kind": "k", "at": 3, "detail": {}}
    ]


@each_wrong_field(
    {
        "seq": [None, DROP, *WRONG_FOR_INTEGER],
        "kind": [None, DROP, *WRONG_FOR_STRING],
        "at": [None, DROP, *WRONG_FOR_NUMBER],
        "detail": WRONG_FOR_MAP,
        "instance": WRONG_FOR_STRING,
    }
)
def test_every_history_field_of_another_type_is_refused_by_name(name: str, value: Any) -> None:
    record = {"instance": "i", "seq": 1, "kind": "k", "at": 1.0, "detail": {}}
    single = with_field(record, name, value)
    assert f"field {name!r}" in refusal(decode_history, envelope("history.record", single))
    if name != "instance":
        group = {"instance": "i", "records": [record, with_field(record, name, value)]}
        reason = refusal(decode_history, envelope("history.records", group))
        assert f"field 'records[1].{name}'" in reason


def test_history_records_must_be_a_list_of_maps() -> None:
    reason = refusal(decode_history, envelope("history.records", {"records": "no"}))
    assert reason == "field 'records' must be a list, got string 'no'"
    reason = refusal(decode_history, envelope("history.records", {"records": [7]}))
    assert reason == "field 'records[0]' must be a map, got integer 7"
    messages = encode_history_records("i", [RecordHistory(1, "k", 1.0, {})])
    assert decode_history(messages)[0]["instance"] == "i"


# --- dead letters -----------------------------------------------------------------------


def test_a_dead_letter_s_fields_are_typed() -> None:
    letter = decode_deadletter(encode_deadletter("workflow.x", "why", b"\x00", 2))
    assert dict(letter) == {
        "subject": "workflow.x",
        "reason": "why",
        "data": b"\x00",
        "num_delivered": 2,
    }
    good = dict(letter)
    for name, value in [
        ("subject", 5),
        ("reason", None),
        ("data", "text"),
        ("num_delivered", "2"),
        ("num_delivered", DROP),
    ]:
        reason = refusal(decode_deadletter, envelope("deadletter", with_field(good, name, value)))
        assert f"field {name!r}" in reason


# --- instance states --------------------------------------------------------------------

FULL_ERROR = ErrorInfo("Boom", "m", "tb", True, {"type": "Cause", "message": "c"})
FULL_STATE = InstanceState(
    id="i-1",
    type="order",
    version=3,
    input={"n": 1},
    status=InstanceStatus.COMPENSATING,
    created_at=1.0,
    updated_at=2.5,
    steps={
        "a": StepState(StepStatus.COMPLETED, 1, 1.0, output=[1], finished_at=2.0, done=4),
        "m": StepState(
            StepStatus.RUNNING,
            1,
            1.5,
            output=[None],
            branch=2,
            items=(1, "two"),
            next_item=1,
            finished_items=0,
        ),
        "b": StepState(StepStatus.FAILED, 2, 1.5, error=FULL_ERROR, finished_at=2.5),
    },
    output=None,
    error=FULL_ERROR,
    seq=7,
    outbox=(
        ScheduleActivity("a~undo", 1, "undo", {"x": 1}, 2.5, None, 30.0, 5.0),
        StartTimer(TimerKind.RETRY, "b", 2, 9.5),
        RecordHistory(7, "compensation.started", 2.5, {"steps": ["a~undo"]}),
        StartChild("i-1-c", "child", 0, [1], "c"),
        CancelChild("i-1-d", True, "why"),
        NotifyParent("p-1", "s", None, FULL_ERROR),
        CancelActivity("m@1", 3, "the instance failed"),
    ),
    signals={"go": (1, {"by": "ann"})},
    seen_signals=(11, 12),
    compensations=("a~undo",),
    ending=InstanceStatus.FAILED,
    compensation=None,
    cause=99,
    parent="p-1",
    parent_step="s@2",
    depth=2,
)
FULL_BODY = state_to_data(FULL_STATE)


def state_with(path: str, value: Any) -> bytes:
    return envelope("instance.state", with_field(FULL_BODY, path, value))


def test_a_full_state_round_trips() -> None:
    assert decode_state(encode_state(FULL_STATE)) == FULL_STATE


def test_the_full_state_holds_every_kind_of_command_each_in_plain_form() -> None:
    # Every command is stored as its op and its fields by name: a kind added
    # to Command is in the round trip above, and stored without Python's types.
    assert {type(command) for command in FULL_STATE.outbox} == set(get_args(Command))
    outbox = FULL_BODY["outbox"]
    assert outbox[1] == {"op": "timer", "kind": "retry", "step": "b", "attempt": 2, "fire_at": 9.5}
    assert outbox[5]["error"] == FULL_ERROR.to_data()
    assert type(outbox[2]["detail"]) is dict


@pytest.mark.parametrize(
    "path",
    [
        "outbox",
        "cause",
        "signals",
        "seen_signals",
        "compensations",
        "ending",
        "compensation",
        "parent",
        "parent_step",
        "depth",
        "output",
        "input",
        "error",
        "steps.m.output",
        "steps.m.error",
        "steps.m.finished_at",
        "steps.m.done",
        "steps.m.branch",
        "steps.m.items",
        "steps.m.next_item",
        "steps.m.finished_items",
        "outbox[4].reason",
        "outbox[6].reason",
    ],
)
@pytest.mark.parametrize("missing", [DROP, None], ids=["absent", "null"])
def test_a_state_s_optional_fields_may_be_absent_or_null(path: str, missing: Any) -> None:
    state = decode_state(state_with(path, missing))
    assert isinstance(state, InstanceState)


@pytest.mark.parametrize(
    ("path", "values"),
    [
        ("id", [None, DROP, *WRONG_FOR_STRING]),
        ("type", [None, *WRONG_FOR_STRING]),
        ("version", [None, *WRONG_FOR_INTEGER]),
        ("status", [None, "sleepy", *WRONG_FOR_STRING]),
        ("created_at", [None, *WRONG_FOR_NUMBER]),
        ("updated_at", WRONG_FOR_NUMBER),
        ("steps", [None, DROP, *WRONG_FOR_MAP]),
        ("steps.a", WRONG_FOR_MAP),
        ("steps.a.status", [None, "done", *WRONG_FOR_STRING]),
        ("steps.a.attempt", [None, *WRONG_FOR_INTEGER]),
        ("steps.a.scheduled_at", [None, *WRONG_FOR_NUMBER]),
        ("steps.a.finished_at", WRONG_FOR_NUMBER),
        ("steps.a.done", WRONG_FOR_INTEGER),
        ("steps.m.branch", WRONG_FOR_INTEGER),
        ("steps.m.items", ["ab", 5, True, {}]),
        ("steps.m.next_item", WRONG_FOR_INTEGER),
        ("steps.m.finished_items", WRONG_FOR_INTEGER),
        ("steps.b.error", WRONG_FOR_MAP),
        ("steps.b.error.non_retryable", WRONG_FOR_BOOLEAN),
        ("steps.b.error.cause.traceback", WRONG_FOR_STRING),
        ("error.type", [None, *WRONG_FOR_STRING]),
        ("seq", [None, *WRONG_FOR_INTEGER]),
        ("outbox", ["x", 5, {}]),
        ("outbox[0]", ["x", 5, []]),
        ("outbox[0].op", [None, "bogus", 5]),
        ("outbox[0].attempt", ["1", True]),
        ("outbox[0].start_to_close", ["30", -1.0]),
        ("outbox[1].kind", ["bogus", 5]),
        ("outbox[1].fire_at", ["9", None]),
        ("outbox[2].seq", ["7", None]),
        ("outbox[2].detail", ["x", 5]),
        ("outbox[3].version", ["0", None, True]),
        ("outbox[3].workflow", [5, None]),
        ("outbox[4].terminate", ["true", 1, None]),
        ("outbox[4].reason", WRONG_FOR_STRING),
        ("outbox[5].error.non_retryable", WRONG_FOR_BOOLEAN),
        ("outbox[5].parent", [None, 5]),
        ("outbox[6].step", [None, DROP, 5]),
        ("outbox[6].attempt", [None, DROP, "3", True]),
        ("outbox[6].reason", WRONG_FOR_STRING),
        ("cause", ["99", -1, True]),
        ("signals", ["x", []]),
        ("signals.go", ["x", {}, 5]),
        ("seen_signals", ["x", {}]),
        ("compensations", ["a", {}]),
        ("ending", ["over", 5]),
        ("compensation", WRONG_FOR_STRING),
        ("parent", WRONG_FOR_STRING),
        ("parent_step", WRONG_FOR_STRING),
        ("depth", ["2", -1, True, 1.0]),
    ],
)
def test_every_state_field_of_another_type_is_refused_by_name(path: str, values: list[Any]) -> None:
    for value in values:
        reason = refusal(decode_state, state_with(path, value))
        assert reason.startswith(f"damaged instance state: field {path!r}"), (value, reason)


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        ("seen_signals", [11, "12"], "seen_signals[1]"),
        ("compensations", ["a~undo", 5], "compensations[1]"),
    ],
)
def test_a_state_list_s_items_are_typed(path: str, value: Any, where: str) -> None:
    reason = refusal(decode_state, state_with(path, value))
    assert reason.startswith(f"damaged instance state: field {where!r}")


def test_a_state_s_status_is_read_alone_and_checked() -> None:
    assert decode_status(encode_state(FULL_STATE)) is FULL_STATE.status
    for value in [None, "sleepy", 5]:
        reason = refusal(decode_status, state_with("status", value))
        assert reason.startswith("damaged instance state: field 'status'")
    task = ScheduleActivity("ship@3", 2, "ship", [1], 100.5, None, 30.0, 2.5)
    assert "instance.state" in refusal(decode_status, encode_task("i-1", "t", task))
