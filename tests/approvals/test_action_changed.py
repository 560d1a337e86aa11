"""A gate's approvers read whether what it guards was changed by a patch since the run started
(``approvals.services.action_changed``, the context's ``action_changed``): a decision binds the
action as it is when it is made, and the gate's message was written for the action as it was."""

from __future__ import annotations

import threading
from typing import Any

import redis
from django.conf import settings
from django.db import connection

from approvals.models import Approval
from tests.approvals.runs import approval_of, decide, refund_flow, submit
from tests.conftest import client_for, wait_for_run
from tests.engine.flow import http, wait_until
from workflows.engine import execution
from workflows.models import NodeRun, Run
from workflows.services.runs import run_cancel


def flow(remote: Any) -> dict[str, Any]:
    """/nodes: 0 slow, 1 review, 2 pay; /edges: 0 slow→review, 1 review→pay (approved)."""
    return {"nodes": [http("slow", f"{remote.base}/sleep/1.5"),
                      {"id": "review", "type": "hitl", "config": {"message": "Pay 42?", "approvers": ["bob"]}},
                      {"id": "pay", "type": "transform", "config": {"expression": "{'paid': 42}"}}],
            "edges": [{"from": "slow", "to": "review"}, {"from": "review", "to": "pay", "condition": "$.approved == true"}]}


def patched_while_slow(user: Any, remote: Any, operations: list[dict[str, Any]]) -> Approval:
    run_id = submit(user, flow(remote))
    wait_until(lambda: NodeRun.objects.filter(run_id=run_id, node_id="slow", status="running").exists(),
               what="slow running")
    answer = client_for(user).post(f"/api/v1/runs/{run_id}/patches", {"operations": operations,
                                                                       "description": "pay more"}, format="json")
    assert answer.status_code == 201, answer.json()
    return approval_of(run_id)


def test_approvers_read_that_a_patch_changed_what_the_gate_guards(engine, user, bob, remote) -> None:
    approval = patched_while_slow(user, remote, [{"op": "replace", "path": "/nodes/2/config/expression",
                                                  "value": "{'paid': 999999}"}])
    changed = approval.context["action_changed"]
    assert changed["gate_added_by_patch"] is False and "changed by a patch" in changed["warning"]
    assert changed["patches"] == [{"seq": 1, "node_id": "", "description": "pay more"}]
    shown = client_for(bob).get(f"/api/v1/approvals/{approval.pk}").json()["context"]["action_changed"]
    assert shown["href"] == f"/api/v1/runs/{approval.run_id}/patches"


def test_a_patch_beside_the_action_or_none_says_nothing(engine, user, bob, remote) -> None:
    beside = patched_while_slow(user, remote, [
        {"op": "add", "path": "/nodes/-", "value": {"id": "note", "type": "transform", "config": {"expression": "1"}}},
        {"op": "add", "path": "/edges/-", "value": {"from": "slow", "to": "note"}}])
    assert "action_changed" not in beside.context
    untouched = approval_of(submit(user, flow(remote)))
    assert "action_changed" not in untouched.context


def test_a_gate_asked_again_after_a_patch_says_so_too(engine, user, bob, remote) -> None:
    """A patch while the gate waits lets the votes so far lapse, and the approvers asked again read
    that the action changed (before, only a gate that asked after the patch said so)."""
    run_id = submit(user, flow(remote))
    approval = approval_of(run_id, timeout=30)
    assert "action_changed" not in approval.context
    answer = client_for(user).post(f"/api/v1/runs/{run_id}/patches", {"operations": [
        {"op": "replace", "path": "/nodes/2/config/expression", "value": "{'paid': 999999}"}],
        "description": "pay more"}, format="json")
    assert answer.status_code == 201, answer.json()
    approval.refresh_from_db()
    assert approval.context["action_changed"]["patches"] == [{"seq": 1, "node_id": "", "description": "pay more"}]


def test_a_vote_from_a_page_read_before_a_patch_changed_the_action_is_refused(engine, user, bob, remote) -> None:
    """bob reads the gate (the page, the inbox), a patch then changes what it guards, and bob clicks
    Approve on what he read: his vote would approve an action he never saw (the page does not
    reload). The vote names the action it was cast on (``action_digest``, as the approval answered
    it); one cast on another is refused, counted nowhere, and bob votes again on what he now reads."""
    run_id = submit(user, flow(remote))
    approval = approval_of(run_id, timeout=30)
    read = client_for(bob).get(f"/api/v1/approvals/{approval.pk}").json()
    assert read["action_digest"]  # what the page hands back with the vote
    answer = client_for(user).post(f"/api/v1/runs/{run_id}/patches", {"operations": [
        {"op": "replace", "path": "/nodes/2/config/expression", "value": "{'paid': 999999}"}],
        "description": "pay more"}, format="json")
    assert answer.status_code == 201, answer.json()

    stale = decide(bob, approval, action_digest=read["action_digest"])

    assert stale.status_code == 409, stale.json()
    assert stale.json()["error"] == "action_changed" and stale.json()["details"]["field"] == "action_digest"
    assert not approval.decisions.exists()
    again = client_for(bob).get(f"/api/v1/approvals/{approval.pk}").json()
    assert again["action_digest"] != read["action_digest"] and again["context"]["action_changed"]
    assert decide(bob, approval, action_digest=again["action_digest"]).status_code == 200
    assert wait_for_run(run_id).status == "completed"


