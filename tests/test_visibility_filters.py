"""The instance index's filters against a plain reading of every summary.

Version, id prefix and newest-first order (the web UI's filters) combined
with type, status, time range and paging (pages near the end are counted
from the end), on the memory transport's KV:
each answer must be what filtering and sorting the whole list gives, and
must follow states that change status and instances that are deleted.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import trio

from actors.core import InstanceState, InstanceStatus
from actors.runtime._visibility import InstanceIndex, InstanceSummary
from actors.wire import STATES_BUCKET, Layout, encode_state
from transport import open_transport

TYPES = ("order", "refund")
STATUSES = (InstanceStatus.RUNNING, InstanceStatus.COMPLETED, InstanceStatus.FAILED)


def _state(instance_id: str, rng: random.Random) -> InstanceState:
    return InstanceState(
        id=instance_id,
        type=rng.choice(TYPES),
        version=rng.choice((1, 2)),
        input=None,
        status=rng.choice(STATUSES),
        created_at=1000.0 + rng.randrange(50),  # ties on purpose: ordered by id then
        updated_at=2000.0,
    )


def _expected(
    everything: list[InstanceSummary], query: dict[str, Any]
) -> tuple[list[str], int, dict[InstanceStatus, int]]:
    def keep(summary: InstanceSummary, with_status: bool) -> bool:
        return (
            query.get("workflow_type") in (None, summary.type)
            and query.get("version") in (None, summary.version)
            and (not with_status or query.get("status") in (None, summary.status))
            and summary.id.startswith(query.get("id_prefix") or "")
            and (query.get("started_after") is None or summary.created_at >= query["started_after"])
            and (
                query.get("started_before") is None or summary.created_at < query["started_before"]
            )
        )

    found = sorted(
        (s for s in everything if keep(s, True)),
        key=lambda s: (s.created_at, s.id),
        reverse=query.get("newest_first", False),
    )
    counts: dict[InstanceStatus, int] = {}
    for summary in everything:
        if keep(summary, False):
            counts[summary.status] = counts.get(summary.status, 0) + 1
    page = found[query.get("offset", 0) : query.get("offset", 0) + query.get("limit", 1000)]
    return [s.id for s in page], len(found), counts


async def test_every_filter_combination_matches_a_plain_filter() -> None:
    rng = random.Random(17)
    async with open_transport("memory://") as transport, trio.open_nursery() as nursery:
        await Layout().provision(transport)
        states = await transport.kv(STATES_BUCKET)
        ids = [f"{rng.choice('abc')}{n:03d}" for n in range(300)]
        for instance_id in ids:
            await states.put(instance_id, encode_state(_state(instance_id, rng)))
        index = InstanceIndex(states)
        await nursery.start(index.run)

        async def check() -> None:
            await index.sync()
            everything = [index.get(i) for i in sorted(set(ids))]
            present = [s for s in everything if s is not None]
            filters = itertools.product(
                (None, "order"),
                (None, 2),
                (None, InstanceStatus.RUNNING),
                (None, "b", "b01", "zz"),
                ((None, None), (1010.0, 1030.0)),
                (False, True),
                ((3, 7), (0, 100), (90, 20), (295, 10), (400, 5)),
            )
            for workflow_type, version, status, prefix, (after, before), newest, page_at in filters:
                query: dict[str, Any] = {
                    "workflow_type": workflow_type,
                    "version": version,
                    "status": status,
                    "id_prefix": prefix,
                    "started_after": after,
                    "started_before": before,
                    "newest_first": newest,
                    "offset": page_at[0],
                    "limit": page_at[1],
                }
                page, total = index.query(**query)
                counts = index.counts(
                    workflow_type=workflow_type,
                    version=version,
                    id_prefix=prefix,
                    started_after=after,
                    started_before=before,
                )
                want_page, want_total, want_counts = _expected(present, query)
                assert ([s.id for s in page], total) == (want_page, want_total), query
                assert counts == want_counts, query

        await check()
        # Changes: statuses move, instances go, new ones come (the prefix
        # lookup's list of ids is made again).
        for instance_id in ids[:40]:
            await states.put(instance_id, encode_state(_state(instance_id, rng)))
        for instance_id in ids[40:60]:
            await states.delete(instance_id)
        ids = ids[:40] + ids[60:]
        await check()
        for n in range(20):
            ids.append(f"b9{n:02d}")
            await states.put(ids[-1], encode_state(_state(ids[-1], rng)))
        await check()
        nursery.cancel_scope.cancel()
