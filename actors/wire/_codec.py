"""The engine's one wire codec: CBOR envelopes in, CBOR envelopes out.

Every payload the engine publishes or stores is an *envelope*, a CBOR map of
exactly three entries::

    {"version": 1, "kind": "activity.task", "body": <value>}

``kind`` says what the body is; ``version`` is the schema version of the
envelope and its bodies, so a reader can refuse a message written by a newer
engine instead of misreading it. The body is a value of the *data model*:
``None``, ``bool``, ``int`` (64-bit CBOR range), ``float``, ``str``, ``bytes``,
``list`` and ``dict`` with ``str`` keys -- nothing else. CBOR tags are neither
written nor accepted, so decoding never builds datetimes, decimals, regexes or
shared references out of untrusted bytes.

Decoding is meant for hostile input, and reads any well-formed CBOR encoding
of an envelope, not only the shortest one this module writes: every
definite-length header width (the map of the envelope may start ``a3`` or
``b9 00 03``), every integer width and half, single or double floats. Before
cbor2 sees a byte, the size is checked against :class:`CodecLimits` and an
iterative scan of the CBOR headers enforces the shape of the envelope, the
nesting depth, the total number of container items, the declared lengths and
the absence of tags, indefinite lengths, undefined and simple values, and
trailing bytes. Whatever goes wrong surfaces as :class:`CodecError` and
nothing else (``MemoryError`` and ``BaseException`` subclasses such as
``KeyboardInterrupt`` pass through).

:func:`actors.wire._json.decode_json` reads a JSON text (RFC 8259) into the
same data model, within the same limits, for the messages that may also
arrive as JSON.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import cbor2

from ..errors import RequestError, SizeLimitError

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_DEPTH_CEILING",
    "SCHEMA_VERSION",
    "CodecError",
    "CodecLimits",
    "Envelope",
    "PayloadTooLargeError",
    "decode",
    "encode",
]

SCHEMA_VERSION: Final = 1
"""The newest envelope schema this engine reads and the one it writes."""

MAX_DEPTH_CEILING: Final = 64
"""The largest ``CodecLimits.max_depth`` accepted.

cbor2 6.x encodes containers by recursing on the C stack, about 1 KiB per
level, and overruns a thread's stack with a segfault, not an exception (a
128 KiB thread stack, musl's default, dies at about 120 levels). Keeping the
depth well below that keeps the encoder's stack use bounded on any thread.
"""

_KIND_RE: Final = re.compile(r"[a-z0-9_.-]{1,64}")
_FIELDS: Final = frozenset({"version", "kind", "body"})

# Ints outside CBOR's major types 0 and 1 would need bignum tags, which the
# decoder rejects; refusing them on encode keeps every encoding decodable.
INT_MIN: Final = -(2**64)
INT_MAX: Final = 2**64 - 1


class CodecError(RequestError, ValueError, http_type="InvalidPayload"):
    """A payload could not be encoded, or bytes are not a valid envelope.

    The only error :func:`decode` raises for bad bytes, whatever is wrong with
    them; the underlying exception, if any, is chained as ``__cause__``.
    """


class PayloadTooLargeError(SizeLimitError, CodecError):
    """A payload is, or would encode to, more than ``CodecLimits.max_bytes``."""


@dataclass(frozen=True)
class CodecLimits:
    """Bounds that encoding and decoding enforce.

    Attributes:
        max_bytes: Largest encoded envelope, in bytes.
        max_depth: Deepest nesting of lists and dicts in a body; a scalar body
            has depth 0, ``[]`` depth 1, ``[[1]]`` depth 2. At most
            :data:`MAX_DEPTH_CEILING`.
        max_items: Most container elements in a body, counted over every list
            element and every dict entry at every level.

    Raises:
        ValueError: on construction, if a limit is not a positive int or
            ``max_depth`` exceeds :data:`MAX_DEPTH_CEILING`.
    """

    max_bytes: int = 1_048_576
    max_depth: int = 32
    max_items: int = 100_000

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_depth", "max_items"):
            value = getattr(self, name)
            if type(value) is not int or value <= 0:
                raise ValueError(f"CodecLimits.{name} must be a positive int, got {value!r}")
        if self.max_depth > MAX_DEPTH_CEILING:
            raise ValueError(
                f"CodecLimits.max_depth must be at most {MAX_DEPTH_CEILING}, got {self.max_depth}"
            )


DEFAULT_LIMITS: Final = CodecLimits()


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded payload: what it is (``kind``), the value, and its schema version.

    ``body`` is a data-model value (see the module docstring); it is not
    validated here, :func:`encode` does that.

    Raises:
        CodecError: on construction, if ``kind`` is not 1-64 characters of
            ``[a-z0-9_.-]`` or ``version`` is not an int in
            ``1..SCHEMA_VERSION``.
    """

    kind: str
    body: Any
    version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _check_version(self.version)
        _check_kind(self.kind)


