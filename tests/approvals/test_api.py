"""Deciding through the API: who may decide what, N-of-M, forms, the compatible form, and two
decisions at the same instant."""

from __future__ import annotations

import threading
from typing import Any

from django.db import connection

from approvals.models import Approval
from tests.approvals.runs import decide, events, finished, ids, output, parked, statuses, submit, wait_until
from tests.conftest import client_for
from workflows.models import Event, NodeRun, Run


def error(response: Any, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.json())
    return response.json()["error"]


def test_unknown_or_someone_elses_is_404_and_a_non_approver_403(engine, user, bob, carol):
    run_id, approval = parked(user, {"approvers": ["bob"]})
    assert error(decide(bob, 987654321), 404) == "not_found"
    assert error(decide(bob, "nope"), 404) == "not_found"
    assert error(decide(carol, approval), 404) == "not_found"
    assert client_for(carol).get(f"/api/v1/approvals/{approval.pk}").status_code == 404
    # The run's owner sees the approval but is not one of its approvers.
    assert client_for(user).get(f"/api/v1/approvals/{approval.pk}").json()["status"] == "pending"
    assert error(decide(user, approval, True), 403) == "not_an_approver"
    assert approval.decisions.count() == 0

    assert decide(bob, approval, True).status_code == 200
    assert error(decide(bob, approval, False), 409) == "approval_settled"
    assert finished(run_id).status == "completed"
    assert output(run_id)["approved"] is True


def test_four_eyes_the_owner_cannot_approve_another_approver_can(engine, user, bob):
    run_id, approval = parked(user, {"approvers": ["alice", "bob"], "allow_self_approval": False})
    assert error(decide(user, approval, True), 403) == "four_eyes_violation"
    assert statuses(run_id)["review"] == "waiting"
    assert decide(bob, approval, True).status_code == 200
    assert finished(run_id).status == "completed"
    assert [d["user"] for d in output(run_id)["decisions"]] == ["bob"]


def test_data_not_matching_the_form_is_400_and_valid_data_is_the_output(engine, user):
    form = {"type": "object", "required": ["amount"], "additionalProperties": False,
            "properties": {"amount": {"type": "integer", "maximum": 100}, "note": {"type": "string"}}}
    run_id, approval = parked(user, {"form": form})

    response = decide(user, approval, True, data={"amount": 500})
    assert error(response, 400) == "invalid_form_data"
    assert response.json()["details"]["path"] == "/data/amount"
    assert approval.decisions.count() == 0

    assert decide(user, approval, True, data={"amount": 40, "note": "partial"}).status_code == 200
    assert finished(run_id).status == "completed"
    assert output(run_id)["data"] == {"amount": 40, "note": "partial"}


def test_two_of_three_counts_distinct_users(engine, user, bob, carol, dave):
    run_id, approval = parked(user, {"approvers": ["bob", "carol", "dave"], "required_approvals": 2})

    first = decide(bob, approval, True, "one")
    assert first.status_code == 200 and first.json()["status"] == "pending"
    assert error(decide(bob, approval, True, "again"), 409) == "already_decided"
    assert Approval.objects.get(pk=approval.pk).status == "pending"
    assert statuses(run_id)["review"] == "waiting"
    assert Run.objects.get(pk=run_id).status == "waiting_for_approval"
    assert [(e["user"], e["approvals"], e["settled"]) for e in events(run_id, "approval_decided")] == [
        ("bob", 1, None)]

    second = decide(carol, approval, True, "two")
    assert second.status_code == 200 and second.json()["status"] == "approved"
    assert finished(run_id).status == "completed"
    out = output(run_id)
    assert [(d["user"], d["comment"]) for d in out["decisions"]] == [("bob", "one"), ("carol", "two")]
    assert statuses(run_id)["refund"] == "completed"
    assert error(decide(dave, approval, True), 409) == "approval_settled"


def test_a_renamed_person_still_votes_once(engine, user, erin, bob):
    """N-of-M counts people: a rename between two votes (an administrator's, or a directory's
    sync) does not make a second person of the first."""
    run_id, approval = parked(user, {"approvers": ["finance", "bob"], "required_approvals": 2})
    assert decide(erin, approval, True, "as erin").json()["status"] == "pending"
    erin.username = "erin.fischer"
    erin.save(update_fields=["username"])
    assert error(decide(erin, approval, True, "as erin.fischer"), 409) == "already_decided"
    assert Approval.objects.get(pk=approval.pk).status == "pending"
    assert decide(bob, approval, True).json()["status"] == "approved"
    assert finished(run_id).status == "completed"
    assert [d["user"] for d in output(run_id)["decisions"]] == ["erin", "bob"]


