"""An approval is bound to what it approved: a patch that changes the gated action voids the
decision and the gate asks again; a four-eyes or pending gate cannot be changed by a run patch,
by anyone; a replay below a gate never reuses the old decision."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from approvals.models import Approval, Decision
from tests.agents.flows import agent, edge, http
from tests.approvals.runs import WAITING, decide, submit, wait_until
from tests.conftest import client_for, wait_for_run
from tests.support.remote import Reply
from workflows.models import Event, NodeRun, PatchRefusal, Run, canonical_json, size_of


def _join_behind_gate(owner: str, remote: Any, **review: Any) -> dict[str, Any]:
    """start → review (hitl) and start → slow (held by the test); pay joins both: approving review
    starts nothing until the test releases slow."""
    return {"nodes": [
        {"id": "start", "type": "transform", "config": {"expression": "{'amount': 5}"}},
        {"id": "review", "type": "hitl", "config": {"message": "Pay?", "approvers": [owner], **review}},
        {"id": "slow", "type": "http", "config": {"url": f"{remote.base}/hold/slow"}},
        {"id": "pay", "type": "http", "config": {"url": f"{remote.base}/echo", "method": "POST",
                                                 "payload": {"amount": 5}}},
    ], "edges": [{"from": "start", "to": "review"}, {"from": "start", "to": "slow"},
                 {"from": "review", "to": "pay", "condition": "$.approved == true"}, {"from": "slow", "to": "pay"}]}


def pending_approval(run_id: str, timeout: float = 20.0) -> Approval:
    deadline = time.monotonic() + timeout
    while not Approval.objects.filter(run_id=run_id, status="pending").exists():
        assert time.monotonic() < deadline, "no approval was asked for"
        time.sleep(0.05)
    return Approval.objects.get(run_id=run_id, status="pending")


def test_a_patch_to_an_approved_action_that_has_not_begun_asks_the_gate_again(engine, user, remote):
    run_id = submit(user, _join_behind_gate(user.username, remote))
    approval = pending_approval(run_id)
    assert decide(user, approval).status_code == 200
    assert NodeRun.objects.get(run_id=run_id, node_id="review").status == "completed"
    assert not NodeRun.objects.filter(run_id=run_id, node_id="pay").exists()  # waiting for slow

    patched = client_for(user).post(f"/api/v1/runs/{run_id}/patches", {"operations": [
        {"op": "replace", "path": "/nodes/3/config/payload/amount", "value": 5000}]}, format="json")

    assert patched.status_code == 201, patched.json()
    review = NodeRun.objects.get(run_id=run_id, node_id="review")
    approval.refresh_from_db()
    assert (review.status, review.consumed, review.output, approval.status) == ("waiting", False, None, "pending")
    assert list(Decision.objects.filter(approval=approval).values_list("voided", flat=True)) == [True]
    voided = Event.objects.get(run_id=run_id, type="approval_voided")
    assert voided.data["reopened"] is True and voided.data["patch_seq"] == 1
    remote.release("slow")
    run = wait_for_run(run_id, statuses=WAITING)
    assert run.status == "waiting_for_approval" and not remote.hits("/echo")  # slow done, pay waits for review

    again = decide(user, approval, comment="5000 is fine")  # the same person may decide again: a new question
    assert again.status_code == 200, again.json()
    run = wait_for_run(run_id)
    assert run.status == "completed", run.error
    assert [h["body"] for h in remote.hits("/echo")] == ['{"amount":5000}']
    approval.refresh_from_db()
    assert approval.status == "approved" and approval.action_digest.startswith("sha256:")
    # what the run stores is counted once: the first decision's output went with the reopening
    assert run.usage["output_bytes"] == _stored(run_id)


def test_a_patch_that_reopens_a_gate_and_adds_a_step_the_decision_runs_counts_what_the_run_stores(
        engine, user, remote):
    """The reopening took the gate's output back from what the run counts, and the same patch's
    decision wrote the count it had read before that back, plus its conditional's copy: the gate's
    3 kB counted twice (a red team's). Counts are added in SQL now, never written back."""
    run_id = submit(user, _join_behind_gate(user.username, remote))
    approval = pending_approval(run_id)
    assert decide(user, approval, comment="x" * 3000).status_code == 200

    patched = client_for(user).post(f"/api/v1/runs/{run_id}/patches", {"operations": [
        {"op": "replace", "path": "/nodes/3/config/payload/amount", "value": 5000},  # reopens review
        {"op": "add", "path": "/nodes/-", "value": {"id": "c2", "type": "conditional", "config": {}}},
        {"op": "add", "path": "/edges/-", "value": {"from": "start", "to": "c2"}}]}, format="json")

    assert patched.status_code == 201, patched.json()
    assert Run.objects.get(pk=run_id).usage["output_bytes"] == _stored(run_id)
    remote.release("slow")
    wait_for_run(run_id, statuses=WAITING)
    assert decide(user, pending_approval(run_id)).status_code == 200
    run = wait_for_run(run_id)
    assert run.status == "completed", run.error
    assert run.usage["output_bytes"] == _stored(run_id)


def _stored(run_id: str) -> int:
    return sum(size_of(canonical_json(output)) for output in
               NodeRun.objects.filter(run_id=run_id).values_list("output", flat=True) if output is not None)


def test_an_agent_rewriting_what_an_approved_payment_reads_is_refused(engine, user, remote, fake_llm):
    """pay sends what quote computes; quote runs after slow, which the test holds past the approval.
    A red team's agent replaced quote's expression then: the approval stood and pay sent 5000 where
    5 was approved. Asking the gate again was not enough: pay joins the gate's edge and slow's, so it
    runs on its author's path around the gate whatever the decision (a rejection too), and an agent
    may not change what runs on such a path reads. The patch is refused; pay sends what was approved."""
    fake_llm.reset([{"content": "Done."}])
    flow = _join_behind_gate(user.username, remote)
    flow["nodes"] += [{"id": "plan", "type": "agent", "config": {"task": "summarise"}},
                      {"id": "quote", "type": "transform", "config": {"expression": "{'amount': 5}"}}]
    flow["nodes"][3]["config"]["payload"] = {"amount": "$nodes.quote.amount"}
    flow["edges"] = [e for e in flow["edges"] if e["from"] != "slow"] + [
        {"from": "start", "to": "plan"}, {"from": "slow", "to": "quote"}, {"from": "quote", "to": "pay"}]
    run_id = submit(user, flow)
    approval = pending_approval(run_id)
    assert decide(user, approval).status_code == 200
    wait_until(lambda: NodeRun.objects.filter(run_id=run_id, node_id="plan", status="completed").exists())

    patched = client_for(user).post(f"/api/v1/runs/{run_id}/patches", {"node_id": "plan", "operations": [
        {"op": "replace", "path": "/nodes/5/config/expression", "value": "{'amount': 5000}"}]}, format="json")

    assert patched.status_code == 400, patched.json()
    assert (patched.json()["details"]["rule"], patched.json()["details"]["node_id"]) == ("gate_bypass", "review")
    approval.refresh_from_db()
    assert approval.status == "approved"
    remote.release("slow")
    run = wait_for_run(run_id)
    assert run.status == "completed", run.error
    assert [h["body"] for h in remote.hits("/echo")] == ['{"amount":5}']


def test_votes_cast_on_a_pending_gate_lapse_when_its_action_changes(engine, user, make_user, remote):
    bob = make_user("bob")
    definition = _join_behind_gate(user.username, remote)
    definition["nodes"][1]["config"].update(approvers=[user.username, "bob"], required_approvals=2)
    run_id = submit(user, definition)
    approval = pending_approval(run_id)
    assert decide(bob, approval).status_code == 200  # 1 of 2

    patched = client_for(user).post(f"/api/v1/runs/{run_id}/patches", {"operations": [
        {"op": "replace", "path": "/nodes/3/config/payload/amount", "value": 7}]}, format="json")

    assert patched.status_code == 201, patched.json()
    assert list(Decision.objects.filter(approval=approval).values_list("username", "voided")) == [("bob", True)]
    assert decide(user, approval).status_code == 200  # 1 of 2 again: bob's vote was on another action
    approval.refresh_from_db()
    assert approval.status == "pending"
    assert decide(bob, approval).status_code == 200
    remote.release("slow")
    run = wait_for_run(run_id)
    assert run.status == "completed", run.error
    assert [h["body"] for h in remote.hits("/echo")] == ['{"amount":7}']


def _looped_join(owner: str, remote: Any, **review: Any) -> dict[str, Any]:
    """``_join_behind_gate`` in a loop's body: page → review and page → slow, pay joins both, and
    page → more, a loop back to page for a second pass. review hangs off the body, so it waits once
    per pass: both passes' gates wait at once; each pass's pay waits for its slow (held by the test)."""
    flow = _join_behind_gate(owner, remote, **review)
    flow["nodes"][0]["id"] = "page"
    flow["nodes"].append({"id": "more", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "page",
                                                                  "condition": "iteration < 1"}})
    flow["edges"] = [{**e, "from": "page"} if e["from"] == "start" else e for e in flow["edges"]]
    flow["edges"].append({"from": "page", "to": "more"})
    return flow


