"""Bounds a person set on a ``workflow`` node bind the child run it waits for: its ``timeout_ms``,
and the approval of a gate that several people decide. Each failed on the code before (a red-team
helper's findings, 5 December)."""

from __future__ import annotations

from approvals.models import Approval
from subflows.models import SubRun
from tests.approvals.runs import decide, submit
from tests.conftest import wait_for_run
from tests.engine.flow import wait_until
from workflows.models import Event, NodeRun, Run
from workflows.services.definitions import workflow_save

WAITS = {"nodes": [{"id": "gate", "type": "hitl", "config": {"message": "go?"}}], "edges": []}


def test_a_workflow_nodes_timeout_ms_ends_the_wait_for_its_child_and_cancels_the_child(engine, user):
    """The child waits at a gate nobody decides. The node's ``timeout_ms`` (2 s) bounded only the
    task that started the child: the parent waited as long as the child did, for ever here."""
    workflow_save(owner=user, tag="slow", definition=WAITS)
    parent = {"nodes": [{"id": "child", "type": "workflow", "timeout_ms": 2000, "config": {"tag": "slow"}}],
              "edges": []}
    run_id = submit(user, parent, {})
    link = wait_until(lambda: SubRun.objects.filter(parent_run_id=run_id).first(), timeout=30, what="the child")

    run = wait_for_run(run_id, timeout=20)

    assert run.status == "failed", (run.status, NodeRun.objects.get(run_id=run_id, node_id="child").status)
    assert run.error["node_id"] == "child" and run.error["error_type"] == "SubWorkflowTimeout", run.error
    assert run.error["child_run_id"] == str(link.child_run_id) and run.error["timeout_ms"] == 2000
    assert wait_for_run(link.child_run_id).status == "cancelled"
    started = Event.objects.get(run_id=run_id, type=Event.Type.SUBWORKFLOW_STARTED).data
    assert started["timeout_ms"] == 2000 and started["deadline"] == link.deadline.isoformat()


def test_without_timeout_ms_the_child_is_waited_for_as_long_as_it_runs(engine, user):
    """The control: no ``timeout_ms`` on the node, no deadline (the operator's default node timeout
    bounds a worker's task, not a wait)."""
    workflow_save(owner=user, tag="slow", definition=WAITS)
    run_id = submit(user, {"nodes": [{"id": "child", "type": "workflow", "config": {"tag": "slow"}}], "edges": []}, {})
    link = wait_until(lambda: SubRun.objects.filter(parent_run_id=run_id).first(), timeout=30, what="the child")
    wait_until(lambda: NodeRun.objects.filter(run_id=link.child_run_id, node_id="gate", status="waiting").exists(),
               timeout=30, what="the child at its gate")

    approval = Approval.objects.get(run_id=link.child_run_id)
    assert decide(user, approval).status_code == 200
    assert wait_for_run(run_id).status == "completed"


def test_a_gate_several_people_approve_binds_the_child_version_current_at_the_first_approval(engine, user,
                                                                                            make_user):
    """Two of bob and carol must approve an action that runs the owner's unpinned `payload`. Bob
    approves `payload` as it is; the owner then saves a new version; carol approves. The child ran
    the version current when the gate settled (carol's vote): bob's approval was counted for a
    version he never saw."""
    bob, carol = make_user("bob"), make_user("carol")
    workflow_save(owner=user, tag="payload", definition={
        "nodes": [{"id": "pay", "type": "transform", "config": {"expression": "{'paid': 10}"}}], "edges": []})
    gated = {"nodes": [{"id": "gate", "type": "hitl", "config": {"message": "run payload?", "approvers": ["bob", "carol"],
                                                                 "required_approvals": 2, "allow_self_approval": False}},
                       {"id": "child", "type": "workflow", "config": {"tag": "payload"}}],
             "edges": [{"from": "gate", "to": "child", "condition": "$.approved == true"}]}
    run_id = submit(user, gated, {})
    approval = wait_until(lambda: Approval.objects.filter(run_id=run_id).first(), timeout=30, what="the approval")
    assert decide(bob, approval).status_code == 200
    workflow_save(owner=user, tag="payload", definition={
        "nodes": [{"id": "pay", "type": "transform", "config": {"expression": "{'paid': 1000000}"}}], "edges": []})
    assert decide(carol, approval).status_code == 200

    run = wait_for_run(run_id, timeout=30)

    assert run.status == "completed", run.error
    child = Run.objects.get(pk=SubRun.objects.get(parent_run_id=run_id).child_run_id)
    assert NodeRun.objects.get(run=child, node_id="pay").output == {"paid": 10}  # before: {'paid': 1000000}
