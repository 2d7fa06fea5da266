"""The JetStream configuration of a stream or bucket, from its spec.

Kept apart from the transport so that what the engine asks of the server can
be read in one place: limits, duplicate window, direct gets, message
schedules and the subject transform that files messages in partitions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .._specs import Discard, KVSpec, Partitioning, StreamSpec
from ._api import KV_HEADROOM, StreamExistsError, dur

__all__ = [
    "Api",
    "direct_reads",
    "ensure_stream_config",
    "kv_config",
    "partitioning_of",
    "stream_config",
]

#: The transport's JetStream API call: ``await api("STREAM.INFO.X", body)``.
Api = Callable[..., Awaitable[dict[str, Any]]]


def stream_config(spec: StreamSpec, *, schedules: bool) -> dict[str, Any]:
    """The server configuration of ``spec`` (``schedules``: the server has message schedules)."""
    subjects = list(spec.subjects)
    if spec.allow_delayed:
        subjects.append(spec.schedule_subjects)
    config: dict[str, Any] = {
        "name": spec.name,
        "subjects": subjects,
        "retention": spec.retention.value,
        "storage": spec.storage.value,
        "num_replicas": spec.replicas,
        # JetStream refuses a duplicate window longer than the max age.
        "duplicate_window": dur(min(spec.duplicate_window, spec.max_age or math.inf)),
        "max_msg_size": spec.max_msg_size or -1,
        "max_age": dur(spec.max_age),
        "max_bytes": spec.max_bytes or -1,
        "max_msgs": spec.max_msgs or -1,
        "discard": spec.discard.value,
        # Lets `read` take a page in one round trip (a batched direct get).
        "allow_direct": True,
    }
    if spec.allow_delayed and schedules:
        config["allow_msg_schedules"] = True
    if spec.partitioning is not None:
        config["subject_transform"] = _partition_transform(spec.partitioning)
    return config


def kv_config(spec: KVSpec) -> dict[str, Any]:
    """The server configuration of the stream behind bucket ``spec``."""
    return {
        "name": f"KV_{spec.bucket}",
        "subjects": [f"$KV.{spec.bucket}.>"],
        "retention": "limits",
        "storage": spec.storage.value,
        "num_replicas": spec.replicas,
        "max_msgs_per_subject": spec.history,
        # The server counts headers too; the value limit is checked here.
        "max_msg_size": spec.max_value_size + KV_HEADROOM if spec.max_value_size else -1,
        "max_bytes": spec.max_bytes or -1,
        "max_age": dur(spec.ttl),
        "discard": Discard.NEW.value,
        "allow_rollup_hdrs": True,
        "deny_delete": True,
        "allow_direct": True,
        "duplicate_window": dur(min(spec.ttl or 120.0, 120.0)),
    }


def direct_reads(config: Mapping[str, Any]) -> bool:
    """Whether a bucket's ``get`` may be a direct get: only on a single replica.

    Every replica answers direct gets, and a follower may not have applied
    the latest acknowledged write yet: on a healthy 3-node cluster about one
    read in 40 right after a write returned the revision before it. A
    compare-and-set user (the orchestrator deciding from a fresh read) must
    see what was written, so a replicated bucket is read from its leader.
    """
    return bool(config.get("allow_direct")) and int(config.get("num_replicas") or 1) <= 1


def _partition_transform(parts: Partitioning) -> dict[str, str]:
    """The server's subject transform that files messages as ``parts`` says (2.10+)."""
    return {
        "src": f"{parts.prefix}.*.>",
        "dest": f"{parts.prefix}.{{{{partition({parts.count},1)}}}}.{{{{wildcard(1)}}}}.>",
    }


_PARTITION_DEST = re.compile(r"(.+)\.\{\{partition\((\d+),1\)\}\}\.\{\{wildcard\(1\)\}\}\.>")


def partitioning_of(transform: object) -> Partitioning | None:
    """The partitioning a stream's subject transform makes, if it is one of ours."""
    if not isinstance(transform, dict):
        return None
    found = _PARTITION_DEST.fullmatch(str(transform.get("dest", "")))
    if found is None or transform.get("src") != f"{found[1]}.*.>":
        return None
    return Partitioning(prefix=found[1], count=int(found[2]))


async def ensure_stream_config(api: Api, config: dict[str, Any]) -> dict[str, Any]:
    """Create the stream, or bring it to ``config``; its configuration after that.

    An existing stream's replicas are never lowered: a process that
    provisions with fewer (a client or a CLI command left at the default
    of one) would otherwise take every stream of a cluster down to a
    single copy, without a word.
    """
    name = config["name"]
    try:
        resp = await api(f"STREAM.CREATE.{name}", config)
    except StreamExistsError:
        # It exists with another configuration: bring it to this one.
        current = (await api(f"STREAM.INFO.{name}"))["config"]
        replicas = max(config["num_replicas"], int(current.get("num_replicas") or 1))
        config = {**config, "num_replicas": replicas}
        if partitioning_of(current.get("subject_transform")) is not None:
            # The stored messages are filed by the partitions it has.
            config["subject_transform"] = current["subject_transform"]
        resp = await api(f"STREAM.UPDATE.{name}", config)
    found: dict[str, Any] = resp.get("config") or config
    return found
