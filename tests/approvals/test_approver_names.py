"""A name that is a group's is the group's (workflows/approvers.py): a user whose username is a
group's name decides for that group only as a member, through every path."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group, User

from approvals import selectors
from approvals.models import Approval
from approvals.notifications import approval_notify
from tests.approvals.runs import decide, finished, parked
from tests.conftest import client_for, stored_run
from workflows import visibility
from workflows.approvers import approver_names


@pytest.fixture
def namesake(make_user: Any) -> User:
    """An account named like the group ``finance`` (erin's), and not in it."""
    return make_user("finance")


@pytest.mark.django_db
def test_every_reading_of_a_clashing_name_is_the_groups(user: User, erin: User, bob: User, namesake: User) -> None:
    run = stored_run(user)
    approval = Approval.objects.create(run=run, node_id="review", approvers=["finance"], required_approvals=2)
    by_name = Approval.objects.create(run=stored_run(user), node_id="review", approvers=["bob"])

    assert "finance" not in approver_names(namesake) and "finance" in approver_names(erin)
    assert "bob" in approver_names(bob)  # a name no group has asks its user
    assert (selectors.is_approver(approval, namesake), selectors.is_approver(approval, erin)) == (False, True)
    assert not visibility.runs_visible(user=namesake).filter(pk=run.pk).exists()
    assert not visibility.run_visible(run, user=namesake)
    assert not selectors.approvals_visible(user=namesake).exists()
    assert list(selectors.approvals_decidable(user=erin)) == [approval]
    assert list(selectors.approvals_decidable(user=bob)) == [by_name]
    # who could decide: erin alone, and with erin gone, nobody (the namesake does not count)
    assert selectors.who_could_approve(approval) == 1
    assert selectors.names_that_reach_someone({"finance", "bob"}) == {"finance", "bob"}
    User.objects.filter(pk=erin.pk).update(is_active=False)
    assert selectors.names_that_reach_someone({"finance"}) == set()
    assert selectors.fill_decidable([approval])[0].nobody_can_decide  # type: ignore[attr-defined]

    # a member of the group of its own name is asked through the membership
    Group.objects.get(name="finance").user_set.add(namesake)
    assert selectors.is_approver(approval, namesake) and selectors.who_could_approve(approval) == 1


def test_a_user_named_like_a_group_cannot_decide_for_it_a_member_can(engine: Any, user: User, erin: User,
                                                                     namesake: User) -> None:
    run_id, approval = parked(user, {"approvers": ["finance"]})

    refused = decide(namesake, approval, True)
    assert refused.status_code == 404 and refused.json()["error"] == "not_found"  # as for any non-approver
    assert client_for(namesake).get(f"/api/v1/approvals/{approval.pk}").status_code == 404
    assert client_for(namesake).get(f"/api/v1/runs/{run_id}").status_code == 404
    assert approval.decisions.count() == 0

    assert decide(erin, approval, True).status_code == 200
    assert finished(run_id).status == "completed"


@pytest.mark.django_db
def test_a_clashing_names_notifications_go_to_the_groups_members(user: User, erin: User, bob: User,
                                                                 namesake: User) -> None:
    for person in (erin, bob, namesake):
        person.email = f"{person.username}@example.com"
        person.save()
    approval = Approval.objects.create(run=stored_run(user), approvers=["finance", "bob"])

    deliveries = approval_notify(approval=approval)

    assert sorted((d.recipient, d.user_id) for d in deliveries) == [("bob", bob.pk), ("erin", erin.pk)]
