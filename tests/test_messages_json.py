"""JSON bodies: ``decode_json``, and starts and signals sent as JSON.

A start or a signal may be any JSON value where the wire allows one (RFC 8259,
with whitespace around it): what a client in another language writes with its
standard library must be read as it was meant, within the limits a CBOR body
is held to, and refused with a reason where the data model cannot hold it.
The first byte tells the two forms apart (:func:`is_json`); the tests below
check that no valid input of either form is taken for the other.
"""

from __future__ import annotations

import json
import math
import sys
import tracemalloc
from typing import Any

import cbor2
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from test_codec import INT_MAX, INT_MIN, assert_identical, data_model, nested_lists

from actors.wire import (
    DEFAULT_LIMITS,
    CodecError,
    CodecLimits,
    JsonError,
    MessageError,
    PayloadTooLargeError,
    StartMessage,
    decode_signal,
    decode_start,
    encode,
    encode_signal,
    encode_start,
    loads,
)
from actors.wire._json import decode_json
from actors.wire._messages import is_json

# Values JSON can carry: no bytes, no NaN or infinities.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=INT_MIN, max_value=INT_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = data_model(json_scalars, 30)


def short_id(value: object) -> str:
    """A test id: the value's repr, cut short (some are 100 kB long)."""
    return repr(value)[:40]


# --- decode_json: what it accepts -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (b"-5", -5),
        (b'  {"a": 1}', {"a": 1}),
        (b"true\n", True),
        (b"false", False),
        (b'"str"', "str"),
        (b"null", None),
        (b"[1]", [1]),
        (b"  -5\n", -5),
        (b"\t\r\n 0.5 \r\n\t", 0.5),
        (b"1e2", 100.0),
        (b"-0", 0),
        (b"-0.0", -0.0),
        (b"1E-400", 0.0),  # too small for a float is 0.0, as every JSON reader has it
        (b'"\\ud83d\\ude00 \\u00e9"', "\U0001f600 é"),  # a surrogate pair is one character
        ('"ünï ✓"'.encode(), "ünï ✓"),
        (b'{"a": [1, {"b": null}], "c": ""}', {"a": [1, {"b": None}], "c": ""}),
        (b"[]", []),
        (b"{ }", {}),
        (str(INT_MAX).encode(), INT_MAX),
        (str(INT_MIN).encode(), INT_MIN),
        (b"1.7976931348623157e308", 1.7976931348623157e308),
    ],
    ids=short_id,
)
def test_decode_json_reads_any_json_value_with_whitespace_around_it(
    text: bytes, value: object
) -> None:
    assert_identical(decode_json(text), value)


@settings(max_examples=300)
@given(value=json_values, indent=st.sampled_from([None, 0, 2, "\t"]))
def test_decode_json_reads_what_json_dumps_writes(value: Any, indent: int | str | None) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=False).encode()
    assert_identical(decode_json(b" \n" + text + b"\r\n"), value)


def test_decode_json_accepts_bytearray_and_memoryview() -> None:
    assert decode_json(bytearray(b"[1]")) == [1]
    assert decode_json(memoryview(b"[1]")) == [1]
    with pytest.raises(TypeError):
        decode_json("[1]")  # type: ignore[arg-type]


# --- decode_json: what it refuses ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"NaN", "NaN is not JSON"),
        (b"[Infinity]", "Infinity is not JSON"),
        (b'{"a": -Infinity}', "-Infinity is not JSON"),
        (b"1e400", "too large for a 64-bit float"),
        (b"[-1.5e309]", "too large for a 64-bit float"),
        (str(INT_MAX + 1).encode(), "outside the 64-bit CBOR range"),
        (str(INT_MIN - 1).encode(), "outside the 64-bit CBOR range"),
        (b"1" * 5000, "5000 digits is outside the 64-bit CBOR range"),
        (b"-" + b"9" * 100_000, "100000 digits is outside"),
        (b'{"a": 1, "b": 2, "a": 3}', "name 'a' more than once"),
        (b'"\\ud800"', "lone surrogate"),
        (b'["ok", {"\\udc00x": 1}]', "lone surrogate"),
        (b'"\\ude00\\ud83d"', "lone surrogate"),  # a pair the wrong way round
        (b"\xff", "not valid UTF-8"),
        (b'"\xc3"', "not valid UTF-8"),
        (b'"\xed\xa0\x80"', "not valid UTF-8"),  # a surrogate encoded in UTF-8
        (b"\xef\xbb\xbf{}", "malformed JSON"),  # RFC 8259: no byte-order mark
        (b"", "malformed JSON"),
        (b"   ", "malformed JSON"),
        (b"1 2", "malformed JSON"),
        (b"[1,]", "malformed JSON"),
        (b"{'a': 1}", "malformed JSON"),
        (b"01", "malformed JSON"),
        (b"+1", "malformed JSON"),
        (b".5", "malformed JSON"),
        (b'"tab\there"', "malformed JSON"),  # control characters must be escaped
        (b"[1]\x00", "malformed JSON"),
        (b"\x0c[1]", "malformed JSON"),  # form feed is not JSON whitespace
        (b"True", "malformed JSON"),
    ],
    ids=short_id,
)
def test_decode_json_refuses_with_a_reason(text: bytes, reason: str) -> None:
    with pytest.raises(CodecError, match=reason):
        decode_json(text)


