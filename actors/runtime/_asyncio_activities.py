"""Activities written for asyncio, run inside the Trio worker through trio-asyncio.

This is the only module that imports trio-asyncio, and it does so only when
a worker serves an activity declared ``@activity(loop="asyncio")``: importing
trio-asyncio replaces asyncio's loop functions for the whole process
(``asyncio.new_event_loop()`` refuses to run in Trio, ``asyncio.run()`` in
another thread gets a trio-asyncio loop), so a process without asyncio
activities never pays for it.

One loop per worker, opened in the worker's nursery by :meth:`AsyncioLoop.run`
and closed after its last activity ended. Each call runs the activity's
coroutine as an asyncio task on that loop; the task is created from the
activity's Trio task, so it starts with a copy of that task's context
variables (``actors.heartbeat()`` and ``actors.activity_info()`` work in it).
Cancelling the Trio side (a timeout, a withdrawal, the drain deadline)
cancels the asyncio task, which sees ``asyncio.CancelledError``.

It also recognises the failure of asyncio code run on Trio without the
declaration (:func:`wrong_loop`), so that it is reported as a clear,
non-retryable error instead of a puzzling ``RuntimeError``.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Final, Literal, TypeAlias

import trio

__all__ = ["AsyncioLoop", "Loop", "check_loop", "require_trio_asyncio", "wrong_loop"]

#: The event loops an ``async def`` activity can be written for (``@activity(loop=...)``).
Loop: TypeAlias = Literal["trio", "asyncio"]


def check_loop(loop: str, activity: str | None = None, *, is_async: bool = True) -> None:
    """Refuse what ``@activity(loop=...)`` cannot run.

    Raises ``ValueError`` for a loop that is not one of :data:`Loop`, and
    ``TypeError`` for ``loop="asyncio"`` on ``activity`` when it is not an
    ``async def`` function (``is_async`` false).
    """
    if loop not in ("trio", "asyncio"):
        raise ValueError(f'@activity(loop=...) is "trio" or "asyncio", not {loop!r}')
    if loop == "asyncio" and not is_async:
        raise TypeError(
            f'activity {activity!r} is declared loop="asyncio" but is not an async def function'
        )


log = logging.getLogger("actors.worker")

#: How long a cancelled asyncio task is waited for before it is abandoned
#: (it caught its ``CancelledError`` and kept going): its attempt is then
#: reported as cancelled anyway, and the task left to the loop.
CANCEL_GRACE: Final = 5.0

#: What asyncio code says when it runs on Trio without an asyncio loop:
#: asyncio's own message (``get_running_loop()``), and Trio's on being handed
#: an asyncio future to wait for.
_WRONG_LOOP_SIGNS: Final = (
    "no running event loop",
    "trio.run received unrecognized yield message",
)


class AsyncioLoop:
    """The worker's one trio-asyncio loop, on which its asyncio activities run.

    Constructing it checks that trio-asyncio is installed (``RuntimeError``
    naming ``activities`` and the extra to install otherwise); :meth:`run`
    opens the loop; :meth:`call` runs one activity on it.
    """

    def __init__(self, activities: Iterable[str]) -> None:
        require_trio_asyncio(activities)
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the loop, start, and keep it open until cancelled.

        On cancellation the loop cancels whatever asyncio tasks are left and
        waits for them (as ``asyncio.run`` does) before this returns.
        """
        import trio_asyncio

        async with trio_asyncio.open_loop() as loop:
            self._loop = loop
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._loop = None

    async def call(self, fn: Callable[[Any], Any], value: Any) -> Any:
        """``await fn(value)`` as an asyncio task on the loop; its result or its exception.

        The task starts with a copy of the caller's context variables. If
        the caller is cancelled, the task is cancelled and waited for (up to
        :data:`CANCEL_GRACE`), then ``trio.Cancelled`` is raised whatever the
        task did with its cancellation. A task cancelled by asyncio code
        itself raises :class:`ActivityError` (type ``CancelledError``), not
        ``asyncio.CancelledError``, which would escape as a cancellation.
        """
        loop = self._loop
        if loop is None:
            raise RuntimeError("the worker's asyncio loop is not running")
        coroutine: Coroutine[Any, Any, Any] = fn(value)
        # Created here, in the activity's Trio task: the asyncio task copies
        # this context, with the activity's context variables in it.
        task = loop.create_task(coroutine)
        ended = trio.Event()
        task.add_done_callback(lambda _: ended.set())
        try:
            await ended.wait()
        except trio.Cancelled:
            task.cancel("the worker cancelled the activity")
            with trio.move_on_after(CANCEL_GRACE, shield=True):
                await ended.wait()
            if not task.done():
                log.warning(
                    "an asyncio activity did not stop within %ss of its cancellation; "
                    "abandoned (%r)",
                    CANCEL_GRACE,
                    task,
                )
            elif not task.cancelled():
                # Retrieved, so that asyncio does not log it as never retrieved.
                task.exception()
            raise
        try:
            return task.result()
        except asyncio.CancelledError:
            # Imported here: the activity module imports this one for ``Loop``.
            from ._activity import ActivityError

            raise ActivityError(
                "the activity's asyncio task was cancelled by asyncio code, not by the worker",
                type="CancelledError",
            ) from None


def require_trio_asyncio(activities: Iterable[str]) -> None:
    """Import trio-asyncio, for ``activities`` (declared ``loop="asyncio"``).

    Raises ``RuntimeError`` naming them and the extra to install if it is
    not installed.
    """
    try:
        with warnings.catch_warnings():
            # trio-asyncio subclasses asyncio's child watcher, which Python
            # 3.12+ deprecates on subclassing (removed in 3.14): a warning
            # about the library's insides, nothing a user of ours can act on.
            warnings.filterwarnings(
                "ignore", "'AbstractChildWatcher' is deprecated", DeprecationWarning
            )
            import trio_asyncio  # noqa: F401
    except ImportError as exc:
        names = ", ".join(sorted(activities))
        raise RuntimeError(
            f'activities declared loop="asyncio" ({names}) need trio-asyncio: '
            "pip install 'actors[asyncio]'"
        ) from exc


def wrong_loop(activity: str, exc: BaseException) -> str | None:
    """What to report if ``exc`` says that ``activity`` ran asyncio code on Trio.

    Looks at ``exc`` and the exceptions it was raised from or during, for
    the messages asyncio and Trio give (``no running event loop``, Trio's
    "unrecognized yield message"); ``None`` if none of them is there.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        if isinstance(current, RuntimeError | TypeError) and any(
            sign in text for sign in _WRONG_LOOP_SIGNS
        ):
            return (
                f"activity {activity!r} ran asyncio code on Trio ({type(current).__name__}: "
                f'{text}); declare it @actors.activity(loop="asyncio")'
            )
        current = current.__cause__ or current.__context__
    return None
