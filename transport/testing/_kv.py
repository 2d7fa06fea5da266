"""Key-value buckets: reads, compare-and-set writes, deletes, keys, limits."""

from __future__ import annotations

import pytest
import trio

from .. import (
    ConflictError,
    InvalidSpecError,
    KeyValue,
    KVEntry,
    NotFoundError,
    TooLargeError,
    Transport,
)
from ._fixtures import Clock, MakeKV, Names, SuiteBase

BAD_KEYS = ["", "a b", ".a", "a.", "a..b", "a*", "a.>", "ключ"]


class KVTests(SuiteBase):
    """Key-value buckets: reads, compare-and-set writes, deletes, keys, limits."""

    async def test_kv_get_of_a_missing_key_returns_none(self, kv: KeyValue) -> None:
        assert await kv.get("missing") is None

    async def test_kv_create_returns_a_revision_and_get_returns_the_entry(
        self, kv: KeyValue
    ) -> None:
        revision = await kv.create("k", b"v")
        assert await kv.get("k") == KVEntry("k", b"v", revision)

    async def test_kv_create_of_an_existing_key_raises_conflict(self, kv: KeyValue) -> None:
        revision = await kv.create("k", b"first")
        with pytest.raises(ConflictError):
            await kv.create("k", b"second")
        assert await kv.get("k") == KVEntry("k", b"first", revision)

    async def test_kv_update_at_the_current_revision_returns_a_new_revision(
        self, kv: KeyValue
    ) -> None:
        first = await kv.create("k", b"1")
        second = await kv.update("k", b"2", first)
        assert second > first
        assert await kv.get("k") == KVEntry("k", b"2", second)

    async def test_kv_update_at_a_stale_revision_raises_conflict(self, kv: KeyValue) -> None:
        first = await kv.create("k", b"1")
        second = await kv.update("k", b"2", first)
        with pytest.raises(ConflictError):
            await kv.update("k", b"3", first)
        assert await kv.get("k") == KVEntry("k", b"2", second)

    async def test_kv_update_of_a_missing_key_raises_conflict(self, kv: KeyValue) -> None:
        other = await kv.put("other", b"")
        with pytest.raises(ConflictError):
            await kv.update("missing", b"v", other)
        assert await kv.get("missing") is None

    async def test_kv_update_of_a_missing_key_at_revision_0_raises_conflict(
        self, kv: KeyValue
    ) -> None:
        # Writing an absent key is what create() is for; update() needs a revision.
        with pytest.raises(ConflictError):
            await kv.update("missing", b"v", 0)
        assert await kv.get("missing") is None

    async def test_kv_put_writes_unconditionally(self, kv: KeyValue) -> None:
        first = await kv.put("k", b"1")
        second = await kv.put("k", b"2")
        assert second > first
        assert await kv.get("k") == KVEntry("k", b"2", second)

    async def test_kv_values_are_kept_byte_for_byte(self, kv: KeyValue) -> None:
        for key, value in (("empty", b""), ("binary", bytes(range(256))), ("text", "λ".encode())):
            revision = await kv.put(key, value)
            assert await kv.get(key) == KVEntry(key, value, revision)

    async def test_kv_delete_then_get_returns_none(self, kv: KeyValue) -> None:
        await kv.put("k", b"v")
        await kv.delete("k")
        assert await kv.get("k") is None

    async def test_kv_delete_of_a_missing_key_does_nothing(self, kv: KeyValue) -> None:
        await kv.delete("missing")
        assert await kv.get("missing") is None

    async def test_kv_create_after_delete_succeeds(self, kv: KeyValue) -> None:
        first = await kv.create("k", b"old")
        await kv.delete("k")
        again = await kv.create("k", b"new")
        assert again > first
        assert await kv.get("k") == KVEntry("k", b"new", again)

    async def test_kv_delete_at_a_stale_revision_raises_conflict(self, kv: KeyValue) -> None:
        first = await kv.put("k", b"1")
        second = await kv.put("k", b"2")
        with pytest.raises(ConflictError):
            await kv.delete("k", revision=first)
        assert await kv.get("k") == KVEntry("k", b"2", second)
        await kv.delete("k", revision=second)
        assert await kv.get("k") is None

    async def test_kv_update_after_delete_at_the_old_revision_raises_conflict(
        self, kv: KeyValue
    ) -> None:
        revision = await kv.put("k", b"1")
        await kv.delete("k")
        with pytest.raises(ConflictError):
            await kv.update("k", b"2", revision)

    async def test_kv_keys_match_the_pattern(self, kv: KeyValue) -> None:
        assert await kv.keys() == []
        for key in ("a.1", "a.2", "a.b.c", "b.1", "gone"):
            await kv.put(key, b"")
        await kv.delete("gone")
        assert sorted(await kv.keys()) == ["a.1", "a.2", "a.b.c", "b.1"]
        assert sorted(await kv.keys(">")) == ["a.1", "a.2", "a.b.c", "b.1"]
        assert sorted(await kv.keys("a.*")) == ["a.1", "a.2"]
        assert sorted(await kv.keys("a.>")) == ["a.1", "a.2", "a.b.c"]
        assert sorted(await kv.keys("*.1")) == ["a.1", "b.1"]
        assert await kv.keys("c.>") == []

    async def test_kv_value_over_max_value_size_raises_too_large(self, make_kv: MakeKV) -> None:
        kv = await make_kv(max_value_size=64)
        with pytest.raises(TooLargeError):
            await kv.put("k", b"x" * 65)
        with pytest.raises(TooLargeError):
            await kv.create("k", b"x" * 65)
        revision = await kv.create("k", b"x" * 64)
        with pytest.raises(TooLargeError):
            await kv.update("k", b"x" * 65, revision)
        assert await kv.get("k") == KVEntry("k", b"x" * 64, revision)

    @pytest.mark.parametrize("key", BAD_KEYS)
    async def test_kv_invalid_key_raises_invalid_spec(self, kv: KeyValue, key: str) -> None:
        with pytest.raises(InvalidSpecError):
            await kv.get(key)
        with pytest.raises(InvalidSpecError):
            await kv.put(key, b"")
        with pytest.raises(InvalidSpecError):
            await kv.create(key, b"")
        with pytest.raises(InvalidSpecError):
            await kv.update(key, b"", 1)
        with pytest.raises(InvalidSpecError):
            await kv.delete(key)

    @pytest.mark.parametrize("pattern", ["", "a..b", "a b", "a.>.b", "a*"])
    async def test_kv_invalid_pattern_raises_invalid_spec(self, kv: KeyValue, pattern: str) -> None:
        with pytest.raises(InvalidSpecError):
            await kv.keys(pattern)
        with pytest.raises(InvalidSpecError):
            async with kv.watch(pattern):
                pytest.fail(f"watched {pattern!r}")

    async def test_kv_of_a_missing_bucket_raises_not_found(
        self, transport: Transport, names: Names
    ) -> None:
        with pytest.raises(NotFoundError):
            await transport.kv(names.bucket())

    async def test_kv_handle_reaches_the_bucket_ensure_kv_made(
        self, transport: Transport, make_kv: MakeKV, names: Names
    ) -> None:
        made = await make_kv()
        revision = await made.put("k", b"v")
        found = await transport.kv(names.bucket())
        assert (made.bucket, found.bucket) == (names.bucket(), names.bucket())
        assert await found.get("k") == KVEntry("k", b"v", revision)

    async def test_ensure_kv_is_idempotent_and_keeps_the_values(self, make_kv: MakeKV) -> None:
        kv = await make_kv()
        revision = await kv.put("k", b"v")
        again = await make_kv()
        assert await again.get("k") == KVEntry("k", b"v", revision)

    async def test_buckets_are_independent(self, make_kv: MakeKV) -> None:
        one = await make_kv("1")
        two = await make_kv("2")
        await one.put("k", b"one")
        assert await two.get("k") is None
        assert await two.keys() == []

    async def test_kv_revisions_strictly_increase(self, make_kv: MakeKV) -> None:
        kv = await make_kv(history=5)
        revisions = [
            await kv.put("a", b"1"),
            await kv.create("b", b"1"),
            await kv.put("a", b"2"),
        ]
        revisions.append(await kv.update("b", b"2", revisions[1]))
        await kv.delete("a")
        revisions.append(await kv.put("c", b"1"))
        revisions.append(await kv.create("a", b"3"))
        assert revisions == sorted(set(revisions))

    async def test_kv_ttl_expires_values(self, clock: Clock, make_kv: MakeKV) -> None:
        kv = await make_kv(ttl=1.0)
        await kv.put("k", b"short-lived")
        assert await kv.get("k") is not None
        # The broker may expire on a timer, so allow a few ttls.
        await trio.sleep(3.0)
        assert await kv.get("k") is None
        assert await kv.keys() == []