def _both_passes_asking(run_id: str) -> list[Approval]:
    return wait_until(lambda: approvals if len(approvals := list(Approval.objects.filter(
        run_id=run_id, status="pending").order_by("node_run__iteration"))) == 2 else None,
        timeout=20, what="both passes' gates asking")


def _slows_done(run_id: str) -> None:
    wait_until(lambda: NodeRun.objects.filter(run_id=run_id, node_id="slow", status="completed",
                                              consumed=True).count() == 2, timeout=20, what="both passes' slow done")


def test_a_patch_to_a_looped_gates_action_voids_the_votes_of_every_pass_waiting(engine, user, bob, remote):
    """The void took the first pending approval of the gate (``.first()``): the other pass kept bob's
    vote on amount 5 and its digest, and the owner's page read before the patch settled it (a red
    team's). Every pass waiting lapses its votes now."""
    run_id = submit(user, _looped_join(user.username, remote, approvers=[user.username, "bob"], required_approvals=2))
    passes = _both_passes_asking(run_id)
    remote.release("slow")  # each pass's pay waits for its gate alone
    _slows_done(run_id)
    read = {a.pk: a.action_digest for a in passes}  # the owner's pages, read before the patch
    for approval in passes:
        assert decide(bob, approval).status_code == 200  # 1 of 2, on amount 5

    patched = client_for(user).post(f"/api/v1/runs/{run_id}/patches", {"operations": [
        {"op": "replace", "path": "/nodes/3/config/payload/amount", "value": 5000}]}, format="json")

    assert patched.status_code == 201, patched.json()
    for approval in passes:
        assert list(Decision.objects.filter(approval=approval).values_list("username", "voided")) == [("bob", True)]
        stale = decide(user, approval, action_digest=read[approval.pk])
        assert stale.status_code == 409 and stale.json()["details"]["rule"] == "action_changed", stale.json()
    assert Event.objects.filter(run_id=run_id, type="approval_voided").count() == 2
    for approval in passes:  # asked again about 5000: both of them, again
        assert decide(bob, approval).status_code == 200
        assert decide(user, approval).status_code == 200
    run = wait_for_run(run_id)
    assert run.status == "completed", run.error
    assert [h["body"] for h in remote.hits("/echo")] == ['{"amount":5000}'] * 2


