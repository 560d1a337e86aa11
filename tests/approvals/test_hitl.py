"""The ``hitl`` node on real workers: it parks its branch as a row, announces the approval, and
routes on the decision (approve edge, reject edge, or no reject edge at all)."""

from __future__ import annotations

from ast import literal_eval
from datetime import datetime
from typing import Any

from django.contrib.auth.models import Group, User

from aob_project.celery import app
from approvals.models import Approval
from tests.approvals.runs import (
    approval_of,
    decide,
    events,
    finished,
    output,
    parked,
    refund_flow,
    statuses,
    submit,
)
from tests.conftest import client_for
from workflows.models import NodeRun


def test_approve_takes_the_approve_edge_with_the_decision_as_output(engine, user, bob):
    run_id, approval = parked(user, {"approvers": ["alice", "bob"]})

    assert statuses(run_id) == {"prepare": "completed", "review": "waiting"}
    (required,) = events(run_id, "approval_required")
    assert required["deadline"] is None
    assert {k: required[k] for k in ("run_id", "node_id", "approval_id", "message", "approvers")} == {
        "run_id": run_id, "node_id": "review", "approval_id": approval.pk,
        "message": "Refund 42 to ACME?", "approvers": ["alice", "bob"]}

    response = decide(bob, approval, True, "looks fine")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "approved"

    run = finished(run_id)
    assert run.status == "completed"
    assert statuses(run_id) == {"prepare": "completed", "review": "completed", "refund": "completed",
                                "notify_rejected": "skipped"}
    out = output(run_id)
    assert {k: out[k] for k in ("approved", "decision", "data")} == {"approved": True, "decision": "approved",
                                                                     "data": None}
    (entry,) = out["decisions"]
    assert {k: entry[k] for k in ("user", "approve", "comment")} == {"user": "bob", "approve": True,
                                                                     "comment": "looks fine"}
    datetime.fromisoformat(entry["at"])
    assert output(run_id, "refund") == {"refunded": 42}
    (decided,) = events(run_id, "approval_decided")
    assert decided["user"] == "bob" and decided["settled"] == "approved"


def test_reject_takes_the_unconditional_edge(engine, user):
    run_id, approval = parked(user)
    assert approval.approvers == ["alice"]  # default: the run's owner

    assert decide(user, approval, False, "no").status_code == 200

    assert finished(run_id).status == "completed"
    assert statuses(run_id) == {"prepare": "completed", "review": "completed", "refund": "skipped",
                                "notify_rejected": "completed"}
    out = output(run_id)
    assert (out["approved"], out["decision"]) == (False, "rejected")
    assert [(d["user"], d["approve"], d["comment"]) for d in out["decisions"]] == [("alice", False, "no")]


def test_reject_with_no_reject_edge_ends_the_branch_and_the_run_completes(engine, user):
    run_id, approval = parked(user, reject_edge=False)

    assert decide(user, approval, False).status_code == 200

    run = finished(run_id)
    assert run.status == "completed", run.error
    assert statuses(run_id) == {"prepare": "completed", "review": "completed", "refund": "skipped"}


def test_waiting_holds_no_worker(engine, user):
    """More parked approvals than the worker has processes, and no executor task is running one of
    their node runs: the wait is a row. Work submitted meanwhile still runs. (Only these runs' node
    runs count: a task an earlier test on this worker left running, a node held on a remote, is
    not this wait's.)"""
    concurrency = 3
    run_ids = [submit(user, refund_flow()) for _ in range(concurrency + 1)]
    approvals = [approval_of(run_id) for run_id in run_ids]
    assert {a.status for a in approvals} == {Approval.Status.PENDING}

    active = app.control.inspect(timeout=1.0).active() or {}
    assert active, "no worker answered"
    mine = set(NodeRun.objects.filter(run_id__in=run_ids).values_list("pk", flat=True))
    held = [t for tasks in active.values() for t in tasks if t["name"].startswith("workers.")
            and (literal_eval(t["args"]) if isinstance(t["args"], str) else t["args"] or [None])[0] in mine]
    assert held == []

    other = submit(user, {"nodes": [{"id": "t", "type": "transform", "config": {"expression": "1"}}], "edges": []})
    assert finished(other).status == "completed"
    assert {r for r in run_ids if statuses(r)["review"] == "waiting"} == set(run_ids)


