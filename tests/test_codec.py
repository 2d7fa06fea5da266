"""Tests for actors.wire._codec: round trips, limits, and hostile bytes.

The hostile-input tests insist on one outcome: a valid Envelope or CodecError,
never another exception (and never a crash or a hang).
"""

from __future__ import annotations

import datetime
import decimal
import enum
import math
import struct
import tracemalloc
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.wire import (
    DEFAULT_LIMITS,
    CodecError,
    CodecLimits,
    Envelope,
    PayloadTooLargeError,
    decode,
    encode,
)
from actors.wire._codec import MAX_DEPTH_CEILING, SCHEMA_VERSION

# --- helpers -----------------------------------------------------------------

KIND = "activity.task"
INT_MIN = -(2**64)
INT_MAX = 2**64 - 1

kinds = st.from_regex(r"[a-z0-9_.-]{1,64}", fullmatch=True)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=INT_MIN, max_value=INT_MAX)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)


def data_model(leaves: st.SearchStrategy[Any], max_leaves: int) -> st.SearchStrategy[Any]:
    """Lists and str-keyed dicts of ``leaves``, within the default depth limit."""
    return st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=5)
            | st.dictionaries(st.text(max_size=8), children, max_size=5)
        ),
        max_leaves=max_leaves,
    )


bodies = data_model(scalars, 40)


def assert_identical(left: object, right: object) -> None:
    """Equal and of exactly the same types all the way down (1 == 1.0 == True)."""
    assert type(left) is type(right), (left, right)
    if isinstance(left, list):
        assert isinstance(right, list)
        assert len(left) == len(right)
        for a, b in zip(left, right, strict=True):
            assert_identical(a, b)
    elif isinstance(left, dict):
        assert isinstance(right, dict)
        assert list(left) == list(right)
        for key in left:
            assert_identical(left[key], right[key])
    elif isinstance(left, float):
        assert isinstance(right, float)
        assert left == right or (math.isnan(left) and math.isnan(right))
        assert math.copysign(1.0, left) == math.copysign(1.0, right)
    else:
        assert left == right


def raw_envelope(body: bytes, *, version: bytes = b"\x01", kind: str = KIND) -> bytes:
    """An envelope whose body (and optionally version) is given as raw CBOR."""
    return (
        b"\xa3"
        + cbor2.dumps("version")
        + version
        + cbor2.dumps("kind")
        + cbor2.dumps(kind)
        + cbor2.dumps("body")
        + body
    )


