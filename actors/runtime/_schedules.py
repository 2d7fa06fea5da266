"""What a client does to schedules: create, list, describe, pause, trigger, backfill, delete.

Every change is a compare-and-set on the schedule's key in
``WORKFLOW_SCHEDULES``; the orchestrator that owns the schedule sees it
through its watch and acts on it (see ``_scheduler.py``). A trigger or a
backfill is stored as a request in the schedule, so that it is carried out
once, by whichever orchestrator owns the schedule, even if the client goes
away at once.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from transport import ConflictError, KeyValue, Transport

from ..core import (
    FireKind,
    InstanceStatus,
    LimitExceededError,
    Limits,
    Run,
    Schedule,
    ScheduleState,
    check_name,
    fire_instance_id,
    request_backfill,
    request_trigger,
    schedule_from_data,
    schedule_to_data,
)
from ..errors import RequestError
from ..wire import (
    MessageError,
    StartMessage,
    decode_schedule,
    decode_status,
    encode_schedule,
    encode_start,
)
from ._instances import UnknownWorkflowTypeError, _unknown
from ._registry import DefinitionStore

__all__ = [
    "ScheduleDescription",
    "ScheduleExistsError",
    "ScheduleNotFoundError",
    "ScheduleRun",
    "Schedules",
    "schedule_summary",
]

#: Compare-and-set attempts on one schedule before giving up (each one lost
#: means another writer changed it in between: the scheduler, mostly).
_WRITES: Final = 20


class ScheduleNotFoundError(RequestError, exit_code=3, http_status=404, http_type="NoSuchSchedule"):
    """No schedule has that id."""


class ScheduleExistsError(RequestError, http_status=409, http_type="ScheduleExists"):
    """A schedule with that id exists already (delete it first, or use another id)."""


@dataclass(frozen=True, slots=True)
class ScheduleRun:
    """A run a schedule started, with its instance's status now (``None``: not stored yet)."""

    run: Run
    status: InstanceStatus | None


@dataclass(frozen=True, slots=True)
class ScheduleDescription:
    """A schedule, where it stands, its next fires and its recent runs (oldest first)."""

    state: ScheduleState
    #: The next scheduled fires (nominal times, jitter not added), at most as
    #: many as asked for; none while paused.
    next_fires: tuple[float, ...]
    runs: tuple[ScheduleRun, ...]

    def to_data(self) -> dict[str, Any]:
        """Plain data (JSON-ready): :func:`schedule_summary`'s, with the fires and runs."""
        return {
            **schedule_summary(self.state),
            "next_fires": list(self.next_fires),
            "buffered": [{"at": f.at, "kind": f.kind.value} for f in self.state.buffered],
            "pending_triggers": list(self.state.triggers),
            "pending_backfills": [
                {"start": b.start, "end": b.end, "done_until": b.cursor}
                for b in self.state.backfills
            ],
            "runs": [
                {
                    "instance": r.run.instance_id,
                    "fire": r.run.fire.at,
                    "kind": r.run.fire.kind.value,
                    "started_at": r.run.started_at,
                    "status": None if r.status is None else r.status.value,
                }
                for r in self.runs
            ],
        }


def schedule_summary(state: ScheduleState) -> dict[str, Any]:
    """A schedule as plain data: its definition, whether paused, its counts and next fire."""
    return {
        **schedule_to_data(state.schedule),
        "paused": state.paused,
        "note": state.note,
        "created_at": state.created_at,
        "next_fire": None if state.paused else state.next_fire(),
        "started": state.started,
        "skipped": state.skipped,
        "missed": state.missed,
    }


