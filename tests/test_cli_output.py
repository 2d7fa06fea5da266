"""How a client command prints its result: one JSON document, or text for a person."""

from __future__ import annotations

import json

import pytest

from actors.cli import ExitCode
from actors.cli._output import Output


@pytest.mark.parametrize("as_json", [False, True])
def test_a_result_is_its_document_with_json_and_its_text_without(
    capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    output = Output()
    output.json = as_json
    code = output.result({"id": "order-1", "fires": 3}, "backfill of 3 fires asked for")
    printed = capsys.readouterr()
    assert code is ExitCode.OK
    assert printed.err == ""
    if as_json:
        assert json.loads(printed.out) == {"id": "order-1", "fires": 3}
    else:
        assert printed.out == "backfill of 3 fires asked for\n"