def nested_lists(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def nested_dicts(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = {"k": value}
    return value


def decode_or_codec_error(data: bytes) -> None:
    """Decode hostile bytes; only an Envelope or a CodecError is acceptable."""
    try:
        envelope = decode(data)
    except CodecError:
        return
    assert isinstance(envelope, Envelope)


# --- round trips -------------------------------------------------------------


@given(kind=kinds, body=bodies)
def test_round_trip_preserves_kind_body_and_exact_types(kind: str, body: object) -> None:
    envelope = decode(encode(kind, body))
    assert envelope.kind == kind
    assert envelope.version == SCHEMA_VERSION
    assert_identical(envelope.body, body)


@pytest.mark.parametrize(
    "body",
    [
        None,
        True,
        False,
        0,
        -1,
        INT_MAX,
        INT_MIN,
        0.0,
        -0.0,
        1.5,
        1e300,
        float("inf"),
        float("-inf"),
        float("nan"),
        "",
        "ünïcødé ✓ 𝄞",
        b"",
        b"\x00\xff" * 100,
        [],
        {},
        {"nested": {"list": [1, "two", b"3", 4.0, None, [True]]}},
        "x" * 70_000,
    ],
    ids=repr,
)
def test_round_trip_of_edge_case_values(body: object) -> None:
    assert_identical(decode(encode(KIND, body)).body, body)


def test_round_trip_keeps_dict_key_order() -> None:
    body = {"zeta": 1, "alpha": 2, "mid": 3}
    assert list(decode(encode(KIND, body)).body) == ["zeta", "alpha", "mid"]


def test_encoding_of_a_small_envelope_is_stable_on_the_wire() -> None:
    # A golden encoding: if this changes, every stored history changes with it.
    assert encode("workflow.start", {"a": 1}) == (
        bytes.fromhex("a3") + b"\x67version\x01\x64kind\x6eworkflow.start\x64body\xa1\x61a\x01"
    )


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = encode(KIND, {"a": [1, 2]})
    assert decode(bytearray(data)) == decode(data)
    assert decode(memoryview(data)) == decode(data)


def test_decode_rejects_non_bytes_with_type_error() -> None:
    with pytest.raises(TypeError):
        decode("not bytes")  # type: ignore[arg-type]


# --- what encode refuses -----------------------------------------------------


class Color(enum.IntEnum):
    RED = 1


class MyStr(str):
    pass


@pytest.mark.parametrize(
    "body",
    [
        {1, 2},
        frozenset({1}),
        (1, 2),
        bytearray(b"ab"),
        pytest.param(object(), id="object()"),
        Color.RED,
        MyStr("x"),
        decimal.Decimal("1.5"),
        datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
        complex(1, 2),
        INT_MAX + 1,
        INT_MIN - 1,
        2**1000,
        # Too long for str(): neither the error message nor the test id may try.
        pytest.param(10**5000, id="10**5000"),
        "\ud800",
        {1: "int key"},
        {b"k": "bytes key"},
        {("t",): "tuple key"},
        {None: "none key"},
        [1, [2, {"ok": {3}}]],
    ],
    ids=repr,
)
def test_encode_rejects_values_outside_the_data_model(body: object) -> None:
    with pytest.raises(CodecError):
        encode(KIND, body)


@pytest.mark.parametrize(
    "kind", ["", "Activity", "a b", "ü", "a/b", "x" * 65, "tab\t", "new\nline"]
)
def test_encode_rejects_invalid_kinds(kind: str) -> None:
    with pytest.raises(CodecError, match="kind"):
        encode(kind, None)


def test_encode_rejects_non_str_kind() -> None:
    with pytest.raises(CodecError, match="kind"):
        encode(b"activity.task", None)  # type: ignore[arg-type]


def test_encode_accepts_longest_valid_kind() -> None:
    kind = "a" * 64
    assert decode(encode(kind, None)).kind == kind


def test_encode_rejects_cyclic_list_without_recursing() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(CodecError, match="max_depth"):
        encode(KIND, cyclic)


def test_encode_rejects_10000_nested_lists_as_codec_error_not_recursion() -> None:
    with pytest.raises(CodecError, match="max_depth"):
        encode(KIND, nested_lists(10_000))


def test_encode_rejects_10000_nested_dicts_as_codec_error_not_recursion() -> None:
    with pytest.raises(CodecError, match="max_depth"):
        encode(KIND, nested_dicts(10_000))


def test_encode_rejects_exponential_shared_structure_by_item_count() -> None:
    # 30 levels of a list holding the same list twice: 2**30 elements if expanded.
    shared: list[Any] = []
    for _ in range(30):
        shared = [shared, shared]
    with pytest.raises(CodecError, match="max_items"):
        encode(KIND, shared)


def test_encode_translates_unexpected_cbor2_errors_with_cause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(obj: object) -> bytes:
        raise OverflowError("boom")

    monkeypatch.setattr(cbor2, "dumps", broken)
    with pytest.raises(CodecError) as info:
        encode(KIND, 1)
    assert isinstance(info.value.__cause__, OverflowError)


def test_encode_lets_memory_error_through(monkeypatch: pytest.MonkeyPatch) -> None:
    def exhausted(obj: object) -> bytes:
        raise MemoryError

    monkeypatch.setattr(cbor2, "dumps", exhausted)
    with pytest.raises(MemoryError):
        encode(KIND, 1)


# --- limits ------------------------------------------------------------------


def test_default_limits_values() -> None:
    expected = CodecLimits(max_bytes=1_048_576, max_depth=32, max_items=100_000)
    assert expected == DEFAULT_LIMITS


@pytest.mark.parametrize("field", ["max_bytes", "max_depth", "max_items"])
@pytest.mark.parametrize("value", [0, -1, True, 1.5, "3", None])
def test_codec_limits_reject_non_positive_or_non_int_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        CodecLimits(**{field: value})  # type: ignore[arg-type]


def test_codec_limits_reject_depth_above_ceiling() -> None:
    with pytest.raises(ValueError, match="max_depth"):
        CodecLimits(max_depth=MAX_DEPTH_CEILING + 1)


def test_depth_at_ceiling_round_trips() -> None:
    limits = CodecLimits(max_depth=MAX_DEPTH_CEILING)
    body = nested_lists(MAX_DEPTH_CEILING)
    assert decode(encode(KIND, body, limits=limits), limits=limits).body == body


def test_envelope_exactly_at_default_max_bytes_round_trips_and_one_more_is_rejected() -> None:
    overhead = len(encode(KIND, b"x" * 100_000)) - 100_000  # bytes header is 5 bytes here
    body = b"x" * (DEFAULT_LIMITS.max_bytes - overhead)
    data = encode(KIND, body)
    assert len(data) == DEFAULT_LIMITS.max_bytes
    assert decode(data).body == body

    with pytest.raises(PayloadTooLargeError):
        encode(KIND, body + b"x")
    with pytest.raises(PayloadTooLargeError):
        decode(data + b"\x00")


@pytest.mark.parametrize("body", [{"a": [1, 2, 3]}, "short", 7])
def test_max_bytes_boundary_with_custom_limits(body: object) -> None:
    size = len(encode(KIND, body))
    exact = CodecLimits(max_bytes=size)
    short = CodecLimits(max_bytes=size - 1)
    data = encode(KIND, body, limits=exact)
    assert decode(data, limits=exact).body == body
    with pytest.raises(PayloadTooLargeError):
        encode(KIND, body, limits=short)
    with pytest.raises(PayloadTooLargeError):
        decode(data, limits=short)


def test_decode_checks_size_before_parsing() -> None:
    # Garbage that would fail parsing must still report its size first.
    with pytest.raises(PayloadTooLargeError):
        decode(b"\xff" * 11, limits=CodecLimits(max_bytes=10))


def test_encode_rejects_huge_string_before_encoding() -> None:
    with pytest.raises(PayloadTooLargeError):
        encode(KIND, {"blob": "x" * 11}, limits=CodecLimits(max_bytes=10))


@pytest.mark.parametrize("make", [nested_lists, nested_dicts], ids=["lists", "dicts"])
def test_depth_exactly_at_max_depth_is_accepted_and_one_more_is_rejected(make: Any) -> None:
    limits = CodecLimits(max_depth=5)
    at_limit = make(5)
    assert decode(encode(KIND, at_limit, limits=limits), limits=limits).body == at_limit

    too_deep = make(6)
    with pytest.raises(CodecError, match="max_depth"):
        encode(KIND, too_deep, limits=limits)
    with pytest.raises(CodecError, match="max_depth"):
        decode(raw_envelope(cbor2.dumps(too_deep)), limits=limits)


def test_empty_container_counts_as_a_level_for_depth() -> None:
    limits = CodecLimits(max_depth=2)
    assert decode(encode(KIND, [[]], limits=limits), limits=limits).body == [[]]
    with pytest.raises(CodecError, match="max_depth"):
        encode(KIND, [[[]]], limits=limits)
    with pytest.raises(CodecError, match="max_depth"):
        decode(raw_envelope(cbor2.dumps([[[]]])), limits=limits)


def test_scalar_body_has_depth_zero() -> None:
    limits = CodecLimits(max_depth=1)
    assert decode(encode(KIND, "flat", limits=limits), limits=limits).body == "flat"


@pytest.mark.parametrize(
    ("body", "items"),
    [([1, 2, 3, 4], 4), ({"a": 1, "b": 2}, 2), ([[1, 2], {"x": [3]}], 6)],
)
def test_items_exactly_at_max_items_is_accepted_and_one_fewer_allowed_is_rejected(
    body: object, items: int
) -> None:
    exact = CodecLimits(max_items=items)
    assert decode(encode(KIND, body, limits=exact), limits=exact).body == body

    short = CodecLimits(max_items=items - 1)
    with pytest.raises(CodecError, match="max_items"):
        encode(KIND, body, limits=short)
    with pytest.raises(CodecError, match="max_items"):
        decode(raw_envelope(cbor2.dumps(body)), limits=short)


# --- hostile bytes: structure ------------------------------------------------


def test_decode_rejects_empty_input() -> None:
    with pytest.raises(CodecError):
        decode(b"")


@pytest.mark.parametrize(
    "value",
    [[1, 2, 3], 1, "version", b"x", None, 1.5],
    ids=["array", "int", "text", "bytes", "null", "float"],
)
def test_decode_rejects_wrong_top_level_type(value: object) -> None:
    with pytest.raises(CodecError, match="map of 3"):
        decode(cbor2.dumps(value))


@pytest.mark.parametrize(
    "fields",
    [
        {"version": 1, "kind": KIND},
        {"version": 1, "kind": KIND, "body": 1, "extra": 2},
        {"version": 1, "kind": KIND, "bodyx": 1},
        {"version": 1, "kind": KIND, "body": 1, "a": 1, "b": 2, "c": 3},
        {},
    ],
    ids=["missing", "extra", "misnamed", "many", "empty"],
)
def test_decode_rejects_missing_extra_or_misnamed_fields(fields: dict[str, object]) -> None:
    with pytest.raises(CodecError):
        decode(cbor2.dumps(fields))


def test_decode_accepts_fields_in_any_order() -> None:
    data = cbor2.dumps({"body": [1], "kind": KIND, "version": 1})
    assert decode(data) == Envelope(KIND, [1])


def test_decode_rejects_duplicate_envelope_field() -> None:
    data = b"\xa3" + cbor2.dumps("kind") + cbor2.dumps(KIND)
    data += cbor2.dumps("kind") + cbor2.dumps(KIND) + cbor2.dumps("body") + b"\x01"
    with pytest.raises(CodecError):
        decode(data)


def test_decode_rejects_duplicate_keys_in_body() -> None:
    body = b"\xa2" + cbor2.dumps("a") + b"\x01" + cbor2.dumps("a") + b"\x02"
    with pytest.raises(CodecError):
        decode(raw_envelope(body))


def test_decode_rejects_newer_schema_version_saying_so() -> None:
    with pytest.raises(CodecError, match="newer than supported"):
        decode(raw_envelope(b"\x01", version=cbor2.dumps(SCHEMA_VERSION + 1)))


@pytest.mark.parametrize(
    "version",
    [0, -1, "1", 1.0, True, None, [1], 2**64 - 1],
    ids=repr,
)
def test_decode_rejects_invalid_schema_version(version: object) -> None:
    with pytest.raises(CodecError, match="version"):
        decode(raw_envelope(b"\x01", version=cbor2.dumps(version)))


@pytest.mark.parametrize("kind", ["", "UPPER", "x" * 65, "sp ace"])
def test_decode_rejects_invalid_kind(kind: str) -> None:
    with pytest.raises(CodecError, match="kind"):
        decode(raw_envelope(b"\x01", kind=kind))


def test_decode_rejects_trailing_bytes() -> None:
    with pytest.raises(CodecError, match="trailing"):
        decode(encode(KIND, {"a": 1}) + b"\x00")


def test_decode_rejects_second_envelope_appended() -> None:
    data = encode(KIND, 1)
    with pytest.raises(CodecError, match="trailing"):
        decode(data + data)


def test_decode_rejects_every_truncation_of_a_valid_envelope() -> None:
    data = encode(KIND, {"s": "text" * 10, "b": b"\x01" * 300, "l": [1, 2.5, None], "n": -(2**40)})
    for cut in range(len(data)):
        with pytest.raises(CodecError):
            decode(data[:cut])


# --- hostile bytes: nesting and lengths --------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"\x81" * 10_000 + b"\x00", (b"\xa1\x61k") * 10_000 + b"\x00"],
    ids=["arrays", "maps"],
)
def test_decode_rejects_10000_nested_levels_as_codec_error_not_recursion(body: bytes) -> None:
    with pytest.raises(CodecError, match="max_depth"):
        decode(raw_envelope(body))


def test_decode_rejects_deep_nesting_in_version_field() -> None:
    with pytest.raises(CodecError, match="max_depth"):
        decode(raw_envelope(b"\x01", version=b"\x81" * 10_000 + b"\x01"))


@pytest.mark.parametrize(
    "header",
    [
        b"\x5b" + struct.pack(">Q", 2**60),  # byte string
        b"\x7b" + struct.pack(">Q", 2**60),  # text string
        b"\x9b" + struct.pack(">Q", 2**60),  # array
        b"\xbb" + struct.pack(">Q", 2**60),  # map
        b"\x5b" + b"\xff" * 8,  # byte string of 2**64 - 1
        b"\x9a" + b"\xff" * 4,  # array of 2**32 - 1
        b"\x79\xff\xff",  # text string of 65535
    ],
    ids=["bytes-2^60", "text-2^60", "array-2^60", "map-2^60", "bytes-max", "array-2^32", "text"],
)
def test_decode_rejects_declared_lengths_beyond_the_input(header: bytes) -> None:
    # Nothing is allocated for the declared length: this would be MemoryError
    # (or a very long wait) otherwise.
    with pytest.raises(CodecError):
        decode(raw_envelope(header + b"\x00" * 16))


def test_decode_rejects_huge_declared_length_of_envelope_key() -> None:
    with pytest.raises(CodecError):
        decode(b"\xa3\x7b" + struct.pack(">Q", 2**60))


def test_decode_rejects_item_count_bomb_under_byte_limit() -> None:
    # 200_000 one-byte items fit in the size limit but exceed max_items.
    body = b"\x9a" + struct.pack(">I", 200_000) + b"\x00" * 200_000
    with pytest.raises(CodecError, match="max_items"):
        decode(raw_envelope(body))


# --- hostile bytes: CBOR features the envelope does not use ------------------


@pytest.mark.parametrize(
    "tagged",
    [
        b"\xc1\x01",  # epoch datetime
        b"\xc0\x74" + b"2024-01-01T00:00:00Z",  # string datetime
        b"\xc2\x41\x01",  # bignum
        b"\xc4\x82\x21\x19\x6a\xb3",  # decimal fraction
        b"\xd8\x23\x62.*",  # regex
        b"\xd9\x01\x02\x81\x01",  # set
        b"\xd8\x1c\x81\x01",  # shareable
        b"\xd8\x1d\x00",  # shared reference
        b"\xd9\x01\x00\x01",  # stringref namespace
        b"\xd9\xd9\xf7\x01",  # self-described CBOR
        b"\xdb" + b"\xff" * 8 + b"\x01",  # largest tag number
    ],
    ids=[
        "datetime",
        "datestring",
        "bignum",
        "decimal",
        "regex",
        "set",
        "shareable",
        "sharedref",
        "stringref",
        "selfdescribe",
        "maxtag",
    ],
)
def test_decode_rejects_tags_in_body(tagged: bytes) -> None:
    with pytest.raises(CodecError, match="tags"):
        decode(raw_envelope(tagged))


def test_decode_rejects_tag_around_whole_envelope() -> None:
    with pytest.raises(CodecError):
        decode(b"\xd9\xd9\xf7" + encode(KIND, 1))


def test_decode_rejects_tag_nested_deep_in_body() -> None:
    with pytest.raises(CodecError, match="tags"):
        decode(raw_envelope(b"\xa1\x61a\x82\x01\xc1\x01"))


def test_decode_rejects_tag_as_version() -> None:
    with pytest.raises(CodecError, match="tags"):
        decode(raw_envelope(b"\x01", version=b"\xc2\x41\x01"))


@pytest.mark.parametrize(
    "item",
    [
        b"\x9f\x01\xff",  # indefinite array
        b"\xbf\x61a\x01\xff",  # indefinite map
        b"\x5f\x41a\xff",  # indefinite byte string
        b"\x7f\x61a\xff",  # indefinite text string
    ],
    ids=["array", "map", "bytes", "text"],
)
def test_decode_rejects_indefinite_length_items(item: bytes) -> None:
    with pytest.raises(CodecError, match="indefinite"):
        decode(raw_envelope(item))


@pytest.mark.parametrize(
    "item",
    [b"\xf7", b"\xf0", b"\xe0", b"\xf8\x20", b"\xf8\xff", b"\xff", b"\xfc", b"\xfe"],
    ids=["undefined", "simple16", "simple0", "simple32", "simple255", "break", "fc", "fe"],
)
def test_decode_rejects_simple_values_other_than_bool_and_null(item: bytes) -> None:
    with pytest.raises(CodecError):
        decode(raw_envelope(item))


@pytest.mark.parametrize("head", [0x1C, 0x1D, 0x1E, 0x3C, 0x5C, 0x7D, 0x9E, 0xBC])
def test_decode_rejects_reserved_additional_info(head: int) -> None:
    with pytest.raises(CodecError, match="reserved"):
        decode(raw_envelope(bytes([head]) + b"\x00" * 8))


@pytest.mark.parametrize(
    "key",
    [b"\x01", b"\x41k", b"\x80", b"\xa0", b"\xf6", b"\xf5", b"\xfb" + b"\x00" * 8, b"\xc1\x01"],
    ids=["int", "bytes", "array", "map", "null", "true", "float", "tag"],
)
def test_decode_rejects_non_text_map_keys_in_body(key: bytes) -> None:
    with pytest.raises(CodecError, match="keys"):
        decode(raw_envelope(b"\xa1" + key + b"\x01"))


def test_decode_rejects_non_text_envelope_key() -> None:
    data = b"\xa3\x01\x01" + cbor2.dumps("kind") + cbor2.dumps(KIND) + b"\x64body\x01"
    with pytest.raises(CodecError, match="keys"):
        decode(data)


def test_decode_accepts_long_text_keys() -> None:
    key = "k" * 300  # length in a 2-byte argument, not in the header byte
    assert decode(raw_envelope(cbor2.dumps({key: 1}))).body == {key: 1}


def test_decode_rejects_invalid_utf8_with_chained_cause() -> None:
    with pytest.raises(CodecError) as info:
        decode(raw_envelope(b"\x62\xff\xfe"))
    assert isinstance(info.value.__cause__, cbor2.CBORDecodeError)


def test_decode_accepts_half_single_and_double_floats() -> None:
    body = b"\x83\xf9\x3c\x00\xfa\x3f\xc0\x00\x00\xfb" + struct.pack(">d", 0.1)
    assert decode(raw_envelope(body)).body == [1.0, 1.5, 0.1]


def test_decode_accepts_64_bit_integer_extremes() -> None:
    body = b"\x82\x1b" + b"\xff" * 8 + b"\x3b" + b"\xff" * 8
    assert decode(raw_envelope(body)).body == [INT_MAX, INT_MIN]


@pytest.mark.parametrize(
    "error",
    [ValueError("v"), OverflowError("o"), RecursionError("r"), TypeError("t"), KeyError("k")],
    ids=repr,
)
def test_decode_translates_any_cbor2_exception_with_cause(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def broken(data: bytes, **kwargs: object) -> object:
        raise error

    monkeypatch.setattr(cbor2, "loads", broken)
    with pytest.raises(CodecError) as info:
        decode(encode(KIND, 1))
    assert info.value.__cause__ is error


def test_decode_lets_memory_error_through(monkeypatch: pytest.MonkeyPatch) -> None:
    def exhausted(data: bytes, **kwargs: object) -> object:
        raise MemoryError

    monkeypatch.setattr(cbor2, "loads", exhausted)
    with pytest.raises(MemoryError):
        decode(encode(KIND, 1))


# --- hostile bytes: fuzzing --------------------------------------------------

fuzz = settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])


