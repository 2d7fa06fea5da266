"""Scale benchmark: many instances waiting on a signal at once, then all resumed.

The workflow has one step, ``wait_signal: go``, and returns the signal's
payload. On a fresh ``nats-server`` (default settings) with one
``python -m actors.orchestrator`` (default settings: idle actors passivate
after 30 s) and no worker, one client in this process:

1. starts N instances, at most ``--in-flight`` starts unacknowledged at once,
   and waits until the orchestrator's consumer has nothing pending: every
   instance is then stored, waiting;
2. waits for the idle actors to passivate (``passivate_after`` plus a margin)
   and reads the orchestrator's resident memory (VmRSS);
3. sends every instance its signal, the same way, and waits until the
   consumer is drained again; the resume rate is N over the seconds from the
   first signal to that moment;
4. checks that the instance index holds N completed instances, and that a
   sample of them returned their own payload.

The orchestrator's RSS is sampled every 0.2 s throughout; the peak of each
phase is printed with the figure after passivation. The targets (issue 7):
N = 100,000 with RSS under 300 MB once passivated, and resumed at 1,000/s
or more.

Usage, from the repository root::

    python bench/waiting.py [--instances 100000] [--in-flight 1000]
    python bench/waiting.py --quick     # 2,000 instances, passivation after 2 s
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final

HERE: Final = Path(__file__).resolve().parent


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# bench/engine.py puts the repository root on sys.path (and keeps this
# folder off it, where bench/transport.py would shadow the package).
engine = _load("bench_engine", HERE / "engine.py")

import trio  # noqa: E402

from actors import Client, InstanceStatus  # noqa: E402
from actors.testing import NatsServer, http_get  # noqa: E402

WORKFLOW: Final = {
    "type": "waiter",
    "version": 1,
    "steps": [{"id": "wait", "wait_signal": "go"}],
    "output": "steps.wait.output",
}
#: The orchestrator's default: idle actors exit after this many seconds.
DEFAULT_PASSIVATE: Final = 30.0
#: Bounds, so that a wedged engine fails the run instead of hanging it.
PHASE_TIMEOUT: Final = 1800.0
SAMPLE_CHECKED: Final = 200


@dataclass
class RssSampler:
    """Samples one process's VmRSS (MB) on a thread of its own."""

    pid: int
    peak_mb: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def read(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    def run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.peak_mb = max(self.peak_mb, self.read())
            except (OSError, RuntimeError):
                return

    def take_peak(self) -> float:
        """The peak since the last call, then start again from now."""
        peak, self.peak_mb = self.peak_mb, self.read()
        return max(peak, self.peak_mb)

    def stop(self) -> None:
        self._stop.set()


def events_pending(server: NatsServer) -> int:
    """Messages the orchestrators' consumer has not yet had acked, or not yet delivered."""
    status, body = http_get(server.monitor_url + "/jsz?consumers=true", 5.0)
    if status != 200:
        raise RuntimeError(f"monitoring endpoint answered {status}")
    pending = 0
    for account in json.loads(body).get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            if stream.get("name") != "WORKFLOW_EVENTS":
                continue
            for consumer in stream.get("consumer_detail") or []:
                pending += consumer.get("num_pending", 0) + consumer.get("num_ack_pending", 0)
    return pending


async def drained(server: NatsServer) -> None:
    """Return once the events consumer has nothing pending (polled: it is another process)."""
    while await trio.to_thread.run_sync(events_pending, server):  # noqa: ASYNC110
        await trio.sleep(0.2)


async def bounded(n: int, in_flight: int, one: Callable[[int], Awaitable[None]]) -> None:
    """Run ``one(i)`` for i in 0..n-1, at most ``in_flight`` at once."""
    limit = trio.Semaphore(in_flight)

    async def run(i: int) -> None:
        try:
            await one(i)
        finally:
            limit.release()

    async with trio.open_nursery() as nursery:
        for i in range(n):
            await limit.acquire()
            nursery.start_soon(run, i)


def instance_id(i: int) -> str:
    return f"waiter-{i}"


async def measure(
    url: str, server: NatsServer, rss: RssSampler, n: int, in_flight: int, passivate: float
) -> dict[str, float]:
    figures: dict[str, float] = {}
    async with Client.connect(url) as client:
        await client.register(WORKFLOW)

        async def start(i: int) -> None:
            await engine.start_with_retries(client, "waiter", None, instance_id(i))

        async def signal(i: int) -> None:
            await client.signal(instance_id(i), "go", {"i": i})

        async def phase(
            one: Callable[[int], Awaitable[None]], status: InstanceStatus
        ) -> tuple[float, float, float]:
            """Send ``one`` for every instance; (seconds to send, seconds until
            all are processed, peak RSS meanwhile). Checks all then have ``status``."""
            began = time.perf_counter()
            await bounded(n, in_flight, one)
            sent = time.perf_counter() - began
            await drained(server)
            done = time.perf_counter() - began
            peak = rss.take_peak()
            _, count = await client.count_and_list(workflow_type="waiter", status=status, limit=1)
            if count != n:
                raise AssertionError(f"{count} of {n} instances are {status}")
            return sent, done, peak

        with trio.fail_after(PHASE_TIMEOUT):
            (
                figures["starts_sent_s"],
                figures["started_s"],
                figures["rss_starting_peak_mb"],
            ) = await phase(start, InstanceStatus.RUNNING)
            await trio.sleep(passivate + 2.0)
            figures["rss_passivated_mb"] = rss.read()
            (
                figures["signals_sent_s"],
                figures["resumed_s"],
                figures["rss_resuming_peak_mb"],
            ) = await phase(signal, InstanceStatus.COMPLETED)
            for i in range(0, n, max(1, n // SAMPLE_CHECKED)):
                output = await client.result(instance_id(i))
                if output != {"i": i}:
                    raise AssertionError(f"{instance_id(i)} returned {output!r}")
    return figures


def run(n: int, in_flight: int, passivate: float | None) -> dict[str, float]:
    """The whole benchmark on a fresh server; the figures by name."""
    with tempfile.TemporaryDirectory(prefix="bench-waiting-") as folder:
        workdir = Path(folder)
        server = NatsServer(workdir / "nats")
        argv = ["-m", "actors.orchestrator", "--url", ""]
        if passivate is not None:
            argv += ["--passivate-after", str(passivate)]
        orchestrator: Any = None
        sampler: RssSampler | None = None
        try:
            server.start()
            argv[3] = server.url
            orchestrator = engine.ServiceProcess("orchestrator", argv, workdir / "orch.log")
            orchestrator.wait_ready(time.monotonic() + engine.READY_TIMEOUT)
            sampler = RssSampler(orchestrator.pid)
            figures = {"rss_idle_mb": sampler.read()}
            threading.Thread(target=sampler.run, daemon=True).start()
            wait = DEFAULT_PASSIVATE if passivate is None else passivate
            figures.update(trio.run(measure, server.url, server, sampler, n, in_flight, wait))
            orchestrator.terminate()
            code = orchestrator.wait_exit()
            if code != 0:
                raise orchestrator.failure(f"exited with {code} after SIGTERM")
            warnings = orchestrator.warnings()
            if warnings:
                print(f"orchestrator warnings ({len(warnings)}):", *warnings[:10], sep="\n  ")
            return figures
        finally:
            if sampler is not None:
                sampler.stop()
            if orchestrator is not None:
                orchestrator.kill()
            server.stop()


def report(n: int, in_flight: int, passivate: float | None, figures: dict[str, float]) -> str:
    after = "default (30 s)" if passivate is None else f"{passivate:g} s"
    lines = [
        f"{n:,} instances waiting on a signal; one orchestrator, passivate_after {after}; "
        f"at most {in_flight} starts or signals unacknowledged",
        f"starts:   all acknowledged in {figures['starts_sent_s']:.1f} s, all stored "
        f"and waiting after {figures['started_s']:.1f} s "
        f"({n / figures['started_s']:,.0f}/s)",
        f"signals:  all sent in {figures['signals_sent_s']:.1f} s, all instances "
        f"completed after {figures['resumed_s']:.1f} s "
        f"({n / figures['resumed_s']:,.0f} resumed/s; target 1,000/s)",
        f"orchestrator RSS: idle {figures['rss_idle_mb']:.0f} MB; peak while starting "
        f"{figures['rss_starting_peak_mb']:.0f} MB; {n:,} waiting and passivated "
        f"{figures['rss_passivated_mb']:.0f} MB (target < 300 MB); peak while resuming "
        f"{figures['rss_resuming_peak_mb']:.0f} MB",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=100_000, help="N (default 100000)")
    parser.add_argument("--in-flight", type=int, default=1000, help="starts or signals at once")
    parser.add_argument(
        "--passivate-after", type=float, default=None, help="the orchestrator's (default 30 s)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: N=2000, 2 s")
    args = parser.parse_args(argv)
    n, passivate = args.instances, args.passivate_after
    if args.quick:
        n, passivate = 2000, 2.0
    print(f"Command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"cores: {os.cpu_count()}; python {platform.python_version()}")
    figures = run(n, args.in_flight, passivate)
    print(report(n, args.in_flight, passivate, figures))


if __name__ == "__main__":
    main()
