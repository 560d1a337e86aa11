"""A child run started inside an approved action of its parent is part of what the approvers let
run: a patch to it, by its owner or by an agent inside it, is judged as changing an approved action
that has begun (``subflows.nodetypes.started_approved``, the policy's ``RunState.bound``). Each
failed on the code before (a red-team helper's findings)."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

from approvals.models import Approval
from subflows.models import SubRun
from tests.agents.flows import agent
from tests.approvals.runs import decide, submit
from tests.conftest import client_for, wait_for_run
from tests.engine.flow import wait_until
from workflows.models import NodeRun
from workflows.services.definitions import workflow_save

TEXT = {"content": "Done."}


def _four_eyes_parent(remote: Any) -> dict[str, Any]:
    return {"nodes": [{"id": "gate", "type": "hitl", "config": {"message": "run payload?", "approvers": ["bob"],
                                                                "allow_self_approval": False}},
                      {"id": "child", "type": "workflow", "config": {"tag": "payload"}}],
            "edges": [{"from": "gate", "to": "child", "condition": "$.approved == true"}]}


def test_the_owner_alone_cannot_rewrite_a_four_eyes_approved_child_run_by_patching_it(engine, user, make_user,
                                                                                        remote):
    """Bob (four eyes) approves an action that runs the owner's `payload`: wait, then pay 10. Saving
    a new version of `payload` afterwards cannot change what bob let run (the child runs the version
    current at the approval), and a patch of the parent's approved action is refused
    (`approved_action_started`). But the child run itself has no gate of its own: the owner patches
    its `pay` node while `wait` runs, alone, and the approved child pays what bob never saw."""
    bob = make_user("bob")
    payload = {"nodes": [{"id": "wait", "type": "http", "config": {"url": f"{remote.base}/sleep/3"}},
                         {"id": "pay", "type": "transform", "config": {"expression": "{'paid': 10}"}}],
               "edges": [{"from": "wait", "to": "pay"}]}
    workflow_save(owner=user, tag="payload", definition=payload)
    run_id = submit(user, _four_eyes_parent(remote), {})
    approval = wait_until(lambda: Approval.objects.filter(run_id=run_id).first(), timeout=30, what="the approval")
    assert decide(bob, approval).status_code == 200
    link = wait_until(lambda: SubRun.objects.filter(parent_run_id=run_id).first(), timeout=30, what="the child")
    wait_until(lambda: NodeRun.objects.filter(run_id=link.child_run_id, node_id="wait", status="running").exists(),
               timeout=30, what="the approved child under way")

    answer = client_for(user).post(f"/api/v1/runs/{link.child_run_id}/patches", {"operations": [
        {"op": "replace", "path": "/nodes/1/config/expression", "value": "{'paid': 1000000}"}]}, format="json")

    run = wait_for_run(run_id, timeout=60)
    assert run.status == "completed", run.error
    paid = NodeRun.objects.get(run_id=link.child_run_id, node_id="pay").output
    assert paid == {"paid": 10}, (paid, answer.status_code)  # what bob approved; before: {'paid': 1000000}
    assert answer.status_code == 400, answer.json()  # as the same change in the parent's action is


def test_an_agent_inside_a_four_eyes_approved_child_cannot_rewrite_the_approved_steps(engine, user, make_user,
                                                                                       fake_llm):
    """The same approval, with an agent in the approved `payload` (plan → pay). In the parent's own
    approved action, an agent's change to a node that was there when bob decided is refused
    (`approved_action_started`: the control below). In the child run the binding is gone: a
    prompt-injected agent rewrites `pay`, and the child pays what bob never saw."""
    bob = make_user("bob")
    pay = {"id": "pay", "type": "transform", "config": {"expression": "{'paid': 10}"}}
    steps = [agent("plan", tools=["patch_workflow"]), pay]
    workflow_save(owner=user, tag="payload", definition={"nodes": steps, "edges": [{"from": "plan", "to": "pay"}]})
    rewrite = {"tool_calls": [("patch_workflow", {"operations": [
        {"op": "replace", "path": "/nodes/1/config/expression", "value": "{'paid': 1000000}"}]})]}
    gate = {"id": "gate", "type": "hitl", "config": {"message": "run payload?", "approvers": ["bob"],
                                                     "allow_self_approval": False}}

    # the control: the same agent and step in the parent's approved action
    fake_llm.reset([rewrite, TEXT])
    inline = {"nodes": [gate, *steps], "edges": [{"from": "gate", "to": "plan", "condition": "$.approved == true"},
                                                 {"from": "plan", "to": "pay"}]}
    run_id = submit(user, inline, {})
    approval = wait_until(lambda: Approval.objects.filter(run_id=run_id).first(), timeout=30, what="the approval")
    assert decide(bob, approval).status_code == 200
    assert wait_for_run(run_id, timeout=60).status == "completed"
    assert NodeRun.objects.get(run_id=run_id, node_id="pay").output == {"paid": 10}

    fake_llm.reset([rewrite, TEXT])
    run_id = submit(user, _four_eyes_parent(None), {})
    approval = wait_until(lambda: Approval.objects.filter(run_id=run_id).first(), timeout=30, what="the approval")
    assert decide(bob, approval).status_code == 200
    run = wait_for_run(run_id, timeout=60)
    assert run.status == "completed", run.error
    child_id = SubRun.objects.get(parent_run_id=run_id).child_run_id
    assert NodeRun.objects.get(run_id=child_id, node_id="pay").output == {"paid": 10}  # before: {'paid': 1000000}


BANK = "tok-9f8e7d6c5b4a-bank"


def _paying_the_child_s_quote(remote: Any, key: str, *, before_quote: str = "") -> dict[str, Any]:
    """start → review (four eyes) → slow → pay, and start → [lookup →] quote, a child run the
    owner's credentialed payment reads its amount from by reference: beside the gate, not after it."""
    nodes = [{"id": "start", "type": "transform", "config": {"expression": "{'n': 1}"}},
             {"id": "review", "type": "hitl", "config": {"message": "Pay the quote?", "approvers": ["bob"],
                                                         "allow_self_approval": False}},
             {"id": "quote", "type": "workflow", "config": {"tag": "quote"}},
             {"id": "slow", "type": "http", "config": {"url": f"{remote.base}/hold/{key}"}},
             {"id": "pay", "type": "http", "config": {
                 "url": f"{remote.base}/echo/pay", "method": "POST", "headers": {"Authorization": "Bearer ${secrets.BANK}"},
                 "payload": {"amount": "$nodes.quote.outputs.price.amount"}}}]
    edges = [{"from": "start", "to": "review"}, {"from": "review", "to": "slow", "condition": "$.approved == true"},
             {"from": "slow", "to": "pay"}]
    if before_quote:
        nodes.append({"id": "lookup", "type": "http", "config": {"url": f"{remote.base}/hold/{before_quote}"}})
        edges += [{"from": "start", "to": "lookup"}, {"from": "lookup", "to": "quote"}]
    else:
        edges.append({"from": "start", "to": "quote"})
    return {"nodes": nodes, "edges": edges}


