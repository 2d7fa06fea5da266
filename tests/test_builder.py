"""The Python builder gives the same definitions as YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import actors
from actors import Steps, WorkflowBuilder

ORDER_YAML = Path(__file__).resolve().parents[1] / "actors" / "examples" / "order.yaml"


def _order() -> WorkflowBuilder:
    """``actors/examples/order.yaml``, built in Python."""
    return (
        WorkflowBuilder(
            "order",
            version=3,
            description=(
                "Reserve and authorize at once, approve large orders, charge, ship each line."
            ),
        )
        .parallel(
            "prepare",
            {
                "stock": Steps().step(
                    "reserve",
                    "reserve_stock",
                    input="{order: input.order_id, items: input.items}",
                    retry={
                        "max_attempts": 5,
                        "initial_interval": "1s",
                        "backoff": 2.0,
                        "max_interval": "1m",
                        "non_retryable": ["OutOfStock"],
                    },
                    timeout={"start_to_close": "30s", "heartbeat": "10s"},
                    compensate="release_stock",
                ),
                "payment": Steps().step(
                    "authorize",
                    "authorize_card",
                    input="{order: input.order_id, card: input.card}",
                    compensate="void_authorization",
                ),
            },
        )
        .choice(
            "review",
            [
                (
                    "steps.reserve.output.total > `40`",
                    Steps().wait_signal("approval", "approved", timeout="1d"),
                )
            ],
            default=Steps(),
        )
        .step(
            "charge",
            "charge_card",
            input=(
                "{order: input.order_id, amount: steps.reserve.output.total, "
                "hold: steps.authorize.output.hold}"
            ),
            compensate="refund_card",
        )
        .map(
            "deliver",
            "input.items",
            Steps().step(
                "ship_line", "ship", input="{order: input.order_id, sku: item.sku, line: index}"
            ),
            concurrency=4,
        )
        .output(
            "{order: input.order_id, charged: steps.charge.output.charged, "
            "approved_by: steps.approval.output.by, tracking: steps.deliver.output[].tracking}"
        )
    )


def test_the_example_order_built_in_python_equals_its_yaml() -> None:
    from_yaml = actors.load_definition(ORDER_YAML.read_text())
    built = _order().build()
    assert built == from_yaml
    assert built.to_data() == from_yaml.to_data()
    assert _order().to_data() == yaml.safe_load(ORDER_YAML.read_text())


def test_every_kind_of_step_can_be_built() -> None:
    definition = (
        WorkflowBuilder("all")
        .sleep("nap", "10m")
        .sleep_until("alarm", "input.at")
        .wait_signal("go", "go")
        .child("kid", "other", input="input", version=2)
        .step("undoable", "do", compensate="undo", compensate_input="{id: output.id}")
        .build()
    )
    kinds = [type(step).__name__ for step in definition.steps]
    assert kinds == ["SleepStep", "SleepStep", "SignalStep", "ChildStep", "ActivityStep"]
    assert actors.parse_definition(definition.to_data()) == definition


def test_a_built_definition_is_validated_with_field_paths() -> None:
    builder = WorkflowBuilder("bad").map(
        "each", "input.items", Steps().step("x", "do").step("x", "do"), concurrency=0
    )
    with pytest.raises(actors.DefinitionError) as caught:
        builder.build()
    assert {str(error.path) for error in caught.value.errors} == {
        "steps[0].concurrency",
        "steps[0].steps[1].id",
    }