@fuzz
@given(st.binary(max_size=200))
def test_fuzz_random_bytes_give_envelope_or_codec_error(data: bytes) -> None:
    decode_or_codec_error(data)


@fuzz
@given(st.binary(max_size=120))
def test_fuzz_random_bytes_after_envelope_header_give_envelope_or_codec_error(
    data: bytes,
) -> None:
    decode_or_codec_error(b"\xa3" + data)


@fuzz
@given(st.binary(max_size=60))
def test_fuzz_random_body_bytes_give_envelope_or_codec_error(body: bytes) -> None:
    decode_or_codec_error(raw_envelope(body))


@fuzz
@given(body=bodies, data=st.data())
def test_fuzz_truncations_of_valid_envelopes_give_codec_error(body: object, data: Any) -> None:
    encoded = encode(KIND, body)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(CodecError):
        decode(encoded[:cut])


@fuzz
@given(body=bodies, data=st.data())
def test_fuzz_mutations_of_valid_envelopes_give_envelope_or_codec_error(
    body: object, data: Any
) -> None:
    mutated = bytearray(encode(KIND, body))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        op = data.draw(st.sampled_from(["replace", "insert", "delete", "flip"]))
        at = data.draw(st.integers(min_value=0, max_value=max(len(mutated) - 1, 0)))
        if op == "insert" or not mutated:
            mutated.insert(at, data.draw(st.integers(min_value=0, max_value=255)))
        elif op == "replace":
            mutated[at] = data.draw(st.integers(min_value=0, max_value=255))
        elif op == "delete":
            del mutated[at]
        else:
            mutated[at] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    decode_or_codec_error(bytes(mutated))


