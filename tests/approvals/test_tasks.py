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
    # what its next deadline does is stored, as every reader shows it: it rejects (said "escalate")
    assert approval.on_timeout == "reject"
    assert client_for(boss).get(f"/api/v1/approvals/{approval.pk}").json()["on_timeout"] == "reject"
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


def _past_deadline(owner, **fields):
    from datetime import timedelta

    from django.utils import timezone

    from tests.conftest import stored_run

    return Approval.objects.create(run=stored_run(owner), node_id="a", approvers=["bob"],
                                   deadline=timezone.now() - timedelta(seconds=1), **fields)


def test_a_decision_after_the_deadline_is_refused_and_the_deadline_s_policy_applies(db, user, bob):
    """Before, a decision was counted until the sweep came round: a late approve won over
    ``on_timeout: reject``. Now the decision applies the sweep's own expiry first, then is refused."""
    from workflows.models import Event

    approval = _past_deadline(user, on_timeout="reject")

    response = decide(bob, approval, True, "just in time?")

    assert response.status_code == 409, response.json()
    assert response.json()["error"] == "deadline_passed"
    assert response.json()["details"]["rule"] == "deadline"
    approval.refresh_from_db()
    assert (approval.status, approval.decisions.count()) == ("expired", 0)
    (decided,) = Event.objects.filter(run_id=approval.run_id, type="approval_decided").values_list("data", flat=True)
    assert (decided["timeout"], decided["on_timeout"], decided["settled"]) == (True, "reject", "expired")


def test_a_late_decision_on_an_escalating_approval_is_judged_after_the_escalation(db, user, bob, boss):
    """``escalate`` keeps the approval open, widened to the escalation target, with a new deadline:
    the escalation applies, and a decision within the new deadline counts, as it would once the
    sweep had escalated."""
    from workflows.models import Event

    approval = _past_deadline(user, on_timeout="escalate", escalate_to=["boss"], escalation_timeout_ms=60_000)

    response = decide(bob, approval, False, "no, late but within the escalation")

    assert response.status_code == 200, response.json()
    approval.refresh_from_db()
    assert (approval.status, approval.escalated, approval.approvers) == ("rejected", True, ["bob", "boss"])
    trail = [(e.type, e.data.get("escalated"), e.data.get("settled"))
             for e in Event.objects.filter(run_id=approval.run_id).order_by("seq")]
    assert trail == [("approval_required", True, None), ("approval_decided", None, "rejected")]
    assert approval.on_timeout == "reject"


def test_an_escalation_without_a_deadline_of_its_own_leaves_nothing_to_apply(db, user, bob, boss):
    """No ``escalation_timeout_ms``: the escalated gate has no deadline, and says no outcome of one."""
    approval = _past_deadline(user, on_timeout="escalate", escalate_to=["boss"])

    assert decide(bob, approval, True, "late").status_code == 200
    approval.refresh_from_db()
    assert (approval.status, approval.escalated, approval.deadline, approval.on_timeout) == ("approved", True, None, "")


def test_a_wait_longer_than_a_year_is_refused_at_save_naming_the_field(api):
    """A deadline of 10^17 ms is past any date PostgreSQL or Python holds; a person's save and an
    agent's patch meet the same schema."""
    too_long = refund_flow({**TIMEOUT, "on_timeout": "escalate", "escalate_to": ["boss"],
                            "escalation_timeout_ms": 10**17})
    response = api.post("/api/v1/workflows/validate", {"workflow": too_long}, format="json")
    problems = response.json()["errors"]
    assert [(p["path"], p["rule"]) for p in problems] == [("/nodes/1/config/escalation_timeout_ms", "config.maximum")]


