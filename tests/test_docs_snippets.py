"""The programs the docs give run as written, against a real server."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import natsserver
import pytest
import trio

from actors.wire import Layout, deadletter_subject, encode_deadletter
from transport import open_transport

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_block_after(page: Path, words: str) -> str:
    """The first fenced Python block after ``words`` in ``page``."""
    text = page.read_text()
    found = re.search(re.escape(words) + r".*?```python\n(.*?)```", text, re.S)
    assert found is not None, f"no Python block after {words!r} in {page.name}"
    return found.group(1)


@pytest.mark.jetstream
async def test_the_dead_letter_reader_of_operations_md_lists_the_letters(
    fresh_nats_server: natsserver.NatsServer, tmp_path: Path
) -> None:
    url = fresh_nats_server.url
    async with open_transport(url) as transport:
        await Layout().provision(transport)
        await transport.publish(
            deadletter_subject("events"),
            encode_deadletter("workflow.start.nope", "malformed: not CBOR", b"\x00", 3),
            msg_id="deadletter.events.1",
        )
    program = tmp_path / "deadletters.py"
    program.write_text(python_block_after(DOCS / "operations.md", "To read\nthem:"))
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, str(program), url],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    stdout, stderr = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, stderr
    assert stdout.split() == [
        "1",
        "deadletter.events",
        "workflow.start.nope",
        "3",
        "malformed:",
        "not",
        "CBOR",
    ]
