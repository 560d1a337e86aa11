"""A name that is a group's is the group's (workflows/approvers.py): a user whose username is a
group's name, made before such clashes were refused, decides for that group only as a member,
through every path; and no new clash is made (the admin's user and group forms, aob_create_user)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.test import Client

from approvals import selectors
from approvals.models import Approval
from approvals.notifications import approval_notify
from tests.approvals.runs import decide, events, finished, parked, refund_flow
from tests.conftest import client_for, stored_run
from workflows import visibility
from workflows.approvers import approver_names

RULE = "a name is a user's or a group's, never both"


@pytest.fixture
def namesake(make_user: Any) -> User:
    """An account named like the group ``finance`` (erin's), and not in it: a row from before the rule
    (renamed past it, as no save now makes one)."""
    account = make_user("finance-before")
    User.objects.filter(pk=account.pk).update(username="finance")
    account.refresh_from_db()
    return account


def superuser_client(make_user: Any) -> Client:
    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


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

    (required,) = events(run_id, "approval_required")
    assert required["read_as_groups"] == ["finance"] and "read as the group" in required["warning"]
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

    assert sorted((d.recipient, d.user_id) for d in deliveries) == [("bob", bob.pk), ("finance", erin.pk)]


@pytest.mark.django_db
def test_the_admin_refuses_a_user_named_like_a_group_and_a_group_named_like_a_user(
        make_user: Any, erin: User, bob: User) -> None:
    client = superuser_client(make_user)
    password = {"usable_password": "true", "password1": "s3cret-pass!x", "password2": "s3cret-pass!x"}

    response = client.post("/admin/auth/user/add/", {"username": "finance", **password})
    assert response.status_code == 200
    (error,) = response.context["adminform"].form.errors["username"]
    assert error.startswith("username “finance” is a group's name") and RULE in error
    assert not User.objects.filter(username="finance").exists()

    response = client.post("/admin/auth/group/add/", {"name": "bob"})
    assert response.status_code == 200
    (error,) = response.context["adminform"].form.errors["name"]
    assert error.startswith("group name “bob” is a user's username") and RULE in error
    assert not Group.objects.filter(name="bob").exists()

    # a rename is judged the same way; the controls: names nobody has pass
    finance = Group.objects.get(name="finance")
    response = client.post(f"/admin/auth/group/{finance.pk}/change/", {"name": "bob"})
    assert response.status_code == 200 and "name" in response.context["adminform"].form.errors
    assert client.post("/admin/auth/user/add/", {"username": "frank", **password}).status_code == 302
    assert client.post("/admin/auth/group/add/", {"name": "auditors"}).status_code == 302


@pytest.mark.django_db
def test_a_row_that_clashed_before_the_rule_can_still_be_edited(make_user: Any, erin: User,
                                                                namesake: User) -> None:
    """Its name unchanged is not judged again, so the admin can still change the row (a clash is
    mended by renaming one side)."""
    client = superuser_client(make_user)
    finance = Group.objects.get(name="finance")
    assert client.post(f"/admin/auth/group/{finance.pk}/change/", {"name": "finance"}).status_code == 302
    assert client.post(f"/admin/auth/group/{finance.pk}/change/", {"name": "finance-team"}).status_code == 302


@pytest.mark.django_db
def test_the_admin_says_a_clashing_name_is_read_as_the_group(make_user: Any, user: User, erin: User,
                                                             namesake: User) -> None:
    approval = Approval.objects.create(run=stored_run(user), node_id="review", approvers=["finance"])
    page = superuser_client(make_user).get(f"/admin/approvals/approval/{approval.pk}/change/").content.decode()
    assert "finance: a user&#x27;s name and a group&#x27;s, read as the group" in page


@pytest.mark.django_db
def test_every_save_refuses_a_groups_name_or_one_another_left(erin: User, bob: User) -> None:
    """The rule was said by the admin's forms and ``aob_create_user`` alone: Django's own
    ``createsuperuser`` took a group's name, and a name its holder had left. Every save judges it."""
    from django.core.exceptions import ValidationError

    bob.username = "robert"
    bob.save()  # "bob" is left: approvals name people by it
    with pytest.raises(CommandError, match="username “finance” is a group's name"):
        call_command("createsuperuser", "--noinput", "--username", "finance", "--email", "f@example.com",
                     stdout=io.StringIO())
    with pytest.raises(CommandError, match="“bob” was another's name"):
        call_command("createsuperuser", "--noinput", "--username", "bob", "--email", "b@example.com",
                     stdout=io.StringIO())
    with pytest.raises(ValidationError, match="is a user's username"):
        Group.objects.create(name="robert")
    assert not User.objects.filter(username__in=["finance", "bob"]).exists()
    assert not Group.objects.filter(name="robert").exists()
    bob.username = "bob"
    bob.save()  # robert may be bob again
    call_command("createsuperuser", "--noinput", "--username", "root", "--email", "r@example.com",
                 stdout=io.StringIO())  # control
    assert User.objects.filter(username__in=["root", "bob"]).count() == 2


@pytest.mark.django_db
def test_aob_create_user_refuses_a_groups_name(erin: User) -> None:
    with pytest.raises(CommandError, match="username “finance” is a group's name"):
        call_command("aob_create_user", "finance", stdout=io.StringIO())
    assert not User.objects.filter(username="finance").exists()
    call_command("aob_create_user", "frank", stdout=io.StringIO())  # control
    assert User.objects.filter(username="frank").exists()


@pytest.mark.parametrize("field", ["approvers", "escalate_to"])
@pytest.mark.parametrize("name", ["$nodes.prepare.customer", "$inputs.approver", "${$nodes.prepare.customer}",
                                  "team-${$inputs.team}"])
def test_who_decides_is_written_out_never_chosen_by_an_upstream_output(api, field, name):
    """An injected agent upstream (or a remote server's answer, or a hook sender's inputs) must not
    choose who approves the gate (and who may then read the run): a reference among the approvers
    is refused at save, as a sub-workflow's tag is. Before, it was resolved when the gate asked."""
    review = {"approvers": [name] if field == "approvers" else ["bob"]}
    if field == "escalate_to":
        review.update(timeout_ms=60_000, on_timeout="escalate", escalate_to=[name])
    response = api.post("/api/v1/workflows/validate", {"workflow": refund_flow(review)}, format="json")
    assert [(p["path"], p["rule"]) for p in response.json()["errors"]] == [(f"/nodes/1/config/{field}/0",
                                                                            "config.pattern")]
    written = {"approvers": ["finance.team", "bob@example.com"], "escalate_to": ["boss"], "timeout_ms": 60_000,
               "on_timeout": "escalate"}  # the control: names as people and groups have them
    assert api.post("/api/v1/workflows/validate", {"workflow": refund_flow(written)}, format="json").json()["valid"]