def encode(kind: str, body: object, *, limits: CodecLimits = DEFAULT_LIMITS) -> bytes:
    """Encode ``body`` as an envelope of ``kind`` at :data:`SCHEMA_VERSION`.

    ``decode(encode(kind, body)) == Envelope(kind, body)`` for every accepted
    ``body`` (NaN aside, which is never equal to itself). Types are matched
    exactly, not by subclass: a ``tuple``, ``set``, ``bytearray``, ``IntEnum``
    or ``str`` subclass is rejected rather than coming back as a different
    type. NaN and infinities are fine.

    Raises:
        CodecError: if ``kind`` is invalid, or ``body`` holds a value outside
            the data model (including dict keys that are not ``str``, ints
            beyond 64 bits and strings with lone surrogates), nests deeper than
            ``limits.max_depth`` (a cyclic body always does), or has more than
            ``limits.max_items`` container elements.
        PayloadTooLargeError: if the envelope would exceed ``limits.max_bytes``.
    """
    _check_kind(kind)
    # Validate first: besides type checks, this is what keeps cbor2's
    # recursive encoder away from deep or cyclic input (see MAX_DEPTH_CEILING).
    check_body(body, limits)
    try:
        data = cbor2.dumps({"version": SCHEMA_VERSION, "kind": kind, "body": body})
    except MemoryError:
        raise
    except Exception as exc:
        raise CodecError(f"cannot encode {kind!r} body: {exc}") from exc
    if len(data) > limits.max_bytes:
        raise PayloadTooLargeError(
            f"{kind!r} envelope is {len(data)} bytes, limit is {limits.max_bytes}"
        )
    return data


def decode(
    data: bytes | bytearray | memoryview, *, limits: CodecLimits = DEFAULT_LIMITS
) -> Envelope:
    """Decode one envelope that occupies all of ``data``.

    Safe on untrusted bytes: the work done is bounded by ``limits`` before any
    Python objects are built, and no CBOR tag is ever interpreted. ``bytearray``
    and ``memoryview`` are accepted too.

    Raises:
        PayloadTooLargeError: if ``data`` is longer than ``limits.max_bytes``;
            checked before anything else.
        CodecError: for anything else wrong with ``data``: not CBOR, truncated,
            trailing bytes, not a map of exactly ``version``/``kind``/``body``,
            a version newer than :data:`SCHEMA_VERSION` or otherwise invalid,
            an invalid kind, tags, indefinite lengths, non-``str`` map keys,
            duplicate keys, invalid UTF-8, too deep or too many items.
        TypeError: if ``data`` is not bytes-like (a caller bug, not bad input).
    """
    if type(data) is not bytes:
        # Normalise other buffers once, after the size check, so the scan can
        # rely on indexing yielding ints.
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"decode() needs bytes, got {type(data).__name__}")
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        if size > limits.max_bytes:
            raise PayloadTooLargeError(f"payload is {size} bytes, limit is {limits.max_bytes}")
        data = bytes(data)
    elif len(data) > limits.max_bytes:
        raise PayloadTooLargeError(f"payload is {len(data)} bytes, limit is {limits.max_bytes}")
    try:
        _scan(data, limits)
        # The scan has vetted structure, depth and types; cbor2's own depth
        # limit (the envelope map is one more level) and strictness flags are
        # a second line of defence, not the primary one.
        obj = cbor2.loads(
            data,
            max_depth=limits.max_depth + 1,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        )
    except (CodecError, MemoryError):
        raise
    except Exception as exc:
        raise CodecError(f"malformed CBOR envelope: {exc}") from exc
    # The scan guarantees a map of three str keys; duplicates were refused.
    if obj.keys() != _FIELDS:
        raise CodecError(
            f"envelope must have exactly the fields {sorted(_FIELDS)}, got {sorted(obj)!r:.200}"
        )
    # Envelope validates version (first, so a newer writer is named as the
    # reason) and kind.
    return Envelope(obj["kind"], obj["body"], obj["version"])


def _check_kind(kind: object) -> None:
    if type(kind) is not str or _KIND_RE.fullmatch(kind) is None:
        raise CodecError(f"kind must be 1-64 characters of [a-z0-9_.-], got {kind!r:.80}")