# Values cbor2 can write (tags included) but an envelope body must not hold.
foreign_values = st.recursive(
    st.datetimes(timezones=st.just(datetime.UTC))
    | st.decimals(allow_nan=False, allow_infinity=False)  # Infinity is written as a float
    | st.integers(min_value=2**64, max_value=2**80)
    | st.frozensets(st.integers(), max_size=3)
    | st.uuids()
    | st.builds(cbor2.CBORTag, st.integers(min_value=0, max_value=2**32), st.integers()),
    lambda children: st.lists(children, min_size=1, max_size=3),
    max_leaves=5,
)


@fuzz
@given(foreign_values)
def test_fuzz_cbor2_tagged_values_in_body_give_codec_error(value: object) -> None:
    with pytest.raises(CodecError):
        decode(raw_envelope(cbor2.dumps(value)))


@fuzz
@given(kind=kinds, body=bodies)
def test_fuzz_valid_envelope_built_by_plain_cbor2_decodes(kind: str, body: object) -> None:
    # The decoder reads any conforming writer, not just encode().
    data = cbor2.dumps({"kind": kind, "body": body, "version": SCHEMA_VERSION})
    assert_identical(decode(data).body, body)


# --- Envelope ----------------------------------------------------------------


def test_envelope_defaults_to_current_schema_version() -> None:
    assert Envelope(KIND, None).version == SCHEMA_VERSION


