"""Signal steps: wait for a named signal; its payload is the step's output.

A signal that comes while no step waits for it is kept (by name, in
order) and taken by the next step that waits for it; of several steps
waiting for the same name, the one that began first takes it. With a
``timeout``, a ``signal_timeout`` timer fails the step with
``SignalTimeout``.

History: ``signal.waiting``, ``signal.taken`` (a kept signal, as the step
began), ``signal.received`` (with the step that took it, or ``kept``),
``signal.completed``, ``signal.timed_out``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

from .._commands import StartTimer
from .._error_info import ErrorInfo
from .._events import SignalReceived, TimerFired, TimerKind
from .._refs import resolve
from .._state import InstanceStatus, StepState, StepStatus

if TYPE_CHECKING:
    from .._decision import Decision
    from .._definition import Definition
    from .._parse import Checker
    from .._refs import Ref

__all__ = ["FIELDS", "SignalStep", "begin", "parse", "received", "timer"]


@dataclass(frozen=True, slots=True)
class SignalStep:
    """Wait for signal ``signal``; its payload is the step's output.

    A signal sent before the step starts is kept and taken when it does.
    With a ``timeout``, the step fails with ``SignalTimeout`` after it.
    """

    id: str
    signal: str
    timeout: float | None = None

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "wait_signal": self.signal}
        if self.timeout is not None:
            data["timeout"] = self.timeout
        return data


#: The fields of a signal step (its kind: the key ``wait_signal``).
FIELDS: Final = frozenset({"id", "wait_signal", "timeout"})
_COMPLETED: Final = "signal.completed"
#: How many signal sequence numbers an instance remembers.
_SEEN_SIGNALS: Final = 256


def parse(
    checker: Checker, step: Mapping[str, Any], step_id: str | None, depth: int
) -> SignalStep | None:
    signal = checker.name(step, "wait_signal", "signal name")
    timeout = checker.duration(step, "timeout", positive=True)
    if step_id is None or signal is None:
        return None
    return SignalStep(step_id, signal, timeout)


def begin(build: Decision, definition: Definition, ref: Ref, step: SignalStep) -> None:
    build.set_step(ref.key, StepState(StepStatus.WAITING, 1, build.now))
    waiting = build.state.signals.get(step.signal, ())
    if waiting:
        # It came before the step began: it was kept for this moment.
        signals = dict(build.state.signals)
        if len(waiting) > 1:
            signals[step.signal] = waiting[1:]
        else:
            del signals[step.signal]
        build.state = replace(build.state, signals=signals)
        build.history("signal.taken", step=ref.key, signal=step.signal)
        build.step_done(definition, ref, waiting[0], _COMPLETED)
        return
    build.history("signal.waiting", step=ref.key, signal=step.signal)
    if step.timeout is not None:
        build.commands.append(
            StartTimer(TimerKind.SIGNAL_TIMEOUT, ref.key, 1, build.now + step.timeout)
        )


_TAKES_SIGNALS: Final = frozenset({InstanceStatus.RUNNING, InstanceStatus.QUEUED})


def received(build: Decision, definition: Definition, event: SignalReceived) -> bool:
    """Signal ``event.name`` came: the step waiting longest for it takes it, else it is kept.

    Returns ``False`` for a signal already applied, or one that comes while
    the instance no longer runs its steps (it is compensating).
    """
    state = build.state
    # A queued instance keeps its signals for when it runs.
    if event.seq in state.seen_signals or state.status not in _TAKES_SIGNALS:
        return False
    seen = (*state.seen_signals, event.seq)[-_SEEN_SIGNALS:]
    build.state = replace(build.state, seen_signals=seen)
    # Steps are kept in the order they began.
    for key, current in state.steps.items():
        if current.status is not StepStatus.WAITING:
            continue
        ref = resolve(definition, key)
        if ref is None or ref.undo:
            continue
        if isinstance(ref.step, SignalStep) and ref.step.signal == event.name:
            build.history("signal.received", signal=event.name, step=key)
            build.step_done(definition, ref, event.payload, _COMPLETED)
            return True
    signals = dict(state.signals)
    signals[event.name] = (*signals.get(event.name, ()), event.payload)
    build.state = replace(build.state, signals=signals)
    build.history("signal.received", signal=event.name, kept=True)
    return True


def timer(
    build: Decision, definition: Definition, ref: Ref, current: StepState, event: TimerFired
) -> bool:
    """The ``signal_timeout`` timer fails the step if it still waits."""
    if event.kind is not TimerKind.SIGNAL_TIMEOUT or current.status is not StepStatus.WAITING:
        return False
    assert isinstance(ref.step, SignalStep)
    error = ErrorInfo(
        "SignalTimeout",
        f"step {ref.key!r}: no signal {ref.step.signal!r} within {ref.step.timeout}s",
        non_retryable=True,
    )
    build.history("signal.timed_out", step=ref.key)
    build.step_failed(definition, ref, error)
    return True
