"""The web UI over HTTP: sign-in, CSRF, filters, actions, the live fragments.

The same engine and API as the API's tests (``conftest.py``), on the memory
transport and on a NATS server of the test's own: the pages' logic and
answers. ``tests/ui/`` drives them in a real browser against the dev server.
"""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import httpx
import pytest
import trio

import actors
from actors.wire import (
    DEADLETTER_STREAM,
    PARTITIONS_BUCKET,
    PRESENCE_BUCKET,
    TASKS_STREAM,
    Layout,
)
from transport import ConsumerSpec, KVOp

if TYPE_CHECKING:
    from conftest import Served

# On both transports, as the API's tests (conftest.py's engine_url, by name).
pytestmark = pytest.mark.parametrize(
    "engine_url",
    ["memory", pytest.param("jetstream", marks=pytest.mark.jetstream)],
    indirect=True,
)


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None, page.text[:2000]
    return found.group(1)


@asynccontextmanager
async def browser(served: Served) -> AsyncIterator[httpx.AsyncClient]:
    """A client that keeps cookies, without the API's bearer header, signed in with the token."""
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        form = await client.get("/ui/login")
        assert form.status_code == 200
        signed = await client.post(
            "/ui/login", data={"csrf": csrf_of(form), "token": served.token or "", "next": "/ui/"}
        )
        assert signed.status_code == 303, signed.text
        yield client


async def test_pages_ask_for_the_token_and_keep_it_in_a_strict_httponly_cookie(
    served: Served,
) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as anonymous:
        assert (await anonymous.get("/")).headers["location"] == "/ui/"
        page = await anonymous.get("/ui/instances/x")
        assert page.status_code == 303
        assert page.headers["location"] == "/ui/login?next=/ui/instances/x"
        # A path that does not exist is not told apart from one that does.
        nowhere = await anonymous.get("/ui/nowhere")
        assert nowhere.headers["location"] == "/ui/login?next=/ui/nowhere"
        # A fragment or a form is refused outright, never redirected.
        assert (await anonymous.get("/ui/instances/live")).status_code == 401
        form = await anonymous.get("/ui/login")
        csrf = csrf_of(form)
        wrong = await anonymous.post("/ui/login", data={"csrf": csrf, "token": "nope"})
        assert wrong.status_code == 401
        assert "That is not the API token." in wrong.text
        assert "actors_session" not in anonymous.cookies
        # Without the form's CSRF token, even the right token signs nobody in.
        forged = await anonymous.post("/ui/login", data={"csrf": "x" * 43, "token": served.token})
        assert forged.status_code == 403
        right = await anonymous.post(
            "/ui/login", data={"csrf": csrf, "token": served.token, "next": "https://evil/"}
        )
        assert right.status_code == 303
        assert right.headers["location"] == "/ui/"  # never another site
        cookie = next(
            header
            for header in right.headers.get_list("set-cookie")
            if header.startswith("actors_session=")
        )
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
        assert served.token is not None
        assert served.token not in cookie
        page = await anonymous.get("/ui/")
        assert page.status_code == 200
        assert "Content-Security-Policy" in page.headers
        nowhere = await anonymous.get("/ui/nowhere")
        assert nowhere.status_code == 404
        assert "no page /ui/nowhere" in nowhere.text
        # The API itself still wants its bearer token: the cookie is the UI's.
        assert (await anonymous.get("/workflows")).status_code == 401
        signout = await anonymous.post("/ui/logout", data={"csrf": csrf_of(page)})
        assert signout.status_code == 303
        assert (await anonymous.get("/ui/")).status_code == 303


