"""One data folder, one server: the exclusive lock a server holds on its folder.

A start takes an exclusive ``flock`` on ``nats-server.lock`` in the folder
and holds it while the server runs (the server process inherits it), so a
second server on a store in use refuses to start instead of corrupting it.
The kernel lets go of the lock when the last holder exits, however it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._errors import StoreInUseError

if sys.platform != "win32":
    import fcntl

__all__ = ["LOCK_NAME", "StoreLock"]

LOCK_NAME = "nats-server.lock"
#: Seconds a start waits for a lock whose starter has died: its server, killed with
#: it (``PR_SET_PDEATHSIG``), lets go of the lock a moment later.
_LOCK_GRACE = 5.0


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie does, but it holds no files any more)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _command_line() -> str:
    """This process's command line on one short line: ``python3 -m actors dev --data data``."""
    argv = list(getattr(sys, "orig_argv", sys.argv))
    if argv:
        argv[0] = Path(argv[0]).name
    line = " ".join(" ".join(argv).split())
    return line if len(line) <= 160 else line[:157] + "..."


class StoreLock:
    """The exclusive ``flock`` on a server folder's lock file, and who holds it.

    The lock file records the holder (this process's pid and command line, and
    the server's pid once it is spawned) so that a refused start can say who
    is in the way. The file descriptor is inherited by the server process: the
    folder stays locked while either lives, and is free once both have exited,
    however they ended.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (a no-op if held); raise :class:`StoreInUseError` if another has it.

        A lock whose starter has exited is waited for up to ``_LOCK_GRACE``
        seconds: its server dies with it, and lets go a moment later.
        """
        if self.fd is not None or sys.platform == "win32":
            return
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + _LOCK_GRACE
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = self._holder(fd)
                    starter = holder.get("pid")
                    dying = isinstance(starter, int) and not _alive(starter)
                    if not dying or time.monotonic() >= deadline:
                        raise StoreInUseError(self.directory, _describe(holder)) from None
                    time.sleep(0.05)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.record(None)

    def record(self, server_pid: int | None) -> None:
        """Write who holds the lock into the lock file."""
        if self.fd is None:
            return
        holder = {"pid": os.getpid(), "command": _command_line(), "server_pid": server_pid}
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(holder).encode(), 0)

    def release(self) -> None:
        """Let go of the lock (a no-op if not held)."""
        fd, self.fd = self.fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)

    @staticmethod
    def _holder(fd: int) -> dict[str, Any]:
        """What the lock file says of its holder; ``{}`` if nothing (yet) readable."""
        try:
            found = json.loads(os.pread(fd, 4096, 0))
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}


def _describe(holder: Mapping[str, Any]) -> str:
    """A lock holder in words, from what its lock file says."""
    starter, server = holder.get("pid"), holder.get("server_pid")
    if not isinstance(starter, int):
        return "another process"
    command = holder.get("command")
    who = f"pid {starter}" + (f" ({command})" if isinstance(command, str) and command else "")
    if not isinstance(server, int):
        return f"{who}, which is starting its nats-server"
    if not _alive(starter):
        return f"nats-server pid {server}, whose starter ({who}) has exited"
    return f"nats-server pid {server} of {who}"
