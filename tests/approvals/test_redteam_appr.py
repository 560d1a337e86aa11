"""Red-team findings on approval gates (branch rt-appr): each test states the rule that should hold
and fails on the code as it is."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group

from tests.approvals.runs import decide, parked
from tests.conftest import client_for
from workflows.approvers import validate_username


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


def test_a_new_user_given_a_renamed_approvers_old_name_neither_reads_nor_decides_the_gate(engine, user, bob,
                                                                                           make_user):
    """bob is asked; an admin renames him (``robert``: the admin's form allows it, the name is no
    group's) and later creates another person under the freed name ``bob``. That newcomer reads the
    gate (its context: the run's inputs and upstream outputs), the run, and decides it; robert, the
    person who was asked, has lost it. A decision is one person's (``Decision`` is keyed on the user,
    "a new user given an old name is another"), but access still follows the string."""
    run_id, approval = parked(user, {"approvers": ["bob"]}, )
    bob.username = "robert"
    bob.save(update_fields=["username"])
    validate_username("bob")  # the admin's rule lets the freed name be taken
    newcomer = make_user("bob")

    seen = client_for(newcomer).get(f"/api/v1/approvals/{approval.pk}")
    run = client_for(newcomer).get(f"/api/v1/runs/{run_id}")
    decided = decide(newcomer, approval)
    assert (seen.status_code, run.status_code, decided.status_code) == (404, 404, 404), (
        f"a user created after the gate, under a name freed by a rename, reads it ({seen.status_code}, "
        f"context keys {sorted((seen.json().get('context') or {}))}), reads its run ({run.status_code}) "
        f"and decides it ({decided.status_code}: {decided.json().get('status')})")


def test_a_user_given_a_renamed_groups_old_name_does_not_inherit_its_gate(engine, user, erin, make_user):
    """The gate asks the group ``finance`` (erin is a member). The group is renamed ``treasury``;
    the name is free, so a user may now be created as ``finance`` (validate_username only refuses a
    name a group has now). That user decides the group's gate as if it were theirs."""
    _, approval = parked(user, {"approvers": ["finance"]})
    Group.objects.filter(name="finance").update(name="treasury")
    validate_username("finance")
    impostor = make_user("finance")

    decided = decide(impostor, approval)
    assert decided.status_code in (403, 404), (
        f"a user named after a renamed group decided its gate: {decided.status_code} {decided.json()}")


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