async def test_actions_need_the_forms_csrf_token_and_a_confirmation(served: Served) -> None:
    await served.register_examples()
    instance_id = await served.client.start("approval", {}, id="ui-csrf")
    await served.client.wait_for(instance_id, lambda info: "wait" in info.steps)
    async with browser(served) as client:
        page = await client.get(f"/ui/instances/{instance_id}")
        assert page.status_code == 200
        csrf = csrf_of(page)
        refused = await client.post(f"/ui/instances/{instance_id}/cancel", data={"reason": "x"})
        assert refused.status_code == 403
        other = await client.post(
            f"/ui/instances/{instance_id}/cancel",
            data={"csrf": csrf, "reason": "x"},
            headers={"Origin": "https://elsewhere.example"},
        )
        assert other.status_code == 403
        # Behind a proxy that ends TLS: the browser's origin says https, same host.
        host = httpx.URL(served.url).netloc.decode()
        proxied = await client.post(
            f"/ui/instances/{instance_id}/cancel",
            data={"csrf": csrf, "reason": "x"},
            headers={"Origin": f"https://{host}"},
        )
        assert proxied.status_code == 200  # the confirmation
        asked = await client.post(
            f"/ui/instances/{instance_id}/cancel", data={"csrf": csrf, "reason": "no longer"}
        )
        assert asked.status_code == 200
        assert "Cancel ui-csrf?" in asked.text
        info = await served.client.status(instance_id)
        assert info is not None
        assert info.status is actors.InstanceStatus.RUNNING
        done = await client.post(
            f"/ui/instances/{instance_id}/cancel",
            data={"csrf": csrf, "reason": "no longer", "confirmed": "yes"},
        )
        assert done.status_code == 303
        with trio.fail_after(10):
            ended = await served.client.wait(instance_id)
        assert ended.status is actors.InstanceStatus.CANCELLED


async def test_a_signal_with_bad_json_is_refused_with_its_error_and_nothing_is_sent(
    served: Served,
) -> None:
    await served.register_examples()
    instance_id = await served.client.start("approval", {}, id="ui-json")
    await served.client.wait_for(instance_id, lambda info: "wait" in info.steps)
    async with browser(served) as client:
        page = await client.get(f"/ui/instances/{instance_id}")
        csrf = csrf_of(page)
        for payload in ('{"by": }', "NaN", '{"a": 1, "a": 2}'):
            bad = await client.post(
                f"/ui/instances/{instance_id}/signal",
                data={"csrf": csrf, "name": "approved", "payload": payload, "confirmed": "yes"},
            )
            assert bad.status_code == 400, payload
            assert "payload is not valid JSON" in bad.text
            assert "ui-json" in bad.text
        bad_name = await client.post(
            f"/ui/instances/{instance_id}/signal",
            data={"csrf": csrf, "name": "no such.name", "payload": "1", "confirmed": "yes"},
        )
        assert bad_name.status_code == 400
        records = await served.client.history(instance_id)
        assert not [r for r in records if r["kind"] == "signal.received"]
        sent = await client.post(
            f"/ui/instances/{instance_id}/signal",
            data={"csrf": csrf, "name": "approved", "payload": '{"by": "ann"}', "confirmed": "yes"},
        )
        assert sent.status_code == 303
        with trio.fail_after(10):
            ended = await served.client.wait(instance_id)
        assert ended.status is actors.InstanceStatus.COMPLETED