@pytest.mark.parametrize(
    ("kind", "version"),
    [("Bad", 1), (KIND, 0), (KIND, SCHEMA_VERSION + 1), (KIND, True)],
)
def test_envelope_validates_kind_and_version_on_construction(kind: str, version: int) -> None:
    with pytest.raises(CodecError):
        Envelope(kind, None, version)


def test_envelope_is_frozen() -> None:
    envelope = Envelope(KIND, None)
    with pytest.raises(AttributeError):
        envelope.kind = "other"  # type: ignore[misc]


# --- any valid encoding: every header width -----------------------------------
#
# Other encoders need not write the shortest form: cbor-x (JavaScript), for one,
# writes the envelope's map as b9 00 03. Every definite-length header is valid
# CBOR, and each is read; the byte vectors below are written by hand.

#: Additional-info values of a header: the argument in the header byte itself
#: (None), or in the 1, 2, 4 or 8 bytes after it.
WIDTHS = [None, 24, 25, 26, 27]
WIDTH_IDS = ["inline", "arg8", "arg16", "arg32", "arg64"]


def head(major: int, argument: int, info: int | None) -> bytes:
    """A CBOR item header of ``major`` type whose argument is written at width ``info``."""
    if info is None:
        assert argument < 24
        return bytes([major << 5 | argument])
    return bytes([major << 5 | info]) + argument.to_bytes(1 << (info - 24), "big")


