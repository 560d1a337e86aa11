"""The Django admin for run patches (operations, graph diff, approve/reject through the approval
service), workflow versions and runs with their node runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.test import Client

from approvals.models import Approval
from tests.conftest import wait_for_run
from workflows.admin import graph_diff
from workflows.models import RunPatch
from workflows.services.definitions import workflow_save
from workflows.services.patches import run_patch_propose
from workflows.services.runs import run_start

APPROVAL = json.loads((Path(settings.BASE_DIR) / "examples/approval.json").read_text())
HELD = {**APPROVAL, "metadata": {**APPROVAL["metadata"], "patch_policy": "require_approval"}}
# an agent after the refund, whose patches the policy holds (an agent's patch names an agent node)
SETTLED = {**HELD, "nodes": [*HELD["nodes"], {"id": "settle", "type": "agent", "config": {"task": "settle it"}}],
           "edges": [*HELD["edges"], {"from": "refund", "to": "settle"}]}


def add_after_settle(node_id: str) -> list[dict[str, Any]]:
    return [{"op": "add", "path": "/nodes/-", "value": {"id": node_id, "type": "transform",
                                                       "config": {"expression": "{'ok': true}"}}},
            {"op": "add", "path": "/edges/-", "value": {"from": "settle", "to": node_id}}]


def test_graph_diff_names_what_a_patch_added_removed_and_changed() -> None:
    before = {"nodes": [{"id": "a", "type": "transform"}, {"id": "b", "type": "http", "config": {"url": "x"}}],
              "edges": [{"from": "a", "to": "b"}]}
    after = {"nodes": [{"id": "b", "type": "http", "config": {"url": "y"}}, {"id": "c", "type": "agent"}],
             "edges": [{"from": "b", "to": "c", "condition": "$.ok"}]}
    assert graph_diff(before, after) == {
        "nodes added": ["c (agent)"], "nodes removed": ["a (transform)"], "nodes changed": ["b"],
        "edges added": ["b → c [$.ok]"], "edges removed": ["a → b"]}


def test_pending_patches_are_approved_and_rejected_in_the_admin(engine: Any, root: Any,
                                                                admin_client: Client) -> None:
    run = run_start(owner=root, definition=SETTLED, inputs={"amount": 3, "customer": "Ada"})
    wait_for_run(run.pk, statuses={"waiting_for_approval"})
    kept = run_patch_propose(run=run, operations=add_after_settle("audit"), description="audit it", node_id="settle")
    dropped = run_patch_propose(run=run, operations=add_after_settle("spam"), description="spam", node_id="settle")
    assert kept.status == dropped.status == RunPatch.Status.PENDING_APPROVAL

    page = admin_client.get(f"/admin/workflows/runpatch/{kept.pk}/change/").content.decode()
    assert "nodes added" in page and "audit (transform)" in page and "settle → audit" in page
    assert "&quot;op&quot;: &quot;add&quot;" in page  # operations, pretty-printed

    changelist = "/admin/workflows/runpatch/"
    response = admin_client.post(changelist, {"action": "approve_patches", "_selected_action": [kept.pk]})
    assert response.status_code == 302
    response = admin_client.post(changelist, {"action": "reject_patches", "_selected_action": [dropped.pk]})
    assert response.status_code == 302
    kept.refresh_from_db()
    dropped.refresh_from_db()
    assert kept.status == RunPatch.Status.APPLIED
    assert dropped.status == RunPatch.Status.REJECTED
    assert Approval.objects.get(patch=kept).decisions.get().username == "root"

    again = admin_client.post(changelist, {"action": "approve_patches", "_selected_action": [dropped.pk]},
                              follow=True)
    assert "not pending" in again.content.decode()
    dropped.refresh_from_db()
    assert dropped.status == RunPatch.Status.REJECTED


def test_workflow_shows_its_versions_and_a_run_its_node_runs(root: Any, admin_client: Client) -> None:
    saved = workflow_save(owner=root, tag="refunds", definition=APPROVAL, description="first")
    workflow_save(owner=root, tag="refunds", definition=HELD, description="second")
    page = admin_client.get(f"/admin/workflows/workflow/{saved.workflow.pk}/change/").content.decode()
    assert "first" in page and "second" in page
    version = admin_client.get(f"/admin/workflows/workflowversion/{saved.version.pk}/change/").content.decode()
    assert "notify_rejected" in version
    run = run_start(owner=root, definition=APPROVAL, inputs={"amount": 1, "customer": "A"})
    page = admin_client.get(f"/admin/workflows/run/{run.pk}/change/").content.decode()
    assert "Node runs" in page
    assert "cancel_runs" in admin_client.get("/admin/workflows/run/").content.decode()