class Schedules:
    """A client's schedule operations (``client.schedules``).

    Raises :class:`ScheduleNotFoundError` for an id no schedule has,
    ``InvalidScheduleError`` for a schedule or request that is not valid,
    and the transport's errors.
    """

    def __init__(
        self,
        transport: Transport,
        schedules: KeyValue,
        states: KeyValue,
        definitions: DefinitionStore,
        limits: Limits,
    ) -> None:
        self._transport = transport
        self._kv = schedules
        self._states = states
        self._definitions = definitions
        self._limits = limits

    async def create(self, schedule: Schedule | Mapping[str, Any]) -> ScheduleState:
        """Store a new schedule; it fires from now on (no fire before now is run).

        ``schedule`` is a :class:`~actors.core.Schedule` or plain data (see
        ``actors.core.schedule_from_data``). Raises
        :class:`ScheduleExistsError` if the id is taken,
        ``UnknownWorkflowTypeError`` if the workflow type (version) is not
        registered, ``LimitExceededError`` for an input over
        ``limits.max_input``.
        """
        if not isinstance(schedule, Schedule):
            schedule = schedule_from_data(schedule)
        if await self._definitions.get(schedule.workflow_type, schedule.version) is None:
            raise UnknownWorkflowTypeError(_unknown(schedule.workflow_type, schedule.version))
        start = encode_start(StartMessage(schedule.id, schedule.input, schedule.version))
        if len(start) > self._limits.max_input:
            raise LimitExceededError(
                "the schedule's start message", len(start), self._limits.max_input, "InputTooLarge"
            )
        now = self._transport.now()
        state = ScheduleState(schedule=schedule, cursor=now, created_at=now)
        try:
            await self._kv.create(schedule.id, encode_schedule(state))
        except ConflictError:
            raise ScheduleExistsError(f"schedule {schedule.id!r} exists already") from None
        return state

    async def get(self, schedule_id: str) -> ScheduleState:
        """The schedule as stored."""
        entry = await self._kv.get(check_name("schedule id", schedule_id))
        if entry is None:
            raise ScheduleNotFoundError(f"no schedule {schedule_id!r}")
        return decode_schedule(entry.value)

    async def list(self) -> builtins.list[ScheduleState]:
        """Every schedule, by id (one that cannot be read is left out)."""
        found: builtins.list[ScheduleState] = []
        for key in sorted(await self._kv.keys()):
            entry = await self._kv.get(key)
            if entry is None:
                continue  # deleted meanwhile
            try:
                found.append(decode_schedule(entry.value))
            except MessageError:
                continue
        return found

    async def describe(self, schedule_id: str, *, upcoming: int = 5) -> ScheduleDescription:
        """The schedule, its next ``upcoming`` fires and its recent runs with their status."""
        state = await self.get(schedule_id)
        fires: builtins.list[float] = []
        if not state.paused:
            fires = state.schedule.spec.upcoming(state.cursor, upcoming)
        runs = []
        for run in state.runs:
            entry = await self._states.get(run.instance_id)
            status = None
            if entry is not None:
                try:
                    status = decode_status(entry.value)
                except MessageError:
                    status = None
            runs.append(ScheduleRun(run, status))
        return ScheduleDescription(state, tuple(fires), tuple(runs))

    async def pause(self, schedule_id: str, note: str = "") -> ScheduleState:
        """Stop scheduled fires (triggers and backfills still run) until :meth:`unpause`."""
        return await self._change(schedule_id, lambda s: replace(s, paused=True, note=note))

    async def unpause(self, schedule_id: str, note: str = "") -> ScheduleState:
        """Fire again from now on: the fires that fell in the pause are not run."""
        now = self._transport.now()
        return await self._change(
            schedule_id,
            lambda s: (
                replace(s, paused=False, note=note, cursor=max(s.cursor, now))
                if s.paused
                else replace(s, note=note)
            ),
        )

    async def trigger(self, schedule_id: str) -> str:
        """Ask for a run now (the overlap policy applies); the id of the instance it starts.

        Two triggers within one second ask for one run.
        """
        now = self._transport.now()
        state = await self._change(schedule_id, lambda s: request_trigger(s, now))
        return fire_instance_id(state.schedule.id, state.triggers[-1], FireKind.TRIGGER)

    async def backfill(self, schedule_id: str, start: float, end: float) -> int:
        """Ask for every fire of the spec from ``start`` to ``end`` (included); how many.

        The fires run one after another under the overlap policy; a fire
        time that already ran (its instance exists) starts nothing new.
        """
        counted: builtins.list[int] = []

        def ask(state: ScheduleState) -> ScheduleState:
            new, count = request_backfill(state, start, end)
            counted.append(count)
            return new

        await self._change(schedule_id, ask)
        return counted[-1]

    async def delete(self, schedule_id: str) -> None:
        """Remove the schedule: no more fires. The runs it started go on."""
        await self.get(schedule_id)
        await self._kv.delete(schedule_id)

    async def _change(
        self, schedule_id: str, change: Callable[[ScheduleState], ScheduleState]
    ) -> ScheduleState:
        for _ in range(_WRITES):
            entry = await self._kv.get(check_name("schedule id", schedule_id))
            if entry is None:
                raise ScheduleNotFoundError(f"no schedule {schedule_id!r}")
            new = change(decode_schedule(entry.value))
            try:
                await self._kv.update(schedule_id, encode_schedule(new), entry.revision)
            except ConflictError:
                continue
            return new
        raise ConflictError(f"schedule {schedule_id!r} kept changing; try again")