def text(value: str, info: int | None = None) -> bytes:
    data = value.encode()
    return head(3, len(data), info) + data


def envelope_with(body: bytes, info: int | None, *, kind: str = KIND) -> bytes:
    """An envelope whose map header, keys, version and kind use argument width ``info``."""
    short = None if info is None else info  # every argument here is < 24
    return (
        head(5, 3, info)
        + text("version", short)
        + head(0, 1, info)
        + text("kind", short)
        + text(kind, 24 if info is None and len(kind) >= 24 else info)
        + text("body", short)
        + body
    )


@pytest.mark.parametrize("info", WIDTHS, ids=WIDTH_IDS)
def test_decode_accepts_the_envelope_map_header_at_every_width(info: int | None) -> None:
    body = b"\xa1" + text("id") + text("x")
    data = head(5, 3, info) + raw_envelope(body)[1:]
    assert decode(data) == Envelope(KIND, {"id": "x"})


def test_decode_accepts_the_map_header_cbor_x_writes() -> None:
    # The bytes npm's cbor-x writes for {version: 1, kind: "workflow.start", body: {}}.
    data = bytes.fromhex("b90003") + b"\x67version\x01\x64kind\x6eworkflow.start\x64body\xa0"
    assert decode(data) == Envelope("workflow.start", {})


@pytest.mark.parametrize("info", WIDTHS, ids=WIDTH_IDS)
def test_decode_accepts_envelope_fields_written_at_every_width(info: int | None) -> None:
    assert decode(envelope_with(b"\xf6", info)) == Envelope(KIND, None)


