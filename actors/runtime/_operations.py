"""The client's instance operations: signal-with-start, pause and resume (of an
instance, of a workflow type), retry from the failed step, rerun, and their
bulk forms.

Each operation on an instance is a message on the instance's own subject,
decided by its orchestrator in order with its other events (``docs/wire.md``,
"Instance operations"): durable once the broker has it. A paused workflow
type is a key of ``WORKFLOW_OPERATIONS`` that every orchestrator watches.
:class:`Operations` is a part of :class:`~actors.Client`.
"""

from __future__ import annotations

import builtins
import getpass
import math
import secrets
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import trio

from transport import KeyValue, KVOp

from ..core import (
    RETRYABLE,
    InstanceStatus,
    LimitExceededError,
    check_instance_id,
    check_name,
)
from ..errors import RequestError
from ..wire import (
    OPERATIONS_BUCKET,
    StartMessage,
    TypePause,
    decode_state,
    decode_type_pause,
    encode_expire,
    encode_pause,
    encode_resume,
    encode_retry,
    encode_start,
    encode_type_pause,
    expire_subject,
    pause_subject,
    resume_subject,
    retry_subject,
    start_subject,
    type_pause_key,
)
from ._instances import InstanceInfo, UnknownWorkflowTypeError, _same_type, _unknown
from ._visibility import MAX_LIMIT, InstanceSummary

if TYPE_CHECKING:
    from typing import Unpack

    from transport import Transport

    from ..core import Limits
    from ._registry import DefinitionStore
    from ._visibility import InstanceQuery

__all__ = ["InstanceNotFoundError", "OperationRefusedError", "Operations", "operator"]

#: The most instances a bulk operation sends to per second, by default.
BULK_RATE: Final = 50.0


class InstanceNotFoundError(RequestError, exit_code=3, http_status=404, http_type="NotFound"):
    """No instance has that id (it never started, its start is pending, or it was deleted)."""


class OperationRefusedError(RequestError, http_status=409, http_type="OperationRefused"):
    """The instance is not in a state the operation applies to (say, a retry of a running one)."""


