"""Tokens made of ids never collide: schedules of delayed messages, keys of withdrawn tasks."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from actors.wire import activity_cancel_key, timer_msg_id
from transport._specs import check_subject, schedule_token

#: Characters instance ids, step keys and message ids are made of, and a few more.
_ID_CHARS = st.sampled_from("aAzZ09_-.@~ é/")
_IDS = st.text(_ID_CHARS, min_size=1, max_size=40)


@given(_IDS, _IDS)
def test_distinct_ids_get_distinct_tokens(first: str, second: str) -> None:
    assert (schedule_token(first) == schedule_token(second)) == (first == second)


@given(_IDS)
def test_a_token_is_one_subject_token(msg_id: str) -> None:
    token = schedule_token(msg_id)
    check_subject(f"_sched.WORKFLOW_EVENTS.{token}")
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)


@given(
    st.text(st.sampled_from("ab_-"), min_size=1, max_size=12),
    st.text(st.sampled_from("ab_-@~0"), min_size=1, max_size=12),
    st.text(st.sampled_from("ab_-"), min_size=1, max_size=12),
    st.text(st.sampled_from("ab_-@~0"), min_size=1, max_size=12),
)
def test_timers_of_different_instances_or_steps_never_share_a_schedule(
    instance: str, key: str, other_instance: str, other_key: str
) -> None:
    # Instance "x" and instance "x_signal", or step keys "nap@1" and "nap_1",
    # once mapped to one schedule subject.
    first = schedule_token(timer_msg_id(instance, f"sleep.{key}.1"))
    second = schedule_token(timer_msg_id(other_instance, f"sleep.{other_key}.1"))
    assert (first == second) == ((instance, key) == (other_instance, other_key))


def test_known_collisions_are_apart() -> None:
    assert schedule_token("timer.i.sleep.nap@1.1") != schedule_token("timer.i.sleep.nap_1.1")
    assert schedule_token("timer.x.signal_timeout.s.1") != schedule_token(
        "timer.x_signal.timeout.s.1"
    )


@given(
    st.text(st.sampled_from("ab_-"), min_size=1, max_size=12),
    _IDS,
    st.integers(1, 20),
    st.text(st.sampled_from("ab_-"), min_size=1, max_size=12),
    _IDS,
    st.integers(1, 20),
)
def test_withdrawals_of_different_attempts_never_share_a_key(
    instance: str, step: str, attempt: int, other: str, other_step: str, other_attempt: int
) -> None:
    first = activity_cancel_key(instance, step, attempt)
    second = activity_cancel_key(other, other_step, other_attempt)
    assert (first == second) == ((instance, step, attempt) == (other, other_step, other_attempt))
    # A valid key of a bucket: tokens of A-Z a-z 0-9 _ - between dots.
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[0-9]+", first)