async def test_filters_paging_and_counts(served: Served) -> None:
    await served.register_examples()
    for number in range(60):
        await served.client.start("greet", {"name": "x"}, id=f"ui-list-{number:02d}")
    await served.client.start("failing", {}, id="ui-other-1")
    ended = [await served.client.wait(f"ui-list-{number:02d}") for number in range(60)]
    await served.client.wait("ui-other-1")
    # In the order the orchestrator took the starts (each stamps its own), not
    # the order they were sent in: partitions are served at once.
    oldest_first = [info.id for info in sorted(ended, key=lambda i: (i.created_at, i.id))]
    async with browser(served) as client:
        page = await client.get("/ui/", params={"prefix": "ui-list-", "order": "oldest"})
        assert page.status_code == 200
        rows = re.findall(r'href="/ui/instances/(ui-[^"]+)"', page.text)
        assert rows == oldest_first[:50]
        assert "Instances 1\u201350 of 60" in page.text
        assert 'data-status="completed">60<' in page.text
        second = await client.get("/ui/", params={"prefix": "ui-list-", "page": "2"})
        rows = re.findall(r'href="/ui/instances/(ui-[^"]+)"', second.text)
        assert rows == oldest_first[9::-1]  # newest first: the oldest ten, last
        past = await client.get("/ui/", params={"prefix": "ui-list-", "page": "9"})
        assert "Instances 51\u201360 of 60" in past.text  # the last page
        failed = await client.get("/ui/instances/live", params={"status": "failed"})
        assert re.findall(r'href="/ui/instances/(ui-[^"]+)"', failed.text) == ["ui-other-1"]
        versioned = await client.get("/ui/", params={"type": "greet", "version": "2"})
        assert "No instance matches" in versioned.text
        bad = await client.get("/ui/", params={"after": "yesterday", "version": "x"})
        assert bad.status_code == 400
        assert "version must be a whole number" in bad.text


async def test_an_instance_page_shows_its_steps_timeline_and_history(served: Served) -> None:
    await served.register_examples()
    instance_id = await served.client.start("failing", {}, id="ui-failed")
    await served.client.wait(instance_id)
    async with browser(served) as client:
        page = await client.get(f"/ui/instances/{instance_id}")
        assert page.status_code == 200
        assert 'id="status">failed<' in page.text
        assert "Declined" in page.text  # the error, shown
        assert '<svg class="timeline"' in page.text
        assert 'data-step="refuse"' in page.text
        assert "activity.failed" in page.text
        missing = await client.get("/ui/instances/nobody")
        assert missing.status_code == 404
        assert "no workflow instance" in missing.text


async def test_definitions_diagram_yaml_and_diff(served: Served) -> None:
    await served.register_examples()
    await served.client.register(
        served.definitions["greet"]
        .replace("version: 1", "version: 2")
        .replace("say hello", "say hello twice")
        + "  - {id: again, activity: greet}\n"
    )
    async with browser(served) as client:
        listed = await client.get("/ui/definitions")
        assert 'href="/ui/definitions/greet/2"' in listed.text
        newest = await client.get("/ui/definitions/greet")
        assert newest.headers["location"] == "/ui/definitions/greet/2"
        page = await client.get("/ui/definitions/greet/2", params={"against": "1"})
        assert page.status_code == 200
        assert '<svg class="diagram"' in page.text
        assert ">again</text>" in page.text
        assert 'class="add">+- id: again' in page.text
        assert 'class="del">-description: say hello<' in page.text
        assert "version: 2" in page.text  # the YAML
        bad = await client.get("/ui/definitions/greet/2", params={"against": "0"})
        assert bad.status_code == 400
        missing = await client.get("/ui/definitions/greet/7")
        assert missing.status_code == 404


async def test_dead_letters_workers_and_docs(served: Served) -> None:
    await served.register_examples()
    # A start no orchestrator can read: dead-lettered, with its reason.
    await served.transport.publish("workflow.start.greet", b"\xff\x00 not a start")
    async with browser(served) as client:
        # The letter is stored by the orchestrator: wait for it on the stream.
        spec = ConsumerSpec(durable="ui-letters")
        with trio.fail_after(10):
            async with served.transport.consume(DEADLETTER_STREAM, spec) as letters:
                await letters.receive()
        page = await client.get("/ui/deadletters")
        assert "malformed" in page.text
        assert "workflow.start.greet" in page.text
        assert "ff 00 20 6e 6f 74" in page.text  # the sample, as hex: it is not text
        workers = await client.get("/ui/workers")
        assert workers.status_code == 200
        assert "<code>greet</code>" in workers.text
        assert "1 running" in workers.text  # the test's orchestrator
        # The API docs need no sign-in, as the document they render.
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as anonymous:
            docs = await anonymous.get("/docs")
            assert docs.status_code == 200
            assert 'data-path="/workflows/{id}/signals/{name}"' in docs.text
            assert "Cancel: compensations run" in docs.text
            script = await anonymous.get("/ui/static/docs.js")
            assert script.status_code == 200
            assert "javascript" in script.headers["content-type"]