def test_a_patch_asks_again_every_pass_of_a_looped_gate_whose_approved_action_has_not_begun(
        engine, user, bob, remote):
    """Pass 0's gate approved (four-eyes: bob) pay 5, which waits for slow; pass 1's gate waits. The
    reopening took the gate's newest pass only: pass 0 kept bob's approval and sent the patched 5000
    (a red team's). Every approved pass whose action has not begun asks again now."""
    run_id = submit(user, _looped_join(user.username, remote, approvers=["bob"], allow_self_approval=False))
    first, second = _both_passes_asking(run_id)
    assert decide(bob, first).status_code == 200  # pass 0: pay 5 approved; pay waits for slow
    assert NodeRun.objects.get(run_id=run_id, node_id="review", iteration=0).status == "completed"

    patched = client_for(user).post(f"/api/v1/runs/{run_id}/patches", {"operations": [
        {"op": "replace", "path": "/nodes/3/config/payload/amount", "value": 5000}]}, format="json")

    assert patched.status_code == 201, patched.json()
    first.refresh_from_db()
    assert first.status == "pending"
    assert list(Decision.objects.filter(approval=first).values_list("voided", flat=True)) == [True]
    assert list(NodeRun.objects.filter(run_id=run_id, node_id="review").order_by("iteration")
                .values_list("status", flat=True)) == ["waiting", "waiting"]
    remote.release("slow")
    _slows_done(run_id)
    assert not NodeRun.objects.filter(run_id=run_id, node_id="pay").exists() and not remote.hits("/echo")
    for approval in (first, second):  # asked again about 5000
        assert decide(bob, approval).status_code == 200
    run = wait_for_run(run_id)
    assert run.status == "completed", run.error
    assert [h["body"] for h in remote.hits("/echo")] == ['{"amount":5000}'] * 2


