"""Scenario 4 of the fault-injection suite: the broker goes away under a running engine.

Orchestrator and worker subprocesses serve ledger workflows against a
nats-server that fsyncs every write (``sync_interval: always``; without it a
SIGKILLed server may lose writes it acknowledged, which is NATS's documented
behaviour, not the engine's). Workflows are started throughout, each retried
with its id until the broker accepts it, as a careful client would. Then the
server is SIGKILLed and, after a while, restarted on the same port and store.

What must hold (and :func:`checker.check_run` judges at the end): every
accepted workflow completes once, with the right output; no service exits
while the broker is away (services reconnect forever, with a backoff capped at
``ConnectOptions.max_reconnect_wait``, 5 s); each is serving again once the
broker is back; a service started while the broker is away gives up with exit
code 2 within its connect window (``connect_timeout`` 5 s times ``max(2,
servers)``, plus 1 s), to be restarted by its supervisor; and clients fail with
a clear error within a bounded time rather than hang.

A broker that closes a connection for good (credentials revoked or rotated)
must make every service exit non-zero, never 0 and never hang: a supervisor
restarts it, and with the new credentials it finishes the work.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from checker import (
    LEDGER_FLOW,
    LEDGER_STEPS,
    LEDGER_TYPE,
    Starter,
    check_run,
    ledger_ends,
    ledger_input,
)
from ledger_activities import read_ledger
from processes import REPO_ROOT, Services, history_problems, read_history, read_states

import actors
from actors.testing import NatsServer, find_nats_server, free_port
from transport import (
    ConnectionLostError,
    ConnectOptions,
    Transport,
    TransportClosedError,
    TransportTimeoutError,
    open_transport,
)

pytestmark = pytest.mark.jetstream

#: Seconds before an event or task whose ack was lost with the server comes back.
ACK_WAIT = "5"
#: How long a process starting with the broker away tries before it exits 2:
#: connect_timeout (5 s) times max(2, number of URLs), plus 1 s.
CONNECT_WINDOW = 11.0
#: Room for a slow, shared machine on top of every bound asserted here.
SLACK = 15.0
#: Seconds after the broker came back by which every process has reconnected
#: (its backoff is 5 s at most) and sent what it buffered meanwhile.
SETTLE = 6.0
#: Seconds watched after that, and messages each process must send in them to
#: count as serving. A serving process makes a pull request on each of its
#: consumers every 10 s at least, idle or not; one whose consumer loop died,
#: or hung, sends nothing (nats-py's own thread still answers the server's
#: pings, which are not messages).
SERVING_WINDOW = 15.0
SERVING_MESSAGES = 1
#: Whether processes' sockets can be looked up (Linux ``/proc``).
HAS_PROC = Path("/proc/net/tcp").exists()
#: The streams' duplicate window (``Layout``): a publish repeated later is stored again.
DUPLICATE_WINDOW = 120.0
#: The id of a start attempted while the broker is away (its outcome unknown).
AMBIGUOUS = "started-in-outage"


def last_run(services: Services, name: str) -> list[str]:
    """The lines the latest run of service ``name`` wrote (its log holds every run)."""
    return services.services[name].log().rpartition("\n=== ")[2].splitlines()[1:]


def running(services: Services, names: Iterable[str]) -> dict[str, int | None]:
    """name -> exit code (``None`` while running)."""
    return {name: services.services[name].proc.poll() for name in names}


# -- which process is serving ------------------------------------------------------------


def _local_ports(pid: int) -> set[int]:
    """The local TCP ports of the sockets process ``pid`` holds (Linux ``/proc``)."""
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def messages_sent(server: NatsServer, pids: Mapping[str, int]) -> dict[str, int]:
    """name -> messages the process published on its current connections (the
    server's ``in_msgs``): publishes, acks, pull requests, state writes."""
    connections = server.monitor("/connz?limit=4096")["connections"]
    by_port = {c["port"]: int(c.get("in_msgs", 0)) for c in connections}
    return {
        name: sum(by_port.get(port, 0) for port in _local_ports(pid)) for name, pid in pids.items()
    }


class ServingProbe:
    """Whether each service keeps sending once the broker is back.

    :meth:`run` samples the messages each process sent on its new connection
    :data:`SETTLE` seconds after the restart (by then it has reconnected, and
    sent what it buffered while the broker was away); :meth:`check` wants
    :data:`SERVING_MESSAGES` more from each within :data:`SERVING_WINDOW`
    seconds of that. How much work each did is
    printed, not asserted: a burst of events can go to whichever process
    asked first.
    """

    def __init__(
        self, server: NatsServer, services: Services, names: list[str], ledger_mark: int
    ) -> None:
        self.server = server
        self.services = services
        self.names = names
        self.ledger_mark = ledger_mark
        self.first: dict[str, int] = {}
        self.at = 0.0
        self.sampled = trio.Event()

    async def _sample(self) -> dict[str, int]:
        pids = {name: self.services.services[name].pid for name in self.names}
        return await trio.to_thread.run_sync(messages_sent, self.server, pids)

    async def run(self) -> None:
        await trio.sleep(SETTLE)
        if HAS_PROC:
            self.first = await self._sample()
        self.at = trio.current_time()
        self.sampled.set()

    async def check(self) -> None:
        await self.sampled.wait()
        if not HAS_PROC:
            return  # not Linux: the workflows completing is all the evidence there is
        sent: dict[str, int] = {}
        # Done once every process sent enough; failed if one has not by the window's end.
        with trio.move_on_at(self.at + SERVING_WINDOW):
            while True:
                second = await self._sample()
                sent = {name: second[name] - self.first[name] for name in self.names}
                if all(count >= SERVING_MESSAGES for count in sent.values()):
                    break
                # The server's counters of other processes' connections: poll them.
                await trio.sleep(0.5)
        since = read_ledger(self.services.ledger)[self.ledger_mark :]
        runs = {
            name: sum(e.phase == "end" and e.pid == self.services.services[name].pid for e in since)
            for name in self.names
        }
        print(f"after the broker came back: messages sent {sent}; activity runs {runs}")
        for name, count in sent.items():
            assert count >= SERVING_MESSAGES, f"{name} stopped sending: {sent}"


async def _serve(
    services: Services, orchestrators: int, workers: int, ack_wait: str
) -> tuple[list[str], list[str]]:
    """Start ``orchestrator-i`` and ``worker-i`` services and wait until each serves;
    their names."""
    orchs = [f"orchestrator-{i}" for i in range(orchestrators)]
    works = [f"worker-{i}" for i in range(workers)]
    for name in orchs:
        services.orchestrator(name, "--ack-wait", ack_wait)
    for name in works:
        services.worker(name, "--ack-wait", ack_wait)
    await services.wait_ready(*orchs, *works)
    return orchs, works


@dataclass
class _LedgerRun:
    """Services serving ``LEDGER_FLOW`` on a broker, and a client starting workflows."""

    services: Services
    #: The names of the services that must serve to the end.
    everyone: list[str]
    transport: Transport
    client: actors.Client
    nursery: trio.Nursery
    starter: Starter

    def watch(self, server: NatsServer) -> ServingProbe:
        """A probe, running from now on, that every service in ``everyone`` serves."""
        probe = ServingProbe(
            server, self.services, self.everyone, len(read_ledger(self.services.ledger))
        )
        self.nursery.start_soon(probe.run)
        return probe

    async def check(
        self, server: NatsServer, probe: ServingProbe, *, republished: bool = False
    ) -> None:
        """Once every start is accepted: each workflow ran exactly once
        (``check_run``), every service still runs and served since ``probe``
        began. ``republished``: history records stored twice after a long
        outage are not problems (``_without_republished``)."""
        starter = self.starter
        with trio.fail_after(300):
            await starter.done.wait()
        print(f"{len(starter.accepted)} starts accepted, {starter.failures} failed and retried")
        report = await check_run(
            self.transport, self.client, starter.accepted, self.services.ledger, servers=[server]
        )
        if republished:
            report.problems = await _without_republished(
                self.transport, self.client, starter.accepted, report.problems
            )
        report.assert_ok()
        assert running(self.services, self.everyone) == dict.fromkeys(self.everyone)
        await probe.check()


@asynccontextmanager
async def _ledger_run(
    server: NatsServer, tmp_path: Path, orchestrators: int, workers: int, ack_wait: str
) -> AsyncIterator[_LedgerRun]:
    """``_serve`` these services, with ``LEDGER_FLOW`` registered; after the
    block, each of ``everyone`` must still drain and stop cleanly (exit 0), as
    a supervisor's stop expects."""
    with Services(server.url, tmp_path / "services", tmp_path / "ledger") as services:
        orchs, works = await _serve(services, orchestrators, workers, ack_wait)
        everyone = orchs + works
        async with (
            open_transport(server.url) as transport,
            actors.Client(transport) as client,
            trio.open_nursery() as nursery,
        ):
            await client.register(LEDGER_FLOW)
            yield _LedgerRun(services, everyone, transport, client, nursery, Starter(client))
        assert await services.terminate_all() == dict.fromkeys(everyone, 0)


# -- 4a. a short outage ------------------------------------------------------------------


async def _short_outages(
    server: NatsServer,
    tmp_path: Path,
    seed: int,
    *,
    workflows: int,
    outages: int,
    down: float,
    orchestrators: int,
    workers: int,
    ack_wait: str = ACK_WAIT,
) -> None:
    rng = random.Random(seed)
    async with _ledger_run(server, tmp_path, orchestrators, workers, ack_wait) as run:
        services, everyone = run.services, run.everyone
        # Paced so that starts go on through every outage.
        pause = (outages * (down + 4)) / workflows
        run.nursery.start_soon(run.starter.run, workflows, pause)
        steps = 4 * workflows
        # Each outage lands while workflows are in flight: after a random
        # number of activity runs, spread over the run.
        marks = sorted(rng.sample(range(steps // 10, steps * 2 // 3), outages))
        print(f"SIGKILL of nats-server after {marks} activity runs, {down}s each")
        for mark in marks:
            await ledger_ends(services.ledger, mark)
            await trio.to_thread.run_sync(server.kill)
            killed = time.monotonic()
            await trio.sleep(down)
            assert running(services, everyone) == dict.fromkeys(everyone), (
                "a service exited while the broker was away"
            )
            await trio.to_thread.run_sync(server.restart)
            print(f"broker back after {time.monotonic() - killed:.1f}s")
        # Watched from the last restart on.
        probe = run.watch(server)
        await run.check(server, probe)


async def test_broker_killed_for_five_seconds(
    synced_server: NatsServer, tmp_path: Path, seed: int
) -> None:
    """nats-server SIGKILLed for 5 s mid-run, back on its port and store: two
    orchestrators and two workers reconnect by themselves, none exits, each serves
    afterwards, and every accepted workflow completes exactly once."""
    await _short_outages(
        synced_server, tmp_path, seed, workflows=40, outages=1, down=5, orchestrators=2, workers=2
    )


@pytest.mark.chaos
async def test_broker_killed_again_and_again(
    synced_server: NatsServer, tmp_path: Path, seed: int
) -> None:
    """Four SIGKILLs of nats-server, 5 s each, among 400 workflows, with the
    services' default ack wait (30 s): the same guarantees."""
    await _short_outages(
        synced_server,
        tmp_path,
        seed,
        workflows=400,
        outages=4,
        down=5,
        orchestrators=2,
        workers=2,
        ack_wait="30",
    )


# -- 4b. an outage longer than any connect window -----------------------------------------


async def _call_fails(what: str, call: Callable[[], Awaitable[object]], bound: float) -> None:
    """``call`` raises a broker error (not hangs) within ``bound`` seconds (plus slack)."""
    began = time.monotonic()
    with pytest.raises((ConnectionLostError, TransportTimeoutError)) as raised:
        with trio.fail_after(bound + SLACK):
            await call()
    print(f"{what} failed after {time.monotonic() - began:.1f}s: {raised.value!r}")


async def _without_republished(
    transport: Transport, client: actors.Client, ids: Mapping[str, int], problems: list[str]
) -> list[str]:
    """``problems`` without the checker's history findings that records published
    twice explain, once each such instance's history is checked with one copy of each.

    After an outage longer than the duplicate window, a record stored just
    before the kill (its acknowledgement lost) is published again when its
    event returns, and stored again: two identical records of one ``seq``
    (docs/wire.md, "History records"). The state advanced once; ``Client.history``
    shows each record once. Anything else about those instances still counts.
    """
    states = await read_states(transport, ids)
    with trio.fail_after(180):
        records = await read_history(
            transport, sum(s.seq for s in states.values()), durable="republished"
        )
    copies: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for record in records:
        copies.setdefault((record["instance"], record["seq"]), []).append(record)
    twice = {key for key, found in copies.items() if len(found) > 1}
    for key in twice:
        first, *others = copies[key]
        assert all(other == first for other in others), f"{key}: different records {copies[key]}"
    republished = {instance for instance, _seq in twice}
    print(f"records stored twice, past the duplicate window: {sorted(twice)}")
    once = {
        instance: [copies[key][0] for key in sorted(copies) if key[0] == instance]
        for instance in republished
    }
    assert not history_problems(once, states, sorted(republished), LEDGER_STEPS)
    for instance in republished:
        shown = [record["seq"] for record in await client.history(instance)]
        assert shown == list(range(1, states[instance].seq + 1)), (instance, shown)
    history_findings = (": seqs ", ": activity.completed per step ", ": record kinds ")
    return [
        problem
        for problem in problems
        if not (
            problem.split(":", 1)[0] in republished
            and any(finding in problem for finding in history_findings)
        )
    ]


async def _clients_fail_fast(url: str, client: actors.Client) -> None:
    """While the broker is away: a connected client's calls fail within a request
    deadline or two, and a new client gives up within its connect window."""

    async def connect() -> None:
        async with actors.Client.connect(url):
            pass  # pragma: no cover - the broker is away

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_call_fails, "status", lambda: client.status("wf-00000"), 10.0)
        start = partial(client.start, LEDGER_TYPE, ledger_input(-1), id=AMBIGUOUS)
        nursery.start_soon(_call_fails, "start", start, 10.0)
        nursery.start_soon(_call_fails, "a new client", connect, CONNECT_WINDOW)


async def _cli_fails_fast(url: str) -> None:
    """The CLI against the absent broker: exit 2, one clear line, within its window."""
    began = time.monotonic()
    with trio.fail_after(CONNECT_WINDOW + SLACK):
        done = await trio.run_process(
            [sys.executable, "-m", "actors", "--url", url, "status", "wf-00000"],
            cwd=REPO_ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert f"cannot reach the broker at {url}" in stderr, stderr
    print(f"the CLI exited 2 after {time.monotonic() - began:.1f}s")


async def _late_service_gives_up(services: Services, name: str) -> None:
    """A worker started while the broker is away (a supervisor's restart) exits 2 with
    a one-line reason within its connect window."""
    began = time.monotonic()
    service = services.worker(name, "--ack-wait", ACK_WAIT)
    with trio.fail_after(CONNECT_WINDOW + SLACK):
        code = await trio.to_thread.run_sync(service.proc.wait, abandon_on_cancel=True)
    last = service.log().strip().splitlines()[-1]
    assert code == 2, service.log()
    assert last.startswith("worker: no server of"), last
    assert "answered in time" in last, last
    print(f"{name} exited 2 after {time.monotonic() - began:.1f}s: {last}")


async def _long_outage(
    server: NatsServer,
    tmp_path: Path,
    *,
    workflows: int,
    down: float,
    orchestrators: int,
    workers: int,
    ack_wait: str = ACK_WAIT,
) -> None:
    assert down > CONNECT_WINDOW, "the outage must outlast a fresh process's connect window"
    print(f"data (store, service logs, ledger): {tmp_path}")
    async with _ledger_run(server, tmp_path, orchestrators, workers, ack_wait) as run:
        services, everyone, client = run.services, run.everyone, run.client
        # Starts go on through the outage: the one under way is retried.
        run.nursery.start_soon(run.starter.run, workflows, 0.1)
        await ledger_ends(services.ledger, workflows // 2)
        await trio.to_thread.run_sync(server.kill)
        killed = time.monotonic()
        async with trio.open_nursery() as checks:
            checks.start_soon(_late_service_gives_up, services, "late-worker")
            checks.start_soon(_clients_fail_fast, server.url, client)
            checks.start_soon(_cli_fails_fast, server.url)
        await trio.sleep(max(0.0, down - (time.monotonic() - killed)))
        # Services that were serving wait for the broker as long as it takes.
        assert running(services, everyone) == dict.fromkeys(everyone)
        await trio.to_thread.run_sync(server.restart)
        print(f"broker back after {time.monotonic() - killed:.1f}s")
        # The supervisor restarts what exited; now it connects.
        services.worker("late-worker", "--ack-wait", ack_wait)
        everyone.append("late-worker")
        probe = run.watch(server)
        # The start that failed during the outage may still have been stored:
        # nats-py sends what it buffered once it reconnects ("the outcome is
        # unknown", the error said). Retried with its id, it counts once.
        retry = Starter(client, prefix=AMBIGUOUS)
        await retry.run_one(AMBIGUOUS, -1)
        run.starter.accepted[AMBIGUOUS] = -1
        await services.wait_ready("late-worker")
        await run.check(server, probe, republished=down > DUPLICATE_WINDOW)


async def test_broker_down_past_the_connect_window(
    synced_server: NatsServer, tmp_path: Path
) -> None:
    """nats-server away for 15 s, longer than a fresh process's connect window:
    the serving orchestrator and worker wait and serve again, a worker started
    meanwhile exits 2 within its window and serves once restarted, clients and the
    CLI fail with a clear error in bounded time, and every accepted workflow
    completes exactly once."""
    await _long_outage(synced_server, tmp_path, workflows=30, down=15, orchestrators=1, workers=1)


@pytest.mark.chaos
async def test_broker_down_for_two_and_a_half_minutes(
    synced_server: NatsServer, tmp_path: Path
) -> None:
    """nats-server away for 150 s: past the default ack wait (30 s) and the
    streams' duplicate window (120 s), with two orchestrators and two workers:
    the same guarantees."""
    await _long_outage(
        synced_server,
        tmp_path,
        workflows=300,
        down=150,
        orchestrators=2,
        workers=2,
        ack_wait="30",
    )


# -- the broker closes the connection for good --------------------------------------------


def _reload_with_token(server: NatsServer, token: str) -> None:
    """Give the running server a new token (config reload by SIGHUP): it drops every
    connection made with the old one."""
    server.config = {**server.config, "authorization": {"token": token}}
    text = "".join(
        f"{json.dumps(key)}: {json.dumps(value)}\n" for key, value in server.config.items()
    )
    server.config_path.write_text(text)
    assert server.pid is not None
    os.kill(server.pid, signal.SIGHUP)


async def _serve_with_token(services: Services, token: str) -> ConnectOptions:
    """Start the services ``orchestrator`` and ``worker`` with ``token`` and wait
    until both serve; a client's options with the same token."""
    services.orchestrator("orchestrator", "--ack-wait", ACK_WAIT, "--token", token)
    services.worker("worker", "--ack-wait", ACK_WAIT, "--token", token)
    await services.wait_ready("orchestrator", "worker")
    return ConnectOptions(token=token)


@pytest.mark.parametrize("how", ["reload", "restart"])
async def test_revoked_credentials_make_services_exit_nonzero(tmp_path: Path, how: str) -> None:
    """The server stops accepting the services' token while workflows are in flight,
    by a config reload (it closes their connections with an error) or by a restart
    with a new token (every reconnect is refused).

    Regression: the orchestrator used to exit 0 (which a supervisor restarting on
    failure leaves dead) and the worker to stay up serving nothing, forever; on a
    restart both retried the old token forever. Now each exits 2 within seconds
    with a one-line reason; a client waiting for a result gets an error instead of
    waiting forever; restarted with the new token, the services finish every
    accepted workflow exactly once.
    """
    if os.environ.get("NATS_URL"):
        pytest.skip("NATS_URL is set: this test needs a server of its own")
    print(f"data (store, service logs, ledger): {tmp_path}")
    config = {"jetstream": {"sync_interval": "always"}, "authorization": {"token": "old-token"}}
    server = NatsServer(tmp_path / "nats", config=config)
    await trio.to_thread.run_sync(server.start)
    names = ["orchestrator", "worker"]
    try:
        with Services(server.url, tmp_path / "services", tmp_path / "ledger") as services:
            old = await _serve_with_token(services, "old-token")
            async with (
                open_transport(server.url, old) as transport,
                actors.Client(transport) as client,
            ):
                await client.register(LEDGER_FLOW)
                starter = Starter(client)
                await starter.run(20, 0.0)
                await ledger_ends(services.ledger, 10)
                with trio.fail_after(30 + SLACK):
                    async with trio.open_nursery() as nursery:

                        async def wait_for_a_result() -> None:
                            # An instance that never comes: only the error can end this wait.
                            with pytest.raises(TransportClosedError):
                                await client.result("never-started")

                        nursery.start_soon(wait_for_a_result)
                        # Time for the waiter to register: the client shows no
                        # sign of it. (One registered later fails the same way,
                        # through a closed connection.)
                        await trio.sleep(0.5)
                        if how == "reload":
                            _reload_with_token(server, "new-token")
                        else:
                            await trio.to_thread.run_sync(server.kill)
                            server.config = {**config, "authorization": {"token": "new-token"}}
                            await trio.to_thread.run_sync(server.start)
                        for name in names:
                            proc = services.services[name].proc
                            code = await trio.to_thread.run_sync(proc.wait, abandon_on_cancel=True)
                            assert code == 2, services.services[name].log()
                for name in names:
                    said = last_run(services, name)
                    assert f"{name}: the connection to the broker closed for good" in said, said
                accepted = starter.accepted
            # Restarted with the old token, a service says so and exits 2 again.
            retry = services.worker("worker", "--token", "old-token")
            with trio.fail_after(CONNECT_WINDOW + SLACK):
                code = await trio.to_thread.run_sync(retry.proc.wait, abandon_on_cancel=True)
            assert code == 2, retry.log()
            said = last_run(services, "worker")
            assert any(line.endswith("refused the credentials") for line in said), said
            # With the new one, the work is finished.
            new = await _serve_with_token(services, "new-token")
            async with (
                open_transport(server.url, new) as transport,
                actors.Client(transport) as client,
            ):
                report = await check_run(
                    transport, client, accepted, services.ledger, servers=[server]
                )
                report.assert_ok()
            assert await services.terminate_all() == dict.fromkeys(names, 0)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(server.stop)


def test_proc_port_lookup_finds_this_process_sockets() -> None:
    """The helper behind :class:`ServingProbe` maps a process to its TCP ports."""
    if not HAS_PROC:
        pytest.skip("needs Linux /proc")
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket, sys, time; s = socket.socket(); "
            "s.bind(('127.0.0.1', 0)); s.listen(); print(s.getsockname()[1], flush=True); "
            "time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
    ) as child:
        try:
            assert child.stdout is not None
            port = int(child.stdout.readline())
            assert port in _local_ports(child.pid)
            assert port not in _local_ports(os.getpid())
        finally:
            child.kill()


async def test_a_server_without_jetstream_is_refused_at_once(tmp_path: Path) -> None:
    """A service pointed at a nats-server started without ``-js`` exits 2 within
    seconds, with a line that says what to change. Creating streams waits for
    a cluster that cannot answer for now; a server without JetStream never will."""
    port = free_port()
    plain = await trio.lowlevel.open_process(
        [find_nats_server(), "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"nats://127.0.0.1:{port}"
        with Services(url, tmp_path / "services", tmp_path / "ledger") as services:
            with trio.fail_after(30):
                while True:  # until the server takes connections
                    try:
                        await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
                        break
                    except OSError:
                        await trio.sleep(0.05)
            service = services.orchestrator("orchestrator")
            began = time.monotonic()
            with trio.fail_after(SLACK):
                code = await trio.to_thread.run_sync(service.proc.wait, abandon_on_cancel=True)
            last = service.log().strip().splitlines()[-1]
            assert code == 2, service.log()
            assert "JetStream is not enabled" in last, last
            assert "-js" in last, last
            print(f"exited 2 after {time.monotonic() - began:.1f}s: {last}")
    finally:
        plain.kill()
        with trio.CancelScope(shield=True):
            await plain.wait()
