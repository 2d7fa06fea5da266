"""The entries of ``WORKER_PRESENCE`` as docs/wire.md describes them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from actors.wire import (
    PRESENCE_TTL,
    MessageError,
    WorkerPresence,
    decode_presence,
    encode_presence,
)

WIRE_MD = Path(__file__).resolve().parents[1] / "docs" / "wire.md"
FULL = WorkerPresence("web-1-4242-a1b2c3", "web-1", 4242, 10.5, ("a", "b"), 16, 2, "0.1.0", 20.5)


def test_an_entry_decodes_to_what_was_encoded() -> None:
    assert decode_presence(FULL.id, encode_presence(FULL)) == FULL
    assert json.loads(encode_presence(FULL))["ttl"] == PRESENCE_TTL


def test_the_example_of_the_docs_decodes() -> None:
    text = WIRE_MD.read_text()
    section = text[text.index("### Worker presence") :]
    example = re.search(r'`(\{"id":"web-1.*?\})`', section)
    assert example is not None
    entry = decode_presence("web-1-4242-a1b2c3", example.group(1).encode())
    assert entry.activities == ("charge_card", "ship")
    assert entry.live(entry.seen + 15)
    assert not entry.live(entry.seen + 15.01)


def test_a_minimal_entry_takes_the_documented_defaults() -> None:
    entry = decode_presence("w-1", b'{"id": "w-1", "activities": ["ship"], "seen": 7}')
    assert entry == WorkerPresence("w-1", "", 0, 7.0, ("ship",), 1, 0, "", 7.0, PRESENCE_TTL)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff", "is not JSON: not UTF-8"),
        (b'["w-1"]', "must be a JSON object"),
        (b'{"activities": [], "seen": 1}', "field 'id' is missing"),
        (b'{"id": "w-2", "activities": [], "seen": 1}', "its id 'w-2' is not its key"),
        (b'{"id": "w-1", "seen": 1}', "field 'activities' is missing"),
        (b'{"id": "w-1", "activities": [3], "seen": 1}', "'activities[0]' must be a string"),
        (b'{"id": "w-1", "activities": ["a.b"], "seen": 1}', "activity 'a.b' is not a valid"),
        (b'{"id": "w-1", "activities": []}', "field 'seen' is missing"),
        (b'{"id": "w-1", "activities": [], "seen": "now"}', "'seen' must be a number"),
        (b'{"id": "w-1", "activities": [], "seen": 1, "ttl": -1}', "'ttl' must be a number"),
        (b'{"id": "w-1", "activities": [], "seen": 1, "pid": -1}', "'pid' must be an integer"),
        (b'{"id": "w-1", "activities": [], "seen": 1, "concurrency": 0}', "'concurrency'"),
        (b'{"id": "w-1", "activities": [], "seen": 1, "host": 5}', "'host' must be a string"),
    ],
)
def test_a_malformed_entry_is_refused_with_its_reason(value: bytes, reason: str) -> None:
    with pytest.raises(MessageError, match=re.escape(reason)) as refused:
        decode_presence("w-1", value)
    assert "worker entry 'w-1'" in str(refused.value)


def test_a_key_that_is_no_worker_id_is_refused() -> None:
    with pytest.raises(MessageError, match="a worker id must be"):
        decode_presence("a.b", b'{"id": "a.b", "activities": [], "seen": 1}')
