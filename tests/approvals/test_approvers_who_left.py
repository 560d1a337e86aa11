"""A person who leaves (deactivated, or taken out of the group a gate asks) is told nothing more about
the gates they were asked: a notification still waiting to be sent when they left (a retry waiting
out a mail server's outage, a message behind a busy notify queue) is not sent to them, and its row
says why. Before, the worker sent it: the gate's words, its run and a link, to someone who can no
longer decide it (a red-team helper's finding)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth.models import Group, User
from django.utils import timezone

from approvals.models import Approval, Delivery
from approvals.notifications import _no_longer_asked, approval_notify, delivery_send
from tests.approvals.runs import parked
from tests.conftest import client_for, stored_run
from tests.engine.flow import wait_until
from workflows.models import NodeRun, Run

SECRET_WORDS = "Pay invoice 7731 (EUR 48,000) to ACME GmbH?"


def _retry_due(approval: Approval, person: User, recipient: str) -> Delivery:
    """What a first attempt that met a mail server's outage left: pending, tried once, its retry due
    an hour ago (its message lost), so the sweep publishes it again and a worker sends it."""
    return Delivery.objects.create(approval=approval, user=person, recipient=recipient, channel="email", attempts=1,
                                   error="email: ConnectionRefusedError",
                                   published_at=timezone.now() - timedelta(hours=1))


def _settled(delivery: Delivery) -> Delivery:
    return wait_until(lambda: Delivery.objects.exclude(status="pending").filter(pk=delivery.pk).first(), timeout=30,
                      what="the delivery's retry taken up by a worker")


def test_a_deactivated_approver_is_not_sent_the_gate_they_were_asked(engine: Any, user: User, bob: User,
                                                                     smtp: Any) -> None:
    bob.email = "bob-left@example.com"
    bob.save()
    approval = Approval.objects.create(run=stored_run(user), node_id="pay", approvers=["bob"], message=SECRET_WORDS)
    waiting = _retry_due(approval, bob, "bob")
    bob.is_active = False  # bob leaves the company while his notification waits for its retry
    bob.save(update_fields=["is_active"])

    delivery = _settled(waiting)

    assert smtp.sent_to("bob-left@example.com") == [], "the gate's words were emailed to a deactivated account"
    assert delivery.status == "failed", delivery.status
    assert "bob" in delivery.error and "no longer" in delivery.error, delivery.error


def test_a_member_taken_out_of_the_group_asked_is_not_sent_its_gate(engine: Any, user: User, erin: User,
                                                                     smtp: Any) -> None:
    erin.email = "erin-moved@example.com"
    erin.save()
    approval = Approval.objects.create(run=stored_run(user), node_id="pay", approvers=["finance"],
                                       message=SECRET_WORDS)
    waiting = _retry_due(approval, erin, "erin")
    erin.groups.remove(Group.objects.get(name="finance"))  # erin moves to another team

    delivery = _settled(waiting)

    assert smtp.sent_to("erin-moved@example.com") == [], "the gate's words were emailed to someone no longer asked"
    assert delivery.status == "failed", delivery.status
    assert "erin" in delivery.error and "no longer" in delivery.error, delivery.error


def test_the_run_owner_reads_why_a_members_delivery_was_not_sent_without_the_members_name(
        db: Any, user: User, erin: User, make_user: Any) -> None:
    """A member's delivery is named by the group's name (``notifications._wanted``): the run's owner
    may name any group and reads its deliveries, and is not told who is in it by why one was not
    sent either. Before, the reason named the member's username (a red-team helper's finding)."""
    frank = make_user("frank")
    frank.groups.add(Group.objects.get(name="finance"))
    for member in (erin, frank):
        member.email = f"{member.username}@example.com"
        member.save()
    approval = Approval.objects.create(run=stored_run(user), node_id="pay", approvers=["finance"],
                                       message=SECRET_WORDS)
    waiting = approval_notify(approval=approval)
    assert [(d.recipient, d.user_id) for d in waiting] == [("finance", erin.pk), ("finance", frank.pk)]
    erin.groups.remove(Group.objects.get(name="finance"))  # erin moves to another team
    frank.is_active = False  # frank leaves the company
    frank.save(update_fields=["is_active"])

    assert [delivery_send(delivery_id=d.pk) for d in waiting] == ["failed", "failed"]

    answer = client_for(user).get(f"/api/v1/approvals/{approval.pk}").json()
    assert sorted((d["recipient"], d["error"]) for d in answer["deliveries"]) == [
        ("finance", "not sent: a member of finance is no longer active"),
        ("finance", "not sent: a member of finance is no longer among the approvers (nor in a group they name)")]


def test_the_approvers_of_a_deactivated_owners_run_are_told_nothing_more(engine: Any, user: User, bob: User,
                                                                          smtp: Any) -> None:
    """The run's owner leaves while its gate waits: nothing of the run starts as them any more
    (``workflows.engine.owners``), so an approval would lead nowhere, and a reminder, an escalation
    or a retry still mailed bob the gate's words and a link."""
    bob.email = "bob-asked@example.com"
    bob.save()
    approval = Approval.objects.create(run=stored_run(user), node_id="pay", approvers=["bob"], message=SECRET_WORDS)
    waiting = _retry_due(approval, bob, "bob")
    user.is_active = False  # the owner leaves while the notification waits for its retry
    user.save(update_fields=["is_active"])

    delivery = _settled(waiting)

    assert smtp.sent_to("bob-asked@example.com") == [], "a deactivated owner's gate was emailed to its approver"
    assert delivery.status == "failed", delivery.status
    # the deadlines' sweep may have ended the gate first (the test below): then the delivery says so
    assert ((user.username in delivery.error and "deactivated" in delivery.error)
            or delivery.error == "not sent: the approval is cancelled"), delivery.error


