"""``Client.history``: an instance's history records, read without a consumer."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest
import trio
from flow import result_of
from records import Records

import actors
import actors.runtime._history
from actors.core import RecordHistory
from actors.runtime._outbox import history_messages
from actors.wire import (
    HISTORY_STREAM,
    MessageError,
    decode_history,
    encode,
    encode_history,
    encode_history_records,
    history_msg_id,
    history_subject,
)

if TYPE_CHECKING:
    from conftest import Engine

#: Per instance: how many times ``fails_once`` ran in this test.
CALLS: Records[Counter[str]] = Records("calls", Counter)


calls = CALLS.fixture("calls", autouse=True)


class Hiccup(Exception):
    pass


@actors.activity
async def fails_once(value: Any) -> dict[str, Any]:
    info = actors.activity_info()
    CALLS.get()[info.instance_id] += 1
    if info.attempt == 1:
        raise Hiccup(f"attempt {info.attempt} fails")
    return {"attempt": info.attempt}


RETRIED = {
    "type": "retried",
    "version": 1,
    "steps": [
        {
            "id": "pay",
            "activity": "fails_once",
            "retry": {"max_attempts": 3, "initial_interval": 0.2},
        }
    ],
}

KINDS = [
    "workflow.started",
    "activity.scheduled",
    "activity.failed",
    "activity.retry_scheduled",
    "activity.scheduled",
    "activity.completed",
    "workflow.completed",
]


async def finished_history(engine: Engine, instance: str) -> list[dict[str, Any]]:
    """``Client.history`` once the terminal record is stored (it is published
    just after the state the result comes from): a consumer waits for it."""
    await engine.history(instance)
    records = await engine.client.history(instance)
    assert records[-1]["kind"] == "workflow.completed", records[-1]
    return records


async def run_retried(engine: Engine, instance: str) -> list[dict[str, Any]]:
    await engine.client.register(RETRIED)
    await engine.client.start("retried", {"order": 7}, id=instance)
    assert await result_of(engine, instance) == {"attempt": 2}
    return await finished_history(engine, instance)


async def consumers_of_history(engine: Engine) -> int:
    transport: Any = engine.transport
    if hasattr(transport, "_api"):
        info = await transport._api(f"STREAM.INFO.{HISTORY_STREAM}")
        count: int = info["state"]["consumer_count"]
        return count
    return len(transport._streams[HISTORY_STREAM].consumers)


async def test_history_of_a_retried_activity(engine: Engine, calls: Counter[str]) -> None:
    records = await run_retried(engine, "order-7")
    assert calls["order-7"] == 2
    assert [r["kind"] for r in records] == KINDS
    assert [r["seq"] for r in records] == list(range(1, len(KINDS) + 1))
    assert {r["instance"] for r in records} == {"order-7"}
    assert set(records[0]) >= {"instance", "seq", "kind", "at", "detail"}
    assert records[0]["detail"]["type"] == "retried"
    started, scheduled1, failed, retry, scheduled2, completed, done = records
    assert [r["detail"]["step"] for r in records[1:6]] == ["pay"] * 5
    assert [r["detail"]["attempt"] for r in records[1:6]] == [1, 1, 2, 2, 2]
    assert scheduled1["detail"]["activity"] == "fails_once"
    assert failed["detail"]["error"]["type"] == "Hiccup"
    assert "attempt 1 fails" in failed["detail"]["error"]["message"]
    # Records of one decision share its time; each decision comes later.
    times = [r["at"] for r in records]
    assert times == sorted(times)
    assert started["at"] <= scheduled1["at"] < failed["at"] == retry["at"]
    assert retry["at"] < scheduled2["at"] < completed["at"] <= done["at"]
    # The retry starts when it said it would, not before.
    assert failed["at"] + 0.2 <= retry["detail"]["at"] <= scheduled2["at"]
    # The same records the engine's own consumer-based reader sees.
    assert await engine.history("order-7") == records


async def test_history_of_an_unknown_instance_is_empty(engine: Engine) -> None:
    assert await engine.client.history("nobody-here") == []
    await run_retried(engine, "order-1")
    # A prefix of a known id is another instance.
    assert await engine.client.history("order") == []
    assert await engine.client.history("order-") == []


async def test_history_refuses_bad_ids_and_limits(engine: Engine) -> None:
    for bad in ("", "has.dot", "x" * 129, "star*", "gt>"):
        with pytest.raises(actors.InvalidNameError):
            await engine.client.history(bad)
    with pytest.raises(ValueError, match="limit"):
        await engine.client.history("order-7", limit=0)


async def test_history_again_and_again_reads_the_same_and_leaves_nothing(engine: Engine) -> None:
    records = await run_retried(engine, "order-8")
    consumers = await consumers_of_history(engine)
    with trio.fail_after(60):
        again = [await engine.client.history("order-8") for _ in range(50)]
    assert all(each == records for each in again)
    assert await consumers_of_history(engine) == consumers


async def test_history_limit_and_pages(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    records = await run_retried(engine, "order-9")
    assert await engine.client.history("order-9", limit=3) == records[:3]
    assert await engine.client.history("order-9", limit=100) == records
    # Pages of two records: the pages join up, and the limit cuts within one.
    monkeypatch.setattr(actors.runtime._history, "_PAGE", 2)
    assert await engine.client.history("order-9") == records
    assert await engine.client.history("order-9", limit=5) == records[:5]
    assert await engine.client.history("order-9", limit=6) == records[:6]


async def test_history_skips_undecodable_and_repeated_records(engine: Engine) -> None:
    records = await run_retried(engine, "order-10")
    subject = history_subject("order-10")
    stored = await engine.transport.read(HISTORY_STREAM, subject, limit=100)
    # Junk published on the instance's subject, and a record published again
    # (as after a crash, outside the broker's duplicate window).
    await engine.transport.publish(subject, b"not a record")
    await engine.transport.publish(subject, stored[2].data)
    await engine.transport.publish(subject, b"\xa1\x61x\x01")
    assert await engine.client.history("order-10") == records


@actors.activity
async def shout(value: Any) -> Any:
    """Fail with a long message when asked to (a large history record), else echo."""
    if isinstance(value, dict) and value.get("fail"):
        raise actors.ActivityError("x" * value["fail"], type="Loud", non_retryable=True)
    return value


def _fanned(items: int, concurrency: int) -> dict[str, Any]:
    return {
        "type": f"fanned{items}",
        "version": 1,
        "steps": [
            {
                "id": "each",
                "map": "input.items",
                "concurrency": concurrency,
                "steps": [{"id": "say", "activity": "shout", "input": "item"}],
            }
        ],
    }


async def test_a_decision_of_many_records_shares_few_messages(engine: Engine) -> None:
    # One decision schedules 150 items: 151 records, in ceil(151 / 64) = 3
    # messages, each named after its first record; read back whole and in order.
    await engine.client.register(_fanned(150, 150))
    instance = "fan-150"
    await engine.client.start("fanned150", {"items": list(range(150))}, id=instance)
    await result_of(engine, instance)
    records = await finished_history(engine, instance)
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    kinds = [r["kind"] for r in records]
    assert kinds.count("activity.scheduled") == kinds.count("activity.completed") == 150
    stored = await engine.transport.read(HISTORY_STREAM, history_subject(instance), limit=1000)
    per_message = [decode_history(message.data) for message in stored]
    assert max(len(found) for found in per_message) == 64
    # The start's decision in 3 messages, then one per item's completion.
    assert len(stored) == 3 + 150
    assert [found[0]["seq"] for found in per_message[:3]] == [1, 65, 129]
    assert await engine.history(instance) == records


def test_a_group_of_large_records_goes_one_record_per_message() -> None:
    # 20 records of 20 KB in one decision would be a 400 KB message: each
    # goes alone instead, named after its own seq. Small ones share messages.
    large = [
        RecordHistory(seq, "activity.failed", 1.0, {"blob": "x" * 20_000}) for seq in range(1, 21)
    ]
    messages = history_messages("big", large)
    assert [m.msg_id for m in messages] == [history_msg_id("big", seq) for seq in range(1, 21)]
    assert [decode_history(m.data)[0]["seq"] for m in messages] == list(range(1, 21))
    small = [RecordHistory(seq, "activity.scheduled", 1.0, {}) for seq in range(1, 131)]
    grouped = history_messages("big", small)
    assert [m.msg_id for m in grouped] == [history_msg_id("big", seq) for seq in (1, 65, 129)]
    assert [len(decode_history(m.data)) for m in grouped] == [64, 64, 2]
    assert history_messages("big", small[:1])[0].data == encode_history("big", small[0])


def test_decode_history_reads_both_kinds_and_refuses_bad_records() -> None:
    one = RecordHistory(1, "workflow.started", 1.5, {"type": "t"})
    two = RecordHistory(2, "workflow.completed", 2.5, {})
    assert decode_history(encode_history("i", one)) == [
        {"instance": "i", "seq": 1, "kind": "workflow.started", "at": 1.5, "detail": {"type": "t"}}
    ]
    both = decode_history(encode_history_records("i", [one, two]))
    assert [(r["instance"], r["seq"], r["kind"]) for r in both] == [
        ("i", 1, "workflow.started"),
        ("i", 2, "workflow.completed"),
    ]
    for bad in (
        encode("history.records", {"instance": "i", "records": "no"}),
        encode("history.records", {"instance": "i", "records": [{"seq": "1", "kind": "k"}]}),
        encode("history.records", {"instance": "i", "records": [7]}),
        encode("instance.state", {}),
        b"\xff",
    ):
        with pytest.raises(MessageError):
            decode_history(bad)