@pytest.mark.parametrize("info", WIDTHS, ids=WIDTH_IDS)
def test_decode_accepts_every_item_header_width_in_a_body(info: int | None) -> None:
    # A map of each kind of item, every header at the width under test.
    items: dict[str, tuple[bytes, object]] = {
        "uint": (head(0, 5, info), 5),
        "negint": (head(1, 4, info), -5),
        "text": (text("hi", info), "hi"),
        "bytes": (head(2, 2, info) + b"hi", b"hi"),
        "array": (head(4, 2, info) + head(0, 1, info) + head(0, 2, info), [1, 2]),
        "map": (head(5, 1, info) + text("k", info) + head(0, 7, info), {"k": 7}),
        "empty": (head(4, 0, info), []),
    }
    body = head(5, len(items), info)
    body += b"".join(text(name, info) + item for name, (item, _) in items.items())
    expected = {name: value for name, (_, value) in items.items()}
    assert_identical(decode(raw_envelope(body)).body, expected)


@pytest.mark.parametrize(
    ("item", "value"),
    [
        (b"\xf9\x3e\x00", 1.5),
        (b"\xfa\x3f\xc0\x00\x00", 1.5),
        (b"\xfb" + struct.pack(">d", 1.5), 1.5),
        (b"\xf9\x7c\x00", math.inf),
        (b"\xfa\xff\x80\x00\x00", -math.inf),
        (b"\xf9\x80\x00", -0.0),
        (b"\xf9\x00\x01", 2.0**-24),  # the smallest half-float subnormal
        (b"\xfa" + struct.pack(">f", 0.1), struct.unpack(">f", struct.pack(">f", 0.1))[0]),
    ],
    ids=[
        "half",
        "single",
        "double",
        "half-inf",
        "single-neg-inf",
        "half-neg-zero",
        "half-subnormal",
        "single-0.1",
    ],
)
def test_decode_accepts_floats_of_16_32_and_64_bits(item: bytes, value: float) -> None:
    assert_identical(decode(raw_envelope(item)).body, value)
    # And in a wide-headered envelope, nested in a map in an array.
    nested = b"\x9b" + (1).to_bytes(8, "big") + b"\xb9\x00\x01" + text("f", 25) + item
    assert_identical(decode(envelope_with(nested, 27)).body, [{"f": value}])


def test_decode_reads_a_half_float_nan() -> None:
    body = decode(raw_envelope(b"\xf9\x7e\x00")).body
    assert type(body) is float
    assert math.isnan(body)


@pytest.mark.parametrize(
    ("item", "value"),
    [
        (b"\x1b" + b"\xff" * 8, INT_MAX),
        (b"\x3b" + b"\xff" * 8, INT_MIN),
        (b"\x1b" + (0).to_bytes(8, "big"), 0),
        (b"\x3a" + (2**32 - 1).to_bytes(4, "big"), -(2**32)),
        (b"\x19\x00\x00", 0),
    ],
    ids=["uint64-max", "negint64-min", "zero-in-8", "negint32", "zero-in-2"],
)
def test_decode_accepts_integers_at_any_width_including_non_shortest(
    item: bytes, value: int
) -> None:
    assert_identical(decode(envelope_with(item, 26)).body, value)


# Limits hold whatever the width of the header that declares a length.


@pytest.mark.parametrize("info", WIDTHS, ids=WIDTH_IDS)
def test_depth_limit_holds_with_wide_container_headers(info: int | None) -> None:
    limits = CodecLimits(max_depth=5)
    array, one_map = head(4, 1, info), head(5, 1, info) + text("k", info)
    for opener in (array, one_map):
        at_limit = opener * 5 + b"\x00"
        assert decode(raw_envelope(at_limit), limits=limits).body is not None
        with pytest.raises(CodecError, match="max_depth"):
            decode(raw_envelope(opener * 6 + b"\x00"), limits=limits)


@pytest.mark.parametrize("info", [24, 25, 26, 27], ids=WIDTH_IDS[1:])
def test_item_limit_holds_with_wide_container_headers(info: int) -> None:
    limits = CodecLimits(max_items=4)
    assert decode(raw_envelope(head(4, 4, info) + b"\x00" * 4), limits=limits).body == [0] * 4
    with pytest.raises(CodecError, match="max_items"):
        decode(raw_envelope(head(4, 5, info) + b"\x00" * 5), limits=limits)
    pairs = head(5, 2, info) + text("a") + b"\x00" + text("b") + b"\x00"
    assert decode(raw_envelope(head(4, 2, info) + pairs + b"\x00"), limits=limits).body == [
        {"a": 0, "b": 0},
        0,
    ]
    with pytest.raises(CodecError, match="max_items"):
        # 3 items in the array, 2 in the map in it.
        decode(raw_envelope(head(4, 3, info) + pairs + b"\x00\x00"), limits=limits)


@pytest.mark.parametrize("info", [24, 25, 26, 27], ids=WIDTH_IDS[1:])
def test_size_limit_holds_with_wide_headers(info: int) -> None:
    body = head(2, 64, info) + b"x" * 64
    data = raw_envelope(body)
    assert decode(data, limits=CodecLimits(max_bytes=len(data))).body == b"x" * 64
    with pytest.raises(PayloadTooLargeError):
        decode(data, limits=CodecLimits(max_bytes=len(data) - 1))