@pytest.mark.parametrize(
    "text", [b"NaN", b"[-Infinity]", b"[1, 1e400]", b'{"a": {"b": 1, "b": 2}}'], ids=short_id
)
def test_both_readers_of_json_refuse_alike(text: bytes) -> None:
    # A front end's payload (loads) and another program's body (decode_json)
    # are held to one reading of RFC 8259, and say why in the same words.
    with pytest.raises(JsonError) as front_end:
        loads(text)
    with pytest.raises(CodecError) as body:
        decode_json(text)
    assert front_end.value.reason == str(body.value)


@pytest.mark.parametrize("opener", [b"[", b'{"k":'], ids=["arrays", "objects"])
def test_decode_json_depth_limit(opener: bytes) -> None:
    closer = b"]" if opener == b"[" else b"}"
    limits = CodecLimits(max_depth=5)
    assert decode_json(opener * 5 + b"0" + closer * 5, limits=limits) is not None
    with pytest.raises(CodecError, match="nests deeper than max_depth=5"):
        decode_json(opener * 6 + b"0" + closer * 6, limits=limits)
    # Far deeper than json's own recursion allows: the same error, not RecursionError.
    with pytest.raises(CodecError, match="max_depth"):
        decode_json(opener * 50_000 + b"0" + closer * 50_000)


@pytest.mark.parametrize(
    ("text", "items"),
    [
        (b"[1, 2, 3]", 3),
        (b'{"a": 1, "b": [2]}', 3),
        (b"[[], [], []]", 3),
        (b"[ [ ] ,\n[\t] , { } ]", 3),
        (b'["a,b,[c{", "]]", ",,,"]', 3),  # strings are one item, whatever they hold
        (b'{"[,{": "\\",[", "x": []}', 2),
        (b"[[1, 2], {}]", 4),
    ],
    ids=short_id,
)
def test_decode_json_item_limit_counts_like_the_codec(text: bytes, items: int) -> None:
    value = decode_json(text, limits=CodecLimits(max_items=items))
    encode("x", value, limits=CodecLimits(max_items=items))
    with pytest.raises(CodecError, match=f"max_items={items - 1}"):
        decode_json(text, limits=CodecLimits(max_items=items - 1))
    with pytest.raises(CodecError, match="max_items"):
        encode("x", value, limits=CodecLimits(max_items=items - 1))


@settings(max_examples=300)
@given(
    value=json_values,
    depth=st.integers(min_value=1, max_value=4),
    items=st.integers(min_value=1, max_value=12),
)
def test_decode_json_holds_json_to_the_limits_cbor_is_held_to(
    value: Any, depth: int, items: int
) -> None:
    """A value passes as JSON exactly when it passes as the body of an envelope, and is
    refused for the same limit (JSON counts items first: if both are over, it says so)."""
    limits = CodecLimits(max_depth=depth, max_items=items)
    text = json.dumps(value).encode()
    refusal: str | None = None
    try:
        encode("x", value, limits=limits)
    except CodecError as exc:
        refusal = str(exc)
    if refusal is None:
        assert_identical(decode_json(text, limits=limits), value)
        return
    with pytest.raises(CodecError) as refused:
        decode_json(text, limits=limits)
    items_over = f"more than max_items={items} "
    if items_over in refusal:
        assert items_over in str(refused.value)
    else:
        assert str(refused.value) in (refusal, f"body has {items_over}container items")