def _check_version(version: object) -> None:
    if type(version) is not int or version < 1:
        raise CodecError(f"invalid envelope schema version {version!r:.80}")
    if version > SCHEMA_VERSION:
        raise CodecError(
            f"envelope schema version {version} is newer than supported ({SCHEMA_VERSION})"
        )


# Exact scalar types of the data model. bool is listed separately from int
# because only int needs a range check.
_PLAIN_SCALARS: Final = frozenset({type(None), bool, float})


def check_body(body: object, limits: CodecLimits) -> None:
    """Raise CodecError unless ``body`` is a data-model value within ``limits``.

    Iterative, so arbitrarily deep (or cyclic) input costs at most
    ``max_depth`` levels of an explicit stack, never Python recursion.
    """
    max_depth = limits.max_depth
    max_items = limits.max_items
    max_bytes = limits.max_bytes
    items = 0
    # A lower bound on the encoded size: string and bytes payloads alone. It
    # lets a body with a huge string fail before cbor2 copies it.
    size = 0
    # (container, its depth); a scalar body skips the loop entirely.
    stack: list[tuple[list[Any] | dict[Any, Any], int]] = []
    values: Any = (body,)
    depth = 0
    while True:
        for value in values:
            t = type(value)
            if t is str or t is bytes:
                size += len(value)
            elif t is int:
                if not INT_MIN <= value <= INT_MAX:
                    # Not the value itself: str() refuses ints over 4300 digits.
                    raise CodecError(
                        f"int of {value.bit_length()} bits is outside the 64-bit CBOR range"
                    )
            elif t is list or t is dict:
                if depth >= max_depth:
                    raise CodecError(f"body nests deeper than max_depth={max_depth}")
                stack.append((value, depth + 1))
            elif t not in _PLAIN_SCALARS:
                raise CodecError(f"cannot encode value of type {t.__qualname__}")
        if size > max_bytes:
            raise PayloadTooLargeError(f"body holds at least {size} bytes of strings and bytes")
        if not stack:
            return
        container, depth = stack.pop()
        items += len(container)
        if items > max_items:
            raise CodecError(f"body has more than max_items={max_items} container items")
        if type(container) is dict:
            for key in container:
                if type(key) is not str:
                    raise CodecError(f"dict keys must be str, got {type(key).__qualname__}")
                size += len(key)
            values = container.values()
        else:
            values = container


# Header bytes of the simple/float major type (7) that the data model uses:
# false, true, null, and half, single and double floats.
_ALLOWED_MAJOR7: Final = frozenset({0xF4, 0xF5, 0xF6, 0xF9, 0xFA, 0xFB})
# Definite-length map headers: 3 entries may be written in any of them.
_MAP_LO: Final = 0xA0
_MAP_HI: Final = 0xBB
_SLOW: Final = -1
# Definite-length array and map headers lie in this range (with additional
# info 0-27; the indefinite-length array headers in between are not).
_CONTAINER_LO: Final = 0x80
_CONTAINER_HI: Final = 0xBB


def _skip_table(*, keys: bool) -> tuple[int, ...]:
    """Map each header byte to the bytes that follow it, or _SLOW.

    Covers the items that need no further checks -- scalars and strings
    whose length is in the header byte -- so the scan handles the common
    case with one lookup. Everything else (containers, long strings, and
    all that is invalid) is _SLOW and gets the full treatment.
    """
    table = [_SLOW] * 256
    for head in range(256):
        major, info = head >> 5, head & 0x1F
        if major == 3 and info < 24:
            table[head] = info
        elif keys:
            continue  # only text strings may be map keys
        elif major == 2 and info < 24:
            table[head] = info
        elif (major <= 1 and info < 28) or head in _ALLOWED_MAJOR7:
            table[head] = 0 if info < 24 else 1 << (info - 24)
    return tuple(table)


_VALUE_SKIP: Final = _skip_table(keys=False)
_KEY_SKIP: Final = _skip_table(keys=True)


