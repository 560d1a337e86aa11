"""A ``workflow`` node runs a child run on the real workers: it completes, fails and is cancelled
with its parent."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.test import Client

from approvals.models import Approval
from subflows.models import SubRun
from tests.approvals.runs import decide, submit
from tests.conftest import client_for, wait_for_run
from tests.engine.flow import wait_until
from workflows.models import Event, NodeRun, Run
from workflows.services.definitions import workflow_save

CHILD_OK = {"nodes": [{"id": "double", "type": "transform", "config": {"expression": "inputs.n * 2"}},
                      {"id": "label", "type": "transform", "config": {"expression": "'n=' + string(nodes.double)"}}],
            "edges": [{"from": "double", "to": "label"}]}


def parent(tag: str, **config) -> dict:
    return {"nodes": [{"id": "prep", "type": "transform", "config": {"expression": "{'n': inputs.n + 1}"}},
                      {"id": "child", "type": "workflow", "config": {"tag": tag, **config}},
                      {"id": "after", "type": "transform", "config": {"expression": "nodes.child.outputs.label"}}],
            "edges": [{"from": "prep", "to": "child"}, {"from": "child", "to": "after"}]}


def start(api, definition: dict, inputs: dict) -> Run:
    response = api.post("/api/v1/runs", {"workflow": definition, "inputs": inputs}, format="json")
    assert response.status_code == 201, response.json()
    return Run.objects.get(pk=response.json()["run_id"])


def test_a_child_run_completes_and_its_outputs_are_the_nodes_output(engine, api, user):
    workflow_save(owner=user, tag="double", definition=CHILD_OK)

    run = wait_for_run(start(api, parent("double", inputs="$nodes.prep"), {"n": 20}).pk)

    assert run.status == "completed", run.error
    link = SubRun.objects.get(parent_run=run)
    child = link.child_run
    assert child.status == "completed" and child.owner == user and child.inputs == {"n": 21}
    node = NodeRun.objects.get(run=run, node_id="child")
    assert node.output == {"run_id": str(child.pk), "status": "completed", "outputs": {"label": "n=42"}}
    assert NodeRun.objects.get(run=run, node_id="after").output == "n=42"
    family = api.get(f"/api/v1/runs/{run.pk}/family").json()
    assert family == {"parent": None, "children": [{"run_id": str(child.pk), "node_id": "child",
                                                    "status": "completed"}], "children_total": 1, "next": None}
    assert api.get(f"/api/v1/runs/{child.pk}/family").json()["parent"]["run_id"] == str(run.pk)
    page = Client()
    page.force_login(user)
    assert f"/runs/{child.pk}/" in page.get(f"/runs/{run.pk}/").content.decode()
    assert f"/runs/{run.pk}/" in page.get(f"/runs/{child.pk}/").content.decode()


def test_a_failing_child_fails_its_parent(engine, api, user, remote):
    failing = {"nodes": [{"id": "call", "type": "http", "config": {"url": f"{remote.base}/status/500",
                                                                    "fail_on_status": True}}], "edges": []}
    workflow_save(owner=user, tag="flaky", definition=failing)

    run = wait_for_run(start(api, parent("flaky"), {"n": 1}).pk)

    assert run.status == "failed"
    assert run.error["node_id"] == "child" and run.error["error_type"] == "SubWorkflowFailed"
    child = SubRun.objects.get(parent_run=run).child_run
    assert child.status == "failed" and run.error["child_run_id"] == str(child.pk)
    assert not NodeRun.objects.filter(run=run, node_id="after", status="completed").exists()


def test_cancelling_the_parent_cancels_the_child(engine, api, user):
    waits = {"nodes": [{"id": "gate", "type": "hitl", "config": {"message": "go?"}}], "edges": []}
    workflow_save(owner=user, tag="gated", definition=waits)
    run = start(api, parent("gated"), {"n": 1})
    link = wait_until(lambda: SubRun.objects.filter(parent_run=run).first(), what="the child run")
    wait_until(lambda: NodeRun.objects.filter(run=link.child_run, node_id="gate", status="waiting").exists(),
               what="the child waiting at its gate")
    assert NodeRun.objects.get(run=run, node_id="child").wait_reason == "workflow"

    assert api.post(f"/api/v1/runs/{run.pk}/cancel").status_code == 200

    child = wait_for_run(link.child_run_id)
    assert child.status == "cancelled"
    assert child.approvals.get().status == "cancelled"
    assert wait_for_run(run.pk).status == "cancelled"


@pytest.mark.django_db
def test_an_agent_may_not_add_a_workflow_node(user):
    from workflows.services.patches import PatchRejected
    from workflows.services.patches.policy import Proposer, RunState, judge

    before = {"nodes": [{"id": "plan", "type": "agent", "config": {"task": "t"}}], "edges": []}
    operations = [{"op": "add", "path": "/nodes/-", "value": {"id": "deploy", "type": "workflow",
                                                              "config": {"tag": "deploy-prod"}}},
                  {"op": "add", "path": "/edges/-", "value": {"from": "plan", "to": "deploy"}}]
    with pytest.raises(PatchRejected) as refused:
        judge(before=before, operations=operations, proposer=Proposer(agent=True, node_id="plan"),
              state=RunState(statuses={"plan": "running"}, started=frozenset({"plan"})))
    assert refused.value.extra["rule"] == "agent_privilege"


def test_runs_nest_no_deeper_than_the_limit(engine, api, user, settings):
    itself = {"nodes": [{"id": "again", "type": "workflow", "config": {"tag": "recursive"}}], "edges": []}
    workflow_save(owner=user, tag="recursive", definition=itself)

    run = wait_for_run(start(api, itself, {}).pk, timeout=60)

    assert run.status == "failed"
    deepest = Run.objects.filter(tag="recursive").order_by("-created_at").first()
    assert SubRun.objects.count() == 5  # AOB_SUBWORKFLOW_MAX_DEPTH: the sixth level is refused
    assert deepest.error["error_type"] == "SubWorkflowTooDeep"


def test_an_approved_action_runs_the_child_version_current_when_it_was_approved(engine, user, make_user, remote):
    """Four eyes: bob approves an action that runs the owner's unpinned `payload`, which runs the
    unpinned `deeper`; the owner then saves new versions of both before the child starts. The
    child and the grandchild run the versions bob could see. Without a gate, an unpinned tag
    runs its latest version."""
    bob = make_user("bob")
    deeper = {"nodes": [{"id": "leaf", "type": "transform", "config": {"expression": "'v1'"}}], "edges": []}
    payload = {"nodes": [{"id": "inner", "type": "workflow", "config": {"tag": "deeper"}}], "edges": []}
    workflow_save(owner=user, tag="deeper", definition=deeper)
    workflow_save(owner=user, tag="payload", definition=payload)
    gated = {"nodes": [{"id": "gate", "type": "hitl", "config": {"message": "run payload?", "approvers": ["bob"],
                                                                 "allow_self_approval": False}},
                       {"id": "wait", "type": "http", "config": {"url": f"{remote.base}/sleep/3"}},
                       {"id": "child", "type": "workflow", "config": {"tag": "payload"}}],
             "edges": [{"from": "gate", "to": "wait", "condition": "$.approved == true"},
                       {"from": "wait", "to": "child"}]}
    run_id = submit(user, gated, {})
    approval = wait_until(lambda: Approval.objects.filter(run_id=run_id).first(), timeout=30, what="the approval")
    assert decide(bob, approval).status_code == 200
    wait_until(lambda: NodeRun.objects.filter(run_id=run_id, node_id="wait", status="running").exists(),
               timeout=30, what="the approved action under way")
    changed = {"nodes": [{"id": "leaf", "type": "transform", "config": {"expression": "'v2: never seen'"}}],
               "edges": []}
    workflow_save(owner=user, tag="payload", definition=changed)
    workflow_save(owner=user, tag="deeper", definition=changed)

    run = wait_for_run(run_id, timeout=60)
    assert run.status == "completed", run.error
    child = SubRun.objects.get(parent_run_id=run_id).child_run
    grandchild = SubRun.objects.get(parent_run_id=child.pk).child_run
    assert NodeRun.objects.filter(run=child, node_id="inner").exists()  # payload's version 0
    assert NodeRun.objects.get(run=grandchild, node_id="leaf").output == "v1"  # deeper's version 0
    started = Event.objects.get(run_id=run_id, type=Event.Type.SUBWORKFLOW_STARTED).data
    assert started["version"] == 0 and "as_approved_at" in started
    assert Event.objects.get(run_id=child.pk, type=Event.Type.SUBWORKFLOW_STARTED).data["version"] == 0
    # the control: no gate guards it, and the same unpinned node runs what is current now
    ungated = {"nodes": [{"id": "child", "type": "workflow", "config": {"tag": "payload"}}], "edges": []}
    run = wait_for_run(submit(user, ungated, {}), timeout=60)
    child = SubRun.objects.get(parent_run_id=run.pk).child_run
    assert NodeRun.objects.get(run=child, node_id="leaf").output == "v2: never seen"


def test_a_parent_whose_owner_was_deactivated_meanwhile_fails_its_workflow_node_saying_why(engine, user, make_user):
    """Deactivated while the run waits at bob's gate: approved, it goes on to its workflow node,
    which starts no run as someone who cannot sign in. The node fails naming the reason, and so does
    the run; no child is left behind."""
    workflow_save(owner=user, tag="double", definition=CHILD_OK)
    bob = make_user("bob")
    gated = {"nodes": [{"id": "gate", "type": "hitl", "config": {"message": "go?", "approvers": ["bob"]}},
                       {"id": "child", "type": "workflow", "config": {"tag": "double", "inputs": {"n": 1}}}],
             "edges": [{"from": "gate", "to": "child", "condition": "$.approved == true"}]}
    run_id = submit(user, gated, {})
    approval = wait_until(lambda: Approval.objects.filter(run_id=run_id).first(), timeout=30, what="the approval")
    # in one transaction: the deadlines' sweep ends a deactivated owner's pending gates
    # (approvals_end_for_inactive_owners), and between two commits it could end this one first
    with transaction.atomic():
        user.is_active = False
        user.save(update_fields=["is_active"])
        assert decide(bob, approval).status_code == 200

    run = wait_for_run(run_id, timeout=30)
    node = NodeRun.objects.get(run_id=run_id, node_id="child")
    assert (run.status, node.status) == ("failed", "failed")
    assert node.error["error_type"] == "owner_inactive" and "deactivated" in node.error["message"], node.error
    assert not SubRun.objects.filter(parent_run_id=run_id).exists()
    assert Run.objects.filter(owner=user).count() == 1


@pytest.mark.parametrize("tag", ["$nodes.prep.tag", "$inputs.which", "report-${$nodes.prep.n}", "$secrets.TAG"])
def test_which_workflow_runs_is_written_out_never_chosen_by_an_upstream_output(api, tag):
    """An agent upstream (or whoever sends the inputs) must not choose which of the owner's
    workflows runs as the owner: the tag is refused at save when it is a reference. Before, it was
    resolved at run time, and an injected agent's answer named the workflow that ran."""
    response = api.post("/api/v1/workflows/validate", {"workflow": parent(tag)}, format="json")
    assert [(p["path"], p["rule"]) for p in response.json()["errors"]] == [("/nodes/1/config/tag", "config.pattern")]
    assert api.post("/api/v1/runs", {"workflow": parent(tag), "inputs": {"n": 1}}, format="json").status_code == 400


