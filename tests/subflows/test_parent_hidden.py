"""What one asked to approve in a child run learns of its parent: nothing (a red-team helper's finding, fixed: ``Run.shown_ceilings``).

``subflows.selectors.run_family`` hides a child's parent from someone who may see the child only
("one asked to approve in a child run sees that run, not its parent's"; before, ``/family`` gave
him the parent's id, node and status: tests/subflows/test_subflows.py). The same id must not
reach him through the child run's other answers either."""

from __future__ import annotations

import json

from approvals.models import Approval
from subflows.models import SubRun
from tests.conftest import client_for
from tests.engine.flow import wait_until
from workflows.services.definitions import workflow_save

GATED = {"nodes": [{"id": "gate", "type": "hitl", "config": {"message": "go?", "approvers": ["bob"]}}], "edges": []}


def test_one_asked_in_a_child_run_is_never_told_its_parents_id(engine, api, user, make_user):
    bob = make_user("bob")
    workflow_save(owner=user, tag="gated", definition=GATED)
    response = api.post("/api/v1/runs", {"workflow": {"nodes": [{"id": "child", "type": "workflow",
                                                                  "config": {"tag": "gated"}}], "edges": []},
                                         "inputs": {}}, format="json")
    assert response.status_code == 201, response.json()
    parent_id = response.json()["run_id"]
    link = wait_until(lambda: SubRun.objects.filter(parent_run_id=parent_id).first(), timeout=30, what="the child")
    approval = wait_until(lambda: Approval.objects.filter(run_id=link.child_run_id).first(), timeout=30,
                          what="bob asked")
    as_bob = client_for(bob)
    assert as_bob.get(f"/api/v1/runs/{parent_id}").status_code == 404  # the parent is not his to see
    assert as_bob.get(f"/api/v1/runs/{link.child_run_id}/family").json()["parent"] is None

    told = {}
    for path in (f"/api/v1/runs/{link.child_run_id}", f"/api/v1/runs/{link.child_run_id}/details",
                 f"/api/v1/runs/{link.child_run_id}/events", f"/api/v1/approvals/{approval.pk}",
                 f"/api/v1/approvals?run={link.child_run_id}"):
        answer = as_bob.get(path)
        assert answer.status_code == 200, (path, answer.status_code)
        text = json.dumps(answer.json())
        if parent_id in text:
            told[path] = text[max(0, text.index(parent_id) - 120):text.index(parent_id) + 40]
    api.post(f"/api/v1/runs/{parent_id}/cancel")
    assert told == {}, "\n".join(f"{path}: ...{where}..." for path, where in told.items())