def test_decode_json_counts_items_before_building_anything() -> None:
    # Nearly 1 MiB of empty arrays: 350,000 items, each a list object if built.
    text = b"[" + b"[]," * 349_000 + b"[]]"
    tracemalloc.start()
    try:
        with pytest.raises(CodecError, match="max_items"):
            decode_json(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The text decoded and two copies of it, not tens of MB of lists.
    assert peak < 4 * len(text)


#: Texts whose item count strips strings that are left open: 100,001 brackets
#: (over max_items, so the count runs), then quotes and backslashes.
LINEAR_SCRIPT = """
from actors.wire._json import CodecError, decode_json
for tail in (
    b'"' + b'\\\\"' * 300_000,  # one string left open, every later quote escaped
    b'"' + b'\\\\"' * 300_000 + b'\\\\',  # the same, ending in a lone backslash
    b'"' * 700_000,
    b'"' + b'\\\\' * 700_000,
):
    try:
        decode_json(b"[" * 100_001 + tail)
    except CodecError as exc:
        print(exc)
"""


async def test_decode_json_counts_items_in_linear_time() -> None:
    """Regression: the item count stripped strings with a pattern that, on a string
    left open, failed and was tried again from every later quote: 40,000 escaped
    quotes after 100,001 brackets took 43 s, 1 MiB of them would take an hour.

    Run in a process of its own, killed at the deadline: the regex engine holds the
    GIL, so a thread could not be given up on. Linear, it takes tens of ms.
    """
    with trio.fail_after(30):
        done = await trio.run_process(
            [sys.executable, "-c", LINEAR_SCRIPT], capture_stdout=True, capture_stderr=True
        )
    reasons = done.stdout.decode().splitlines()
    assert reasons == ["body has more than max_items=100000 container items"] * 4


def test_decode_json_checks_the_size_before_anything() -> None:
    limit = CodecLimits(max_bytes=10)
    assert decode_json(b"[1,1,1,11]", limits=limit) == [1, 1, 1, 11]
    with pytest.raises(PayloadTooLargeError):
        decode_json(b"\xff" * 11, limits=limit)
    with pytest.raises(PayloadTooLargeError):
        decode_json(b" " * (DEFAULT_LIMITS.max_bytes + 1))


# --- telling JSON from CBOR ------------------------------------------------------------


def test_the_first_byte_tells_json_from_cbor() -> None:
    for first in range(256):
        assert is_json(bytes([first])) == (first < 0x80)
    assert not is_json(b"")


@settings(max_examples=200)
@given(value=json_values, indent=st.sampled_from([None, 2]), space=st.sampled_from(["", " \n"]))
def test_no_valid_input_of_one_form_is_taken_for_the_other(
    value: Any, indent: int | None, space: str
) -> None:
    assert is_json((space + json.dumps(value, indent=indent)).encode())
    assert is_json(json.dumps(value, ensure_ascii=False).encode())
    # Every envelope starts with a CBOR map header, whatever it holds.
    assert not is_json(encode_signal(value))
    assert not is_json(encode("workflow.start", {"input": value}))


# --- starts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        b'{"id": "j-1", "input": [1, 2]}',
        b'  {"id": "j-1", "input": [1, 2]}',
        b'\n\t{"id": "j-1", "input": [1, 2]}\r\n',
        b'{"input": [1, 2], "id": "j-1", "version": null, "parent": null, "depth": null}',
    ],
    ids=short_id,
)
def test_a_json_start_is_any_json_object(text: bytes) -> None:
    assert decode_start(text) == StartMessage("j-1", [1, 2])


