"""Deadlines are rows swept by beat (``approvals.expire``): each ``on_timeout`` applies its outcome
and says so in an event; ``escalate`` widens the approvers and sets a new deadline."""

from __future__ import annotations

from approvals.models import Approval
from tests.approvals.runs import (
    approval_of,
    decide,
    events,
    finished,
    ids,
    output,
    refund_flow,
    statuses,
    submit,
    wait_until,
)
from tests.conftest import client_for

TIMEOUT = {"approvers": ["bob"], "timeout_ms": 200}


def test_timeout_applies_on_timeout_approve_reject_or_fail(engine, user):
    run_ids = {outcome: submit(user, refund_flow({**TIMEOUT, "on_timeout": outcome}))
               for outcome in ("approve", "reject", "fail")}

    for outcome, approved, taken in [("approve", True, "refund"), ("reject", False, "notify_rejected")]:
        run_id = run_ids[outcome]
        assert finished(run_id).status == "completed"
        out = output(run_id)
        assert (out["approved"], out["decision"], out["decisions"]) == (approved, "expired", [])
        assert statuses(run_id)[taken] == "completed"

    failed = finished(run_ids["fail"])
    assert failed.status == "failed"
    assert (failed.error["node_id"], failed.error["error_type"]) == ("review", "ApprovalTimeout")
    assert statuses(failed.pk) == {"prepare": "completed", "review": "failed"}
    assert events(failed.pk, "workflow_failed")[0]["error"]["error_type"] == "ApprovalTimeout"

    for outcome, run_id in run_ids.items():
        assert Approval.objects.get(run_id=run_id).status == "expired"
        (decided,) = events(run_id, "approval_decided")
        assert (decided["timeout"], decided["on_timeout"], decided["settled"]) == (True, outcome, "expired")


def test_timeout_escalates_then_the_escalation_target_decides(engine, user, bob, boss):
    escalate = {**TIMEOUT, "on_timeout": "escalate", "escalate_to": ["boss"]}
    run_id = submit(user, refund_flow({**escalate, "escalation_timeout_ms": 60_000}))
    # Nobody decides after the escalation either: the second deadline rejects.
    unanswered = submit(user, refund_flow({**escalate, "escalation_timeout_ms": 200}))

    approval = approval_of(run_id)
    approval = wait_until(lambda: Approval.objects.filter(pk=approval.pk, escalated=True).first(), what="escalation")
    assert (approval.status, approval.approvers) == ("pending", ["bob", "boss"])
    first, second = events(run_id, "approval_required")
    assert first["deadline"] is not None and "escalated" not in first
    assert (second["escalated"], second["escalated_to"], second["approval_id"]) == (True, ["boss"], approval.pk)
    assert second["deadline"] > first["deadline"]
    assert statuses(run_id)["review"] == "waiting"

    assert approval.pk in ids(client_for(boss).get("/api/v1/approvals?status=pending"))
    assert decide(boss, approval, True, "escalated: ok").status_code == 200
    assert finished(run_id).status == "completed"
    out = output(run_id)
    assert (out["decision"], [d["user"] for d in out["decisions"]]) == ("approved", ["boss"])
    assert statuses(run_id)["refund"] == "completed"

    assert finished(unanswered).status == "completed"
    assert len(events(unanswered, "approval_required")) == 2
    assert (output(unanswered)["decision"], output(unanswered)["approved"]) == ("expired", False)
    assert statuses(unanswered)["notify_rejected"] == "completed"
