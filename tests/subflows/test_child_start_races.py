"""A ``workflow`` node's child run is a start of a tag's current version, as a hook's delivery, a
schedule's firing and an API start are: it reads the version as they do (``workflow_version_for_start``),
in the transaction that inserts it, the tag's row held until it commits."""

from __future__ import annotations

from subflows.models import SubRun
from tests.conftest import client_for, wait_for_run
from tests.support.races import asked_while_held
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
    api = client_for(user)

    _, (answer,) = asked_while_held(  # the save's transaction held until the child's start waits on it
        lambda: workflow_save(owner=user, tag="leaky", definition=FIXED),
        lambda: api.post("/api/v1/runs", {"workflow": PARENT, "inputs": {}}, format="json"))

    assert answer.status_code == 201, answer.json()
    # the save has answered: the fixed version is current
    parent = wait_for_run(answer.json()["run_id"])
    child = SubRun.objects.get(parent_run=parent).child_run
    current = Workflow.objects.get(tag="leaky").current_version
    assert child.base_artifact_id == current.artifact_id, (
        "the child run started, after the save answered, from the version the save had replaced")
    assert Run.objects.get(pk=child.pk).status == "completed"