def test_one_gate_whose_deadline_cannot_apply_never_keeps_another_s_from_applying(engine, user, make_user, bob,
                                                                                  boss):
    """A gate written before its waits were bounded, escalating for 10^17 ms: the sweep (beat's
    ``approvals.expire``, newest first) failed on it and applied no deadline after it, for every
    tenant, every time; and a decision on it was a 500. Now its escalation waits at most
    ``MAX_WAIT_MS``, and each approval expires in its own transaction."""
    from datetime import timedelta

    from django.utils import timezone

    other = make_user("other")
    theirs = submit(other, refund_flow({"approvers": ["other"], "timeout_ms": 1_500}))
    approval_of(theirs)
    poisoned = submit(user, refund_flow({"approvers": ["bob"], "timeout_ms": 3_600_000, "on_timeout": "escalate",
                                         "escalate_to": ["boss"], "escalation_timeout_ms": 60_000}))
    gate = approval_of(poisoned)
    Approval.objects.filter(pk=gate.pk).update(escalation_timeout_ms=10**17,
                                               deadline=timezone.now() - timedelta(seconds=1))

    assert finished(theirs).status == "completed"  # its deadline applied: rejected
    assert statuses(theirs)["notify_rejected"] == "completed"
    gate = wait_until(lambda: Approval.objects.filter(pk=gate.pk, escalated=True).first(), what="the escalation")
    assert gate.deadline <= timezone.now() + timedelta(days=366)  # approvals.services.MAX_WAIT_MS
    assert decide(boss, gate, True, "ok").status_code == 200
    assert finished(poisoned).status == "completed"


def test_one_owners_due_gates_take_turns_with_anothers_in_bounded_ticks(db, make_user):
    """``approvals.expire`` took every due approval in one task, newest first: one owner's 2,000 due
    gates held it 11.6 s while another's, due five minutes earlier, was expired last (a red-team
    helper's finding). Now a tick takes at most a batch, the owners in turn."""
    from datetime import timedelta

    from django.utils import timezone

    from approvals.services import approvals_expire_due
    from tests.conftest import stored_run

    alice, mallory = make_user("alice"), make_user("mallory")
    now = timezone.now()
    theirs = Approval.objects.create(run=stored_run(alice), node_id="review", approvers=["alice"],
                                     deadline=now - timedelta(seconds=1), on_timeout="reject")
    run = stored_run(mallory)
    Approval.objects.bulk_create([Approval(run=run, node_id=f"g{i}", approvers=["mallory"], on_timeout="reject",
                                           deadline=now - timedelta(minutes=5) + timedelta(milliseconds=i))
                                  for i in range(30)])  # each due before alice's

    assert approvals_expire_due(batch=10) == 10
    theirs.refresh_from_db()
    assert theirs.status == "expired"  # in the first tick, though 30 of mallory's were due before it
    mallory_first = list(Approval.objects.filter(run=run, status="expired").values_list("node_id", flat=True))
    assert sorted(mallory_first, key=lambda n: int(n[1:])) == [f"g{i}" for i in range(9)]  # hers earliest first
    assert approvals_expire_due(batch=10) == 10 and approvals_expire_due(batch=100) == 11
    assert not Approval.objects.filter(status="pending").exists()


def test_a_decision_within_the_deadline_counts_on_hosts_whose_clocks_are_ahead(db, user, bob, monkeypatch):
    """A deadline is set and judged by the database's clock. Before, each process judged it by its
    own: on a web host two minutes ahead, a decision a minute before the deadline was refused and
    the deadline's ``reject`` applied; beat's sweeps on such a host expired it, and sent its
    reminder, as early."""
    from datetime import timedelta
    from types import SimpleNamespace

    from django.utils import timezone

    from approvals import notifications, services
    from tests.conftest import stored_run

    approval = Approval.objects.create(run=stored_run(user), node_id="a", approvers=["bob"], on_timeout="reject",
                                       deadline=timezone.now() + timedelta(seconds=60),
                                       remind_at=timezone.now() + timedelta(seconds=30))
    ahead = SimpleNamespace(now=lambda: timezone.now() + timedelta(seconds=120))
    for module in (services, notifications):  # the processes' clock, two minutes ahead
        monkeypatch.setattr(module, "timezone", ahead)

    assert (notifications.approvals_remind_due(), services.approvals_expire_due()) == (0, 0)
    response = decide(bob, approval, True, "in time")

    assert response.status_code == 200, response.json()
    approval.refresh_from_db()
    assert approval.status == "approved"