def operator() -> str:
    """Who acts, by default: ``user@host`` of this process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class Operations:
    """The operations of :class:`~actors.Client` (which inherits them)."""

    if TYPE_CHECKING:
        # What they use of the client.
        _transport: Transport
        _limits: Limits

        def _store(self) -> DefinitionStore: ...
        def _kv(self) -> KeyValue: ...
        def _live_watch(self) -> int | None: ...
        def _remember_start(self, instance_id: str, seq: int) -> None: ...
        def _follow(self, instance_id: str, generation: int) -> None: ...
        async def status(self, instance_id: str) -> InstanceInfo | None: ...
        async def list(self, **query: Unpack[InstanceQuery]) -> builtins.list[InstanceSummary]: ...

    async def _existing(self, instance_id: str) -> InstanceInfo:
        info = await self.status(instance_id)
        if info is None:
            raise InstanceNotFoundError(f"no workflow instance {instance_id!r}")
        return info

    async def _operations(self) -> KeyValue:
        return await self._transport.kv(OPERATIONS_BUCKET)

    # -- signal-with-start --------------------------------------------------------------

    async def signal_with_start(
        self,
        workflow_type: str,
        instance_id: str,
        name: str,
        payload: Any = None,
        *,
        input: Any = None,
        version: int = 0,
        signal_id: str | None = None,
    ) -> bool:
        """Send signal ``name`` to instance ``instance_id``, starting it first if it does not exist.

        One message (a start that carries the signal): the orchestrator starts
        the instance as ``workflow_type`` with ``input`` (and ``version``) if
        it is not stored, then delivers the signal; if it is stored (as that
        type), it delivers the signal alone. A finished instance takes no
        signal. ``signal_id`` makes a retried call count once (within the
        broker's duplicate window); without one, each call is a signal of
        its own. Returns whether the instance existed when the call was made
        (read at the same time as the publish, so only a hint under races).

        Raises as :meth:`start` does: :class:`InstanceConflictError` if the
        id belongs to another type (the message changes nothing then),
        :class:`UnknownWorkflowTypeError`, ``InvalidNameError``,
        :class:`LimitExceededError` for a message over ``limits.max_input``.
        """
        check_name("signal name", name)
        if signal_id is not None:
            check_instance_id(signal_id)
        # Not the start's message id: that would drop this signal as a
        # duplicate of an earlier start of the instance within the window.
        msg_id = f"signalstart.{instance_id}.{signal_id or secrets.token_hex(12)}"
        message = StartMessage(instance_id, input, version, signal=(name, payload))
        return await self._publish_start(workflow_type, message, msg_id)

    # -- pause and resume ---------------------------------------------------------------

    async def pause(
        self, instance_id: str, reason: str = "", *, by: str | None = None
    ) -> InstanceInfo:
        """Pause a running instance: nothing new is dispatched until :meth:`resume`.

        Tasks already out run to their end; their results, the timers that
        come due and the signals that arrive are kept and decided on resume.
        ``by`` (default: ``user@host``) and ``reason`` go into its status and
        history. A no-op for an instance already paused. Returns the state the
        request was made on. Raises :class:`InstanceNotFoundError`, and
        :class:`OperationRefusedError` for a finished instance.
        """
        info = await self._existing(check_instance_id(instance_id))
        if info.status.terminal:
            raise OperationRefusedError(f"{instance_id} is {info.status}: nothing to pause")
        await self._transport.publish(
            pause_subject(instance_id), encode_pause(by or operator(), reason)
        )
        return info

    async def resume(
        self, instance_id: str, reason: str = "", *, by: str | None = None
    ) -> InstanceInfo:
        """Resume a paused instance: what it kept while paused is decided, then it goes on.

        A no-op for an instance that is not paused. Raises
        :class:`InstanceNotFoundError`.
        """
        info = await self._existing(check_instance_id(instance_id))
        await self._transport.publish(
            resume_subject(instance_id), encode_resume(by or operator(), reason)
        )
        return info

    async def pause_type(
        self,
        workflow_type: str,
        reason: str = "",
        *,
        by: str | None = None,
        running: bool = False,
    ) -> int:
        """Pause workflow type ``workflow_type`` (all its versions).

        Its new starts are accepted and stored paused, and begin when the
        type is resumed (:meth:`resume_type`). With ``running``, the instances
        running now are paused too (with the type: resuming the type resumes
        them). Returns how many were sent a pause. Raises
        :class:`UnknownWorkflowTypeError`.
        """
        check_name("workflow type", workflow_type)
        if await self._store().get(workflow_type, 0) is None:
            raise UnknownWorkflowTypeError(_unknown(workflow_type, 0))
        who = by or operator()
        record = TypePause(workflow_type, who, reason, self._transport.now())
        await (await self._operations()).put(
            type_pause_key(workflow_type), encode_type_pause(record)
        )
        if not running:
            return 0
        data = encode_pause(who, reason, by_type=True)
        return await self._to_each(
            workflow_type,
            (InstanceStatus.RUNNING, InstanceStatus.COMPENSATING),
            pause_subject,
            data,
        )

    async def resume_type(
        self, workflow_type: str, reason: str = "", *, by: str | None = None
    ) -> int:
        """Resume workflow type ``workflow_type``, and every instance paused with it.

        New starts begin at once again; each instance paused with the type
        (stored paused, or paused by ``pause_type(running=True)``) is sent a
        resume (an instance paused on its own stays paused). Returns how many
        instances were sent one. Calling it again is harmless, and resumes an
        instance whose start an orchestrator decided just before it saw the
        type resumed.
        """
        check_name("workflow type", workflow_type)
        await (await self._operations()).delete(type_pause_key(workflow_type))
        data = encode_resume(by or operator(), reason, by_type=True)
        return await self._to_each(
            workflow_type,
            (InstanceStatus.RUNNING, InstanceStatus.COMPENSATING),
            resume_subject,
            data,
        )

    async def paused_types(self) -> dict[str, TypePause]:
        """The workflow types paused now, each with who paused it, when and why."""
        kv = await self._operations()
        found: dict[str, TypePause] = {}
        for key in await kv.keys("paused.>"):
            entry = await kv.get(key)
            if entry is not None:
                pause = decode_type_pause(entry.value)
                found[pause.workflow_type] = pause
        return found

    async def _to_each(
        self,
        workflow_type: str,
        statuses: tuple[InstanceStatus, ...],
        subject: Callable[[str], str],
        data: bytes,
    ) -> int:
        sent = 0
        for status in statuses:
            for summary in await self._all(workflow_type=workflow_type, status=status):
                await self._transport.publish(subject(summary.id), data)
                sent += 1
        return sent

    async def _all(
        self, *, workflow_type: str | None, status: InstanceStatus
    ) -> builtins.list[InstanceSummary]:
        """Every instance of the listing, page by page."""
        found: builtins.list[InstanceSummary] = []
        while True:
            page = await self.list(
                workflow_type=workflow_type, status=status, limit=MAX_LIMIT, offset=len(found)
            )
            found += page
            if len(page) < MAX_LIMIT:
                return found

    # -- retry and rerun ----------------------------------------------------------------

    async def retry(
        self,
        instance_id: str,
        *,
        step: str | None = None,
        reason: str = "",
        by: str | None = None,
    ) -> int:
        """Run a failed, cancelled or terminated instance again, as its next run.

        From the top-level step ``step``, or by default the first that did not
        complete (the one that failed, or that holds the step that did). The
        steps before it are kept with their outputs; the history goes on,
        with a ``instance.retried`` record; a compensation that ran in an
        earlier run is not run again. Returns the new run's number. Asking
        again for the same run counts once (within the duplicate window).
        Raises :class:`InstanceNotFoundError`; :class:`OperationRefusedError`
        for an instance in another status, or whose definition is gone;
        ``ValueError`` for a ``step`` that is not a top-level step of it.
        """
        info = await self._existing(check_instance_id(instance_id))
        if info.status not in RETRYABLE:
            raise OperationRefusedError(
                f"{instance_id} is {info.status}: only a failed, cancelled or terminated "
                "instance can be retried"
            )
        definition = await self._store().get(info.type, info.version)
        if definition is None:
            raise OperationRefusedError(
                f"{instance_id} runs {info.type} version {info.version}, which is no "
                "longer registered: it cannot be retried (rerun it instead)"
            )
        if step is not None and step not in {top.id for top in definition.steps}:
            tops = ", ".join(top.id for top in definition.steps)
            raise ValueError(f"{step!r} is not a top-level step of {info.type} (it has: {tops})")
        await self._transport.publish(
            retry_subject(instance_id),
            encode_retry(by or operator(), reason, step),
            msg_id=f"retry.{instance_id}.{info.run + 1}",
        )
        return info.run + 1

    async def rerun(self, instance_id: str, *, id: str | None = None) -> str:
        """Start a new instance with the same type, version and input as ``instance_id``.

        The new one's ``workflow.started`` record names the one it reruns
        (``rerun_of``). ``id`` as for :meth:`start`. Returns the new id.
        Raises :class:`InstanceNotFoundError`, and what :meth:`start` raises.
        """
        info = await self._existing(check_instance_id(instance_id))
        new_id = check_instance_id(id) if id is not None else secrets.token_hex(12)
        message = StartMessage(new_id, info.input, info.version, rerun_of=instance_id)
        await self._publish_start(info.type, message, f"start.{new_id}")
        return new_id

    async def retry_matching(
        self,
        *,
        workflow_type: str | None = None,
        status: InstanceStatus | str = InstanceStatus.FAILED,
        since: float | None = None,
        step: str | None = None,
        reason: str = "",
        by: str | None = None,
        rate: float = BULK_RATE,
        chosen: Callable[[int], bool] | None = None,
    ) -> builtins.list[str]:
        """Retry every instance that matches, paced at ``rate`` a second; the ids retried.

        ``status`` is failed, cancelled or terminated; ``since`` keeps those
        that ended (were last changed) at most that many seconds ago.
        ``chosen`` is told how many match before any is retried, and may say
        no (a confirmation): then none is. An instance that changed meanwhile
        (retried by someone else) is skipped.
        """
        wanted = InstanceStatus(status)
        if wanted not in RETRYABLE:
            raise ValueError(f"status must be failed, cancelled or terminated, not {wanted}")
        if not 0 < rate < math.inf:
            raise ValueError(f"rate must be a positive number, not {rate}")
        if workflow_type is not None:
            check_name("workflow type", workflow_type)
        found = await self._all(workflow_type=workflow_type, status=wanted)
        if since is not None:
            oldest = self._transport.now() - since
            found = [summary for summary in found if summary.updated_at >= oldest]
        if chosen is not None and not chosen(len(found)):
            return []
        retried: builtins.list[str] = []
        for summary in found:
            try:
                await self.retry(summary.id, step=step, reason=reason, by=by)
            except (InstanceNotFoundError, OperationRefusedError):
                continue
            retried.append(summary.id)
            # Paced, so as not to flood the workers with every first task at once.
            await trio.sleep(1 / rate)
        return retried

    # -- retention ----------------------------------------------------------------------

    async def delete(self, instance_id: str) -> InstanceInfo:
        """Remove a finished instance now: its state, its history and its index entries.

        What its type's retention period would do later (``docs/operations.md``,
        "Retention"), decided by its orchestrator in order with its other
        events; returns the state it was asked on. Wait for the removal with
        ``wait_for_removal``. Raises :class:`InstanceNotFoundError`, and
        :class:`OperationRefusedError` for an instance that has not ended.
        """
        info = await self._existing(check_instance_id(instance_id))
        if not info.status.terminal:
            raise OperationRefusedError(
                f"{instance_id} is {info.status}: only a finished instance can be deleted "
                "(cancel or terminate it first)"
            )
        await self._transport.publish(expire_subject(instance_id), encode_expire(None))
        return info

    async def wait_for_removal(self, instance_id: str) -> None:
        """Return once the instance's state is gone (removed, or never stored).

        Event-driven (a watch of its key). Bound it with ``trio.fail_after``.
        """
        async with self._kv().watch(check_instance_id(instance_id)) as changes:
            if await self._kv().get(instance_id) is None:
                return
            async for change in changes:
                if change.op is not KVOp.PUT:
                    return

    # -- starts ---------------------------------------------------------------------------

    async def _publish_start(self, workflow_type: str, message: StartMessage, msg_id: str) -> bool:
        """Publish a start that names its instance; whether the instance existed.

        As :meth:`start` with an ``id`` does: the type is checked, and the
        instance's key is read while the start is published.
        """
        check_name("workflow type", workflow_type)
        instance_id = message.instance_id
        assert instance_id is not None
        check_instance_id(instance_id)
        data = encode_start(message)
        if len(data) > self._limits.max_input:
            raise LimitExceededError(
                "the start message", len(data), self._limits.max_input, "InputTooLarge"
            )
        if await self._store().get(workflow_type, message.version) is None:
            raise UnknownWorkflowTypeError(_unknown(workflow_type, message.version))
        from ._client import _together  # the client imports this module

        watching = self._live_watch()
        entry, ack = await _together(
            self._kv().get(instance_id),
            self._transport.publish(start_subject(instance_id, workflow_type), data, msg_id=msg_id),
        )
        if entry is not None:
            _same_type(instance_id, decode_state(entry.value).type, workflow_type)
            return True
        if not ack.duplicate:
            self._remember_start(instance_id, ack.seq)
            if watching is not None:
                self._follow(instance_id, watching)
        return False