def test_a_patch_committed_while_the_gate_is_about_to_ask_is_told_to_its_approvers(engine, user, bob,
                                                                                  monkeypatch) -> None:
    """A patch committed after the gate's executor began, before its park took the run's lock,
    found the gate running (neither waiting nor approved): it voided nothing and said nothing. The
    executor had read ``action_changed`` before it, so the approval asked about the patched action
    (999999) under no "Changed since the run started". It is read in the park now, under the run's
    lock, as the digest the approvers are asked about is. The executor here is the test process's,
    paused before its park; the workers' is held before its claim, and finds the gate parked."""
    import approvals.nodetypes as hitl

    hooks = redis.Redis.from_url(settings.REDIS_URL)
    hooks.set("aob:test:stall:execution:review", 1)
    parking, go = threading.Event(), threading.Event()
    real_park = hitl.park

    def paused_park(ctx: Any, create: Any) -> bool:
        parking.set()
        go.wait(20)
        return real_park(ctx, create)

    monkeypatch.setattr(hitl, "park", paused_park)
    run_id = submit(user, {"nodes": [
        {"id": "review", "type": "hitl", "config": {"message": "Pay 42?", "approvers": ["bob"]}},
        {"id": "pay", "type": "transform", "config": {"expression": "{'paid': 42}"}}],
        "edges": [{"from": "review", "to": "pay", "condition": "$.approved == true"}]})
    try:
        wait_until(lambda: hooks.exists("aob:test:stalled:execution:review"), timeout=20, what="review held")
        gate = NodeRun.objects.get(run_id=run_id, node_id="review")

        def ask() -> None:
            try:
                execution.execute(gate.pk)
            finally:
                connection.close()

        asking = threading.Thread(target=ask)
        asking.start()
        assert parking.wait(20), "the gate never came to park"
        answer = client_for(user).post(f"/api/v1/runs/{run_id}/patches", {"operations": [
            {"op": "replace", "path": "/nodes/1/config/expression", "value": "{'paid': 999999}"}],
            "description": "pay more"}, format="json")
        assert answer.status_code == 201, answer.json()
        go.set()
        asking.join(30)
        approval = Approval.objects.get(run_id=run_id, node_id="review")
        assert approval.status == "pending"
        changed = (approval.context or {}).get("action_changed")
        assert changed is not None, "asked about the patched action, and told nothing changed"
        assert changed["patches"] == [{"seq": 1, "node_id": "", "description": "pay more"}]
        assert decide(bob, approval).status_code == 200
        assert wait_for_run(run_id).status == "completed"
    finally:
        go.set()
        hooks.set("aob:test:stall_release:execution:review", 1)
        run = Run.objects.get(pk=run_id)
        if run.status not in Run.FINISHED:
            run_cancel(run=run, user=user)


def test_a_vote_a_patch_voided_is_counted_in_no_answer(engine, user, bob, carol) -> None:
    """bob approves a two-person gate, a patch then changes what it guards: his vote lapses, and
    only a vote on the action as it is now counts. The approvals' answers (the inbox, the run page,
    the approval's own, the CLI's) listed it still, so the inbox said "1 of 2 approvals" though one
    more vote would not approve it. They list the votes that count (``Decision.objects.counting``)."""
    run_id = submit(user, refund_flow({"approvers": ["bob", "carol"], "required_approvals": 2}))
    approval = approval_of(run_id)
    assert decide(bob, approval, comment="for 42").status_code == 200
    answer = client_for(user).post(f"/api/v1/runs/{run_id}/patches", {"operations": [
        {"op": "replace", "path": "/nodes/2/config/expression", "value": "{'refunded': 999999}"}],
        "description": "pay more"}, format="json")
    assert answer.status_code == 201, answer.json()
    assert approval.decisions.get().voided  # the patch voided bob's vote

    def votes(reader: Any, url: str) -> list[list[Any]]:
        read = client_for(reader).get(url)
        assert read.status_code == 200, read.json()
        body = read.json()
        shown = next(a for a in body["results"] if a["id"] == approval.pk) if "results" in body else body
        return [[d["user"], d["approve"]] for d in shown["decisions"]]

    assert votes(carol, "/api/v1/approvals?status=pending") == []  # carol's inbox
    assert votes(bob, "/api/v1/approvals?status=pending") == []  # bob is asked again
    assert votes(user, f"/api/v1/approvals?run={run_id}") == []  # the run page
    assert votes(user, f"/api/v1/approvals/{approval.pk}") == []

    assert decide(carol, approval).status_code == 200
    assert votes(bob, f"/api/v1/approvals/{approval.pk}") == [["carol", True]]
    assert Approval.objects.get(pk=approval.pk).status == "pending"  # one vote of the two it needs
    assert decide(bob, approval).status_code == 200
    assert wait_for_run(run_id).status == "completed"
    assert votes(user, f"/api/v1/approvals/{approval.pk}") == [["carol", True], ["bob", True]]
    assert votes(user, f"/api/v1/approvals?run={run_id}") == [["carol", True], ["bob", True]]
