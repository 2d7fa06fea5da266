"""The transport's specs and partitioning, on their own: no broker needed.

What a transport does with them is the conformance suite's (``transport.testing``).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transport import (
    ConsumerSpec,
    InvalidSpecError,
    KVSpec,
    Partitioning,
    StreamSpec,
    partition_of,
)

#: Partitions of keys as nats-server's ``partition(16, ...)`` transform files them.
KNOWN = {"abc": 11, "x": 7, "order-7": 11, "e": 0, "ab": 10, "start": 15, "z" * 128: 5}


@pytest.mark.parametrize("name", ["", "has space", "has.dot", "x" * 65, "star*", "gt>", "é"])
def test_stream_spec_rejects_bad_names(name):
    with pytest.raises(InvalidSpecError):
        StreamSpec(name=name, subjects=("a.>",))


@pytest.mark.parametrize(
    "subject", ["", "a..b", ".a", "a.", "a b", "a.>.b", "a.b>", "a.*b", ">x", "a\tb"]
)
def test_stream_spec_rejects_bad_subjects(subject):
    with pytest.raises(InvalidSpecError):
        StreamSpec(name="S", subjects=(subject,))


def test_stream_spec_needs_a_subject():
    with pytest.raises(InvalidSpecError):
        StreamSpec(name="S", subjects=())


@pytest.mark.parametrize("subjects", [("_sched.>",), ("_sched",), ("ok.>", "_sched.S.x")])
def test_stream_spec_reserves_the_schedule_prefix(subjects):
    with pytest.raises(InvalidSpecError):
        StreamSpec(name="S", subjects=subjects)


@pytest.mark.parametrize(
    "options",
    [
        {"replicas": 0},
        {"replicas": 6},
        {"duplicate_window": 0},
        {"max_msg_size": 0},
        {"max_age": -1.0},
        {"max_bytes": 0},
        {"max_msgs": 0},
    ],
)
def test_stream_spec_rejects_bad_limits(options):
    with pytest.raises(InvalidSpecError):
        StreamSpec(name="S", subjects=("a.>",), **options)


@pytest.mark.parametrize(
    "options",
    [
        {"durable": "bad name"},
        {"durable": "C", "filter_subjects": ("a..b",)},
        {"durable": "C", "ack_wait": 0},
        {"durable": "C", "max_deliver": 0},
        {"durable": "C", "max_ack_pending": 0},
    ],
)
def test_consumer_spec_rejects_bad_options(options):
    with pytest.raises(InvalidSpecError):
        ConsumerSpec(**options)


@pytest.mark.parametrize(
    "options",
    [
        {"bucket": "bad.name"},
        {"bucket": "B", "history": 0},
        {"bucket": "B", "history": 65},
        {"bucket": "B", "ttl": 0},
        {"bucket": "B", "max_value_size": -1},
    ],
)
def test_kv_spec_rejects_bad_options(options):
    with pytest.raises(InvalidSpecError):
        KVSpec(**options)


def test_invalid_spec_error_is_a_value_error():
    with pytest.raises(ValueError, match="stream name"):
        StreamSpec(name="a b", subjects=("a",))


def test_partition_of_is_the_servers_function() -> None:
    assert {key: partition_of(key, 16) for key in KNOWN} == KNOWN


@given(st.text(min_size=1, max_size=50), st.integers(1, 1024))
def test_partition_of_is_in_range(key: str, count: int) -> None:
    assert 0 <= partition_of(key, count) < count


def test_stored_subject_inserts_the_partition_after_the_prefix() -> None:
    parts = Partitioning(prefix="a.b", count=16)
    assert parts.stored_subject("a.b.abc.signal.go") == "a.b.11.abc.signal.go"
    assert parts.stored_subject("a.b.x.cancel") == "a.b.7.x.cancel"
    # Too short to carry a key and more, or under another prefix: as published.
    for subject in ("a.b.abc", "a.c.abc.x", "a.bc.abc.x"):
        assert parts.stored_subject(subject) == subject
    assert parts.filter(3) == "a.b.3.>"
    for published in ("a.b.abc.signal.go", "a.b.x.cancel", "a.b.7.x.cancel"):
        stored = parts.stored_subject(published)
        assert parts.published_subject(stored) == published
    assert parts.published_subject("a.b.abc.x") == "a.b.abc.x"


@pytest.mark.parametrize("count", [0, -1, 1025])
def test_a_partition_count_out_of_range_is_refused(count: int) -> None:
    with pytest.raises(InvalidSpecError, match="1 to 1024 partitions"):
        Partitioning(prefix="p", count=count)


def test_partitioned_messages_must_be_taken_by_the_stream() -> None:
    with pytest.raises(InvalidSpecError, match="partitioned"):
        StreamSpec(name="S", subjects=("a.>",), partitioning=Partitioning(prefix="b", count=4))
