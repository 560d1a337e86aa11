"""One visibility rule for runs (workflows/visibility.py): the owner, staff, and everyone asked to
decide one of its approvals, by name or through a group, see the run; nobody else does."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.test import Client

from approvals.models import Approval
from tests.approvals.runs import decide, finished, parked
from tests.conftest import client_for, stored_run
from workflows import visibility


def test_the_rule(user: User, bob: User, erin: User, carol: User, boss: User) -> None:
    mine, asked_by_group, asked_by_name = stored_run(user), stored_run(user), stored_run(user)
    Approval.objects.create(run=asked_by_group, node_id="review", approvers=["finance"])
    Approval.objects.create(run=asked_by_name, node_id="review", approvers=["bob", "finance"])

    def seen(who: User) -> set[Any]:
        return set(visibility.runs_visible(user=who).values_list("pk", flat=True))

    assert seen(user) == {mine.pk, asked_by_group.pk, asked_by_name.pk}
    assert seen(erin) == {asked_by_group.pk, asked_by_name.pk}  # erin is in finance
    assert seen(bob) == {asked_by_name.pk}
    assert seen(carol) == set()
    assert {mine.pk, asked_by_group.pk, asked_by_name.pk} <= seen(boss)  # staff
    # the one-run form (run_get reads the row, then asks it) agrees with the queryset everywhere
    for who in (user, erin, bob, carol, boss):
        for run in (mine, asked_by_group, asked_by_name):
            assert visibility.run_visible(run, user=who) is (run.pk in seen(who)), (who.username, run.pk)


def test_a_group_approver_sees_the_run_it_decides(engine: Any, user: User, erin: User, bob: User) -> None:
    run_id, approval = parked(user, {"approvers": ["finance"]})
    as_erin = client_for(erin)

    assert as_erin.get(f"/api/v1/runs/{run_id}").status_code == 200
    assert as_erin.get(f"/api/v1/runs/{run_id}/timeline").status_code == 200
    assert as_erin.get(f"/api/v1/approvals?run={run_id}").status_code == 200
    not_asked = client_for(bob).get(f"/api/v1/runs/{run_id}")
    assert not_asked.status_code == 404 and not_asked.json()["error"] == "not_found"
    for who, status in ((erin, 200), (bob, 404)):  # the web page, same rule
        browser = Client()
        browser.force_login(who)
        assert browser.get(f"/runs/{run_id}/").status_code == status

    assert decide(erin, approval, True).status_code == 200
    assert finished(run_id).status == "completed"
    assert as_erin.get(f"/api/v1/runs/{run_id}").json()["status"] == "completed"
    # seeing is not steering: only the owner cancels
    assert as_erin.post(f"/api/v1/runs/{run_id}/cancel").status_code == 404