def test_a_delivery_of_a_deactivated_owners_run_is_not_to_be_sent_whoever_it_asks(db: Any, user: User,
                                                                                   bob: User) -> None:
    """The rule a delivery meets when it is sent, before the sweep ends the gate (it runs every
    ``AOB_APPROVAL_SWEEP_INTERVAL_S``; a reminder or a retry sent in between went out)."""
    approval = Approval.objects.create(run=stored_run(user), node_id="pay", approvers=["bob"], message=SECRET_WORDS)
    waiting = _retry_due(approval, bob, "bob")
    assert _no_longer_asked(waiting) == ""
    user.is_active = False
    user.save(update_fields=["is_active"])

    assert _no_longer_asked(Delivery.objects.get(pk=waiting.pk)) == (
        f"the run's owner {user.username} is deactivated: nothing of the run goes on as them")


def test_a_gate_waiting_on_a_deactivated_owner_ends_and_fails_its_run(engine: Any, user: User) -> None:
    """The default approver is the run's owner: deactivated while their gate waits, nobody could
    decide it, nobody could cancel the run (its owner's alone), and retention never prunes a run
    that has not finished. The deadlines' sweep ends it, saying why."""
    run_id, approval = parked(user)  # no deadline: it would wait for ever
    user.is_active = False
    user.save(update_fields=["is_active"])

    try:
        run = wait_until(lambda: Run.objects.filter(pk=run_id, status__in=Run.FINISHED).first(), timeout=15,
                         what="the run's end")
    except AssertionError:
        run = Run.objects.get(pk=run_id)
    review = NodeRun.objects.get(run_id=run_id, node_id="review")
    approval.refresh_from_db()
    assert run.status == "failed", f"run {run.status}, its gate {approval.status}: waiting on a deactivated owner"
    assert (review.status, review.error["error_type"]) == ("failed", "owner_inactive"), (review.status, review.error)
    assert user.username in review.error["message"] and "deactivated" in review.error["message"], review.error
    assert approval.status == "cancelled", approval.status
