"""Watching a key-value bucket.

A watch has no "end of the current values" marker, so tests write a marker key
after the writes they expect and read up to it: anything unexpected shows up
before the marker.
"""

from __future__ import annotations

import pytest
import trio

from .. import KeyValue, KVChange, KVOp
from ._fixtures import MakeKV, SuiteBase


async def receive_until(watch: trio.MemoryReceiveChannel[KVChange], key: str) -> list[KVChange]:
    """The changes ``watch`` yields up to and including the first one to ``key``."""
    changes: list[KVChange] = []
    with trio.fail_after(10):
        async for change in watch:
            changes.append(change)
            if change.key == key:
                return changes
    raise AssertionError(f"the watch ended before {key!r}: {changes}")


async def before_a_marker(
    kv: KeyValue, watch: trio.MemoryReceiveChannel[KVChange], key: str = "marker"
) -> list[KVChange]:
    """Write the marker ``key``; the changes ``watch`` yields before the marker's own.

    The marker's change must come as written (empty, at its revision).
    """
    marker = await kv.put(key, b"")
    changes = await receive_until(watch, key)
    assert changes[-1] == KVChange(key, b"", marker)
    return changes[:-1]


class WatchTests(SuiteBase):
    """Watching a bucket: current values, then every change, in revision order, once."""

    async def test_watch_yields_the_current_values_then_the_updates_in_order(
        self, make_kv: MakeKV
    ) -> None:
        kv = await make_kv(history=5)
        await kv.put("a", b"1")
        b1 = await kv.put("b", b"1")
        a2 = await kv.put("a", b"2")
        async with kv.watch() as watch:
            with trio.fail_after(10):
                current = [await watch.receive(), await watch.receive()]
            c1 = await kv.put("c", b"1")
            await kv.delete("b")
            marker = await kv.put("marker", b"")
            updates = await receive_until(watch, "marker")
        # Only the latest value of each key, in revision order.
        assert current == [KVChange("b", b"1", b1), KVChange("a", b"2", a2)]
        assert updates[0] == KVChange("c", b"1", c1)
        assert (updates[1].key, updates[1].op, updates[1].value) == ("b", KVOp.DELETE, b"")
        assert c1 < updates[1].revision < marker
        assert updates[2] == KVChange("marker", b"", marker)

    async def test_watch_of_an_empty_bucket_yields_the_updates(self, kv: KeyValue) -> None:
        async with kv.watch() as watch:
            first = await kv.put("k", b"v")
            changes = await receive_until(watch, "k")
        assert changes == [KVChange("k", b"v", first)]

    async def test_watch_from_now_skips_keys_deleted_before_it_started(self, kv: KeyValue) -> None:
        await kv.put("gone", b"")
        await kv.delete("gone")
        kept = await kv.put("kept", b"")
        async with kv.watch() as watch:
            assert await before_a_marker(kv, watch) == [KVChange("kept", b"", kept)]

    @pytest.mark.parametrize(
        ("history", "since", "held"),
        [(10, "a1", ["a2", "a3", "b1"]), (1, "a1", ["a3", "b1"]), (10, "b1", [])],
        ids=["all-held", "history-of-one", "since-the-latest"],
    )
    async def test_watch_since_a_revision_yields_the_later_changes_the_history_holds(
        self, make_kv: MakeKV, history: int, since: str, held: list[str]
    ) -> None:
        kv = await make_kv(history=history)
        written = {}
        for key, value in (("a", b"1"), ("a", b"2"), ("a", b"3"), ("b", b"1")):
            written[key + value.decode()] = KVChange(key, value, await kv.put(key, value))
        async with kv.watch(since=written[since].revision) as watch:
            assert await before_a_marker(kv, watch) == [written[name] for name in held]

    async def test_watch_reports_deletes_as_delete_changes(self, kv: KeyValue) -> None:
        async with kv.watch() as watch:
            put = await kv.put("k", b"v")
            await kv.delete("k")
            marker = await kv.put("marker", b"")
            changes = await receive_until(watch, "marker")
        assert changes[0] == KVChange("k", b"v", put)
        assert changes[1].key == "k"
        assert changes[1].op is KVOp.DELETE
        assert changes[1].value == b""
        assert put < changes[1].revision < marker
        assert changes[2:] == [KVChange("marker", b"", marker)]

    async def test_watch_sees_many_rapid_updates_exactly_once_in_revision_order(
        self, kv: KeyValue
    ) -> None:
        written: list[KVChange] = []

        async def write() -> None:
            for i in range(300):
                key = f"k.{i % 3}"
                value = b"%d" % i
                written.append(KVChange(key, value, await kv.put(key, value)))

        async with kv.watch() as watch:
            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(write)
                    seen = [await watch.receive() for _ in range(300)]
        assert seen == written
        assert [c.revision for c in seen] == sorted({c.revision for c in seen})

    async def test_watch_yields_only_keys_matching_the_pattern(self, kv: KeyValue) -> None:
        before = await kv.put("a.old", b"")
        await kv.put("b.old", b"")
        async with kv.watch("a.>") as watch:
            await kv.put("b.1", b"")
            a1 = await kv.put("a.1", b"")
            await kv.put("b.2", b"")
            deep = await kv.put("a.x.y", b"")
            changes = await before_a_marker(kv, watch, "a.marker")
        assert changes == [
            KVChange("a.old", b"", before),
            KVChange("a.1", b"", a1),
            KVChange("a.x.y", b"", deep),
        ]

    async def test_watch_with_a_single_token_wildcard(self, kv: KeyValue) -> None:
        async with kv.watch("*.hit") as watch:
            await kv.put("a.miss", b"")
            await kv.put("a.b.hit", b"")
            hit = await kv.put("a.hit", b"")
            changes = await receive_until(watch, "a.hit")
        assert changes == [KVChange("a.hit", b"", hit)]

    async def test_two_watches_on_one_bucket_both_see_every_change(self, kv: KeyValue) -> None:
        async with kv.watch() as one, kv.watch() as two:
            first = await kv.put("k", b"1")
            marker = await kv.put("marker", b"")
            expected = [KVChange("k", b"1", first), KVChange("marker", b"", marker)]
            assert await receive_until(one, "marker") == expected
            assert await receive_until(two, "marker") == expected

    async def test_latest_revision_is_the_newest_write_and_a_watch_since_it_sees_what_follows(
        self, kv: KeyValue
    ) -> None:
        assert await kv.latest_revision() == 0
        first = await kv.put("a", b"1")
        assert await kv.latest_revision() == first
        await kv.delete("a")
        deleted = await kv.latest_revision()
        assert deleted > first, "a delete is a write"
        async with kv.watch(since=deleted) as watch:
            marker = await kv.put("marker", b"")
            changes = await receive_until(watch, "marker")
        assert changes == [KVChange("marker", b"", marker)]
        assert await kv.latest_revision() == marker

    async def test_a_watch_since_0_reaches_the_latest_revision_even_a_delete(
        self, kv: KeyValue
    ) -> None:
        # How a reader learns it has caught up with a bucket without writing to it.
        kept = await kv.put("kept", b"1")
        await kv.put("gone", b"1")
        await kv.delete("gone")
        latest = await kv.latest_revision()
        async with kv.watch(since=0) as watch:
            with trio.fail_after(10):
                changes = [await watch.receive(), await watch.receive()]
        assert changes[0] == KVChange("kept", b"1", kept)
        assert (changes[1].key, changes[1].op, changes[1].revision) == ("gone", KVOp.DELETE, latest)