def test_a_child_run_an_approved_action_reads_is_bound_by_the_approval_as_one_it_holds(engine, user, make_user,
                                                                                       fake_llm, remote):
    """The payment reads its amount from a child run that runs beside the gate: after bob's vote,
    an agent inside the child rewrote the author's pricing step, and the approved payment sent its
    amount with the owner's token (a red-team helper's find). The child is bound as one inside the
    approved action is (``gates.binding``): the agent's patch is refused."""
    bob = make_user("bob")
    assert client_for(user).put("/api/v1/secrets/BANK", {"value": BANK}, format="json").status_code == 201
    workflow_save(owner=user, tag="quote", definition={
        "nodes": [agent("plan", tools=["patch_workflow"]),
                  {"id": "price", "type": "transform", "config": {"expression": "{'amount': 5}"}}],
        "edges": [{"from": "plan", "to": "price"}]})
    held = threading.Event()
    fake_llm.reset([{"until": held, "tool_calls": [("patch_workflow", {"operations": [
        {"op": "replace", "path": "/nodes/1/config/expression", "value": "{'amount': 1000000}"}]})]}, TEXT])
    key = uuid.uuid4().hex
    run_id = submit(user, _paying_the_child_s_quote(remote, key), {})
    approval = wait_until(lambda: Approval.objects.filter(run_id=run_id).first(), timeout=30, what="the approval")
    assert decide(bob, approval).status_code == 200
    wait_until(lambda: NodeRun.objects.filter(run_id=run_id, node_id="review", status="completed").exists(),
               timeout=30, what="the approval recorded")
    held.set()  # the child's agent answers only now, after bob approved
    link = wait_until(lambda: SubRun.objects.filter(parent_run_id=run_id).first(), timeout=30, what="the child")
    assert wait_for_run(link.child_run_id, timeout=60).status == "completed"
    remote.release(key)

    run = wait_for_run(run_id, timeout=60)
    assert run.status == "completed", run.error
    assert [json.loads(r["body"]) for r in remote.hits("/echo/pay")] == [{"amount": 5}]  # what bob saw
    answer = [m for m in fake_llm.requests[-1]["body"]["messages"] if m["role"] == "tool"][0]["content"]
    assert "approved_action_started" in answer, answer


def test_a_child_run_an_approved_action_reads_runs_the_version_the_approvers_could_see(engine, user, make_user,
                                                                                       remote):
    """The same child starting after bob's vote: the owner alone saved a new `quote` meanwhile, and
    the approved payment sent its amount. It runs the version current at the approval, as a child
    inside the approved action does (``_approved_at``)."""
    bob = make_user("bob")
    assert client_for(user).put("/api/v1/secrets/BANK", {"value": BANK}, format="json").status_code == 201
    workflow_save(owner=user, tag="quote", definition={
        "nodes": [{"id": "price", "type": "transform", "config": {"expression": "{'amount': 5}"}}], "edges": []})
    key, first = uuid.uuid4().hex, uuid.uuid4().hex
    run_id = submit(user, _paying_the_child_s_quote(remote, key, before_quote=first), {})
    approval = wait_until(lambda: Approval.objects.filter(run_id=run_id).first(), timeout=30, what="the approval")
    assert decide(bob, approval).status_code == 200
    wait_until(lambda: NodeRun.objects.filter(run_id=run_id, node_id="review", status="completed").exists(),
               timeout=30, what="the approval recorded")
    workflow_save(owner=user, tag="quote", definition={
        "nodes": [{"id": "price", "type": "transform", "config": {"expression": "{'amount': 1000000}"}}], "edges": []})
    remote.release(first)  # quote starts only now
    link = wait_until(lambda: SubRun.objects.filter(parent_run_id=run_id).first(), timeout=30, what="the child")
    assert wait_for_run(link.child_run_id, timeout=60).status == "completed"
    remote.release(key)

    run = wait_for_run(run_id, timeout=60)
    assert run.status == "completed", run.error
    assert [json.loads(r["body"]) for r in remote.hits("/echo/pay")] == [{"amount": 5}]