@pytest.mark.parametrize(
    ("text", "got"),
    [
        (b"-5", "integer -5"),
        (b"[1]", "a list of 1 item"),
        (b' "str"', "string 'str'"),
        (b"null", "null"),
        (b"true\n", "true"),
        (b"2.5", "number 2.5"),
    ],
)
def test_a_json_start_that_is_not_an_object_is_refused_saying_so(text: bytes, got: str) -> None:
    with pytest.raises(MessageError, match=f"a JSON start must be an object, got {got}"):
        decode_start(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b'{"id": "x", "input": ', "start is not valid JSON within limits: malformed JSON"),
        (b'{"id": "x", "input": NaN}', "NaN is not JSON"),
        (b'{"input": 18446744073709551616}', "outside the 64-bit CBOR range"),
        (b'{"id": "x", "id": "y"}', "name 'id' more than once"),
        (b'{"input": ' + b"[" * 40 + b"]" * 40 + b"}", "nests deeper than max_depth=32"),
        (b"\x00\xff", "start is neither JSON nor a CBOR envelope: header byte is 0x00"),
        (b"\x7f", "header byte is 0x7f"),
    ],
    ids=short_id,
)
def test_a_json_start_is_held_to_the_codec_s_rules(text: bytes, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        decode_start(text)


def test_a_start_s_input_nests_as_deep_as_json_and_as_cbor() -> None:
    # The body is one level: its input may nest max_depth - 1 deep, in either form.
    deepest = DEFAULT_LIMITS.max_depth - 1
    fits = {"id": "d", "input": nested_lists(deepest)}
    too_deep = {"id": "d", "input": nested_lists(deepest + 1)}
    assert decode_start(json.dumps(fits).encode()).input == fits["input"]
    assert decode_start(encode("workflow.start", fits)).input == fits["input"]
    with pytest.raises(MessageError, match="max_depth"):
        decode_start(json.dumps(too_deep).encode())
    with pytest.raises(MessageError, match="max_depth"):
        decode_start(cbor2.dumps({"version": 1, "kind": "workflow.start", "body": too_deep}))


def test_a_cbor_start_still_reads_as_before() -> None:
    message = StartMessage("c-1", {"n": 1}, 3, "parent-1", "step@2", 4)
    assert decode_start(encode_start(message)) == message


# --- signals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "payload"),
    [
        (b"-5", -5),
        (b"  -5\n", -5),
        (b'  {"a": 1}', {"a": 1}),
        (b"true\n", True),
        (b'"str"', "str"),
        (b"null", None),
        (b"[1]", [1]),
        (b"0.25", 0.25),
        (b"", None),  # an empty body is a signal without a payload
    ],
    ids=short_id,
)
def test_a_json_signal_is_any_json_value(text: bytes, payload: object) -> None:
    assert_identical(decode_signal(text), payload)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"12abc", "signal is not valid JSON within limits"),
        (b'"abc', "signal is not valid JSON within limits"),
        (b"Infinity", "Infinity is not JSON"),
        (b"-Infinity", "-Infinity is not JSON"),
        (b"1e999", "too large for a 64-bit float"),
        (b"-18446744073709551617", "outside the 64-bit CBOR range"),
        (b"\x01", "signal is neither JSON nor a CBOR envelope: header byte is 0x01"),
    ],
    ids=short_id,
)
def test_a_json_signal_is_refused_with_a_reason(text: bytes, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        decode_signal(text)


def test_a_signal_payload_nests_as_deep_as_json_and_as_cbor() -> None:
    """The envelope holds the payload one level down (``{"payload": value}``): a JSON
    payload may nest exactly as deep as a payload in an envelope, no deeper."""
    deepest = DEFAULT_LIMITS.max_depth - 1
    assert decode_signal(json.dumps(nested_lists(deepest)).encode()) == nested_lists(deepest)
    assert decode_signal(encode_signal(nested_lists(deepest))) == nested_lists(deepest)
    with pytest.raises(MessageError, match="max_depth"):
        decode_signal(json.dumps(nested_lists(deepest + 1)).encode())
    with pytest.raises(CodecError, match="max_depth"):
        encode_signal(nested_lists(deepest + 1))


def test_a_signal_payload_has_as_many_items_as_json_and_as_cbor() -> None:
    most = DEFAULT_LIMITS.max_items - 1  # the envelope's {"payload": ...} is one more
    assert len(decode_signal(json.dumps([0] * most).encode())) == most
    assert len(decode_signal(encode_signal([0] * most))) == most
    with pytest.raises(MessageError, match="max_items"):
        decode_signal(json.dumps([0] * (most + 1)).encode())
    with pytest.raises(CodecError, match="max_items"):
        encode_signal([0] * (most + 1))


def test_a_cbor_signal_still_reads_as_before() -> None:
    assert decode_signal(encode_signal({"by": "ann"})) == {"by": "ann"}
    assert math.isnan(decode_signal(encode_signal(math.nan)))  # CBOR carries NaN; JSON does not