def _scan(data: bytes, limits: CodecLimits) -> None:
    """Check the CBOR header structure of an envelope without building values.

    Walks the item headers iteratively, skipping string payloads, so cost is
    linear in the number of items and independent of nesting. Every argument
    width is read, so a declared length is checked whatever its width.
    Guarantees, if it returns, that ``data`` is exactly one definite-length
    map of three entries whose every nested map key is a text string; that no container in it nests
    deeper than ``max_depth`` below the envelope or declares more items than
    the input could hold; that nested containers hold at most ``max_items``
    items in total; and that it contains no tags, indefinite lengths, or simple
    values other than false/true/null and floats. UTF-8 validity, duplicate
    keys and the field names are left to the decoder and :func:`decode`.
    """
    end = len(data)
    if end == 0:
        raise CodecError("empty payload")
    head = data[0]
    if not _MAP_LO <= head <= _MAP_HI:
        raise CodecError(f"envelope must be a CBOR map of 3 entries, header byte is 0x{head:02x}")
    # Any width of the argument is valid CBOR: other encoders write the
    # envelope's map as b8 03 or b9 00 03 as well as a3.
    entries = _read_arg(data, head, 0)
    if entries != 3:
        raise CodecError(
            f"envelope must be a CBOR map of 3 entries, header byte is 0x{head:02x} "
            f"(a map of {entries})"
        )
    max_depth = limits.max_depth
    max_items = limits.max_items
    value_skip = _VALUE_SKIP
    key_skip = _KEY_SKIP
    pos = 1 + _ARG_WIDTH[head & 0x1F]
    items = 0
    # Items still to read in the innermost open container, and whether it is a
    # map (then the next item is a key whenever `remaining` is even).
    remaining = 6
    in_map = True
    # The enclosing containers' (remaining, in_map); its length is the depth.
    stack: list[tuple[int, bool]] = []
    try:
        while True:
            if remaining == 0:
                if not stack:
                    break
                remaining, in_map = stack.pop()
                continue
            is_key = in_map and not remaining & 1
            remaining -= 1
            # Past the end this raises IndexError: truncated input.
            head = data[pos]
            skip = key_skip[head] if is_key else value_skip[head]
            if skip >= 0:
                # A string may claim more bytes than are left; the IndexError
                # above or the final position check catches that.
                pos += 1 + skip
                continue
            if is_key or not _CONTAINER_LO <= head <= _CONTAINER_HI or head & 0x1F > 27:
                pos = _scan_other_item(data, pos, is_key)
                continue
            length = _read_arg(data, head, pos)
            pos += 1 + _ARG_WIDTH[head & 0x1F]
            if len(stack) >= max_depth:
                raise CodecError(f"body nests deeper than max_depth={max_depth}")
            items += length
            if items > max_items:
                raise CodecError(f"body has more than max_items={max_items} container items")
            if head >> 5 == 5:
                length *= 2
            # Every item takes at least one byte, so this refuses absurd
            # declared lengths before anything is allocated for them.
            if length > end - pos:
                raise CodecError(f"truncated CBOR: container of {length} items exceeds the input")
            if length:
                stack.append((remaining, in_map))
                remaining = length
                in_map = head >> 5 == 5
    except IndexError:
        raise CodecError("truncated CBOR: input ends inside the envelope") from None
    if pos > end:
        raise CodecError("truncated CBOR: a string runs past the end of the input")
    if pos < end:
        raise CodecError(f"{end - pos} trailing bytes after the envelope")


# Bytes of argument after the header byte, by additional info; only the
# values 0-27 are ever looked up.
_ARG_WIDTH: Final = (0,) * 24 + (1, 2, 4, 8)


def _read_arg(data: bytes, head: int, pos: int) -> int:
    """The argument of the item whose header byte ``head`` is at ``pos``."""
    info = head & 0x1F
    if info < 24:
        return info
    width = _ARG_WIDTH[info]
    if len(data) - pos - 1 < width:
        raise CodecError("truncated CBOR: input ends inside an item header")
    return int.from_bytes(data[pos + 1 : pos + 1 + width], "big")


def _scan_other_item(data: bytes, pos: int, is_key: bool) -> int:
    """Vet the item at ``pos`` that is neither in the skip tables nor a container.

    That leaves strings with their length after the header byte, for which
    the position after the string is returned; everything else is refused.
    """
    head = data[pos]
    major = head >> 5
    info = head & 0x1F
    if is_key and major != 3:
        raise CodecError(f"map keys must be text strings, found major type {major}")
    if major == 6:
        raise CodecError("CBOR tags are not allowed")
    if major == 7:
        raise CodecError(f"unsupported CBOR simple value, header 0x{head:02x}")
    if info == 31:
        raise CodecError("indefinite-length CBOR items are not allowed")
    if info > 27:
        raise CodecError(f"malformed CBOR: reserved additional info {info}")
    # Only strings with a 1-8 byte length argument are left: ints and short
    # strings are in the skip tables, containers handled by the caller.
    length = _read_arg(data, head, pos)
    pos += 1 + _ARG_WIDTH[info]
    if length > len(data) - pos:
        raise CodecError(f"truncated CBOR: string of {length} bytes exceeds the input")
    return pos + length