def test_a_tag_written_out_is_still_accepted(api):
    response = api.post("/api/v1/workflows/validate", {"workflow": parent("reports.weekly-2")}, format="json")
    assert response.json()["errors"] == []


def test_one_asked_to_approve_in_a_child_run_sees_that_run_not_its_parent(engine, api, user, make_user):
    """Bob is asked to approve in the child only: he may open the child, and its family names no
    parent to him (before, it gave him the parent's id, node and status); the owner sees both."""
    bob = make_user("bob")
    gated = {"nodes": [{"id": "gate", "type": "hitl", "config": {"message": "go?", "approvers": ["bob"]}}],
             "edges": []}
    workflow_save(owner=user, tag="gated", definition=gated)
    run = start(api, {"nodes": [{"id": "child", "type": "workflow", "config": {"tag": "gated"}}], "edges": []}, {})
    link = wait_until(lambda: SubRun.objects.filter(parent_run=run).first(), timeout=30, what="the child run")
    wait_until(lambda: Approval.objects.filter(run_id=link.child_run_id).exists(), timeout=30, what="bob asked")

    as_bob = client_for(bob)
    assert as_bob.get(f"/api/v1/runs/{run.pk}/family").status_code == 404
    assert as_bob.get(f"/api/v1/runs/{link.child_run_id}/family").json() == {"parent": None, "children": [],
                                                                            "children_total": 0, "next": None}
    assert str(run.pk) not in run_page(bob, link.child_run_id)
    assert api.get(f"/api/v1/runs/{link.child_run_id}/family").json()["parent"]["run_id"] == str(run.pk)
    assert f"/runs/{run.pk}/" in run_page(user, link.child_run_id)  # the parent's link
    api.post(f"/api/v1/runs/{run.pk}/cancel")


def run_page(who, run_id) -> str:
    page = Client()
    page.force_login(who)
    response = page.get(f"/runs/{run_id}/")
    assert response.status_code == 200
    return response.content.decode()
