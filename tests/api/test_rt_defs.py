"""Red-team findings on workflow definitions (branch rt-defs): races and costs the API did not
bound. Each test fails on the code it was written against."""

from __future__ import annotations

import threading
from typing import Any

from django.db import connection, connections, transaction

from tests.api.factories import API, fetch_then_store, post_workflow
from tests.conftest import client_for
from tests.engine.flow import wait_until
from workflows.models import Run, Workflow


def _blocked_on(pid: list[int]) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", pid)
        return bool(cursor.fetchone()[0])


def test_a_start_racing_a_delete_of_its_workflow_is_not_a_500(transactional_db, user):
    """POST /workflows/{tag}/execute reads the tag, then inserts the run naming it. A delete of the
    tag committed in between (its transaction had already nulled the runs it knew of) leaves the
    new run's foreign key pointing at nothing: PostgreSQL refuses the insert (ForeignKeyViolation)
    and the API answers 500. It should answer the tag's 404 (or start the run with no tag, as the
    delete does to the runs it had)."""
    from workflows.services.definitions import workflow_delete

    assert post_workflow(client_for(user), "doomed", fetch_then_store()).status_code == 201
    deleting, release = threading.Event(), threading.Event()
    deleter_pid: list[int] = []

    def delete_and_hold() -> None:
        try:
            with transaction.atomic():
                workflow_delete(workflow=Workflow.objects.get(tag="doomed"))
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_backend_pid()")
                    deleter_pid.append(cursor.fetchone()[0])
                deleting.set()
                release.wait(15)
        finally:
            connections.close_all()

    answers: list[Any] = []

    def start() -> None:
        client = client_for(user)
        client.raise_request_exception = False  # a 500 is an answer here, not the test's exception
        try:
            answers.append(client.post(f"{API}/workflows/doomed/execute", {"inputs": {}}, format="json"))
        finally:
            connections.close_all()

    deleter = threading.Thread(target=delete_and_hold)
    deleter.start()
    assert deleting.wait(15)
    starter = threading.Thread(target=start)
    starter.start()
    try:
        wait_until(lambda: _blocked_on(deleter_pid), timeout=15, what="the start waiting on the delete's lock")
    finally:
        release.set()
        deleter.join(15)
        starter.join(15)
    assert not Workflow.objects.filter(tag="doomed").exists()
    assert answers, "the start never answered"
    response = answers[0]
    assert response.status_code in (201, 404, 409), (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json")
    if response.status_code == 201:  # started: then as a run of no tag, as the delete leaves the others
        assert Run.objects.get(pk=response.json()["run_id"]).workflow_id is None
