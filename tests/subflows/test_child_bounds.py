"""Bounds a person set on a ``workflow`` node bind the child run it waits for: its ``timeout_ms``,
and the approval of a gate that several people decide; and the parent's agent rules
(``patch_policy``, ``max_agent_nodes``), as its ``allowed_hosts`` do. Each failed on the code before
(red-team helpers' findings, 5 and 7 December)."""

from __future__ import annotations

from approvals.models import Approval
from subflows.models import SubRun
from tests.agents.flows import agent, start
from tests.approvals.runs import decide, submit
from tests.conftest import wait_for_run
from tests.engine.flow import wait_until
from workflows.models import Event, NodeRun, PatchRefusal, Run, RunPatch
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


TEXT = {"content": "Done."}
ADD = [{"op": "add", "path": "/nodes/-", "value": {"id": "extra", "type": "transform", "config": {"expression": "1"}}},
       {"op": "add", "path": "/edges/-", "value": {"from": "plan", "to": "extra"}}]


def child_of(run_id: str) -> Run:
    return Run.objects.get(pk=wait_until(lambda: SubRun.objects.filter(parent_run_id=run_id).values_list(
        "child_run_id", flat=True).first(), timeout=30, what="the child run"))


def test_a_parent_s_patch_policy_deny_binds_the_agents_of_its_child_runs(engine, api, user, fake_llm):
    """The child's own definition says nothing of patches; its parent's author said ``deny``. The
    child's agent patched the child (the policy read only the patched run's own definition)."""
    workflow_save(owner=user, tag="helper", definition={"nodes": [agent(tools=["patch_workflow"])], "edges": []})
    fake_llm.reset([{"tool_calls": [("patch_workflow", {"operations": ADD})]}, TEXT])

    run = wait_for_run(start(api, [{"id": "child", "type": "workflow", "config": {"tag": "helper"}}],
                             metadata={"patch_policy": "deny"}))

    assert run.status == "completed", run.error
    child = child_of(run.pk)
    assert (child.status, child.rules_above) == ("completed", {"patch_policy": "deny"})
    assert not RunPatch.objects.filter(run=child).exists()
    assert list(PatchRefusal.objects.filter(run=child).values_list("rule", flat=True)) == ["patch_policy"]


def test_a_parent_s_max_agent_nodes_binds_the_agents_of_its_child_runs(engine, api, user, fake_llm):
    """The parent allows no spawned agents; its child's agent delegated to one (the child counts its
    own, under the smallest limit of it and the runs above it)."""
    workflow_save(owner=user, tag="helper", definition={"nodes": [agent(tools=["delegate_to_agent"])], "edges": []})
    fake_llm.reset([{"tool_calls": [("delegate_to_agent", {"task": "t"})]}, TEXT, TEXT])

    run = wait_for_run(start(api, [{"id": "child", "type": "workflow", "config": {"tag": "helper"}}],
                             metadata={"max_agent_nodes": 0}))

    assert run.status == "completed", run.error
    child = child_of(run.pk)
    assert (child.spawned_agents, child.rules_above) == (0, {"max_agent_nodes": 0})


def test_a_person_s_patch_to_a_parent_s_patch_policy_binds_the_child_already_running(engine, api, user, fake_llm):
    """The owner turns a running parent's ``patch_policy`` to ``deny`` while its child waits at a
    gate: the child's agent, after the gate, is refused (as a child started after it would be)."""
    gate = {"id": "review", "type": "hitl", "config": {"message": "go?"}}
    workflow_save(owner=user, tag="helper", definition={
        "nodes": [gate, agent(tools=["patch_workflow"])], "edges": [{"from": "review", "to": "plan"}]})
    fake_llm.reset([{"tool_calls": [("patch_workflow", {"operations": ADD})]}, TEXT])
    parent = start(api, [{"id": "child", "type": "workflow", "config": {"tag": "helper"}}])
    child = child_of(parent)
    assert child.rules_above == {}
    approval = wait_until(lambda: Approval.objects.filter(run=child).first(), timeout=30, what="the child's gate")

    patched = api.post(f"/api/v1/runs/{parent}/patches", {"operations": [
        {"op": "add", "path": "/metadata", "value": {"patch_policy": "deny"}}]}, format="json")
    assert patched.status_code == 201, patched.json()
    assert Run.objects.get(pk=child.pk).rules_above == {"patch_policy": "deny"}
    assert decide(user, approval).status_code == 200

    assert wait_for_run(parent).status == "completed"
    assert not RunPatch.objects.filter(run=child).exists()
    assert list(PatchRefusal.objects.filter(run=child).values_list("rule", flat=True)) == ["patch_policy"]


def test_a_child_whose_rules_above_a_worker_on_the_code_before_left_null_is_bound_by_its_parent_s_deny(
        engine, api, user, fake_llm):
    """A rolling deploy: migration ``workflows/0036`` applied, the ``workflow`` nodes' worker still
    on the code before, which starts a child with ``hosts_above`` only (its ``rules_above`` NULL,
    as here). The child's agent patched it: NULL was read as no rules above, and a replay of it, and
    the children it started, copied the NULL. Now a child's NULL is read as its parents' rules."""
    gate = {"id": "review", "type": "hitl", "config": {"message": "go?"}}
    workflow_save(owner=user, tag="helper", definition={
        "nodes": [gate, agent(tools=["patch_workflow"])], "edges": [{"from": "review", "to": "plan"}]})
    fake_llm.reset([{"tool_calls": [("patch_workflow", {"operations": ADD})]}, TEXT])
    parent = start(api, [{"id": "child", "type": "workflow", "config": {"tag": "helper"}}],
                   metadata={"patch_policy": "deny"})
    child = child_of(parent)
    approval = wait_until(lambda: Approval.objects.filter(run=child).first(), timeout=30, what="the child's gate")
    Run.objects.filter(pk=child.pk).update(rules_above=None)  # what the code before left

    assert decide(user, approval).status_code == 200

    assert wait_for_run(parent).status == "completed"
    assert not RunPatch.objects.filter(run=child).exists()
    assert list(PatchRefusal.objects.filter(run=child).values_list("rule", flat=True)) == ["patch_policy"]