def test_approvers_by_group_name(engine, user, erin, bob):
    run_id, approval = parked(user, {"approvers": ["finance"]})
    assert ids(client_for(erin).get("/api/v1/approvals?status=pending")) == [approval.pk]
    assert error(decide(bob, approval, True), 404) == "not_found"
    assert decide(erin, approval, True).status_code == 200
    assert finished(run_id).status == "completed"
    assert output(run_id)["decisions"][0]["user"] == "erin"


def test_pending_lists_only_what_the_user_may_decide(engine, user, bob, carol):
    _, for_bob = parked(user, {"approvers": ["bob"]})
    _, for_alice = parked(user)
    settled_run, settled = parked(user, {"approvers": ["bob"]})
    assert decide(bob, settled, False).status_code == 200
    finished(settled_run)

    pending = "/api/v1/approvals?status=pending"
    assert ids(client_for(user).get(pending)) == [for_alice.pk]
    assert ids(client_for(bob).get(pending)) == [for_bob.pk]
    assert ids(client_for(carol).get(pending)) == []
    # Everything visible (own runs and asked-for), when not filtered to what is decidable now.
    assert set(ids(client_for(user).get("/api/v1/approvals"))) == {for_bob.pk, for_alice.pk, settled.pk}
    assert ids(client_for(bob).get("/api/v1/approvals?status=rejected")) == [settled.pk]


def test_compatible_form_decides_by_run_and_node(engine, user, bob, carol):
    run_id, approval = parked(user, {"approvers": ["bob"]})
    compat = {"run_id": run_id, "node_id": "review", "approved": False, "comment": "too much"}

    assert error(client_for(carol).post("/api/v1/approvals", compat, format="json"), 404) == "not_found"
    no_gate = client_for(user).post("/api/v1/approvals", {**compat, "node_id": "prepare"}, format="json")
    assert no_gate.status_code == 404 and no_gate.json()["details"] == {"field": "node_id"}  # it named no field
    response = client_for(bob).post("/api/v1/approvals", compat, format="json")
    assert response.status_code == 200, response.json()
    assert (response.json()["id"], response.json()["status"]) == (approval.pk, "rejected")

    assert finished(run_id).status == "completed"
    assert statuses(run_id)["notify_rejected"] == "completed"
    assert output(run_id)["decisions"][0]["comment"] == "too much"
    assert client_for(bob).post("/api/v1/approvals", compat, format="json").status_code == 409


def looped_gate(approvers: list[str]) -> dict[str, Any]:
    """A gate in a loop's body: it asks once a pass, and both passes' approvals wait at once."""
    return {"nodes": [
        {"id": "page", "type": "transform", "config": {"expression": "{'amount': 5}"}},
        {"id": "review", "type": "hitl", "config": {"message": "Pay?", "approvers": approvers}},
        {"id": "pay", "type": "transform", "config": {"expression": "{'paid': nodes.page.amount}"}},
        {"id": "more", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "page",
                                                  "condition": "iteration < 1"}},
    ], "edges": [{"from": "page", "to": "review"}, {"from": "review", "to": "pay", "condition": "$.approved == true"},
                 {"from": "page", "to": "more"}]}


def test_deciding_by_run_and_node_where_two_passes_wait_is_refused_with_their_ids_not_guessed(engine, user, bob):
    """The compatible form picked the newest of the node's approvals: with two passes waiting, bob's
    "approve run X, node review" decided the newest, which may not be the one he read; once it was
    decided, the older one, still waiting, could not be reached by run and node at all."""
    run_id = submit(user, looped_gate(["bob"]))
    pending = Approval.objects.filter(run_id=run_id, status="pending")
    older, newer = wait_until(lambda: list(pending.order_by("created_at", "pk")) if pending.count() == 2 else None,
                              timeout=20, what="both passes' gates asking")
    compat = {"run_id": run_id, "node_id": "review", "approved": True}

    refused = client_for(bob).post("/api/v1/approvals", compat, format="json")
    assert error(refused, 409) == "ambiguous"
    assert refused.json()["details"]["approval_ids"] == [older.pk, newer.pk]
    assert refused.json()["details"]["field"] == "node_id"
    assert pending.count() == 2 and not older.decisions.exists() and not newer.decisions.exists()

    assert decide(bob, newer).status_code == 200  # by its id
    reached = client_for(bob).post("/api/v1/approvals", compat, format="json")  # the one left waiting
    assert reached.status_code == 200, reached.json()
    assert (reached.json()["id"], reached.json()["status"]) == (older.pk, "approved")
    assert finished(run_id).status == "completed"