def test_a_message_its_references_make_longer_than_a_gate_allows_fails_the_node_and_asks_no_one(
        engine: Any, user: Any) -> None:
    """Its save judged ``$inputs.text``, a short string; what the reference holds (an input, an
    agent's or a remote's output) is held to the type's bound when it runs: before, 300,000
    characters went into the approval, its event, every approver's email and the admin's list."""
    flow = {"nodes": [{"id": "review", "type": "hitl",
                       "config": {"message": "$inputs.text", "approvers": [user.username]}}], "edges": []}
    run = finished(submit(user, flow, {"text": "x" * 20_001}))

    review = NodeRun.objects.get(run=run, node_id="review")
    assert (run.status, review.status) == ("failed", "failed")
    assert (review.error["error_type"], review.error["rule"], review.error["path"]) == (
        "ConfigInvalid", "config.maxLength", "/message")
    assert "20000" in review.error["message"] and len(review.error["message"]) < 300  # the limit, not the value
    assert not Approval.objects.filter(run=run).exists()

    within = submit(user, flow, {"text": "x" * 20_000})  # control: at the bound, the gate asks
    assert approval_of(within).message == "x" * 20_000


def test_a_gate_no_active_person_can_decide_says_so_in_its_event(engine, user, make_user, bob):
    """Approvers are names: a typo, a deactivated account or a group with no active member ask no
    one, and with no deadline nothing ever ends the wait. The run's events say so (an approver
    provisioned later would still be asked, so the gate waits rather than fails)."""
    make_user("gone", is_active=False)
    Group.objects.create(name="nobody-here").user_set.add(User.objects.get(username="gone"))
    run_id, _ = parked(user, {"approvers": ["gone", "nobody-here", "no-such-user"]})

    every = client_for(user).get(f"/api/v1/runs/{run_id}/events").json()
    (required,) = [e["data"] for e in every if e["type"] == "approval_required"]
    assert required["nobody_can_decide"] is True
    assert "no active user" in required["warning"] and "cancel" in required["warning"]

    _, reachable = parked(user, {"approvers": ["gone", "bob"]})  # control: bob can decide
    (required,) = events(reachable.run_id, "approval_required")
    assert "nobody_can_decide" not in required


def test_a_gate_fewer_people_can_approve_than_it_needs_says_it_can_never_be_approved(engine, user, bob):
    """Four-eyes with the default approver (the owner, who may then not approve), or two approvals
    asked of one person: a vote can reject it, none can approve it. Its event and the approval say
    so; a gate as many people can approve as it needs says nothing."""
    owner = client_for(user)
    for review, able in (({"allow_self_approval": False}, 0), ({"approvers": ["bob"], "required_approvals": 2}, 1)):
        run_id, approval = parked(user, review)
        (required,) = events(run_id, "approval_required")
        assert required["cannot_be_approved"] is True and "nobody_can_decide" not in required, required
        assert f"only {able} active" in required["warning"] and "never approved" in required["warning"]
        shown = owner.get(f"/api/v1/approvals/{approval.pk}").json()
        assert (shown["cannot_be_approved"], shown["nobody_can_decide"]) == (True, False)

    run_id, approval = parked(user, {"approvers": ["alice", "bob"], "required_approvals": 2,
                                     "allow_self_approval": True})  # control
    assert "cannot_be_approved" not in events(run_id, "approval_required")[0]
    assert owner.get(f"/api/v1/approvals/{approval.pk}").json()["cannot_be_approved"] is False


def test_the_decisions_an_edge_out_of_a_gate_may_test_are_those_a_settled_gate_says():
    """``workflows.definition.gates`` (which the patch policy reads) cannot import approvals: its
    list of a gate's ``output.decision`` values is pinned here to the statuses a settle writes."""
    from approvals.models import Approval
    from workflows.definition import gates

    settled = [s for s in Approval.Status.values if s not in (Approval.Status.PENDING, Approval.Status.CANCELLED)]
    assert list(gates.DECISIONS) == settled