def test_each_pass_of_a_looped_join_runs_when_its_later_pass_ran_first(engine, user, remote):
    """Both passes' gates approved, pass 1's slow finished first and pass 1's pay ran; then pass 0's
    slow finished, and its pay was taken for run (pay had a later pass: a node's iterations were
    read as only growing). Invoice 0 was never paid and the run completed (a fixer's find). Each
    pass's pay runs once both of its pass's parents are done."""
    flow = _looped_join(user.username, remote)
    flow["nodes"][0]["config"]["expression"] = "{'amount': 5, 'hold': 'slow' + string(iteration)}"
    flow["nodes"][2]["config"]["url"] = f"{remote.base}/hold/${{nodes.page.hold}}"  # slow0, slow1
    run_id = submit(user, flow)
    for approval in _both_passes_asking(run_id):
        assert decide(user, approval).status_code == 200
    remote.release("slow1")
    wait_until(lambda: NodeRun.objects.filter(run_id=run_id, node_id="pay", iteration=1, status="completed").exists(),
               timeout=20, what="pass 1's pay done")
    remote.release("slow0")
    run = wait_for_run(run_id)
    assert run.status == "completed", run.error
    assert list(NodeRun.objects.filter(run_id=run_id, node_id="pay").order_by("iteration")
                .values_list("iteration", "status")) == [(0, "completed"), (1, "completed")]
    assert [h["body"] for h in remote.hits("/echo")] == ['{"amount":5}'] * 2


def test_nobody_changes_a_four_eyes_gate_or_its_edges_by_a_run_patch(engine, user, make_user, remote):
    """The gate is not reached yet (slow runs first); four-eyes alone keeps it out of the owner's reach."""
    make_user("bob")
    definition = {"nodes": [
        {"id": "slow", "type": "http", "config": {"url": f"{remote.base}/hold/slow"}},
        {"id": "review", "type": "hitl", "config": {"message": "Pay?", "approvers": [user.username, "bob"],
                                                    "allow_self_approval": False}},
        {"id": "pay", "type": "http", "config": {"url": f"{remote.base}/echo"}},
        {"id": "other", "type": "http", "config": {"url": f"{remote.base}/echo"}},
    ], "edges": [{"from": "slow", "to": "review"}, {"from": "review", "to": "pay"}, {"from": "slow", "to": "other"}]}
    run_id = submit(user, definition)
    wait_for_run(run_id, statuses={"running"})
    owner = client_for(user)
    url = f"/api/v1/runs/{run_id}/patches"
    before = Run.objects.get(pk=run_id).current_artifact_id

    for operations in (
            [{"op": "replace", "path": "/nodes/1/config/approvers", "value": [user.username]}],
            [{"op": "replace", "path": "/nodes/1/config/allow_self_approval", "value": True}],
            [{"op": "remove", "path": "/edges/1"}],
            [{"op": "add", "path": "/edges/-", "value": {"from": "review", "to": "other"}}]):
        refused = owner.post(url, {"operations": operations}, format="json")
        assert refused.status_code == 400, refused.json()
        assert (refused.json()["details"]["rule"], refused.json()["details"]["op"]) == ("gate_immutable", 0)
    assert Run.objects.get(pk=run_id).current_artifact_id == before
    # the rest of the run is still the owner's to change
    fine = owner.post(url, {"operations": [{"op": "add", "path": "/nodes/3/config/method", "value": "POST"}]},
                      format="json")
    assert fine.status_code == 201, fine.json()
    remote.release("slow")


