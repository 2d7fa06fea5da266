"""One root of errors, and the front ends reporting each error by its class.

Every error class of the package derives from :class:`actors.ActorsError`
through one of its four categories, and carries the command line's exit code
and the HTTP API's status and type. The classes are found by importing every
module of the package, so that one added anywhere is checked here without
being listed: it must have a category, a mapping the front ends can use, a
report on the command line and an answer of the API as its class says, and
a row in docs/api.md ("Errors by class").
"""

from __future__ import annotations

import importlib
import json
import logging
import pkgutil
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.requests import Request

import actors
import transport
from actors._groups import leaves, sole
from actors.cli import CliError, ExitCode
from actors.cli._errors import client_error as _classify
from actors.core import ErrorInfo, FieldError
from actors.errors import ActorsError, BrokerError, EngineError, OutcomeError, RequestError
from actors.http._guards import _error_response
from actors.http._requests import ApiError
from actors.testing import StoreInUseError

DOCS = Path(__file__).resolve().parents[1] / "docs"
URL = "nats://127.0.0.1:4222"
CATEGORIES = (RequestError, OutcomeError, EngineError, BrokerError)


def _subclasses(cls: type[ActorsError]) -> Iterator[type[ActorsError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _every_error_class() -> list[type[ActorsError]]:
    # Importing every module defines every class, wherever it lives.
    for module in pkgutil.walk_packages(actors.__path__, "actors."):
        importlib.import_module(module.name)
    return sorted(set(_subclasses(ActorsError)), key=lambda cls: cls.__name__)


ERRORS = _every_error_class()

#: Instances of the classes whose constructor takes more than a message.
_EXAMPLES: dict[type[ActorsError], Callable[[], ActorsError]] = {
    actors.DefinitionError: lambda: actors.DefinitionError(
        [FieldError("steps", "required"), FieldError("version", "must be an integer")]
    ),
    actors.LimitExceededError: lambda: actors.LimitExceededError(
        "the start message", 300_000, 262_144, "InputTooLarge"
    ),
    actors.InstanceConflictError: lambda: actors.InstanceConflictError("o-1", "order", "refund"),
    actors.WorkflowFailedError: lambda: actors.WorkflowFailedError(
        "o-1", ErrorInfo("OutOfStock", "no melons")
    ),
    StoreInUseError: lambda: StoreInUseError(Path("data"), "nats-server pid 130"),
    CliError: lambda: CliError("no instance 'o-1'", ExitCode.NOT_FOUND),
    ApiError: lambda: ApiError(404, "NotFound", "no workflow instance 'o-1'"),
}


def _example(cls: type[ActorsError]) -> ActorsError:
    """An instance of ``cls``; a class with a constructor of its own needs an entry above."""
    make = _EXAMPLES.get(cls)
    return make() if make is not None else cls(f"a {cls.__name__} happened")


def _category(cls: type[ActorsError]) -> type[ActorsError]:
    """The first category in ``cls``'s method resolution order: whose fault it is."""
    return next(base for base in cls.__mro__ if base in CATEGORIES)


def _request() -> Request:
    return Request({"type": "http", "method": "GET", "path": "/workflows", "headers": []})


def test_the_root_has_four_categories_and_no_other_child() -> None:
    assert set(ActorsError.__subclasses__()) == set(CATEGORIES)
    # Enough classes were found for the search to be working.
    assert {actors.DefinitionError, actors.WorkflowFailedError, CliError, ApiError} <= set(ERRORS)


@pytest.mark.parametrize("cls", ERRORS, ids=lambda cls: cls.__name__)
def test_every_error_has_a_category_and_a_mapping(cls: type[ActorsError]) -> None:
    category = _category(cls)
    if category is EngineError:
        assert cls.exit_code is None  # a bug: the command line raises it
    else:
        assert cls.exit_code is not None
        assert ExitCode(cls.exit_code) not in (ExitCode.OK, ExitCode.INTERRUPTED)
    assert 400 <= cls.http_status <= 599
    assert re.fullmatch(r"[A-Z][A-Za-z]+", cls.http_type)


@pytest.mark.parametrize("cls", ERRORS, ids=lambda cls: cls.__name__)
def test_the_command_line_reports_each_error_by_its_class(cls: type[ActorsError]) -> None:
    error = _example(cls)
    report = _classify(error, URL)
    if error.exit_code is None:
        assert report is None  # raised, with its traceback
        return
    assert report is not None
    assert report.code == error.exit_code
    if isinstance(error, actors.DefinitionError):
        assert report.message == "invalid definition"
        assert report.details == ("steps: required", "version: must be an integer")
    else:
        assert report.message == str(error)


@pytest.mark.parametrize("cls", ERRORS, ids=lambda cls: cls.__name__)
def test_the_api_answers_each_error_by_its_class(
    cls: type[ActorsError], caplog: pytest.LogCaptureFixture
) -> None:
    error = _example(cls)
    with caplog.at_level(logging.ERROR, logger="actors.api"):
        response = _error_response(error, _request())
    body = json.loads(bytes(response.body))["error"]
    assert (response.status_code, body["type"]) == (error.http_status, error.http_type)
    if error.http_status == 500:
        # The engine's: logged with its traceback, and not shown to the caller.
        assert body["message"] == "internal error (logged by the server)"
        assert caplog.records[-1].exc_info is not None
        return
    assert not caplog.records
    if isinstance(error, actors.DefinitionError):
        assert body["details"] == [
            {"path": "steps", "message": "required"},
            {"path": "version", "message": "must be an integer"},
        ]
    else:
        assert body["message"] == str(error)


def test_a_report_has_its_own_code_not_its_class_one() -> None:
    assert CliError("no instance 'o-1'", ExitCode.NOT_FOUND).exit_code == ExitCode.NOT_FOUND
    refused = ApiError(401, "Unauthorized", "a bearer token is required")
    assert (refused.http_status, refused.http_type) == (401, "Unauthorized")


def test_the_too_large_errors_share_one_base() -> None:
    assert issubclass(actors.LimitExceededError, actors.SizeLimitError)
    assert issubclass(actors.PayloadTooLargeError, actors.SizeLimitError)
    assert issubclass(actors.PayloadTooLargeError, actors.CodecError)


@pytest.mark.parametrize(
    "cls",
    [
        actors.DefinitionError,
        actors.ExpressionError,
        actors.InvalidNameError,
        actors.LimitExceededError,
        actors.CodecError,
        actors.PayloadTooLargeError,
        actors.MessageError,
        actors.VersionConflictError,
    ],
)
def test_errors_that_were_value_errors_still_are(cls: type[ActorsError]) -> None:
    assert issubclass(cls, ValueError)


def test_unknown_type_and_conflict_are_still_workflow_errors_but_the_callers() -> None:
    for cls in (actors.UnknownWorkflowTypeError, actors.InstanceConflictError):
        assert issubclass(cls, actors.WorkflowError)
        assert _category(cls) is RequestError


def _transport_errors() -> list[type[transport.TransportError]]:
    found = {
        value
        for value in vars(transport).values()
        if isinstance(value, type) and issubclass(value, transport.TransportError)
    }
    return sorted(found, key=lambda cls: cls.__name__)


#: What the front ends make of the transport's errors: exit code, status and type.
_TRANSPORT_MAPPING = {
    transport.TooLargeError: (4, 413, "PayloadTooLarge"),
    transport.InvalidSpecError: (4, 503, "BrokerUnavailable"),
    transport.StorageFullError: (2, 503, "StorageFull"),
}


@pytest.mark.parametrize("cls", _transport_errors(), ids=lambda cls: cls.__name__)
def test_transport_errors_are_mapped_by_class_too(
    cls: type[transport.TransportError], caplog: pytest.LogCaptureFixture
) -> None:
    exit_code, status, error_type = _TRANSPORT_MAPPING.get(
        cls, (BrokerError.exit_code, BrokerError.http_status, BrokerError.http_type)
    )
    error = cls("it went wrong")
    report = _classify(error, URL)
    assert report is not None
    assert report.code == exit_code
    with caplog.at_level(logging.WARNING, logger="actors.api"):
        response = _error_response(error, _request())
    body = json.loads(bytes(response.body))["error"]
    assert (response.status_code, body["type"]) == (status, error_type)


def _documented() -> dict[str, tuple[str, str, str, str]]:
    """docs/api.md's table "Errors by class": class -> (category, exit code, status, type)."""
    text = (DOCS / "api.md").read_text()
    section = text.split("## Errors by class", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$", section, re.M)
    return {
        name: (category, code.strip(), status.strip(), kind.strip().strip("`"))
        for name, category, code, status, kind in rows
    }


def _exported() -> set[type[ActorsError]]:
    """The error classes the package's faces export (``actors``, its subpackages, ``errors``)."""
    faces = [actors, actors.errors]
    faces += [
        importlib.import_module(module.name)
        for module in pkgutil.iter_modules(actors.__path__, "actors.")
        if module.ispkg
    ]
    return {
        value
        for face in faces
        for value in (getattr(face, name) for name in face.__all__)
        if isinstance(value, type) and issubclass(value, ActorsError) and value is not ActorsError
    }


def test_docs_list_every_error_with_its_mapping() -> None:
    documented = _documented()
    by_name = {cls.__name__: cls for cls in ERRORS}
    assert len(by_name) == len(ERRORS), "two error classes of one name"
    # Every error a face exports has a row; every row is of an error that exists.
    assert {cls.__name__ for cls in _exported()} <= set(documented)
    assert set(documented) <= set(by_name)
    for name, (category, code, status, kind) in documented.items():
        cls = by_name[name]
        assert category == _category(cls).__name__, cls
        if cls is CliError:
            assert code == "its own", cls
        else:
            assert code == ("traceback" if cls.exit_code is None else str(cls.exit_code)), cls
        if cls is ApiError:
            assert (status, kind) == ("its own", "its own"), cls
        else:
            assert (status, kind) == (str(cls.http_status), cls.http_type), cls


# -- the exceptions inside Trio's groups ------------------------------------------------


def test_the_groups_of_nurseries_give_up_the_errors_inside() -> None:
    lost = transport.ConnectionLostError("a")
    full, bug = transport.StorageFullError("b"), RuntimeError("c")
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [lost])])
    assert sole(nested) is lost
    assert leaves(nested) == [lost]
    several = ExceptionGroup("outer", [ExceptionGroup("inner", [lost, bug]), full])
    # A group of several is what it is; its leaves come in order, at any depth.
    assert sole(several) is several
    assert sole(ExceptionGroup("one", [several])) is several
    assert leaves(several) == [lost, bug, full]
    assert sole(bug) is bug
    assert leaves(bug) == [bug]
