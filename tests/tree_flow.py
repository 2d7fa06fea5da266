"""Queued and type-paused starts in the tree state machine (``test_core_tree_properties.py``).

An instance whose workflow-level concurrency limit binds is stored queued
by the runtime with ``queue_instance`` in ``decide``'s place, may be queued
again behind another limit when a slot is granted (``queue_instance`` on
its state), and begins when ``decide`` gets its ``SlotGranted``. A start of
a paused workflow type carries the type's pause; a signal-with-start
carries its signal. :class:`FlowRun` draws such a start and checks, after
every decision, what the core owes it:

* nothing but history records goes out while the instance is queued or
  paused, and one that ends before its first step began never dispatched
  anything;
* what its start carried is kept: the pause as it is stored, the signals
  (no tree waits for one, so a running instance keeps them all);
* only a grant begins a queued instance (one that came while paused, once
  resumed), exactly as the same start decided plainly then would have: the
  same tasks and children, records and step states;
* its history begins with ``flow.queued`` and records ``workflow.started``
  once, after the last ``flow.queued`` (never, if it ended waiting).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Final

from hypothesis import strategies as st

from actors.core import (
    Command,
    Definition,
    Event,
    InstanceState,
    InstanceStatus,
    Pause,
    RecordHistory,
    SignalReceived,
    SlotGranted,
    StartRequested,
    decide,
    parse_definition,
    queue_instance,
)

#: The workflow-level limits of a run that starts queued (one or both), and
#: how the runtime names each as the limit the instance waits behind.
LIMITS: Final = ({"key": "'all'", "limit": 1}, {"key": "'tree'", "limit": 2})
BEHIND: Final = (
    "concurrency[0]: 'all' = \"all\" (limit 1)",
    "concurrency[1]: 'tree' = \"tree\" (limit 2)",
)
#: The one signal name: the trees have no signal step, so signals are kept.
SIGNAL: Final = "go"
#: What the runtime puts on a start of a paused workflow type.
TYPE_PAUSE: Final = Pause("ops", "type paused", 0.0, by_type=True)
#: What ``decide`` (or the runtime's ``queue_instance`` in its place) does to
#: the state as it stands.
Decider = Callable[[InstanceState | None], tuple[InstanceState | None, list[Command]]]
ENDED_BY_REQUEST: Final = (InstanceStatus.CANCELLED, InstanceStatus.TERMINATED)


class FlowRun:
    """How one instance was started, what it was sent before it began, and the checks.

    ``definition``: the tree, with ``concurrency`` limits if it starts queued.
    """

    def __init__(self, definition: Definition, start: StartRequested) -> None:
        self.definition = definition
        self.start = start
        #: Whether it was stored queued, and the limits it may wait behind.
        self.queued = False
        self.behind: tuple[str, ...] = ()
        #: Payloads of the signals sent (each once), in order.
        self.signals: list[Any] = [start.signal.payload] if start.signal is not None else []
        #: How many ``workflow.started`` records; whether a command other than
        #: a history record ever went out.
        self.started = 0
        self.dispatched_any = False
        #: Set if it ended while queued: it never begins.
        self.ended_queued = False

    @classmethod
    def draw(
        cls, data: st.DataObject, plain: dict[str, Any], instance: str, workflow_input: Any
    ) -> FlowRun:
        """A start of the tree ``plain``: one run in four queued behind one or two
        limits; one in five of a paused type, one in four with a signal."""
        queued = data.draw(st.integers(0, 3), label="queued") == 0
        limits = data.draw(st.integers(1, 2), label="limits") if queued else 0
        if limits:
            plain = {**plain, "concurrency": list(LIMITS[:limits])}
        paused = data.draw(st.integers(0, 4), label="type paused") == 0
        with_signal = data.draw(st.integers(0, 3), label="signal with start") == 0
        start = StartRequested(
            instance,
            plain["type"],
            plain["version"],
            workflow_input,
            signal=SignalReceived(SIGNAL, {"n": 0}, 1) if with_signal else None,
            pause=TYPE_PAUSE if paused else None,
        )
        run = cls(parse_definition(plain), start)
        run.queued = queued
        run.behind = BEHIND[:limits]
        return run

    def queue(
        self, state: InstanceState | None, behind: str, now: float
    ) -> tuple[InstanceState, list[Command]]:
        """What the runtime decides in ``decide``'s place when a limit is full:
        for the start (``state`` is ``None``), or for a grant (``state`` is queued)."""
        start = self.start if state is None else None
        return queue_instance(self.definition, state, start, behind, now)

    def signal(self) -> SignalReceived:
        """A new signal (the next sequence number) to send."""
        payload = {"n": len(self.signals)}
        self.signals.append(payload)
        return SignalReceived(SIGNAL, payload, 100 + len(self.signals))

    def check(
        self,
        before: InstanceState | None,
        new: InstanceState,
        event: Event,
        commands: list[Command],
        now: float,
    ) -> None:
        """Check one decision (``new is before``: none was made)."""
        records = [c for c in commands if isinstance(c, RecordHistory)]
        kinds = [record.kind for record in records]
        dispatches = [c for c in commands if not isinstance(c, RecordHistory)]
        self.started += kinds.count("workflow.started")
        assert self.started <= 1, "workflow.started twice"
        if "flow.queued" in kinds:
            last = max(i for i, kind in enumerate(kinds) if kind == "flow.queued")
            assert self.queued
            assert not self.started, "queued after it began"
            assert new.queued == records[last].detail["behind"]
        if dispatches:
            self.dispatched_any = True
            assert new.paused is None, f"paused, yet {dispatches[0]} went out"
            assert new.status is not InstanceStatus.QUEUED, f"queued, yet {dispatches[0]} went out"
        # What it waits behind is shown while it waits, and only then.
        assert (new.queued is not None) == (new.status is InstanceStatus.QUEUED), new.queued
        if new.status is InstanceStatus.QUEUED:
            assert self.queued
            assert not self.started
            assert (dict(new.steps), new.output) == ({}, None)
            assert new.queued in self.behind
        if before is None:
            assert new.paused == self.start.pause, "the start's pause was lost"
        if new.status in (InstanceStatus.RUNNING, InstanceStatus.QUEUED) and new.paused is None:
            expected = {SIGNAL: tuple(self.signals)} if self.signals else {}
            assert dict(new.signals) == expected, "a signal was lost"
        if before is not None and before.status is InstanceStatus.QUEUED:
            if "workflow.started" in kinds:
                # Only a grant admits (one that came while paused is held until resumed).
                assert isinstance(event, SlotGranted) or any(
                    isinstance(held, SlotGranted) for held in before.held
                ), f"{event} began a queued instance"
                self.check_admission(new, records, dispatches, now)
            elif new.status is not InstanceStatus.QUEUED:
                assert new.status in ENDED_BY_REQUEST
                self.ended_queued = True
        held_start = before is not None and before.paused is not None and not before.steps
        if new.status in ENDED_BY_REQUEST and (self.ended_queued or held_start):
            # Ended before its first step began (queued, or its start held).
            assert not self.dispatched_any

    def check_admission(
        self,
        new: InstanceState,
        records: list[RecordHistory],
        dispatches: list[Command],
        now: float,
    ) -> None:
        """An admitted instance begins as the same start, decided plainly now, would."""
        plain_start = replace(self.start, pause=None, signal=None)
        plain, plain_commands = decide(self.definition, None, plain_start, now)
        assert plain is not None

        def described(commands: Sequence[Command]) -> list[tuple[str, dict[str, Any]]]:
            # Kept signals aside: the plain start carries none.
            return [
                (c.kind, c.detail)
                for c in commands
                if isinstance(c, RecordHistory) and c.kind != "signal.received"
            ]

        begun = described(records)
        begun = begun[[kind for kind, _ in begun].index("workflow.started") :]
        assert begun == described(plain_commands)
        assert dispatches == [c for c in plain_commands if not isinstance(c, RecordHistory)]
        for field in ("status", "output", "error", "compensations"):
            assert getattr(new, field) == getattr(plain, field), field
        # ``done`` and ``dispatched`` are history seqs: the admitted instance's
        # history has more records before its workflow.started.
        offset = next(r.seq for r in records if r.kind == "workflow.started") - 1

        def shifted(seq: int) -> int:
            return seq + offset if seq else 0

        assert new.steps == {
            key: replace(step, done=shifted(step.done), dispatched=shifted(step.dispatched))
            for key, step in plain.steps.items()
        }

    def check_history(self, history: Sequence[RecordHistory]) -> None:
        """Once it ended: begun once (unless it ended waiting), after it was queued."""
        kinds = [record.kind for record in history]
        assert kinds.count("workflow.started") == (0 if self.ended_queued else 1)
        if self.queued:
            assert kinds[0] == "flow.queued"
            last_queued = len(kinds) - 1 - kinds[::-1].index("flow.queued")
            assert self.ended_queued or kinds.index("workflow.started") > last_queued