def test_two_decisions_at_the_same_instant_settle_and_route_once(engine, user, bob, carol):
    run_id, approval = parked(user, {"approvers": ["bob", "carol"]})
    barrier = threading.Barrier(2)
    results: dict[str, int] = {}

    def post(who: Any) -> None:
        client = client_for(who)
        try:
            barrier.wait(timeout=10)
            results[who.username] = client.post(f"/api/v1/approvals/{approval.pk}/decide",
                                                {"approve": True}, format="json").status_code
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(who,)) for who in (bob, carol)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(results.values()) == [200, 409], results
    assert finished(run_id).status == "completed"
    decided = events(run_id, "approval_decided")
    assert len(decided) == 1 and decided[0]["settled"] == "approved"
    assert decided[0]["user"] == next(name for name, code in results.items() if code == 200)
    assert NodeRun.objects.filter(run_id=run_id, node_id="refund").count() == 1
    assert Event.objects.filter(run_id=run_id, node_id="refund", type="node_started").count() == 1
    assert len(output(run_id)["decisions"]) == 1


def test_an_approval_of_a_run_that_failed_elsewhere_is_no_longer_decidable(engine, user, remote):
    """Another branch fails the run while the approval waits: the approval is cancelled with it."""
    definition = {"nodes": [{"id": "review", "type": "hitl", "config": {"message": "ok?"}},
                            {"id": "later", "type": "http",
                             "config": {"url": f"http://127.0.0.1:{remote.port}/sleep/0.5"}},
                            {"id": "boom", "type": "transform", "config": {"expression": "1 / 0"}}],
                  "edges": [{"from": "later", "to": "boom"}]}
    run_id = submit(user, definition)
    assert finished(run_id).status == "failed"
    approval = Approval.objects.get(run_id=run_id)

    assert approval.status == "cancelled"
    assert ids(client_for(user).get("/api/v1/approvals?status=pending")) == []
    assert error(decide(user, approval, True), 409) == "approval_settled"


def test_approve_without_data_is_checked_against_a_form_with_required_fields(engine, api, user):
    from approvals.models import Approval
    from tests.conftest import wait_for_run

    definition = {"nodes": [{"id": "gate", "type": "hitl",
                             "config": {"message": "ok?", "form": {"type": "object", "required": ["reason"],
                                                                   "properties": {"reason": {"type": "string"}}}}}],
                  "edges": []}
    run_id = api.post("/api/v1/runs", {"workflow": definition}, format="json").json()["run_id"]
    wait_for_run(run_id, statuses={"waiting_for_approval"})
    approval = Approval.objects.get(run_id=run_id)
    missing = api.post(f"/api/v1/approvals/{approval.pk}/decide", {"approve": True}, format="json")
    assert missing.status_code == 400
    assert missing.json()["details"]["rule"] == "form.required"
    ok = api.post(f"/api/v1/approvals/{approval.pk}/decide", {"approve": True, "data": {"reason": "fine"}},
                  format="json")
    assert ok.status_code == 200
    assert wait_for_run(run_id).status == "completed"


def test_an_approval_whose_approvers_were_deactivated_since_says_nobody_can_decide_it(engine, user, bob):
    """Its event was written when bob could decide; deactivating him later leaves a gate with no
    deadline that nothing will move. The approval, as its run's owner reads it (one or listed),
    says so while it is pending."""
    run_id, approval = parked(user, {"approvers": ["bob"]})
    owner = client_for(user)
    assert owner.get(f"/api/v1/approvals/{approval.pk}").json()["nobody_can_decide"] is False

    bob.is_active = False
    bob.save(update_fields=["is_active"])

    assert owner.get(f"/api/v1/approvals/{approval.pk}").json()["nobody_can_decide"] is True
    (listed,) = owner.get("/api/v1/approvals", {"run": run_id}).json()["results"]
    assert listed["nobody_can_decide"] is True
    assert Run.objects.get(pk=run_id).status == "waiting_for_approval"