@pytest.mark.parametrize(
    "body",
    [
        head(4, 2**60, 27) + b"\x00" * 16,
        head(5, 2**60, 27) + b"\x00" * 16,
        head(2, 2**60, 27) + b"\x00" * 16,
        head(3, 2**60, 27) + b"\x00" * 16,
        head(4, 2**63 + 5, 27) + b"\x00" * 16,
        head(4, 2, 27) + head(3, 2**60, 27) + b"ab",
        head(5, 1, 27) + head(3, 2**60, 27) + b"ab",  # a key
    ],
    ids=["array", "map", "bytes", "text", "array-2^63", "text-in-array", "key"],
)
def test_a_64_bit_length_claiming_2_to_the_60_is_refused_without_allocating(body: bytes) -> None:
    data = envelope_with(body, 27)
    tracemalloc.start()
    try:
        with pytest.raises(CodecError, match=r"max_items|exceeds the input"):
            decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


@pytest.mark.parametrize(
    "header",
    [head(5, 2**60, 27), head(5, 4, 25), head(5, 2, 24), head(5, 0, 26)],
    ids=["2^60", "4", "2", "0"],
)
def test_an_envelope_map_of_other_than_3_entries_is_refused_at_any_width(header: bytes) -> None:
    with pytest.raises(CodecError, match="map of 3 entries"):
        decode(header + raw_envelope(b"\x00")[1:])


def test_an_envelope_map_header_cut_inside_its_argument_is_truncated() -> None:
    for cut in (b"\xb9\x00", b"\xbb\x00\x00\x00", b"\xb8"):
        with pytest.raises(CodecError, match="truncated"):
            decode(cut)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (envelope_with(b"\xc1\x1a\x00\x00\x00\x00", 25), "tags are not allowed"),
        (envelope_with(b"\x9f\x01\xff", 25), "indefinite-length"),
        (envelope_with(b"\xf7", 25), "simple value"),
        (envelope_with(b"\xf8\x20", 25), "simple value"),
        (envelope_with(b"\x00", 25) + b"\x00", "trailing bytes"),
        (b"\xbf" + raw_envelope(b"\x00")[1:] + b"\xff", "header byte is 0xbf"),
        (b"\xd9\xd9\xf7" + envelope_with(b"\x00", 25), "header byte is 0xd9"),
        (envelope_with(head(4, 1, 27) + b"\x7f\x61a\xff", 27), "indefinite-length"),
    ],
    ids=[
        "tag",
        "indefinite-array",
        "undefined",
        "simple32",
        "trailing",
        "indefinite-map",
        "self-described",
        "indefinite-text-nested",
    ],
)
def test_wide_headers_do_not_let_tags_indefinite_lengths_or_simple_values_in(
    data: bytes, reason: str
) -> None:
    with pytest.raises(CodecError, match=reason):
        decode(data)


def wide_encoding(value: object, draw: Any) -> bytes:
    """``value`` as CBOR with every header at a width drawn from those that hold it,
    and every float at a width drawn from those that hold it exactly."""

    def header(major: int, argument: int) -> bytes:
        least = (
            0
            if argument < 24
            else 24
            if argument < 2**8
            else 25
            if argument < 2**16
            else (26 if argument < 2**32 else 27)
        )
        choices: list[int | None] = [None] if least == 0 else []
        choices += [info for info in (24, 25, 26, 27) if info >= max(least, 24)]
        return head(major, argument, draw(st.sampled_from(choices)))

    if value is None:
        return b"\xf6"
    if value is True or value is False:
        return b"\xf5" if value else b"\xf4"
    if type(value) is int:
        return header(0, value) if value >= 0 else header(1, -1 - value)
    if type(value) is float:
        forms = [b"\xfb" + struct.pack(">d", value)]
        for code, fmt in ((b"\xfa", ">f"), (b"\xf9", ">e")):
            try:
                packed = struct.pack(fmt, value)
            except OverflowError:
                continue
            if struct.unpack(fmt, packed)[0] == value or math.isnan(value):
                forms.append(code + packed)
        chosen: bytes = draw(st.sampled_from(forms))
        return chosen
    if type(value) is str:
        data = value.encode()
        return header(3, len(data)) + data
    if type(value) is bytes:
        return header(2, len(value)) + value
    if type(value) is list:
        return header(4, len(value)) + b"".join(wide_encoding(item, draw) for item in value)
    assert type(value) is dict
    return header(5, len(value)) + b"".join(
        wide_encoding(key, draw) + wide_encoding(item, draw) for key, item in value.items()
    )


@fuzz
@given(kind=kinds, body=bodies, data=st.data())
def test_fuzz_any_header_width_decodes_to_the_same_envelope(
    kind: str, body: object, data: Any
) -> None:
    envelope = {"version": SCHEMA_VERSION, "kind": kind, "body": body}
    encoded = wide_encoding(envelope, data.draw)
    decoded = decode(encoded)
    assert decoded.kind == kind
    assert_identical(decoded.body, body)