def test_a_replay_below_a_gate_asks_the_gate_again(engine, user, remote):
    run_id = submit(user, _join_behind_gate(user.username, remote))
    assert decide(user, pending_approval(run_id)).status_code == 200
    remote.release("slow")
    assert wait_for_run(run_id).status == "completed"

    replay = client_for(user).post(f"/api/v1/runs/{run_id}/nodes/pay/replay")

    assert replay.status_code == 201, replay.json()
    new_id = replay.json()["run_id"]
    run = wait_for_run(new_id, statuses=WAITING)
    assert run.status == "waiting_for_approval"
    review = NodeRun.objects.get(run_id=new_id, node_id="review")
    assert (review.status, review.reused) == ("waiting", False)
    assert NodeRun.objects.get(run_id=new_id, node_id="start").reused is True
    fresh = Approval.objects.get(run_id=new_id)
    assert fresh.status == "pending" and not fresh.decisions.exists()


def test_a_replay_beside_a_gate_asks_the_gate_again_and_reuses_nothing_it_guards(engine, user, remote):
    """Replayed from ``slow``, a sibling of the gate: the siblings that completed are reused, but
    never a gate's decision, nor what it guards (pay waits for the gate asked again)."""
    run_id = submit(user, _join_behind_gate(user.username, remote))
    assert decide(user, pending_approval(run_id)).status_code == 200
    remote.release("slow")
    assert wait_for_run(run_id).status == "completed"
    paid = len(remote.hits("/echo"))

    replay = client_for(user).post(f"/api/v1/runs/{run_id}/nodes/slow/replay")

    assert replay.status_code == 201, replay.json()
    new_id = replay.json()["run_id"]
    assert wait_for_run(new_id, statuses=WAITING).status == "waiting_for_approval"
    nodes = {nr.node_id: nr for nr in NodeRun.objects.filter(run_id=new_id)}
    assert nodes["start"].reused is True
    assert (nodes["review"].status, nodes["review"].reused) == ("waiting", False)
    assert "pay" not in nodes and len(remote.hits("/echo")) == paid
    assert Approval.objects.get(run_id=new_id).status == "pending"


def test_a_replay_beside_a_gated_branch_it_never_meets_reuses_the_branch_and_asks_nobody(engine, user, remote):
    """``start → review → pay`` approved and paid, beside ``start → wait → tell``, which failed. Replayed
    from ``tell``, nothing of the replay follows or joins the gate: its decision is reused with the
    payment it let through, never asked again (a second approval would only have paid twice)."""
    remote.script("tell-once", [Reply(500, {"error": "mail relay down"}), {"sent": True}])
    definition = {"nodes": [
        {"id": "start", "type": "transform", "config": {"expression": "{'amount': 5}"}},
        {"id": "review", "type": "hitl", "config": {"message": "Pay?", "approvers": [user.username]}},
        {"id": "pay", "type": "http", "config": {"url": f"{remote.base}/echo", "method": "POST",
                                                 "payload": {"amount": 5}}},
        {"id": "wait", "type": "http", "config": {"url": f"{remote.base}/hold/tell-later"}},
        {"id": "tell", "type": "http", "config": {"url": f"{remote.base}/seq/tell-once", "fail_on_status": True}},
    ], "edges": [{"from": "start", "to": "review"}, {"from": "review", "to": "pay", "condition": "$.approved == true"},
                 {"from": "start", "to": "wait"}, {"from": "wait", "to": "tell"}]}
    run_id = submit(user, definition)
    assert decide(user, pending_approval(run_id)).status_code == 200
    wait_until(lambda: NodeRun.objects.filter(run_id=run_id, node_id="pay", status="completed").exists(),
               what="the payment")
    remote.release("tell-later")
    source = wait_for_run(run_id)
    assert source.status == "failed" and source.error["node_id"] == "tell", source.error
    paid = len(remote.hits("/echo"))
    assert paid == 1

    replay = client_for(user).post(f"/api/v1/runs/{run_id}/nodes/tell/replay")

    assert replay.status_code == 201, replay.json()
    run = wait_for_run(replay.json()["run_id"])
    assert run.status == "completed", run.error
    nodes = {nr.node_id: nr for nr in NodeRun.objects.filter(run=run)}
    assert {n: nodes[n].reused for n in ("start", "review", "pay", "wait", "tell")} == {
        "start": True, "review": True, "pay": True, "wait": True, "tell": False}
    assert not Approval.objects.filter(run=run).exists() and len(remote.hits("/echo")) == paid


