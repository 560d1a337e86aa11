"""An approval binds how many times the approved action runs: a loop whose jump runs the approved
payment again is part of the action's digest (``gates.action_digest``), and so is what that loop's
condition reads. After bob's four-eyes approval of one payment that joins a step of a paging loop,
the owner's patch of the step whose output the loop's condition reads (``{'more': false}`` →
``{'more': true}``) made the payment run on every one of the loop's passes on the one approval:
now it asks bob again, as the same change spelled on the loop's condition does."""

from __future__ import annotations

import pytest

from approvals.models import Approval
from tests.agents.flows import http
from tests.approvals.runs import approval_of, decide, finished, submit
from tests.conftest import client_for
from tests.engine.flow import wait_until
from workflows.models import NodeRun

# /nodes: 0 fetch, 1 review, 2 pay, 3 page, 4 check, 5 more
PATCHES = {
    "the step the condition reads": [
        {"op": "replace", "path": "/nodes/4/config/expression", "value": "{'more': true}"}],
    "the loop's own condition": [
        {"op": "replace", "path": "/nodes/5/config/condition", "value": "true"}],
}


def paging(remote):
    return {"nodes": [
        http("fetch", f"{remote.base}/echo/invoice"),
        {"id": "review", "type": "hitl", "config": {"message": "Pay once?", "approvers": ["bob"],
                                                    "allow_self_approval": False}},
        http("pay", f"{remote.base}/echo/pay", method="POST", payload={"amount": 100}),
        http("page", f"{remote.base}/hold/page"),
        {"id": "check", "type": "transform", "config": {"expression": "{'more': false}"}},
        {"id": "more", "type": "loop", "config": {"max_iterations": 5, "loop_back_to": "page",
                                                   "condition": "output.more"}},
    ], "edges": [{"from": "fetch", "to": "review"}, {"from": "review", "to": "pay", "condition": "$.approved == true"},
                 {"from": "page", "to": "check"}, {"from": "check", "to": "more"}, {"from": "page", "to": "pay"}]}


def approved(user, bob, remote):
    run_id = submit(user, paging(remote))
    # (the run is running meanwhile: page is held until the test releases it)
    approval = wait_until(lambda: Approval.objects.filter(run_id=run_id, node_id="review").first(),
                          what="review asking")
    answer = decide(bob, approval)
    assert answer.status_code == 200, answer.json()
    wait_until(lambda: NodeRun.objects.filter(run_id=run_id, node_id="review", status="completed").exists(),
               what="review approved")
    return run_id, approval


def test_an_approved_payment_joined_with_a_paging_loop_pays_once(engine, user, bob, remote):
    run_id, _ = approved(user, bob, remote)
    remote.release("page")

    assert finished(run_id, timeout=60).status == "completed"
    assert len(remote.hits("/echo/pay")) == 1


@pytest.mark.parametrize("changed", list(PATCHES))
def test_a_patch_of_what_the_paging_loop_s_condition_reads_asks_the_approver_again(
        engine, user, bob, remote, changed):
    run_id, approval = approved(user, bob, remote)

    answer = client_for(user).post(f"/api/v1/runs/{run_id}/patches", {"operations": PATCHES[changed]}, format="json")
    assert answer.status_code == 201, answer.json()
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING
    remote.release("page")
    # the loop goes round all its passes, and the payment waits for bob's word on the changed action
    # (on the one approval it ran on every pass: the run completed, and paid 5 times)
    assert approval_of(run_id, timeout=60).pk == approval.pk
    assert remote.hits("/echo/pay") == []
    assert NodeRun.objects.filter(run_id=run_id, node_id="page", status="completed").count() == 5
