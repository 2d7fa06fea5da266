"""The web UI's instance operations (pause, resume, retry, rerun) and its schedules pages.

Each action works as the instance page's first ones (signal, cancel,
terminate): a form on the page, a confirmation page, then the request,
every POST checked for the form's CSRF token and behind the sign-in. An
action is offered only when it applies, and refused (409, nothing done)
when it does not: a page can be stale, or a form hand-made.

The engine takes a request asynchronously (a message to the instance's
orchestrator); the action waits a moment, bounded by :data:`TAKEN_WITHIN`,
for the instance's stored state to show it, so that the page it leads to
shows the instance paused, resumed or in its new run. If the state has not
changed by then, the page says the request was made, and the next look
shows the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import trio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute

from ...core import RETRYABLE, InvalidNameError, ScheduleSpec, check_instance_id, check_name
from ...runtime import Client, InstanceInfo, OperationRefusedError, UnknownWorkflowTypeError
from .._bounds import MAX_REASON
from .._requests import ApiError
from ._security import HEADERS

if TYPE_CHECKING:
    from ._app import WebUi

__all__ = ["TAKEN_WITHIN", "WHO", "ActionPages", "offered", "top_steps"]

#: Seconds an action waits for the instance to take it before the page is shown.
TAKEN_WITHIN: Final = 3.0
#: Who the history and status name as having paused, resumed or retried.
WHO: Final = "web UI"
#: The next fires a schedule's page shows.
UPCOMING: Final = 5


def offered(info: InstanceInfo) -> frozenset[str]:
    """The operations that apply to the instance as it is now (what its page offers)."""
    if info.status in RETRYABLE:
        return frozenset({"retry", "rerun"})
    if info.status.terminal:
        return frozenset()
    return frozenset({"resume" if info.paused else "pause"})


class ActionPages:
    """The handlers of the instance operations and of the schedules pages."""

    def __init__(self, ui: WebUi) -> None:
        self._ui = ui
        self._client = ui.client

    def routes(self) -> list[BaseRoute]:
        route = self._ui.route
        return [
            route("/ui/instances/{id}/pause", POST=self.pause),
            route("/ui/instances/{id}/resume", POST=self.resume),
            route("/ui/instances/{id}/retry", POST=self.retry),
            route("/ui/instances/{id}/rerun", POST=self.rerun),
            route("/ui/schedules", GET=self.schedules),
            route("/ui/schedules/{id}", GET=self.schedule),
            route("/ui/schedules/{id}/pause", POST=self.schedule_pause),
            route("/ui/schedules/{id}/unpause", POST=self.schedule_unpause),
            route("/ui/schedules/{id}/trigger", POST=self.schedule_trigger),
        ]

    # -- instance operations --------------------------------------------------------

    async def _applicable(
        self, request: Request, action: str
    ) -> tuple[InstanceInfo, dict[str, str], str]:
        """The instance, its form (CSRF checked) and reason; 409 if the action does not apply."""
        info = await self._ui.info(request)
        fields = await self._ui.form(request)
        if action not in offered(info):
            paused = " and paused" if info.paused else ""
            raise OperationRefusedError(f"{info.id} is {info.status}{paused}: it cannot {action}")
        return info, fields, fields.get("reason", "")[:MAX_REASON]

    def _confirm(
        self, request: Request, info: InstanceInfo, action: str, question: str, **fields: str
    ) -> Response:
        return self._ui.render(
            request,
            "confirm.html",
            info=info,
            action=action,
            question=question,
            fields=fields,
            payload="",
        )

    async def _taken(self, instance_id: str, condition: Callable[[InstanceInfo], bool]) -> None:
        """Wait at most :data:`TAKEN_WITHIN` seconds for the stored state to meet ``condition``."""
        with trio.move_on_after(TAKEN_WITHIN):
            await self._client.wait_for(instance_id, condition)

    @staticmethod
    def _done(instance_id: str, action: str, **more: str) -> Response:
        query = "".join(f"&{key}={value}" for key, value in more.items())
        return RedirectResponse(
            f"/ui/instances/{instance_id}?done={action}{query}", 303, headers=HEADERS
        )

    async def pause(self, request: Request) -> Response:
        info, fields, reason = await self._applicable(request, "pause")
        if fields.get("confirmed") != "yes":
            question = (
                f"Pause {info.id}? Nothing new is dispatched until it is resumed; "
                "what is already running finishes."
            )
            return self._confirm(request, info, "pause", question, reason=reason)
        await self._client.pause(info.id, reason, by=WHO)
        await self._taken(info.id, lambda now: now.paused is not None or now.status.terminal)
        return self._done(info.id, "pause")

    async def resume(self, request: Request) -> Response:
        info, fields, reason = await self._applicable(request, "resume")
        if fields.get("confirmed") != "yes":
            question = f"Resume {info.id}? What it held while paused is decided, then it goes on."
            return self._confirm(request, info, "resume", question, reason=reason)
        await self._client.resume(info.id, reason, by=WHO)
        await self._taken(info.id, lambda now: now.paused is None)
        return self._done(info.id, "resume")

    async def retry(self, request: Request) -> Response:
        info, fields, reason = await self._applicable(request, "retry")
        step = fields.get("step", "")
        tops = await top_steps(self._client, info)
        if step and step not in tops:
            return await self._ui.instance(
                request,
                400,
                form_error=f"{step!r} is not a top-level step of {info.type} "
                f"(it has: {', '.join(tops) or 'none'})",
            )
        if fields.get("confirmed") != "yes":
            start = f"step {step}" if step else "the step that did not complete"
            question = f"Retry {info.id} from {start}, as run {info.run + 1}?"
            return self._confirm(request, info, "retry", question, reason=reason, step=step)
        run = await self._client.retry(info.id, step=step or None, reason=reason, by=WHO)
        await self._taken(info.id, lambda now: now.run >= run)
        return self._done(info.id, "retry")

    async def rerun(self, request: Request) -> Response:
        info, fields, _ = await self._applicable(request, "rerun")
        if fields.get("confirmed") != "yes":
            question = (
                f"Start a new instance of {info.type} v{info.version} with the input of {info.id}?"
            )
            return self._confirm(request, info, "rerun", question)
        new_id = await self._client.rerun(info.id)
        return self._done(info.id, "rerun", rerun=new_id)

    # -- schedules ----------------------------------------------------------------------

    async def schedules(self, request: Request) -> Response:
        states = await self._client.schedules.list()
        return self._ui.render(request, "schedules.html", title="Schedules", schedules=states)

    async def schedule(self, request: Request) -> Response:
        schedule_id = _schedule_id(request)
        described = await self._client.schedules.describe(schedule_id, upcoming=UPCOMING)
        done = request.query_params.get("done", "")
        started = request.query_params.get("started", "")
        return self._ui.render(
            request,
            "schedule.html",
            title=f"Schedule {schedule_id}",
            described=described,
            state=described.state,
            spec=_pretty_spec(described.state.schedule.spec),
            done=_SCHEDULE_DONE.get(done, ""),
            started=started if _is_id(started) else "",
        )

    async def schedule_pause(self, request: Request) -> Response:
        return await self._schedule_action(request, "pause")

    async def schedule_unpause(self, request: Request) -> Response:
        return await self._schedule_action(request, "unpause")

    async def schedule_trigger(self, request: Request) -> Response:
        return await self._schedule_action(request, "trigger")

    async def _schedule_action(self, request: Request, action: str) -> Response:
        schedule_id = _schedule_id(request)
        state = await self._client.schedules.get(schedule_id)
        fields = await self._ui.form(request)
        note = fields.get("note", "")[:MAX_REASON]
        if (action == "pause" and state.paused) or (action == "unpause" and not state.paused):
            raise OperationRefusedError(
                f"schedule {schedule_id} is {'paused' if state.paused else 'not paused'} already"
            )
        if fields.get("confirmed") != "yes":
            questions = {
                "pause": f"Pause schedule {schedule_id}? Its fires stop until it is unpaused "
                "(triggers still run).",
                "unpause": f"Unpause schedule {schedule_id}? It fires again from now on; "
                "the fires that fell in the pause are not run.",
                "trigger": f"Start a run of schedule {schedule_id} now? "
                f"Its overlap policy ({state.schedule.overlap.value}) applies.",
            }
            return self._ui.render(
                request,
                "confirm.html",
                action=action,
                target=f"/ui/schedules/{schedule_id}/{action}",
                back=f"/ui/schedules/{schedule_id}",
                question=questions[action],
                fields={"note": note} if action != "trigger" else {},
                payload="",
            )
        more = ""
        if action == "pause":
            await self._client.schedules.pause(schedule_id, note)
        elif action == "unpause":
            await self._client.schedules.unpause(schedule_id, note)
        else:
            more = f"&started={await self._client.schedules.trigger(schedule_id)}"
        return RedirectResponse(
            f"/ui/schedules/{schedule_id}?done={action}{more}", 303, headers=HEADERS
        )


async def top_steps(client: Client, info: InstanceInfo) -> list[str]:
    """The ids of the top-level steps of the instance's definition (none if it is gone)."""
    try:
        definition = await client.definition(info.type, info.version)
    except UnknownWorkflowTypeError:
        return []
    return [step.id for step in definition.steps]


#: What a schedule's page says after an action (``?done=...``).
_SCHEDULE_DONE: Final = {
    "pause": "The schedule is paused.",
    "unpause": "The schedule is unpaused.",
    "trigger": "A run was asked for.",
}


def _schedule_id(request: Request) -> str:
    try:
        return check_name("schedule id", request.path_params["id"])
    except InvalidNameError as exc:
        raise ApiError(404, "NotFound", str(exc)) from None


def _is_id(text: str) -> bool:
    try:
        check_instance_id(text)
    except InvalidNameError:
        return False
    return True


def _pretty_spec(spec: ScheduleSpec) -> list[str]:
    """The spec as lines a person reads: each cron and interval, and the jitter."""
    lines = [f"cron {c.expression} ({c.timezone})" for c in spec.cron]
    lines += [
        f"every {i.every:g} s" + (f", offset {i.offset:g} s" if i.offset else "")
        for i in spec.intervals
    ]
    if spec.jitter:
        lines.append(f"jitter up to {spec.jitter:g} s")
    return lines
