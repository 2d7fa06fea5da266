"""Tests for the definition format (actors.core: _definition, _parse, _steps) and expressions.

Definitions: parsing from YAML and JSON, the canonical plain form, and
validation, where every problem must come back with the path of its field.
Expressions: compile-time limits against hostile input, and evaluation.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from actors.core import (
    MAX_STEPS,
    ActivityStep,
    Definition,
    DefinitionError,
    ExpressionError,
    FieldError,
    InvalidNameError,
    RetryPolicy,
    Timeouts,
    check_instance_id,
    check_name,
    load_definition,
    parse_definition,
)
from actors.core._expressions import MAX_EXPRESSION_DEPTH, MAX_EXPRESSION_LENGTH, Expression
from actors.core._parse import parse_duration

EXAMPLE = """\
type: order
version: 1
steps:
  - id: reserve
    activity: reserve_stock
    input: "{order: input.order_id, items: input.items}"
    retry: {max_attempts: 5, initial_interval: 1s, backoff: 2.0, max_interval: 1m,
            non_retryable: [OutOfStock]}
    timeout: {start_to_close: 30s, heartbeat: 10s}
  - id: charge
    activity: charge_card
    input: "{order: input.order_id, amount: steps.reserve.output.total}"
output: "{charged: steps.charge.output}"
"""


def example() -> dict[str, Any]:
    """The example as plain data, a fresh copy each time."""
    data = yaml.safe_load(EXAMPLE)
    assert isinstance(data, dict)
    return data


def errors_of(data: object) -> list[FieldError]:
    with pytest.raises(DefinitionError) as info:
        parse_definition(data)
    assert info.value.errors, "a DefinitionError must list its problems"
    return list(info.value.errors)


def paths_of(data: object) -> set[str]:
    return {error.path for error in errors_of(data)}


# --- parsing -------------------------------------------------------------------


def test_example_yaml_parses() -> None:
    definition = load_definition(EXAMPLE)

    assert definition.type == "order"
    assert definition.version == 1
    assert definition.description == ""
    assert [step.id for step in definition.steps] == ["reserve", "charge"]
    reserve, charge = definition.steps
    assert reserve.activity == "reserve_stock"
    assert reserve.input == Expression("{order: input.order_id, items: input.items}")
    assert reserve.retry == RetryPolicy(
        max_attempts=5,
        initial_interval=1.0,
        backoff=2.0,
        max_interval=60.0,
        non_retryable=("OutOfStock",),
    )
    assert reserve.timeout == Timeouts(schedule_to_start=None, start_to_close=30.0, heartbeat=10.0)
    # Unspecified retry and timeout get the documented defaults.
    assert charge.retry == RetryPolicy(3, 1.0, 2.0, 60.0, ())
    assert charge.timeout == Timeouts(None, 300.0, None)
    assert definition.output is not None
    assert definition.output.source == "{charged: steps.charge.output}"
    assert definition.step("charge") is charge
    assert definition.step("nope") is None
    assert definition.index("charge") == 1
    assert definition.index("nope") == -1


def test_compiled_expressions_evaluate() -> None:
    definition = load_definition(EXAMPLE)
    reserve = definition.steps[0]
    assert reserve.input is not None
    context = {"input": {"order_id": 7, "items": ["a", "b"]}, "steps": {}}
    assert reserve.input.evaluate(context) == {"order": 7, "items": ["a", "b"]}


def test_json_and_yaml_give_equal_definitions() -> None:
    text = json.dumps(example())
    from_json = load_definition(text, format="json")
    from_yaml = load_definition(EXAMPLE)
    assert from_json == from_yaml
    # Bytes are accepted too, and YAML being a superset of JSON reads it as well.
    assert load_definition(text.encode(), format="json") == from_yaml
    assert load_definition(text) == from_yaml


def test_to_data_round_trips() -> None:
    definition = load_definition(EXAMPLE)
    data = definition.to_data()
    assert parse_definition(data) == definition
    # Through JSON as the definitions bucket would store it.
    assert parse_definition(json.loads(json.dumps(data))) == definition


def test_to_data_spells_out_every_default() -> None:
    definition = parse_definition(
        {"type": "t", "description": "doc", "steps": [{"id": "a", "activity": "act"}]}
    )
    assert definition.to_data() == {
        "type": "t",
        "version": 1,
        "steps": [
            {
                "id": "a",
                "activity": "act",
                "retry": {
                    "max_attempts": 3,
                    "initial_interval": 1.0,
                    "backoff": 2.0,
                    "max_interval": 60.0,
                    "non_retryable": [],
                },
                "timeout": {"schedule_to_start": None, "start_to_close": 300.0, "heartbeat": None},
            }
        ],
        "description": "doc",
    }
    assert parse_definition(definition.to_data()) == definition


def test_round_trip_of_a_hand_built_definition() -> None:
    definition = Definition(
        type="ship",
        version=42,
        steps=(
            ActivityStep("pack", "pack_box"),
            ActivityStep(
                "send",
                "send_box",
                Expression("{box: steps.pack.output, id: workflow.id}"),
                RetryPolicy(10, 0.25, 1.5, 7200.0, ("Lost", "Refused")),
                Timeouts(5.0, 12.5, 2.0),
            ),
        ),
        output=Expression("steps.send.output"),
        description="ships",
    )
    assert parse_definition(definition.to_data()) == definition


def test_max_interval_defaults_to_at_least_initial_interval() -> None:
    definition = parse_definition(
        {
            "type": "t",
            "steps": [{"id": "a", "activity": "x", "retry": {"initial_interval": "2m"}}],
        }
    )
    assert definition.steps[0].retry.initial_interval == 120.0
    assert definition.steps[0].retry.max_interval == 120.0


def test_null_input_means_chaining() -> None:
    definition = parse_definition(
        {"type": "t", "steps": [{"id": "a", "activity": "x", "input": None}], "output": None}
    )
    assert definition.steps[0].input is None
    assert definition.output is None


# --- validation: one problem at a time ---------------------------------------------


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    """A mutation setting ``path`` (dots, and integers for list items) to ``value``."""

    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = data
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if last.isdigit():
            target[int(last)] = value
        else:
            target[last] = value

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = data
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        del target[last]

    return mutate


INVALID = [
    # (id, mutation, expected path, a fragment of the message)
    ("duplicate-step-id", _set("steps.1.id", "reserve"), "steps[1].id", "duplicate step id"),
    ("unknown-top-key", _set("typo", 1), "typo", "unknown field"),
    ("unknown-step-key", _set("steps.0.retries", 3), "steps[0].retries", "unknown field"),
    (
        "unknown-retry-key",
        _set("steps.0.retry.max_attempt", 3),
        "steps[0].retry.max_attempt",
        "expected one of: backoff, initial_interval, max_attempts",
    ),
    (
        "unknown-timeout-key",
        _set("steps.0.timeout.start_to_end", "1s"),
        "steps[0].timeout.start_to_end",
        "unknown field",
    ),
    ("bad-input-expr", _set("steps.0.input", "{order: "), "steps[0].input", "invalid expression"),
    ("bad-output-expr", _set("output", "steps.["), "output", "invalid expression"),
    ("expr-not-string", _set("steps.1.input", 5), "steps[1].input", "must be a string"),
    ("expr-empty", _set("output", "  "), "output", "must not be empty"),
    ("expr-too-long", _set("output", "a" * 5000), "output", "limit is 4096"),
    (
        "bad-duration",
        _set("steps.0.retry.initial_interval", "1x"),
        "steps[0].retry.initial_interval",
        "'1x' is not a duration",
    ),
    (
        "bad-timeout-duration",
        _set("steps.0.timeout.start_to_close", "soon"),
        "steps[0].timeout.start_to_close",
        "is not a duration",
    ),
    (
        "zero-duration",
        _set("steps.0.timeout.heartbeat", 0),
        "steps[0].timeout.heartbeat",
        "must be more than zero",
    ),
    (
        "negative-duration",
        _set("steps.0.timeout.schedule_to_start", -1),
        "steps[0].timeout.schedule_to_start",
        "is not a duration",
    ),
    (
        "huge-integer-duration",
        _set("steps.0.retry.max_interval", 10**400),
        "steps[0].retry.max_interval",
        "too large",
    ),
    ("bad-type-name", _set("type", "my order"), "type", "is not a valid name"),
    ("dotted-type-name", _set("type", "order.v2"), "type", "is not a valid name"),
    ("long-type-name", _set("type", "a" * 65), "type", "is not a valid name"),
    ("missing-type", _delete("type"), "type", "required"),
    ("bad-step-id", _set("steps.0.id", "1st"), "steps[0].id", "is not a valid name"),
    ("step-id-not-string", _set("steps.0.id", 3), "steps[0].id", "must be a string, not int"),
    ("missing-step-id", _delete("steps.0.id"), "steps[0].id", "required"),
    ("bad-activity", _set("steps.1.activity", "charge.card"), "steps[1].activity", "valid name"),
    ("missing-activity", _delete("steps.1.activity"), "steps[1]", "needs exactly one of"),
    ("version-string", _set("version", "1"), "version", "must be an integer, not a string"),
    ("version-bool", _set("version", True), "version", "must be an integer, not a boolean"),
    ("version-float", _set("version", 1.0), "version", "must be an integer, not a number"),
    ("version-zero", _set("version", 0), "version", "must be from 1 to 1000000"),
    ("version-too-big", _set("version", 1_000_001), "version", "must be from 1 to 1000000"),
    ("empty-steps", _set("steps", []), "steps", "at least one step"),
    ("missing-steps", _delete("steps"), "steps", "required"),
    ("steps-not-list", _set("steps", {"id": "a"}), "steps", "must be a list"),
    ("step-not-mapping", _set("steps.1", "charge"), "steps[1]", "must be a mapping, not a string"),
    (
        "max-below-initial",
        _set("steps.0.retry.max_interval", "500ms"),
        "steps[0].retry.max_interval",
        "must not be less than initial_interval",
    ),
    (
        "max-below-default-initial",
        _set("steps.1.retry", {"max_interval": 0.5}),
        "steps[1].retry.max_interval",
        "must not be less than initial_interval",
    ),
    (
        "non-retryable-not-list",
        _set("steps.0.retry.non_retryable", "OutOfStock"),
        "steps[0].retry.non_retryable",
        "must be a list of error type names",
    ),
    (
        "non-retryable-blank-name",
        _set("steps.0.retry.non_retryable", ["OutOfStock", " "]),
        "steps[0].retry.non_retryable",
        "must be a list of error type names",
    ),
    (
        "non-retryable-not-strings",
        _set("steps.0.retry.non_retryable", [1]),
        "steps[0].retry.non_retryable",
        "must be a list of error type names",
    ),
    (
        "max-attempts-zero",
        _set("steps.0.retry.max_attempts", 0),
        "steps[0].retry.max_attempts",
        "must be from 1 to 10000",
    ),
    (
        "max-attempts-string",
        _set("steps.0.retry.max_attempts", "3"),
        "steps[0].retry.max_attempts",
        "must be an integer, not a string",
    ),
    (
        "backoff-below-one",
        _set("steps.0.retry.backoff", 0.5),
        "steps[0].retry.backoff",
        "must be from 1.0 to 100.0",
    ),
    (
        "backoff-string",
        _set("steps.0.retry.backoff", "2"),
        "steps[0].retry.backoff",
        "must be a number, not a string",
    ),
    ("retry-not-mapping", _set("steps.0.retry", 3), "steps[0].retry", "must be a mapping"),
    ("timeout-not-mapping", _set("steps.0.timeout", "30s"), "steps[0].timeout", "mapping"),
    ("description-not-string", _set("description", ["x"]), "description", "must be a string"),
    ("non-string-key", _set("steps.0.7", "x"), "steps[0].7", "unknown field"),
]


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [pytest.param(m, p, f, id=i) for i, m, p, f in INVALID],
)
def test_each_problem_is_reported_at_its_path(
    mutate: Callable[[dict[str, Any]], None], path: str, fragment: str
) -> None:
    data = example()
    mutate(data)
    errors = errors_of(data)
    assert [error.path for error in errors] == [path], errors
    assert fragment in errors[0].message, errors[0]
    assert str(errors[0]) == f"{path}: {errors[0].message}"


@pytest.mark.parametrize(
    ("step", "path", "message"),
    [
        ({"id": "s", "sleep_until": None}, "sleep_until", "required: an expression giving a time"),
        (
            {"id": "m", "map": None, "steps": [{"id": "a", "activity": "x"}]},
            "map",
            "required: an expression giving a list",
        ),
        ({"id": "c", "choice": [{"steps": []}]}, "choice[0].when", "required: a condition"),
    ],
    ids=["sleep_until", "map", "choice"],
)
def test_an_expression_a_step_cannot_do_without_is_required(
    step: dict[str, Any], path: str, message: str
) -> None:
    errors = errors_of({"type": "t", "steps": [step]})
    assert [(error.path, error.message) for error in errors] == [(f"steps[0].{path}", message)]


@pytest.mark.parametrize(
    ("check", "value", "message"),
    [
        (lambda v: check_name("step id", v), 3, "step id must be a string, not int"),
        (
            lambda v: check_name("activity name", v),
            "a" * 100,
            f"activity name {'a' * 80!r} is not a valid name: use a letter, then up to 63 "
            "letters, digits, '_' or '-'",
        ),
        (check_instance_id, None, "instance id must be a string, not NoneType"),
        (
            check_instance_id,
            "b" * 200,
            f"instance id {'b' * 140!r} is not valid: use 1 to 128 letters, digits, '_' or '-'",
        ),
    ],
    ids=["name-not-string", "name-too-long", "id-not-string", "id-too-long"],
)
def test_names_and_ids_are_refused_with_what_they_must_be(
    check: Callable[[object], str], value: object, message: str
) -> None:
    with pytest.raises(InvalidNameError) as refused:
        check(value)
    assert str(refused.value) == message


def test_the_branches_of_parallel_and_choice_steps_are_read_at_their_paths() -> None:
    work = {"id": "w", "activity": "x"}
    parallel = {
        "id": "p",
        "parallel": [
            5,
            {"id": "b", "steps": [work]},
            {"id": "b", "steps": [{"id": "v", "activity": 5}]},
            {"steps": [], "other": 1},
        ],
    }
    choice = {"id": "c", "choice": [{"when": "input", "steps": [{"id": "u"}]}, {"steps": []}]}
    errors = errors_of({"type": "t", "steps": [parallel, choice]})
    assert [error.path for error in errors] == [
        "steps[0].parallel[0]",
        "steps[0].parallel[2].id",
        "steps[0].parallel[2].steps[0].activity",
        "steps[0].parallel[3].other",
        "steps[0].parallel[3].id",
        "steps[0].parallel[3].steps",
        "steps[1].choice[0].steps[0]",
        "steps[1].choice[1].when",
    ], errors


def test_too_many_steps() -> None:
    steps = [{"id": f"s{i}", "activity": "x"} for i in range(MAX_STEPS + 1)]
    (error,) = errors_of({"type": "t", "steps": steps})
    assert error == FieldError("steps", f"{MAX_STEPS + 1} steps; the limit is {MAX_STEPS} in all")
    # Exactly the limit is fine.
    assert len(parse_definition({"type": "t", "steps": steps[:MAX_STEPS]}).steps) == MAX_STEPS
    # Nested steps count, a choice's default too.
    choice = {"id": "c", "choice": [{"when": "input", "steps": []}], "default": steps}
    (error,) = errors_of({"type": "t", "steps": [choice]})
    assert error == FieldError(
        "steps[0].default", f"{MAX_STEPS + 2} steps; the limit is {MAX_STEPS} in all"
    )


@pytest.mark.parametrize("data", [[1, 2], "order", None, 3, True])
def test_non_mapping_definition(data: object) -> None:
    (error,) = errors_of(data)
    assert error.path == ""
    assert error.message.startswith("a definition must be a mapping, not ")
    assert str(error) == error.message


def test_every_problem_is_collected_at_once() -> None:
    data = example()
    data["type"] = "bad type"
    data["version"] = 0
    data["extra"] = True
    data["output"] = "(("
    reserve, charge = data["steps"]
    reserve["retry"]["initial_interval"] = "1x"
    reserve["retry"]["backoff"] = 500
    reserve["timeout"]["heartbeat"] = "-3s"
    charge["id"] = "reserve"
    charge["activity"] = "no spaces allowed"
    errors = errors_of(data)
    assert {error.path for error in errors} == {
        "type",
        "version",
        "extra",
        "output",
        "steps[0].retry.initial_interval",
        "steps[0].retry.backoff",
        "steps[0].timeout.heartbeat",
        "steps[1].activity",
        "steps[1].id",
    }
    assert len(errors) == 9
    # Steps with problems of their own still take part in the duplicate check.
    assert FieldError("steps[1].id", "duplicate step id 'reserve'") in errors


def test_duplicate_ids() -> None:
    data = {"type": "t", "steps": [{"id": i, "activity": "x"} for i in ("a", "b", "a", "a")]}
    assert [error.path for error in errors_of(data)] == ["steps[2].id", "steps[3].id"]
    # Invalid ids are reported as invalid, not also as duplicates.
    data = {"type": "t", "steps": [{"id": "1x", "activity": "x"}, {"id": "1x", "activity": "x"}]}
    assert [error.message.split(" ")[:2] for error in errors_of(data)] == [["step", "id"]] * 2


def test_definition_error_message_lists_every_problem() -> None:
    data = example()
    data["steps"][1]["id"] = "reserve"
    data["steps"][0]["retry"]["max_interval"] = "1x"
    with pytest.raises(DefinitionError) as info:
        parse_definition(data)
    assert isinstance(info.value, ValueError)
    assert str(info.value) == (
        "invalid workflow definition (2 problems):\n"
        "  steps[0].retry.max_interval: '1x' is not a duration "
        "(examples: 500ms, 30s, 1m30s, 2h, 1d)\n"
        "  steps[1].id: duplicate step id 'reserve'"
    )


# --- loading text ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        pytest.param("type: [unclosed", "yaml", id="yaml-syntax"),
        pytest.param("type: order\n  steps: - x", "yaml", id="yaml-indentation"),
        pytest.param("{'type': 'order'}", "json", id="json-single-quotes"),
        pytest.param("", "json", id="json-empty"),
        pytest.param("a: !!python/object/apply:os.system [ls]", "yaml", id="yaml-python-tag"),
        pytest.param("[" * 10_000, "yaml", id="yaml-deep-nesting"),
        pytest.param("[" * 100_000, "json", id="json-deep-nesting"),
        pytest.param("version: " + "1" * 5000, "yaml", id="yaml-huge-int"),
        pytest.param('{"version": ' + "1" * 5000 + "}", "json", id="json-huge-int"),
        pytest.param(b"\xff\xfe\x00", "json", id="json-bad-bytes"),
    ],
)
def test_text_that_does_not_parse(text: str | bytes, fmt: str) -> None:
    with pytest.raises(DefinitionError) as info:
        load_definition(text, format=fmt)
    (error,) = info.value.errors
    assert error.path == ""
    assert error.message.startswith(f"not valid {fmt}: ")


def test_yaml_that_parses_to_a_non_mapping() -> None:
    with pytest.raises(DefinitionError) as info:
        load_definition("- just\n- a list\n")
    assert [str(error) for error in info.value.errors] == [
        "a definition must be a mapping, not a list"
    ]


def test_unknown_format_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown definition format 'toml'") as info:
        load_definition(EXAMPLE, format="toml")
    assert not isinstance(info.value, DefinitionError)


# --- durations ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("1m30s", 90.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1.5s", 1.5),
        ("1h0m1s", 3601.0),
        ("  10s  ", 10.0),
        ("0s", 0.0),
        (1.5, 1.5),
        (0, 0.0),
        (7, 7.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    result = parse_duration(value)
    assert result == seconds
    assert type(result) is float


@pytest.mark.parametrize(
    "value",
    [
        -1,
        -0.5,
        "-1s",
        "1x",
        "",
        "   ",
        "s",
        "10",
        "1.5",
        "1 s",
        "1s x",
        "1e3s",
        True,
        False,
        math.nan,
        math.inf,
        -math.inf,
        None,
        [1],
        {"s": 1},
        "1" * 63 + "s" + "1s",
        10**400,
    ],
)
def test_parse_duration_refuses(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


# --- retry delays ------------------------------------------------------------------


def test_retry_delay_backs_off_up_to_max_interval() -> None:
    policy = RetryPolicy(max_attempts=10, initial_interval=1.0, backoff=2.0, max_interval=10.0)
    assert [policy.delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert RetryPolicy(initial_interval=3.0, backoff=1.0).delay(50) == 3.0


def test_retry_delay_never_overflows() -> None:
    # backoff ** (attempt - 1) exceeds a float long before max_attempts' limit.
    policy = RetryPolicy(max_attempts=10_000, initial_interval=1.0, backoff=100.0, max_interval=5.0)
    assert [policy.delay(n) for n in (1, 2, 155, 156, 200, 10_000)] == [1.0, 5.0, 5, 5, 5, 5]


def test_retry_delay_is_exact_for_many_attempts_with_a_small_backoff() -> None:
    policy = RetryPolicy(10_000, initial_interval=1.0, backoff=1.01, max_interval=1e9)
    assert policy.delay(500) == pytest.approx(1.01**499)
    assert policy.delay(500) > 100.0


# --- expressions -------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("[" * 10_000, id="brackets-10000"),
        pytest.param("(" * (MAX_EXPRESSION_DEPTH + 1) + "a" + ")" * 33, id="parens-33"),
        pytest.param("{a: " * 40 + "b" + "}" * 40, id="multiselect-40"),
        pytest.param("a" * (MAX_EXPRESSION_LENGTH + 1), id="length-4097"),
        pytest.param("!" * 4000 + "a", id="not-chain"),
        pytest.param("&" * 4000 + "a", id="expref-chain"),
        pytest.param("x" * 10_000_000, id="ten-megabytes"),
    ],
)
def test_hostile_expressions_are_refused_quickly(source: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ExpressionError):
        Expression(source)
    assert time.perf_counter() - started < 1.0


def test_expression_limits_are_inclusive() -> None:
    Expression("a" * MAX_EXPRESSION_LENGTH)
    nested = "(" * MAX_EXPRESSION_DEPTH + "a" + ")" * MAX_EXPRESSION_DEPTH
    assert Expression(nested).evaluate({"a": 1}) == 1
    # Depth, not the count of brackets, is limited: closing ones bring it back down.
    many = " || ".join(["[[[b]]]"] * 20)
    assert many.count("[") > MAX_EXPRESSION_DEPTH
    assert Expression(many).evaluate({"b": 1}) == [[[1]]]


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        (5, "must be a string, not int"),
        (None, "must be a string, not NoneType"),
        ("", "must not be empty"),
        ("a.", "invalid expression 'a.'"),
        ("foo(", "invalid expression"),
    ],
)
def test_expressions_that_do_not_compile(source: Any, fragment: str) -> None:
    with pytest.raises(ExpressionError, match=fragment.replace("(", r"\(")):
        Expression(source)


def test_evaluate_failing_function_raises_expression_error() -> None:
    expression = Expression("abs(input)")
    assert expression.evaluate({"input": -3}) == 3
    with pytest.raises(ExpressionError, match="'abs\\(input\\)' failed: In function abs"):
        expression.evaluate({"input": "three"})
    with pytest.raises(ExpressionError):
        Expression("unknown_function(input)").evaluate({"input": 1})


def test_missing_fields_evaluate_to_none() -> None:
    context = {"input": {"a": 1}, "steps": {}}
    assert Expression("input.b").evaluate(context) is None
    assert Expression("input.b.c.d").evaluate(context) is None
    assert Expression("steps.reserve.output.total").evaluate(context) is None
    assert Expression("{x: input.a, y: input.zzz}").evaluate(context) == {"x": 1, "y": None}


def test_deep_data_does_not_escape_as_recursion_error() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ExpressionError, match="too deeply"):
        Expression("to_string(input)").evaluate({"input": deep})


def test_expression_equality_is_by_source() -> None:
    assert Expression("input.a") == Expression("input.a")
    assert Expression("input.a") != Expression("input.b")
    assert Expression("input.a") != "input.a"
    assert hash(Expression("a")) == hash(Expression("a"))
    assert repr(Expression("a.b")) == "Expression('a.b')"


def test_definitions_are_frozen_values() -> None:
    definition = load_definition(EXAMPLE)
    clone = load_definition(EXAMPLE)
    assert definition == clone
    assert hash(definition.steps[0].retry) == hash(clone.steps[0].retry)
    with pytest.raises(AttributeError):
        definition.type = "other"  # type: ignore[misc]
    other = copy.deepcopy(example())
    other["steps"][1]["retry"] = {"max_attempts": 4}
    assert parse_definition(other) != definition
