"""Schemathesis against the served API: no 500s, and every answer as documented.

The API is served over real HTTP by the ``served`` fixture (on Trio, in the
test's process); Schemathesis is synchronous, so it runs in a worker thread
(``trio.to_thread.run_sync``) while the server, the orchestrator and the
worker go on in the Trio loop. For every operation of ``/openapi.json`` it
generates requests that fit the document (positive) and requests that do
not (negative), once with every path parameter drawn and once with them
pinned to things that exist (so that the success answers are checked too),
and sends each with the bearer token (unless the case leaves it out).
Hypothesis runs derandomized and without its example database, so every
run sends the same requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import hypothesis
import schemathesis
import trio
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.config._checks import NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

if TYPE_CHECKING:
    from conftest import Served

#: Cases per operation, per mode, per way of choosing path parameters.
EXAMPLES: Final = 6


def valid_requests_are_not_refused(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """A request the document allows is not refused as malformed.

    The counterpart of ``negative_data_rejection``: together they say that
    the app accepts exactly what the document describes. Only a
    definition's steps are beyond what a schema can say, so registering
    may refuse a definition that fits it (422, with the problems); so are a
    schedule's cron expressions, time zones and ranges.
    """
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    beyond_a_schema = ("POST /definitions", "POST /schedules", "POST /schedules/{id}/backfill")
    if case.operation.label in beyond_a_schema and response.status_code == 422:
        return None
    if response.status_code in (400, 415, 422):
        raise AssertionError(
            f"a request that fits the document was refused: {response.status_code} "
            f"{response.text[:300]}"
        )
    return None


CHECKS: Final = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    # Sends each request again without the token, and expects a 401.
    ignored_auth,
    valid_requests_are_not_refused,
]
#: A request that breaks the document may also be refused for its size (413:
#: a generated definition of over a thousand steps is over 1 MiB), which
#: Schemathesis does not count as a refusal by default.
CONFIG: Final = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [*NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, "413"]
            }
        }
    }
)
#: Path parameters naming things the test creates first: a completed instance.
EXISTING: Final = {
    "type": "greet",
    "version": 1,
    "type_or_id": "done-1",
    "id": "done-1",
    "name": "approved",
}


@dataclass
class Report:
    cases: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def fuzz(url: str, token: str) -> Report:
    """Run Schemathesis against the API at ``url``; runs in a thread (it blocks)."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=CONFIG)
    report = Report()

    def call(case: schemathesis.Case) -> None:
        # The real token replaces the one Schemathesis made up. A negative
        # case may leave the (required) header out: it is sent without it.
        sent = {name.lower() for name in case.headers or {}}
        headers = {"Authorization": f"Bearer {token}"} if "authorization" in sent else None
        response = case.call_and_validate(base_url=url, headers=headers, checks=CHECKS)
        report.cases += 1
        report.statuses[response.status_code] = report.statuses.get(response.status_code, 0) + 1

    for result in schema.get_all_operations():
        operation = result.ok()
        names = {parameter.name for parameter in operation.path_parameters}
        if operation.method.upper() == "POST" and "type_or_id" in names:
            pinned = {"type_or_id": "greet"}  # POST starts a type; GET reads an instance
        else:
            pinned = {name: EXISTING[name] for name in names}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for path_parameters in ({}, pinned) if pinned else ({},):
                strategy = operation.as_strategy(
                    generation_mode=mode, path_parameters=path_parameters or None
                )
                test = _given(strategy, call)
                try:
                    test()
                except Unsatisfiable:
                    # Nothing to get wrong: no parameters and no body (negative mode).
                    assert mode is GenerationMode.NEGATIVE
                    assert not operation.path_parameters
                    assert not operation.body
                except Exception as exc:
                    report.failures.append(f"{operation.label} ({mode}): {exc}")
    return report


def _given(strategy: Any, call: Callable[[schemathesis.Case], None]) -> Callable[[], None]:
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        # Generation, and shrinking of any failure; no example database to reuse.
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @hypothesis.given(case=strategy)
    def test(case: schemathesis.Case) -> None:
        call(case)

    return test


async def test_the_api_answers_as_its_openapi_document_says(served: Served) -> None:
    await served.register_examples()
    response = await served.http.post(
        "/workflows/greet", json={"input": {"name": "ann"}, "id": "done-1"}
    )
    assert response.status_code == 201
    result = await served.http.get("/workflows/done-1/result", params={"wait": 20})
    assert result.status_code == 200

    began = time.monotonic()
    assert served.token is not None
    report = await trio.to_thread.run_sync(fuzz, served.url, served.token)
    elapsed = time.monotonic() - began
    print(f"schemathesis: {report.cases} cases in {elapsed:.1f} s; statuses {report.statuses}")
    assert not report.failures, "\n\n".join(report.failures)
    assert report.cases >= 200
    # Both kinds of answer were seen: successes and refusals.
    assert {200, 201, 202} <= set(report.statuses)
    assert {404, 422} <= set(report.statuses)
