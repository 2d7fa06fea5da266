"""DBOS Transact on the benchmark's workload: one process, a SQLite system database.

Run with the peers' interpreter (``bench/compare.py`` does; see
``peer_common`` for the contract).

DBOS Transact is a library, not a service: workflows and their steps run
inside the application process that starts them, checkpointing each step
to the system database, with no broker and no separate worker. So the
"client", the workflow runtime and the steps are this one process, and its
CPU is all the CPU there is (SQLite runs inside it too).

Settings: ``dbos`` with its defaults, the system database a SQLite file in
``--workdir`` (``system_database_url: sqlite:///...``), async workflow and
steps (as the other systems' activities are async), each workflow started
with ``DBOS.start_workflow_async`` and awaited with ``get_result``. The file
is created in WAL mode before DBOS opens it (``journal_mode`` is stored in
the file). WAL is what SQLite recommends for concurrent use, and it was the
faster of the two durable journals here (the default rollback journal is
there to compare with: ``--journal delete``).

``--synchronous full`` (the default) leaves every connection at SQLite's
default ``synchronous=FULL``: the WAL is fsynced at every commit.
``--synchronous normal`` sets ``synchronous=NORMAL`` on every connection
(fsync only at checkpoints: a commit survives a crash of the process, not
necessarily a power loss). DBOS has no setting of its own for this: it opens
the file through a SQLAlchemy engine it creates, and sets its own pragmas
(``busy_timeout``, ``foreign_keys``) in a ``connect`` listener on it, so this
driver adds a ``connect`` listener of its own on every SQLAlchemy pool of the
process (DBOS's is the only one), which runs ``PRAGMA synchronous`` as each
connection opens. What was set is read back, not assumed: after the measured
phases, ``PRAGMA journal_mode`` and ``PRAGMA synchronous`` on each pooled
connection of DBOS's own engine; and, where ``strace`` is installed, the
fsyncs of 20 more workflows are counted (``peer_common.FsyncCount``). Both go
into the settings column.

Usage: ``python dbos_bench.py --workflows 1000 --latency 200 --workdir DIR
[--synchronous normal|full]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any, Final

import peer_common
import sqlalchemy as sa
from dbos import DBOS

#: The journal the system database is created with (see the module docstring).
JOURNAL: Final = "wal"


@DBOS.step()
async def increment(value: dict[str, Any]) -> dict[str, Any]:
    """Return the input with its counter incremented (as ``actors.examples.activities``)."""
    return peer_common.increment(value)


@DBOS.workflow()
async def count_workflow(value: dict[str, Any]) -> dict[str, Any]:
    """``actors/examples/count.yaml`` for DBOS: each step's output is the next one's input."""
    for _ in range(3):
        value = await increment(value)
    return value


def prepare(path: Path, journal: str) -> None:
    """Create the database file in ``journal`` mode (stored in the file)."""
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA journal_mode={journal}")


def set_synchronous(level: int) -> None:
    """Every SQLite connection opened through SQLAlchemy from now on runs ``PRAGMA synchronous``.

    Listens on the ``Pool`` class, so it covers the engine DBOS creates at
    launch, beside DBOS's own ``connect`` listener (see the module docstring).
    """

    def on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.execute(f"PRAGMA synchronous={level}")

    sa.event.listen(sa.pool.Pool, "connect", on_connect)


def read_back(engine: sa.Engine) -> tuple[set[str], set[int], int]:
    """(journal modes, synchronous values, connections) read from every idle pooled connection.

    ``synchronous`` belongs to a connection, not to the file: each one is asked.
    At least one connection is asked, a new one if none is idle.
    """
    journals: set[str] = set()
    levels: set[int] = set()
    count = max(engine.pool.checkedin(), 1)  # type: ignore[attr-defined]
    with contextlib.ExitStack() as stack:
        for _ in range(count):
            connection = stack.enter_context(engine.connect())
            journals.add(str(connection.exec_driver_sql("PRAGMA journal_mode").scalar()))
            levels.add(int(connection.exec_driver_sql("PRAGMA synchronous").scalar() or 0))
    return journals, levels, count


async def drive(args: Any, journal: str) -> None:
    database = args.workdir / "dbos.sqlite"
    prepare(database, journal)
    asked = peer_common.SYNCHRONOUS[args.synchronous]
    if asked != peer_common.SYNCHRONOUS["full"]:  # FULL is SQLite's default: nothing to add
        set_synchronous(asked)
    dbos = DBOS(
        config={
            "name": "bench-compare",
            "system_database_url": f"sqlite:///{database}",
            # Its INFO lines are per launch, not per workflow; keep the output clean.
            "log_level": "WARNING",
        }
    )
    DBOS.launch()
    try:

        async def run_one() -> object:
            handle = await DBOS.start_workflow_async(count_workflow, dict(peer_common.INPUT))
            return await handle.get_result()

        def cpu() -> dict[str, float]:
            return {"process": peer_common.own_cpu()}

        phases, lat = await peer_common.measure(
            run_one, args.sizes, args.latency, cpu, args.phase_timeout
        )
        # The checks, after the measured phases (strace slows the process down).
        # DBOS's engine is not public: its system database's, pinned dbos version.
        journals, levels, connections = read_back(dbos._sys_db.engine)
        fsyncs = await peer_common.count_fsyncs(
            os.getpid(), args.workdir, run_one, args.phase_timeout
        )
    finally:
        DBOS.destroy()
    names = peer_common.SYNCHRONOUS_NAMES
    synchronous = "/".join(names.get(level, str(level)) for level in sorted(levels))
    if levels != {asked}:
        peer_common.fail(f"asked for synchronous={names[asked]}, read back {synchronous}")
    settings = (
        f"steps run in the workflow process (no worker); SQLite "
        f"{'/'.join(j.upper() for j in sorted(journals))}, synchronous={synchronous} "
        f"(read back from its {connections} pooled connections; {fsyncs}); defaults"
    )
    # In-process: no call to retry, so nothing is ever tried again.
    peer_common.emit(settings, f"dbos {importlib.metadata.version('dbos')}", phases, lat)


def main() -> None:
    def journal(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--journal", default=JOURNAL, help=f"SQLite's journal ({JOURNAL})")

    args = peer_common.parse_args(__doc__.split("\n\n")[0], sqlite=True, extra=journal)
    logging.basicConfig(level=logging.WARNING)
    peer_common.run_driver("dbos", lambda: asyncio.run(drive(args, args.journal)))


if __name__ == "__main__":
    main()
