"""Idempotent starts: a client that retries ``POST …/execute`` or ``POST /runs`` with the same
``Idempotency-Key`` gets the run its first request started, never a second one."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from tests.conftest import client_for, wait_for_run
from tests.engine.flow import transform, wait_all
from workflows.models import IdempotencyKey, Run

DEFINITION = {"nodes": [transform("a", "inputs.n * 2")], "edges": []}


@pytest.fixture(autouse=True)
def runs_finish(engine: Any) -> Iterator[None]:
    """Every run a test started ends before the database is flushed for the next one."""
    yield
    wait_all([str(pk) for pk in Run.objects.values_list("pk", flat=True)])


def start(api: APIClient, key: str | None, body: dict[str, Any], path: str = "/api/v1/runs") -> Any:
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return api.post(path, body, format="json", **headers)


def test_the_same_key_and_body_answer_the_first_run(engine, api):
    key = str(uuid.uuid4())
    body = {"workflow": DEFINITION, "inputs": {"n": 2}}
    first = start(api, key, body)
    assert first.status_code == 201, first.json()
    again = start(api, key, body)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert Run.objects.count() == 1
    assert wait_for_run(first.json()["run_id"]).status == "completed"
    # the original answer, not the run's state now
    assert start(api, key, body).json() == first.json()


def test_a_key_outlives_its_deleted_run_and_answers_it_again(engine, api, user):
    """A client whose start answer was lost retries after the run was deleted: the retry is the
    same request, so it gets the first answer (a run that is gone), never a second run whose
    outbound calls the world would see twice."""
    key = str(uuid.uuid4())
    body = {"workflow": DEFINITION, "inputs": {"n": 6}}
    first = start(api, key, body)
    assert first.status_code == 201, first.json()
    run_id = first.json()["run_id"]
    assert wait_for_run(run_id).status == "completed"
    assert api.post(f"/api/v1/runs/{run_id}/delete").status_code == 204
    again = start(api, key, body)
    assert (again.status_code, again.json()) == (200, first.json())
    assert not Run.objects.filter(owner=user).exists()
    assert api.get(f"/api/v1/runs/{run_id}").status_code == 404  # the answer names a run that is gone


def test_a_start_retried_across_an_upgrade_gets_its_first_answer(engine, api, user):
    """A rolling deploy: a key's fingerprint is the same bytes whichever release took the request
    (2cbdf8d's: the body as ``json`` writes it, ``-0.0`` and ``1e+16`` as sent), so a retry that
    reaches a web process of the other release gets the first answer, never
    ``idempotency_key_reused`` and then a second run under a new key (6eac6d4 had the fingerprint
    follow content ids' serialization, reading these numbers as jsonb does)."""
    key = str(uuid.uuid4())
    raw = '{"workflow": ' + json.dumps(DEFINITION) + ', "inputs": {"n": 1, "lon": -0.0, "big": 1e16}}'
    first = api.post("/api/v1/runs", raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY=key)
    assert first.status_code == 201, first.json()
    # 2cbdf8d's fingerprint, verbatim (workflows/services/idempotency.py start_key, canonical_json)
    as_2cbdf8d = json.dumps({"endpoint": "POST /api/v1/runs", "body": json.loads(raw)},
                            sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    old = hashlib.sha256(as_2cbdf8d.encode()).hexdigest()
    # an old web process answers a retry of the key this one stored
    assert IdempotencyKey.objects.get(owner=user, key=key).fingerprint == old
    # and this one answers a retry of the key an old one stored
    IdempotencyKey.objects.filter(owner=user, key=key).update(fingerprint=old)
    again = api.post("/api/v1/runs", raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY=key)
    assert (again.status_code, again.json()) == (200, first.json())
    assert wait_for_run(first.json()["run_id"]).status == "completed"
    assert Run.objects.filter(owner=user).count() == 1


def test_the_same_key_with_another_body_is_refused_naming_the_header(engine, api):
    key = str(uuid.uuid4())
    assert start(api, key, {"workflow": DEFINITION, "inputs": {"n": 1}}).status_code == 201
    refused = start(api, key, {"workflow": DEFINITION, "inputs": {"n": 2}})
    assert refused.status_code == 422
    answer = refused.json()
    assert answer["error"] == "idempotency_key_reused"
    assert answer["details"]["field"] == "Idempotency-Key"
    assert "same key" in answer["details"]["rule"]
    assert Run.objects.count() == 1


def test_execute_by_tag_honours_the_key_and_another_endpoint_is_another_request(engine, api):
    assert api.post("/api/v1/workflows", {"tag_name": "doubler", "workflow": DEFINITION},
                    format="json").status_code == 201
    key = str(uuid.uuid4())
    first = start(api, key, {"inputs": {"n": 3}}, path="/api/v1/workflows/doubler/execute")
    assert first.status_code == 201, first.json()
    again = start(api, key, {"inputs": {"n": 3}}, path="/api/v1/workflows/doubler/execute")
    assert (again.status_code, again.json()) == (200, first.json())
    assert start(api, key, {"tag": "doubler", "inputs": {"n": 3}}).status_code == 422  # POST /runs: another request
    assert Run.objects.count() == 1


def test_without_a_key_every_request_starts_a_run(engine, api):
    body = {"workflow": DEFINITION, "inputs": {"n": 1}}
    assert start(api, None, body).status_code == 201
    assert start(api, None, body).status_code == 201
    assert Run.objects.count() == 2


def test_keys_are_scoped_per_user(engine, api, make_user):
    other = client_for(make_user("bob"))
    key = str(uuid.uuid4())
    body = {"workflow": DEFINITION, "inputs": {"n": 1}}
    mine, theirs = start(api, key, body), start(other, key, body)
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["run_id"] != theirs.json()["run_id"]
    assert start(other, key, {"workflow": DEFINITION, "inputs": {"n": 5}}).status_code == 422


def test_a_malformed_key_is_a_400_naming_the_header(engine, api):
    refused = start(api, "x" * 256, {"workflow": DEFINITION, "inputs": {}})
    assert refused.status_code == 400
    assert refused.json()["details"]["field"] == "Idempotency-Key"
    assert Run.objects.count() == 0


def test_a_refused_start_keeps_no_key(engine, api):
    key = str(uuid.uuid4())
    bad = start(api, key, {"workflow": {"nodes": [{"id": "a", "type": "transform"}], "edges": []}, "inputs": {}})
    assert bad.status_code == 400
    assert not IdempotencyKey.objects.exists()
    assert start(api, key, {"workflow": DEFINITION, "inputs": {"n": 1}}).status_code == 201


def test_a_key_older_than_a_day_starts_a_new_run(engine, api):
    key = str(uuid.uuid4())
    body = {"workflow": DEFINITION, "inputs": {"n": 1}}
    first = start(api, key, body).json()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE workflows_idempotencykey SET created_at = now() - interval '25 hours'")
    later = start(api, key, body)
    assert later.status_code == 201
    assert later.json()["run_id"] != first["run_id"]
    assert IdempotencyKey.objects.get().run_id == uuid.UUID(later.json()["run_id"])


def test_concurrent_requests_with_one_key_start_one_run(engine, user):
    key = str(uuid.uuid4())
    body = {"workflow": DEFINITION, "inputs": {"n": 4}}
    gate = threading.Barrier(8)
    answers: list[tuple[int, Any]] = []

    def attempt() -> None:
        client = client_for(user)
        try:
            gate.wait()
            response = start(client, key, body)
            answers.append((response.status_code, response.json()))
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(code for code, _ in answers)
    assert codes == [200] * 7 + [201], answers
    assert len({a["run_id"] for _, a in answers}) == 1
    assert Run.objects.count() == 1
    assert wait_for_run(answers[0][1]["run_id"]).status == "completed"


def test_the_schema_documents_the_header_and_its_answers(api):
    schema = api.get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    for path in ("/api/v1/runs", "/api/v1/workflows/{tag}/execute"):
        post = schema["paths"][path]["post"]
        header = [p for p in post["parameters"] if p["in"] == "header" and p["name"] == "Idempotency-Key"]
        assert header and not header[0].get("required") and "24 h" in header[0]["description"]
        assert {"200", "201", "422"} <= set(post["responses"])
