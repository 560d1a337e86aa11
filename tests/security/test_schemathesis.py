"""Property tests of every operation in the OpenAPI document the app serves: a few generated requests
each (valid and invalid data, deterministic), sent through the WSGI app in this process as a user
who owns a workflow, a finished run, a waiting run with an approval and a patch. Each request is
sent as generated, and again with its path parameters pointing at that user's real objects, so the
answers cover the found as well as the not found. No answer may be a 5xx, and every answer must be
documented: its status code, content type, headers and body schema."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.security.conftest import World

EXAMPLES = 8
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@contextlib.contextmanager
def connection_kept() -> Iterator[None]:
    """Requests run in this thread, on the test's connection and inside its transaction. Django
    closes a connection at each request's edges when it is not in autocommit, which would end that
    transaction, so those handlers are off meanwhile (as in Django's own test client)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def _load_schema() -> Any:
    """The document as a client gets it, from the app (the schema view is public and reads no table)."""
    with connection_kept():
        return schemathesis.openapi.from_wsgi("/api/v1/schema/?format=json", WSGIHandler())


SCHEMA = _load_schema()
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


@pytest.fixture
def same_connection() -> Iterator[None]:
    with connection_kept():
        yield


def real_path_parameters(operation: schemathesis.APIOperation, world: World) -> list[dict[str, str]]:
    """The owner's objects for the path parameters this operation has."""
    names = {p.name for p in operation.path_parameters}
    if not names:
        return []
    path = operation.path
    variants: list[dict[str, str]] = []
    if path.startswith("/api/v1/workflows/"):
        variants = [{"tag": world.workflow.tag, "seq": "1"}, {"tag": world.workflow.tag, "seq": "0"}]
    elif path.startswith("/api/v1/artifacts/"):
        variants = [{"artifact_id": world.workflow.current_version.artifact_id},
                    {"artifact_id": world.patch.after_artifact_id}]
    elif path.startswith("/api/v1/runs/"):
        variants = [{"id": str(world.finished.pk), "node_id": "done", "seq": "1", "iteration": "0"},
                    {"id": str(world.waiting.pk), "node_id": "refund", "seq": str(world.patch.seq), "iteration": "0",
                     "refusal_id": str(world.refusal.pk)}]
    elif path.startswith("/api/v1/approvals/"):
        variants = [{"id": str(world.approval.pk)}]
    return [{k: v for k, v in variant.items() if k in names} for variant in variants]


def negatable(operation: schemathesis.APIOperation) -> bool:
    """Whether there is a query or body to make invalid: an invalid path parameter (``^[^/]+$``)
    would need a ``/``, which no URL can carry in a segment, so hypothesis finds no such case."""
    return bool(len(operation.query) or len(operation.body))


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_every_operation_answers_as_documented(operation: schemathesis.APIOperation, world: World,
                                               same_connection: None) -> None:
    headers = {"Authorization": f"Token {world.alice.auth_token.key}"}
    answered: set[int] = set()
    real = real_path_parameters(operation, world)
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for path_parameters in [None, *real]:
            if mode == GenerationMode.NEGATIVE and not negatable(operation):
                continue
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

            @given(case=strategy)
            @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
            def check(case: schemathesis.Case) -> None:
                answered.add(case.call_and_validate(headers=headers, checks=CHECKS).status_code)

            check()
    if real and operation.method.upper() == "GET":
        assert 200 in answered, f"the owner's own objects were never found: {sorted(answered)}"


def run_starts(world: World) -> dict[str, tuple[dict[str, str], Any]]:
    """Each operation that starts a run: its path parameters and body."""
    return {"POST /api/v1/runs": ({}, {"tag": "hello"}),
            "POST /api/v1/workflows/{tag}/execute": ({"tag": "hello"}, {"inputs": {"name": "x"}}),
            "POST /api/v1/runs/{id}/nodes/{node_id}/replay": ({"id": str(world.finished.pk), "node_id": "done"},
                                                              schemathesis.core.NOT_SET)}


@pytest.mark.parametrize(("limiter", "status"), [("full", 429), ("unreachable", 503)])
@pytest.mark.parametrize("label", ["POST /api/v1/runs", "POST /api/v1/workflows/{tag}/execute",
                                   "POST /api/v1/runs/{id}/nodes/{node_id}/replay"])
def test_a_run_start_the_rate_limiter_refuses_answers_as_documented(label, limiter, status, world, same_connection,
                                                                   settings):
    """The generated requests above run with relaxed limits; here the limiter says no (429), or
    cannot be asked and run creation fails closed (503, by design: not a server error)."""
    if limiter == "full":
        settings.AOB_RATE_USER_RUNS_PER_MIN = 0
    else:
        settings.REDIS_URL = "redis://127.0.0.1:1/0"
    path_parameters, body = run_starts(world)[label]
    case = SCHEMA.find_operation_by_label(label).Case(path_parameters=path_parameters, body=body)

    response = case.call_and_validate(headers={"Authorization": f"Token {world.alice.auth_token.key}"},
                                      checks=[check for check in CHECKS if check is not not_a_server_error])

    assert response.status_code == status, response.content[:300]
