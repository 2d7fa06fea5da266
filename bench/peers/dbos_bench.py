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
the file); every connection keeps SQLite's default ``synchronous=FULL``, so
every commit is fsynced. WAL is what SQLite recommends for concurrent use,
and it was the faster of the two durable journals here (the default
rollback journal is there to compare with: ``--journal delete``).

Usage: ``python dbos_bench.py --workflows 1000 --latency 200 --workdir DIR``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import sqlite3
import sys
import traceback
from pathlib import Path
from typing import Any, Final

import peer_common
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


def prepare(path: Path, journal: str) -> tuple[str, int]:
    """Create the database file in ``journal`` mode; return (journal, synchronous) as set."""
    with sqlite3.connect(path) as db:
        mode = db.execute(f"PRAGMA journal_mode={journal}").fetchone()[0]
        synchronous = db.execute("PRAGMA synchronous").fetchone()[0]
    return str(mode), int(synchronous)


async def drive(args: Any, journal: str) -> None:
    database = args.workdir / "dbos.sqlite"
    mode, synchronous = prepare(database, journal)
    DBOS(
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
    finally:
        DBOS.destroy()
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    settings = (
        f"steps run in the workflow process (no worker); SQLite ({mode.upper()}, "
        f"synchronous={names.get(synchronous, synchronous)}); defaults"
    )
    # In-process: no call to retry, so nothing is ever tried again.
    peer_common.emit(settings, f"dbos {importlib.metadata.version('dbos')}", phases, lat)


def main() -> None:
    argv = sys.argv[1:]
    journal = JOURNAL
    if "--journal" in argv:
        at = argv.index("--journal")
        journal = argv[at + 1]
        del argv[at : at + 2]
    args = peer_common.parse_args(__doc__.split("\n\n")[0], argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(drive(args, journal))
    except Exception as error:
        # The whole story on stderr; the caller shows its last line.
        traceback.print_exc()
        peer_common.fail(f"dbos: {type(error).__name__}: {error}")


if __name__ == "__main__":
    main()