def test_a_replay_asks_again_a_gate_whose_action_was_in_flight_when_its_source_failed(engine, user, remote):
    """``review`` approved, ``pay`` holding when ``tell`` failed the source: the payment never
    completed there. Its gate's decision is not reused to send it in the replay; it asks again."""
    remote.script("tell-fails", [Reply(500, {"error": "mail relay down"}), {"sent": True}])
    definition = {"nodes": [
        {"id": "start", "type": "transform", "config": {"expression": "{'amount': 5}"}},
        {"id": "review", "type": "hitl", "config": {"message": "Pay?", "approvers": [user.username]}},
        {"id": "pay", "type": "http", "config": {"url": f"{remote.base}/hold/pay-in-flight", "method": "POST",
                                                 "payload": {"amount": 5}}},
        {"id": "wait", "type": "http", "config": {"url": f"{remote.base}/hold/tell-after-pay"}},
        {"id": "tell", "type": "http", "config": {"url": f"{remote.base}/seq/tell-fails", "fail_on_status": True}},
    ], "edges": [{"from": "start", "to": "review"}, {"from": "review", "to": "pay", "condition": "$.approved == true"},
                 {"from": "start", "to": "wait"}, {"from": "wait", "to": "tell"}]}
    run_id = submit(user, definition)
    assert decide(user, pending_approval(run_id)).status_code == 200
    wait_until(lambda: remote.hits("/hold/pay-in-flight"), what="the payment in flight")
    remote.release("tell-after-pay")
    source = wait_for_run(run_id)
    assert source.status == "failed" and source.error["node_id"] == "tell", source.error
    remote.release("pay-in-flight")
    assert NodeRun.objects.get(run=source, node_id="pay").status != "completed"

    replay = client_for(user).post(f"/api/v1/runs/{run_id}/nodes/tell/replay")

    assert replay.status_code == 201, replay.json()
    run = wait_for_run(replay.json()["run_id"], statuses=WAITING)
    assert run.status == "waiting_for_approval"
    nodes = {nr.node_id: nr for nr in NodeRun.objects.filter(run=run)}
    assert (nodes["review"].status, nodes["review"].reused) == ("waiting", False)
    assert "pay" not in nodes


def test_a_gate_asked_again_waits_its_whole_timeout_whatever_the_creating_host_s_clock(engine, user, remote):
    """The deadline is on the database's clock; the row's ``created_at`` on the clock of the worker
    that parked the gate. A gate asked again waited ``deadline - created_at``: from a worker two
    minutes ahead, a one-minute gate asked again was past its deadline at once (its ``on_timeout``
    applied by the next sweep, before anyone could answer)."""
    from datetime import timedelta

    from django.db.models import F

    from approvals.selectors import clock

    run_id = submit(user, _join_behind_gate(user.username, remote, timeout_ms=60_000))
    approval = pending_approval(run_id)
    # the worker that parked it: its clock two minutes ahead of the database's
    Approval.objects.filter(pk=approval.pk).update(created_at=F("created_at") + timedelta(seconds=120))
    assert decide(user, approval).status_code == 200

    before = clock()
    patched = client_for(user).post(f"/api/v1/runs/{run_id}/patches", {"operations": [
        {"op": "replace", "path": "/nodes/3/config/payload/amount", "value": 5000}]}, format="json")

    assert patched.status_code == 201, patched.json()
    approval.refresh_from_db()
    assert approval.status == "pending"
    assert before + timedelta(seconds=59) < approval.deadline <= clock() + timedelta(seconds=60)
    remote.release("slow")


# --- what an approved action reads, an agent may not change under the approval (a red team's finds) ---


def _status(run_id: str, node_id: str) -> str | None:
    return (NodeRun.objects.filter(run_id=run_id, node_id=node_id).order_by("-iteration")
            .values_list("status", flat=True).first())


def _patching(fake_llm: Any, *patches: list[dict[str, Any]]) -> None:
    """Each agent that asks, in turn, proposes the next patch and is done."""
    fake_llm.reset([turn for operations in patches for turn in (
        {"tool_calls": [("patch_workflow", {"operations": operations, "description": "tidy up"})]},
        {"content": "done"})])


def _sent(remote: Any, path: str) -> list[Any]:
    return [json.loads(hit["body"]) for hit in remote.hits(path)]


