"""A compiled read answers what its queryset answers, with the ORM's SQL compiled once: the same
rows and instances (related objects, annotations, converted values), each call's own values
bound, and the web's hot reads (token, workflow by tag, run by id) built on it in one statement."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.db.models import Value
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from aob_project.compiled import CompiledRead
from aob_project.exceptions import NotFound
from tests.conftest import client_for, set_inputs, stored_run
from workflows import selectors
from workflows.models import Run
from workflows.services.definitions import workflow_save

PROBE_ID = uuid.UUID(int=0xC0FFEE)
ONE = {"nodes": [{"id": "t", "type": "transform", "config": {"expression": "1", "dispatch": "queue"}}], "edges": []}


def fields(obj: Any) -> dict[str, Any]:
    return {f.attname: getattr(obj, f.attname) for f in type(obj)._meta.concrete_fields}


def a_run(owner: Any, **inputs: Any) -> Run:
    run = stored_run(owner)
    set_inputs(run, inputs)
    return Run.objects.get(pk=run.pk)


def test_a_model_read_is_the_querysets_instances_with_their_related_objects(make_user: Any) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    read = CompiledRead(lambda key: Token.objects.select_related("user").filter(key=key), key="probe key")

    for user in (alice, bob, alice):
        expected = Token.objects.select_related("user").get(key=user.auth_token.key)
        with CaptureQueriesContext(connection) as statements:
            [token] = read.objects(key=user.auth_token.key)
            assert token.user.username == user.username  # the related object came with the row
        assert len(statements) == 1
        assert fields(token) == fields(expected) and fields(token.user) == fields(expected.user)
        assert not token._state.adding and token._state.db == "default"  # as the ORM loads it
    assert read.objects(key="no such key") == []


def test_rows_pass_through_the_orms_converters(make_user: Any) -> None:
    owner = make_user()
    first, second = a_run(owner, a=[1, {"b": None}]), a_run(owner, text="é")
    read = CompiledRead(lambda pk: Run.objects.filter(pk=pk).values_list("inputs", "created_at", "status"), pk=PROBE_ID)
    for run in (first, second):
        assert read.rows(pk=run.pk) == list(Run.objects.filter(pk=run.pk).values_list("inputs", "created_at", "status"))
    assert read.rows(pk=uuid.uuid4()) == []


def test_constants_and_annotations_are_the_querysets(make_user: Any) -> None:
    owner = make_user()
    run = a_run(owner)
    read = CompiledRead(lambda pk: Run.objects.filter(pk=pk, status="queued").annotate(answer=Value(42)), pk=PROBE_ID)
    [found] = read.objects(pk=run.pk)
    assert found.pk == run.pk and found.answer == 42
    Run.objects.filter(pk=run.pk).update(status="running")
    assert read.objects(pk=run.pk) == []  # the constant 'queued' stays bound


def test_a_value_of_another_type_than_its_probe_is_refused(make_user: Any) -> None:
    run = a_run(make_user())
    read = CompiledRead(lambda pk: Run.objects.filter(pk=pk), pk=PROBE_ID)
    with pytest.raises(TypeError, match="pk: str, not UUID"):
        read.objects(pk=str(run.pk))  # the ORM would have turned it into a UUID; a compiled read does not


def test_a_probe_the_statement_does_not_use_is_refused(db: Any) -> None:
    read = CompiledRead(lambda pk: Run.objects.all(), pk=PROBE_ID)
    with pytest.raises(ValueError, match="probes not among"):
        read.objects(pk=PROBE_ID)


def test_each_thread_reads_on_its_own_connection(transactional_db: Any, make_user: Any) -> None:
    owner = make_user()
    runs = [a_run(owner, n=n) for n in range(4)]
    read = CompiledRead(lambda pk: Run.objects.filter(pk=pk).values_list("inputs", flat=True), pk=PROBE_ID)
    assert read.rows(pk=runs[0].pk) == [({"n": 0},)]  # compiled in this thread first
    seen: dict[int, Any] = {}

    def reader(n: int) -> None:
        try:
            seen[n] = read.rows(pk=runs[n].pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {n: [({"n": n},)] for n in range(4)}


def test_the_api_reads_token_workflow_and_run_in_one_statement_each(make_user: Any) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    workflow_save(owner=alice, tag="w", definition=ONE)
    with CaptureQueriesContext(connection) as statements:
        workflow = selectors.workflow_get(owner=alice, tag="w", content=True)
        assert workflow.current_version.artifact.content == ONE  # the related rows came with it
    assert len(statements) == 1
    with pytest.raises(NotFound):
        selectors.workflow_get(owner=bob, tag="w")

    run = a_run(alice)
    for run_id in (run.pk, str(run.pk), run.pk.hex):
        assert fields(selectors.run_get(user=alice, run_id=run_id)) == fields(Run.objects.get(pk=run.pk))
    for run_id in ("not-a-uuid", uuid.uuid4(), 12.5):
        with pytest.raises(NotFound):
            selectors.run_get(user=alice, run_id=run_id)
    with pytest.raises(NotFound):
        selectors.run_get(user=bob, run_id=run.pk)  # not bob's: the 404 of a run that does not exist

    api = client_for(alice)
    with CaptureQueriesContext(connection) as statements:
        response = api.get("/api/v1/auth/me")
    assert response.status_code == 200 and response.json()["username"] == "alice"
    # the token with its user, then what her runs keep (the answer's ``storage``, workflows/storage.py)
    assert len(statements) == 2 and "workflows_ownerstorage" in statements.captured_queries[1]["sql"]

    # a bulk update, which sends no signal, leaves the token (a save would delete it): still refused
    User.objects.filter(pk=alice.pk).update(is_active=False)
    refused = api.get("/api/v1/auth/me")
    assert refused.status_code == 401 and refused.json()["message"] == "User inactive or deleted."
    unknown = client_for(bob)
    unknown.credentials(HTTP_AUTHORIZATION="Token no-such-token")
    assert unknown.get("/api/v1/auth/me").json()["message"] == "Invalid token."


def test_an_integer_the_backend_wraps_is_bound_per_call(make_user: Any) -> None:
    """psycopg passes an integer compared with an integer column as ``Int4``: still the probe, and
    each call's value is bound in its place, wrapped the same way (``selectors.run_get`` binds the
    answer's byte budget so)."""
    from django.db.models import TextField
    from django.db.models.functions import Cast, Length

    from aob_project.compiled import PROBE_INT

    run = a_run(make_user(), pad="x" * 100)
    read = CompiledRead(lambda pk, limit: Run.objects.filter(pk=pk).annotate(
        size=Length(Cast("inputs", TextField()))).filter(size__lte=limit), pk=PROBE_ID, limit=PROBE_INT)

    for limit in (10_000, 10, 10_000):
        expected = list(read._build(pk=run.pk, limit=limit).values_list("pk", "size"))
        assert [(r.pk, r.size) for r in read.objects(pk=run.pk, limit=limit)] == expected
        assert bool(expected) == (limit == 10_000)
