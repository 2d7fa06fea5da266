"""Activities: the ``@activity`` decorator, the error to raise, and heartbeats.

An activity is an ordinary function of one argument (the step's input) that
returns the step's output; ``async def`` functions run in the worker's Trio
loop, plain functions in worker threads, and ``async def`` functions declared
for the other event loop on the worker's second loop (``_asyncio_activities``
says which loops there are, and runs them). Inside one, :func:`heartbeat` says
"still alive" and :func:`activity_info` tells which instance, step and
attempt it is running for.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar, overload

import trio

from ..core import check_name
from ..errors import OutcomeError
from ._asyncio_activities import Loop, check_loop

__all__ = [
    "ActivityError",
    "ActivityInfo",
    "ActivitySpec",
    "activity",
    "activity_info",
    "collect_activities",
    "heartbeat",
]

F = TypeVar("F", bound=Callable[..., Any])
_ATTR = "__actors_activity__"


class ActivityError(OutcomeError):
    """Raise to fail an activity with a chosen error type and retry behaviour.

    ``type`` defaults to the class name (``ActivityError``); a definition's
    ``non_retryable`` list matches against it. ``non_retryable=True`` fails
    the step at once whatever the retry policy says.
    """

    def __init__(self, message: str, *, type: str | None = None, non_retryable: bool = False):
        super().__init__(message)
        self.type = type or self.__class__.__name__
        self.non_retryable = non_retryable


@dataclass(frozen=True, slots=True)
class ActivitySpec:
    """A registered activity: its name, function and how it runs.

    ``is_async``: an ``async def`` function (else run in a thread);
    ``loop``: the event loop it is written for (``"trio"`` for sync ones).
    """

    name: str
    fn: Callable[[Any], Any]
    is_async: bool
    loop: Loop = "trio"


@dataclass(frozen=True, slots=True)
class ActivityInfo:
    """What an activity is running for."""

    instance_id: str
    workflow_type: str
    step: str
    attempt: int
    activity: str
    #: The broker's count of deliveries of this attempt's task: 1 at first, one
    #: more each time it comes back (a worker died). A delivery in hand when
    #: the server died may not be counted, so a number can repeat: it is not
    #: a uniqueness token (docs/wire.md, "Delivery count"); the attempt is.
    delivery: int


@overload
def activity(fn: F, /) -> F: ...
@overload
def activity(*, name: str | None = None, loop: Loop = "trio") -> Callable[[F], F]: ...
def activity(
    fn: F | None = None, /, *, name: str | None = None, loop: Loop = "trio"
) -> F | Callable[[F], F]:
    """Mark ``fn`` as an activity named ``name`` (default: the function's name).

    ``loop`` names the event loop ``fn`` is written for (see
    :data:`~._asyncio_activities.Loop`): an ``async def`` function for the
    other loop runs as a task of it inside the worker, with timeouts,
    withdrawals and heartbeats as for Trio activities.

    The function is returned unchanged, so it can still be called directly.
    Raises ``TypeError`` / ``ValueError`` at decoration time for something that
    cannot be an activity (not callable, a bad name, more than one required
    argument, an unknown ``loop``, the other loop named for a plain function).
    """
    check_loop(loop)

    def mark(fn: F) -> F:
        if not callable(fn):
            raise TypeError(f"@activity needs a function, not {fn!r}")
        activity_name = check_name("activity name", name or getattr(fn, "__name__", ""))
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):
            signature = None
        if signature is not None:
            required = [
                p
                for p in signature.parameters.values()
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            ]
            if len(required) > 1:
                raise TypeError(
                    f"activity {activity_name!r} must take one argument (its input), "
                    f"not {len(required)}"
                )
        is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004
        )
        check_loop(loop, activity_name, is_async=is_async)
        setattr(fn, _ATTR, ActivitySpec(activity_name, fn, is_async, loop))
        return fn

    return mark(fn) if fn is not None else mark


def collect_activities(sources: Iterable[ModuleType | Callable[..., Any]]) -> list[ActivitySpec]:
    """Every activity in ``sources`` (modules are searched, functions taken as marked).

    Raises ``ValueError`` for two activities with one name or a function
    that is not marked.
    """
    found: dict[str, ActivitySpec] = {}
    for source in sources:
        if isinstance(source, ModuleType):
            specs = [
                spec
                for value in vars(source).values()
                if isinstance(spec := getattr(value, _ATTR, None), ActivitySpec)
            ]
        else:
            spec = getattr(source, _ATTR, None)
            if not isinstance(spec, ActivitySpec):
                raise ValueError(f"{source!r} is not marked with @activity")
            specs = [spec]
        for spec in specs:
            other = found.get(spec.name)
            if other is not None and other.fn is not spec.fn:
                raise ValueError(f"two activities are named {spec.name!r}")
            found[spec.name] = spec
    return list(found.values())


class _Context:
    """The running activity's info and its last heartbeat (Trio's clock).

    Trio's clock, not the wall's, so that heartbeat timeouts follow a fake
    clock in tests as every other timeout does.
    """

    __slots__ = ("info", "last_beat")

    def __init__(self, info: ActivityInfo) -> None:
        self.info = info
        self.last_beat = trio.current_time()


_current: contextvars.ContextVar[_Context] = contextvars.ContextVar("actors_activity")


def heartbeat() -> None:
    """Tell the worker this activity is alive; call it more often than its
    heartbeat timeout. Safe from threads (sync activities), from Trio, and
    from activities on the worker's second loop.

    Raises ``RuntimeError`` outside an activity.
    """
    context = _context()
    try:
        now = trio.current_time()
    except RuntimeError:
        # A sync activity's worker thread: ask the Trio loop for its clock.
        now = trio.from_thread.run_sync(trio.current_time)
    context.last_beat = now


def activity_info() -> ActivityInfo:
    """What the calling activity is running for. Raises ``RuntimeError`` outside one."""
    return _context().info


def _context() -> _Context:
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("not inside an activity") from None


def _run_with_context(context: _Context, fn: Callable[[Any], Any], value: Any) -> Any:
    _current.set(context)
    return fn(value)


def bind(context: _Context, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``fn`` to be called with ``context`` current (in a thread, say)."""
    return functools.partial(_run_with_context, context, fn)