async def test_parent_and_children_are_linked_both_ways(served: Served) -> None:
    await served.register_examples()
    await served.client.register(
        """
type: family
version: 1
steps:
  - {id: kid, workflow: greet, input: "{name: input.name}"}
  - id: each
    map: input.names
    concurrency: 2
    steps: [{id: hi, activity: greet, input: "{name: @}"}]
"""
    )
    parent = await served.client.start("family", {"name": "a", "names": ["b", "c", "d"]}, id="fam")
    with trio.fail_after(10):
        done = await served.client.wait(parent)
    assert done.status is actors.InstanceStatus.COMPLETED, done
    async with browser(served) as client:
        page = (await client.get("/ui/instances/fam")).text
        assert '<a href="/ui/instances/fam-kid">fam-kid</a> (greet, step kid)' in page
        assert 'data-step="each"' in page
        assert "all items done" in page
        child = (await client.get("/ui/instances/fam-kid")).text
        assert 'Parent: <a href="/ui/instances/fam" id="parent-link">fam</a>' in child


async def test_an_activity_no_worker_serves_is_flagged(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    await served.client.register("type: lonely\nsteps: [{id: a, activity: nobody_serves_this}]\n")
    await served.client.start("lonely", None, id="ui-lonely")

    def row(page: str) -> str:
        return page[page.index("<code>nobody_serves_this</code>") :].split("</tr>")[0]

    def cells(page: str) -> list[str]:
        return re.findall(r"<td>([^<]*)</td>", row(page))

    monkeypatch.setattr("actors.http.ui._more.STUCK_AFTER", 0.0)  # 30 s; here at once
    async with browser(served) as client:
        # No worker ever made the type's consumer.
        unserved = (await client.get("/ui/workers")).text
        assert "no worker has ever served it" in row(unserved)
        assert "lonely v1" in row(unserved)
        # A worker comes (the consumer a worker would use), takes the task...
        spec = Layout().activity_consumer("nobody_serves_this", ack_wait=30.0)
        with trio.fail_after(10):
            async with served.transport.consume(TASKS_STREAM, spec) as tasks:
                await tasks.receive()
                taken = (await client.get("/ui/workers")).text
                assert "no worker has ever served it" not in row(taken)
                # A consumer is no worker: none announces itself as serving the type.
                assert "no live worker serves it: its tasks wait" in row(taken)
                assert cells(taken)[:2] == ["0", "1"]  # none waiting, one running
            # ...and goes away, handing it back: the task is held on, and flagged.
        left = (await client.get("/ui/workers")).text
        assert "is no worker serving nobody_serves_this?" in row(left)


async def test_the_live_workers_are_listed_under_the_types_they_serve(served: Served) -> None:
    await served.register_examples()
    await served.client.register("type: alone\nsteps: [{id: a, activity: nobody_runs_this}]\n")
    [worker] = [s for s in served.running if isinstance(s, actors.Worker)]
    # A foreign writer's mistake is skipped, not a broken page.
    presence = await served.transport.kv(PRESENCE_BUCKET)
    await presence.put("garbled-1", b"not json at all")
    async with browser(served) as client:
        page = (await client.get("/ui/workers")).text
    greet = page[page.index("<code>greet</code>") :].split("</tr>")[0]
    assert f"<code>{worker.id}</code> on {socket.gethostname()}, seen " in greet
    assert re.search(r"seen \d+ s ago, 0 running", greet)
    assert "no live worker serves it" not in greet
    alone = page[page.index("<code>nobody_runs_this</code>") :].split("</tr>")[0]
    assert 'class="flag unserved"' not in alone  # no consumer: the older flag says it
    assert "no worker has ever served it" in alone
    table = page[page.index('<table id="workers">') :].split("</table>")[0]
    assert f"<code>{worker.id}</code>" in table
    assert "<code>greet</code>, <code>odd_values</code>, <code>refuse</code>" in table
    assert "garbled-1" not in page


async def test_a_type_whose_workers_all_stopped_is_flagged(served: Served) -> None:
    await served.register_examples()
    [worker] = [s for s in served.running if isinstance(s, actors.Worker)]
    presence = await served.transport.kv(PRESENCE_BUCKET)
    since = await presence.latest_revision()
    worker.shutdown()
    with trio.fail_after(10):
        async with presence.watch(worker.id, since=since) as changes:
            async for change in changes:
                if change.op is not KVOp.PUT:
                    break  # its entry deleted on the way out
    async with browser(served) as client:
        page = (await client.get("/ui/workers")).text
    greet = page[page.index("<code>greet</code>") :].split("</tr>")[0]
    assert "no live worker serves it" in greet
    assert 'id="no-worker"' in page


async def test_an_orchestrator_that_stopped_renewing_is_flagged(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a crashed orchestrator leaves behind: its announcement, never renewed.
    partitions = await served.transport.kv(PARTITIONS_BUCKET)
    await partitions.put("member.ghost-1", b'{"member": "ghost-1"}')
    monkeypatch.setattr("actors.http.ui._more.SILENT_AFTER", 0.0)
    async with browser(served) as client:
        first = (await client.get("/ui/workers")).text
        assert "2 running" in first  # seen once: nothing to tell yet
        second = (await client.get("/ui/workers")).text
        ghost = second[second.index("<code>ghost-1</code>") :].split("</li>")[0]
        assert "has not changed for" in ghost
        assert "it stopped" in ghost


async def test_a_long_history_is_paged_and_terminate_is_confirmed(served: Served) -> None:
    await served.register_examples()
    await served.client.register(
        "type: many\nsteps:\n  - id: each\n    map: input\n    concurrency: 20\n"
        '    steps: [{id: hi, activity: greet, input: "{name: @}"}]\n'
        "  - {id: hold, wait_signal: never}\n"
    )
    instance_id = await served.client.start("many", [f"n{i}" for i in range(60)], id="ui-many")
    with trio.fail_after(20):
        await served.client.wait_for(instance_id, lambda info: "hold" in info.steps)
    records = await served.client.history(instance_id)
    assert len(records) > 100
    async with browser(served) as client:
        first = (await client.get(f"/ui/instances/{instance_id}")).text
        assert "Records 1\u2013100 of" in first
        assert "page 1 of 2" in first
        second = (await client.get(f"/ui/instances/{instance_id}", params={"history": "2"})).text
        assert f"Records 101\u2013{len(records)} of {len(records)}" in second
        assert "signal.waiting" in second
        # The live part keeps to the page asked for.
        live = (await client.get(f"/ui/instances/{instance_id}/live", params={"history": "2"})).text
        assert f"Records 101\u2013{len(records)} of" in live
        csrf = csrf_of(await client.get(f"/ui/instances/{instance_id}"))
        asked = await client.post(f"/ui/instances/{instance_id}/terminate", data={"csrf": csrf})
        assert "without compensation" in asked.text
        info = await served.client.status(instance_id)
        assert info is not None
        assert not info.status.terminal
        done = await client.post(
            f"/ui/instances/{instance_id}/terminate",
            data={"csrf": csrf, "reason": "enough", "confirmed": "yes"},
        )
        assert done.headers["location"] == f"/ui/instances/{instance_id}?done=terminate"
        with trio.fail_after(10):
            ended = await served.client.wait(instance_id)
        assert ended.status is actors.InstanceStatus.TERMINATED
        page = (await client.get(done.headers["location"])).text
        assert "Terminate requested." in page
        assert 'id="actions-h"' not in page  # nothing more to do to it


async def test_pause_and_resume_are_offered_confirmed_and_refused_when_they_do_not_apply(
    served: Served,
) -> None:
    await served.register_examples()
    instance_id = await served.client.start("approval", {}, id="ui-pause")
    with trio.fail_after(10):
        await served.client.wait_for(instance_id, lambda info: "wait" in info.steps)
    page_url = f"/ui/instances/{instance_id}"
    async with (
        browser(served) as client,
        httpx.AsyncClient(base_url=served.url, timeout=30) as stranger,
    ):
        page = await client.get(page_url)
        assert 'id="pause-form"' in page.text
        assert 'id="resume-form"' not in page.text
        assert 'id="retry-form"' not in page.text
        assert '<dd id="run">1</dd>' in page.text
        csrf = csrf_of(page)
        # Without a sign-in (or the bearer token), with a stale CSRF token, or
        # an action that does not apply: refused, and nothing is done.
        unsigned = await stranger.post(f"{page_url}/pause", data={"csrf": csrf, "confirmed": "yes"})
        assert unsigned.status_code == 401
        forged = await client.post(f"{page_url}/pause", data={"csrf": "x" * 43, "confirmed": "yes"})
        assert forged.status_code == 403
        for action in ("resume", "retry", "rerun"):
            refused = await client.post(
                f"{page_url}/{action}", data={"csrf": csrf, "confirmed": "yes"}
            )
            assert refused.status_code == 409, (action, refused.text)
            assert "OperationRefused" in refused.text
        asked = await client.post(f"{page_url}/pause", data={"csrf": csrf, "reason": "disk full"})
        assert asked.status_code == 200
        assert f"Pause {instance_id}?" in asked.text
        info = await served.client.status(instance_id)
        assert info is not None
        assert info.paused is None
        assert info.run == 1
        done = await client.post(
            f"{page_url}/pause", data={"csrf": csrf, "reason": "disk full", "confirmed": "yes"}
        )
        assert done.status_code == 303
        assert done.headers["location"] == f"{page_url}?done=pause"
        # The page it leads to shows the pause: the action waited for it.
        paused = (await client.get(done.headers["location"])).text
        assert "Pause requested." in paused
        assert 'id="paused-badge"' in paused
        assert "by web UI" in paused
        assert "disk full" in paused
        assert 'id="resume-form"' in paused
        assert 'id="pause-form"' not in paused
        again = await client.post(f"{page_url}/pause", data={"csrf": csrf, "confirmed": "yes"})
        assert again.status_code == 409
        # A signal that arrives while paused is held, and the page counts it.
        await served.client.signal(instance_id, "approved", {"by": "ann"})
        with trio.fail_after(10):
            await served.client.wait_for(instance_id, lambda info: info.held >= 1)
        assert "holding 1 event;" not in paused
        assert "holding 1 event" in (await client.get(page_url)).text
        resumed = await client.post(
            f"{page_url}/resume", data={"csrf": csrf, "reason": "fixed", "confirmed": "yes"}
        )
        assert resumed.headers["location"] == f"{page_url}?done=resume"
        with trio.fail_after(10):
            ended = await served.client.wait(instance_id)
        assert ended.status is actors.InstanceStatus.COMPLETED
        assert ended.output == {"greeting": "hello ann"}
        final = (await client.get(page_url)).text
        assert 'id="paused"' not in final
        assert 'id="rerun-form"' not in final  # completed: nothing to run again


async def test_retry_from_a_chosen_step_and_rerun_with_a_link_to_the_new_instance(
    served: Served,
) -> None:
    await served.register_examples()
    instance_id = await served.client.start("failing", {}, id="ui-retry")
    with trio.fail_after(10):
        failed = await served.client.wait(instance_id)
    assert failed.status is actors.InstanceStatus.FAILED
    page_url = f"/ui/instances/{instance_id}"
    async with browser(served) as client:
        page = await client.get(page_url)
        assert 'id="retry-form"' in page.text
        assert '<option value="refuse">step refuse</option>' in page.text
        assert 'id="rerun-form"' in page.text
        assert 'id="pause-form"' not in page.text
        csrf = csrf_of(page)
        paused = await client.post(f"{page_url}/pause", data={"csrf": csrf, "confirmed": "yes"})
        assert paused.status_code == 409
        no_csrf = await client.post(f"{page_url}/retry", data={"confirmed": "yes"})
        assert no_csrf.status_code == 403
        wrong = await client.post(
            f"{page_url}/retry", data={"csrf": csrf, "step": "nope", "confirmed": "yes"}
        )
        assert wrong.status_code == 400
        assert "&#39;nope&#39; is not a top-level step of failing (it has: refuse)" in wrong.text
        asked = await client.post(f"{page_url}/retry", data={"csrf": csrf, "step": "refuse"})
        assert f"Retry {instance_id} from step refuse, as run 2?" in asked.text
        info = await served.client.status(instance_id)
        assert info is not None
        assert info.run == 1
        done = await client.post(
            f"{page_url}/retry",
            data={"csrf": csrf, "step": "refuse", "reason": "card fixed", "confirmed": "yes"},
        )
        assert done.headers["location"] == f"{page_url}?done=retry"
        shown = (await client.get(done.headers["location"])).text
        assert "Retry requested." in shown
        assert '<dd id="run">2</dd>' in shown
        history = await served.client.history(instance_id)
        retried = [r for r in history if r["kind"] == "instance.retried"]
        assert len(retried) == 1
        assert retried[0]["detail"]["by"] == "web UI"
        with trio.fail_after(10):
            again = await served.client.wait_for(
                instance_id, lambda info: info.run == 2 and info.status.terminal
            )
        assert again.status is actors.InstanceStatus.FAILED  # the card is still declined
        rerun = await client.post(f"{page_url}/rerun", data={"csrf": csrf})
        assert "Start a new instance of failing v1 with the input of ui-retry?" in rerun.text
        started = await client.post(f"{page_url}/rerun", data={"csrf": csrf, "confirmed": "yes"})
        assert started.status_code == 303
        location = started.headers["location"]
        found = re.fullmatch(rf"{page_url}\?done=rerun&rerun=([0-9a-f]+)", location)
        assert found is not None, location
        new_id = found.group(1)
        shown = (await client.get(location)).text
        assert f'<a href="/ui/instances/{new_id}" id="rerun-link">' in shown
        with trio.fail_after(10):
            new = await served.client.wait(new_id)
        assert (new.type, new.input, new.run) == ("failing", {}, 1)
        # A hand-made link never puts anything but an instance id in the page.
        odd = await client.get(page_url, params={"done": "rerun", "rerun": '"><script>'})
        assert "rerun-link" not in odd.text


async def test_the_schedules_pages_and_their_confirmed_actions(served: Served) -> None:
    await served.register_examples()
    await served.client.schedules.create(
        {
            "id": "nightly",
            "workflow": "greet",
            "input": {"name": "ann"},
            "spec": {"cron": "0 3 * * *"},
        }
    )
    await served.client.schedules.create(
        {
            "id": "every-ten",
            "workflow": "greet",
            "input": {"name": "bo"},
            "spec": {"intervals": [{"every": "10m", "offset": "1m"}], "jitter": "30s"},
        }
    )
    async with (
        browser(served) as client,
        httpx.AsyncClient(base_url=served.url, timeout=30) as stranger,
    ):
        assert (await stranger.get("/ui/schedules")).status_code == 303
        listed = await client.get("/ui/schedules")
        assert listed.status_code == 200
        assert '<a href="/ui/schedules" aria-current="page">Schedules</a>' in listed.text
        row = re.search(r'<tr data-schedule="nightly">.*?</tr>', listed.text, re.S)
        assert row is not None
        assert '<a href="/ui/schedules/nightly">nightly</a>' in row.group(0)
        assert "greet" in row.group(0)
        assert "<td>no</td>" in row.group(0)
        assert listed.text.index('data-schedule="every-ten"') < listed.text.index(
            'data-schedule="nightly"'
        )  # by id
        often = (await client.get("/ui/schedules/every-ten")).text
        assert "<li>every 600 s, offset 60 s</li>" in often
        assert "<li>jitter up to 30 s</li>" in often
        page = await client.get("/ui/schedules/nightly")
        assert "cron 0 3 * * *" in page.text
        assert page.text.count("03:00:00.000</time></li>") == 5
        csrf = csrf_of(page)
        forged = await client.post(
            "/ui/schedules/nightly/pause", data={"csrf": "y" * 43, "confirmed": "yes"}
        )
        assert forged.status_code == 403
        assert (
            await stranger.post("/ui/schedules/nightly/trigger", data={"csrf": csrf})
        ).status_code == 401
        not_paused = await client.post(
            "/ui/schedules/nightly/unpause", data={"csrf": csrf, "confirmed": "yes"}
        )
        assert not_paused.status_code == 409
        asked = await client.post(
            "/ui/schedules/nightly/pause", data={"csrf": csrf, "note": "holiday"}
        )
        assert "Pause schedule nightly?" in asked.text
        assert 'action="/ui/schedules/nightly/pause"' in asked.text
        assert not (await served.client.schedules.get("nightly")).paused
        done = await client.post(
            "/ui/schedules/nightly/pause",
            data={"csrf": csrf, "note": "holiday", "confirmed": "yes"},
        )
        assert done.headers["location"] == "/ui/schedules/nightly?done=pause"
        state = await served.client.schedules.get("nightly")
        assert (state.paused, state.note) == (True, "holiday")
        paused = (await client.get(done.headers["location"])).text
        assert "None: it is paused." in paused
        assert 'id="unpause-form"' in paused
        assert (
            await client.post(
                "/ui/schedules/nightly/pause", data={"csrf": csrf, "confirmed": "yes"}
            )
        ).status_code == 409
        triggered = await client.post(
            "/ui/schedules/nightly/trigger", data={"csrf": csrf, "confirmed": "yes"}
        )
        found = re.fullmatch(
            r"/ui/schedules/nightly\?done=trigger&started=(.+)", triggered.headers["location"]
        )
        assert found is not None, triggered.headers["location"]
        with trio.fail_after(20):
            assert await served.client.result(found.group(1)) == {"greeting": "hello ann"}
        runs = (await client.get("/ui/schedules/nightly")).text
        assert f'<a href="/ui/instances/{found.group(1)}">' in runs
        assert "status-completed" in runs
        unpaused = await client.post(
            "/ui/schedules/nightly/unpause", data={"csrf": csrf, "confirmed": "yes"}
        )
        assert unpaused.status_code == 303
        assert not (await served.client.schedules.get("nightly")).paused
        missing = await client.get("/ui/schedules/nowhere")
        assert missing.status_code == 404


async def test_an_instance_queued_behind_a_concurrency_limit_shows_the_limit(
    served: Served,
) -> None:
    await served.client.register(
        "type: single\nconcurrency: [{key: \"'all'\", limit: 1}]\n"
        "steps: [{id: hold, wait_signal: go}]\n"
    )
    first = await served.client.start("single", {}, id="ui-first")
    second = await served.client.start("single", {}, id="ui-second")
    with trio.fail_after(10):
        await served.client.wait_for(second, lambda info: info.queued is not None)
        await served.client.wait_for(first, lambda info: "hold" in info.steps)
    async with browser(served) as client:
        queued = (await client.get(f"/ui/instances/{second}")).text
        assert "<dt>Queued</dt>" in queued
        assert "concurrency[0]: &#39;all&#39; = &#34;all&#34; (limit 1)" in queued
        running = (await client.get(f"/ui/instances/{first}")).text
        assert "<dt>Queued</dt>" not in running
