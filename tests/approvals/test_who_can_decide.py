"""Who can still decide a gate, counted as it is now (votes cast count, voters cannot vote again, a
four-eyes owner may only reject), whose inbox lists it, and names: a name its holder left is given
to no one else. Each failed on the code before (a red-team helper's findings)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from approvals.models import Approval
from tests.approvals.runs import decide, parked, submit, wait_until
from tests.conftest import client_for
from workflows.approvers import validate_group_name, validate_username
from workflows.models import NodeRun


def _read(owner: Any, approval_id: int) -> dict:
    answer = client_for(owner).get(f"/api/v1/approvals/{approval_id}")
    assert answer.status_code == 200, answer.json()
    return answer.json()


def test_a_gate_whose_only_active_approver_has_already_voted_says_nobody_can_decide_it(engine, user, bob, carol):
    """2-of-2 (bob, carol): bob approves, then carol is deactivated. Nobody can cast a vote any
    more (bob's second vote, even a rejection, is ``already_decided``; carol cannot sign in), and the
    gate has no deadline: the run waits for ever. Its answer should say ``nobody_can_decide``; it says
    False, and ``cannot_be_approved`` whose documented meaning is "a vote can reject it", which no
    vote can."""
    run_id, approval = parked(user, {"approvers": ["bob", "carol"], "required_approvals": 2})
    assert decide(bob, approval).status_code == 200
    carol.is_active = False
    carol.save(update_fields=["is_active"])

    again = decide(bob, approval, approve=False)
    assert again.status_code == 409 and again.json()["error"] == "already_decided", again.json()

    answer = _read(user, approval.pk)
    assert answer["status"] == "pending"
    assert answer["nobody_can_decide"] is True, (
        "nobody can vote on this gate (its one active approver has voted, the other is deactivated) "
        f"but its answer says nobody_can_decide={answer['nobody_can_decide']}, "
        f"cannot_be_approved={answer['cannot_be_approved']}")


def test_a_gate_a_deactivated_voter_already_approved_is_not_said_to_be_unapprovable(engine, user, bob, carol):
    """2-of-2 (bob, carol): bob approves, then bob is deactivated. His vote still counts, so carol's
    approval settles the gate. Before she votes the answer says ``cannot_be_approved`` ("none can
    approve it"): who_could_approve counts active people only, not votes already cast."""
    _, approval = parked(user, {"approvers": ["bob", "carol"], "required_approvals": 2})
    assert decide(bob, approval).status_code == 200
    bob.is_active = False
    bob.save(update_fields=["is_active"])

    said = _read(user, approval.pk)["cannot_be_approved"]
    settled = decide(carol, approval)
    assert settled.status_code == 200 and settled.json()["status"] == "approved", settled.json()
    assert said is False, "the gate said cannot_be_approved, then carol's one vote approved it"


def test_a_name_an_approver_left_is_given_to_no_one_else(engine, user, bob, erin):
    """bob is asked; an admin renames him ``robert``. Before, the freed name ``bob`` could be given to
    a newcomer, who then read the gate (its context: the run's inputs and upstream outputs), the run,
    and decided it, while robert, the person asked, had lost it: access follows the name. Now a name
    its holder left is given to no one else (``LeftName``), on every surface that names users and
    groups; its holder may take it back. So for a group's name (``finance``, renamed)."""
    from django.core.exceptions import ValidationError

    from aob_project.exceptions import ValidationFailed
    from workflows.services.users import user_get_or_create

    parked(user, {"approvers": ["bob"]})
    bob.username = "robert"
    bob.save()
    with pytest.raises(ValidationError) as refused:
        validate_username("bob")
    assert refused.value.code == "name_left"
    with pytest.raises(ValidationError):
        validate_group_name("bob")
    with pytest.raises(ValidationFailed):  # manage.py aob_create_user's way
        user_get_or_create(username="bob")
    validate_username("bob", user_id=bob.pk)  # robert may be bob again

    finance = Group.objects.get(name="finance")
    finance.name = "treasury"
    finance.save()
    with pytest.raises(ValidationError):
        validate_username("finance")
    validate_group_name("finance", group_id=finance.pk)

    bob.delete()  # a deleted user's name is left too
    with pytest.raises(ValidationError):
        validate_username("robert")


def test_the_admin_refuses_a_name_another_user_left(engine, user, bob, make_user):
    from django.test import Client

    bob.username = "robert"
    bob.save()
    root = make_user("root", is_staff=True, is_superuser=True)
    admin = Client()
    admin.force_login(root)
    page = admin.post("/admin/auth/user/add/", {"username": "bob", "password1": "a-Long-pass-42!",
                                                "password2": "a-Long-pass-42!", "usable_password": "true"})
    assert page.status_code == 200 and "was another" in page.content.decode()
    assert not User.objects.filter(username="bob").exists()


def test_the_pending_inbox_leaves_out_a_gate_the_user_has_already_voted_on(engine, user, bob, carol):
    """``?status=pending`` (the CLI's "pending: the ones you can decide now", ``approvals_decidable``:
    "Pending approvals this user may decide now") keeps listing a 2-of-2 gate to bob after his vote,
    though any vote of his now is 409 ``already_decided``; carol, who can decide it, sees it too."""
    _, approval = parked(user, {"approvers": ["bob", "carol"], "required_approvals": 2})
    assert decide(bob, approval).status_code == 200
    assert decide(bob, approval, approve=False).json()["error"] == "already_decided"

    def pending(person: Any) -> list[int]:
        return [a["id"] for a in client_for(person).get("/api/v1/approvals?status=pending").json()["results"]]

    assert pending(carol) == [approval.pk]
    assert pending(bob) == [], "bob's inbox of what he can decide now lists a gate he can no longer vote on"


def test_a_gate_whose_only_approver_is_deactivated_says_so_where_the_run_says_what_it_waits_for(engine, user, bob):
    """bob, the gate's one approver, is deactivated after it asked: its approval answers
    ``nobody_can_decide``, and the run's details, timeline and the gate's iterations, which said
    only "a person's decision (its approval)", say that nobody can make it and what ends it
    (red team 11): the approvals' one rule (``fill_decidable``), read once per answer."""
    run_id, approval = parked(user, {"approvers": ["bob"]})
    api = client_for(user)

    def said() -> list[str]:
        details = api.get(f"/api/v1/runs/{run_id}/details").json()
        timeline = api.get(f"/api/v1/runs/{run_id}/timeline").json()
        iterations = api.get(f"/api/v1/runs/{run_id}/nodes/review/iterations").json()
        return [*(n["waiting_for"] for n in details["nodes"] if n["node_id"] == "review"),
                *(i["waiting_for"] for i in timeline["items"] if i["node_id"] == "review"),
                *(i["waiting_for"] for i in iterations["results"])]

    assert said() == [NodeRun.WAITING_FOR["approval"]] * 3
    bob.is_active = False
    bob.save(update_fields=["is_active"])
    assert _read(user, approval.pk)["nobody_can_decide"] is True
    now = said()
    assert len(now) == 3 and len(set(now)) == 1, now
    assert "nobody can make" in now[0] and f"approval {approval.pk}" in now[0] and "cancelling the run" in now[0], now


def test_what_gates_nobody_can_decide_wait_for_is_read_in_the_same_statements_for_one_or_many(engine, user, bob):
    """The run's details ask the approvals once for all its waiting gates, not once per gate."""
    def gates(count: int) -> dict:
        return {"nodes": [{"id": f"g{i}", "type": "hitl", "config": {"approvers": ["bob"]}} for i in range(count)],
                "edges": []}

    runs = [submit(user, gates(1), {}), submit(user, gates(3), {})]
    wait_until(lambda: Approval.objects.filter(run_id__in=runs, status="pending").count() == 4, what="4 gates asked")
    bob.is_active = False
    bob.save(update_fields=["is_active"])
    api = client_for(user)
    read = []
    for run_id in runs:
        with CaptureQueriesContext(connection) as statements:
            answer = api.get(f"/api/v1/runs/{run_id}/details").json()
        read.append(len(statements.captured_queries))
        assert all("nobody can make" in n["waiting_for"] for n in answer["nodes"]), answer["nodes"]
    assert read[0] == read[1], read