def _refused(run_id: str) -> list[str]:
    return list(PatchRefusal.objects.filter(run_id=run_id).values_list("rule", flat=True))


def test_a_step_an_agent_adds_inside_an_approved_action_that_the_action_reads_is_part_of_it(
        engine, user, fake_llm, remote):
    """A step an agent the gate approved adds after itself is left out of the action's digest, but
    not one the action reads: ``amount`` reads an optional ``adjust`` (``has(nodes.adjust)``) that
    did not exist when the approver read the action, and the agent added it with its own amount: the
    approval stood and ``pay`` sent 1,000,000. Now the action has begun (the agent runs), and the
    patch is refused."""
    pay = f"/echo/{uuid.uuid4().hex[:8]}"
    _patching(fake_llm, [{"op": "add", "path": "/nodes/-", "value": {
        "id": "adjust", "type": "transform", "config": {"template": {"amount": 1000000}}}},
        {"op": "add", "path": "/edges/0", "value": edge("act", "adjust")}])
    run_id = submit(user, {"nodes": [
        {"id": "review", "type": "hitl", "config": {"message": "Pay 100?", "approvers": [user.username]}},
        agent("act", tools=["patch_workflow"]),
        {"id": "amount", "type": "transform",
         "config": {"expression": "has(nodes.adjust) ? nodes.adjust.amount : inputs.amount"}},
        http("pay", f"{remote.base}{pay}", method="POST", payload={"amount": "$nodes.amount"}),
    ], "edges": [{**edge("review", "act"), "condition": "$.approved == true"}, edge("act", "amount"),
                 edge("amount", "pay")]}, inputs={"amount": 100})
    assert decide(user, pending_approval(run_id)).status_code == 200

    run = wait_for_run(run_id)
    assert _refused(run_id) == ["approved_action_started"]
    assert run.status == "completed" and _sent(remote, pay) == [{"amount": 100}]


def test_a_step_yet_to_run_cannot_be_put_before_a_gate_that_has_asked(engine, user, fake_llm, remote):
    """What is before a gate has run when it asks, and its digest leaves it out. An agent's edge
    from ``quote`` (yet to run) into ``audit`` (skipped, before the gate) put quote "before" it: the
    approvers were asked again about the action without quote, and after the approval another agent
    rewrote quote's amount, the gate not asked again. The edge is refused."""
    pay, hold, asked = f"/echo/{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    _patching(fake_llm, [{"op": "add", "path": "/edges/-", "value": edge("quote", "audit")}])
    run_id = submit(user, {"nodes": [
        {"id": "start", "type": "transform", "config": {"expression": "1"}},
        {"id": "audit", "type": "transform", "config": {"expression": "1"}},
        {"id": "review", "type": "hitl", "config": {"message": "Pay 100?", "approvers": [user.username]}},
        http("pay", f"{remote.base}{pay}", method="POST", payload={"amount": "$nodes.quote.amount"}),
        agent("prep", tools=["patch_workflow"]),
        http("held", f"{remote.base}/hold/{hold}"),
        http("asked", f"{remote.base}/hold/{asked}"),  # prep proposes once the gate has asked
        {"id": "quote", "type": "transform", "config": {"template": {"amount": 100}}},
    ], "edges": [{**edge("start", "audit"), "condition": "inputs.audit == true"}, edge("start", "review"),
                 edge("audit", "review"), {**edge("review", "pay"), "condition": "$.approved == true"},
                 edge("asked", "prep"), edge("held", "quote"), edge("quote", "pay")]}, inputs={"audit": False})
    approval = pending_approval(run_id)
    assert _status(run_id, "audit") == "skipped"
    remote.release(asked)
    wait_until(lambda: _status(run_id, "prep") == "completed", what="prep")

    refusal = PatchRefusal.objects.get(run_id=run_id)
    assert refusal.rule == "history_immutable" and "before gate 'review'" in refusal.message, refusal.message
    assert decide(user, approval).status_code == 200
    remote.release(hold)
    run = wait_for_run(run_id)
    assert run.status == "completed" and _sent(remote, pay) == [{"amount": 100}]


