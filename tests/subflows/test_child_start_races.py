"""A ``workflow`` node's child run is a start of a tag's current version, as a hook's delivery, a
schedule's firing and an API start are: it reads the version as they do (``workflow_version_for_start``),
in the transaction that inserts it, the tag's row held until it commits."""

from __future__ import annotations

import threading

from django.db import connection, connections, transaction

from subflows.models import SubRun
from tests.conftest import client_for, wait_for_run
from tests.engine.flow import wait_until
from tests.support.races import blocked_on
from workflows.models import Run, Workflow
from workflows.services.definitions import workflow_save

OLD = {"nodes": [{"id": "old", "type": "transform", "config": {"expression": "'old'"}}], "edges": []}
FIXED = {"nodes": [{"id": "new", "type": "transform", "config": {"expression": "'new'"}}], "edges": []}
PARENT = {"nodes": [{"id": "child", "type": "workflow", "config": {"tag": "leaky"}}], "edges": []}


def test_a_child_run_that_met_a_save_of_its_workflow_runs_the_version_the_save_left(engine, user):
    """The child's version was read before its insert, which then waited on the save's lock: after
    the save answered, the child ran the version it replaced (a fix removing a leaking step did not
    hold for it: a review's find, after the other starts were mended)."""
    workflow_save(owner=user, tag="leaky", definition=OLD)
    holding, release = threading.Event(), threading.Event()
    pid: list[int] = []

    def holder() -> None:
        try:
            with transaction.atomic():
                workflow_save(owner=user, tag="leaky", definition=FIXED)  # holds the tag's row FOR UPDATE
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_backend_pid()")
                    pid.append(cursor.fetchone()[0])
                holding.set()
                release.wait(30)
        finally:
            connections.close_all()

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert holding.wait(15)
        answer = client_for(user).post("/api/v1/runs", {"workflow": PARENT, "inputs": {}}, format="json")
        assert answer.status_code == 201, answer.json()
        wait_until(lambda: blocked_on(pid), timeout=30, what="the child's start waiting on the save's lock")
    finally:
        release.set()
        thread.join(30)
    # the save has answered: the fixed version is current
    parent = wait_for_run(answer.json()["run_id"])
    child = SubRun.objects.get(parent_run=parent).child_run
    current = Workflow.objects.get(tag="leaky").current_version
    assert child.base_artifact_id == current.artifact_id, (
        "the child run started, after the save answered, from the version the save had replaced")
    assert Run.objects.get(pk=child.pk).status == "completed"