def _paying_a_looped_step(remote: Any, pay: str, hold: str, **more: Any) -> dict[str, Any]:
    """review → wait (held by the test) → pay, which sends F; plan (an agent) → F, beside the gate."""
    return {"nodes": [
        {"id": "review", "type": "hitl", "config": {"message": "Pay?", "approvers": [more.pop("approver")]}},
        http("wait", f"{remote.base}/hold/{hold}"),
        http("pay", f"{remote.base}{pay}", method="POST", payload={"amount": "$nodes.F"}),
        agent("plan", tools=["patch_workflow"]),
        {"id": "F", "type": "transform", "config": {"expression": more.pop("amount")}},
        *more.pop("nodes", []),
    ], "edges": [{**edge("review", "wait"), "condition": "$.approved == true"}, edge("wait", "pay"),
                 edge("plan", "F"), *more.pop("edges", [])]}


def test_lowering_a_loop_over_a_step_the_approved_action_reads_is_part_of_the_approval(
        engine, user, fake_llm, remote):
    """The author's loop L runs F five passes, and the payment reads F's last (100). The loops in the
    digest were those running the action itself again: an agent lowered L to one pass after the
    approval (an agent may lower a loop's bound), F said 500, and pay sent it. A loop over what the
    action reads is part of the approval: the action has begun, and the patch is refused."""
    pay, hold = f"/echo/{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:8]
    _patching(fake_llm, [{"op": "replace", "path": "/nodes/6/config/max_iterations", "value": 1}])
    flow = _paying_a_looped_step(remote, pay, hold, approver=user.username, amount="inputs.amount * (5 - iteration)",
                                 nodes=[{"id": "L", "type": "loop", "config": {"max_iterations": 5,
                                                                                "loop_back_to": "F"}}],
                                 edges=[edge("F", "L")])
    flow["nodes"].insert(3, http("later", f"{remote.base}/hold/{hold}-plan"))  # plan proposes once the action began
    flow["edges"].append(edge("later", "plan"))
    run_id = submit(user, flow, inputs={"amount": 100})
    assert decide(user, pending_approval(run_id)).status_code == 200
    wait_until(lambda: _status(run_id, "wait") == "running", what="the approved action to begin")

    remote.release(f"{hold}-plan")
    wait_until(lambda: _status(run_id, "plan") == "completed", what="plan")
    wait_until(lambda: NodeRun.objects.filter(run_id=run_id, node_id="L", status="completed",
                                              output__decision__in=["timeout", "break"]).exists(), what="L's last pass")
    remote.release(hold)  # pay reads F once L has run it for the last time
    run = wait_for_run(run_id)
    assert _refused(run_id) == ["approved_action_started"]
    assert run.status == "completed" and _sent(remote, pay) == [{"amount": 100}]


def test_a_loop_added_over_a_step_the_approved_action_reads_is_part_of_the_approval(
        engine, user, fake_llm, remote):
    """F, a step the payment reads (100 on its one pass), brought under a new loop after the approval:
    it ran five passes, and pay sent the last, 500, the gate not asked again (an agent's loop over its
    own step, in a red team's repro). Now the action has begun, and the loop is refused."""
    pay, hold = f"/echo/{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:8]
    fake_llm.reset([{"content": "done"}])
    flow = _paying_a_looped_step(remote, pay, hold, approver=user.username, amount="inputs.amount * (iteration + 1)")
    flow["nodes"].insert(3, http("later", f"{remote.base}/hold/{hold}-plan"))
    flow["edges"].append(edge("later", "plan"))
    run_id = submit(user, flow, inputs={"amount": 100})
    assert decide(user, pending_approval(run_id)).status_code == 200
    wait_until(lambda: _status(run_id, "wait") == "running", what="the approved action to begin")

    looped = client_for(user).post(f"/api/v1/runs/{run_id}/patches", {"operations": [
        {"op": "add", "path": "/nodes/-", "value": {"id": "L", "type": "loop",
                                                    "config": {"max_iterations": 5, "loop_back_to": "F"}}},
        {"op": "add", "path": "/edges/-", "value": edge("F", "L")}]}, format="json")

    assert looped.status_code == 400, looped.json()
    assert (looped.json()["details"]["rule"], looped.json()["details"]["node_id"]) == (
        "approved_action_started", "review")
    remote.release(f"{hold}-plan")
    wait_until(lambda: _status(run_id, "F") == "completed", what="F")
    remote.release(hold)
    run = wait_for_run(run_id)
    assert run.status == "completed" and _sent(remote, pay) == [{"amount": 100}]
