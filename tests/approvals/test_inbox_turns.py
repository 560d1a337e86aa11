"""Anyone may name anyone as an approver. The inbox listed a person's pending approvals by deadline
alone: one run of 200 gates with near deadlines, naming them, filled the first page (the 200 the
web inbox loads), and the gates their colleagues asked, with none or a later deadline, were on no
page it showed (a red team's). It lists the askers in turn now, says who asks each, and lists one
asker's on request."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from approvals.models import Approval
from tests.conftest import client_for, stored_run

API = "/api/v1"


def _asks(owner: Any, approver: str, count: int, deadline: Any = None) -> list[Approval]:
    run = stored_run(owner)
    return Approval.objects.bulk_create([Approval(run=run, node_id=f"g{i}", approvers=[approver], deadline=deadline,
                                                  message="Pay invoice 17?") for i in range(count)])


@pytest.mark.django_db
def test_a_flood_of_gates_from_one_asker_leaves_the_others_on_the_first_page(make_user: Any) -> None:
    bob, carol, mallory = make_user("bob"), make_user("carol"), make_user("mallory")
    mine = [*_asks(carol, "bob", 1), *_asks(carol, "bob", 1, deadline=timezone.now() + timedelta(days=1))]
    _asks(mallory, "bob", 200, deadline=timezone.now() + timedelta(hours=23))

    page = client_for(bob).get(f"{API}/approvals?status=pending&limit=4").json()

    assert page["count"] == 202
    # in turns, each asker's soonest first: a turn's by deadline (mallory's 23 hours before carol's
    # day), carol's without one last
    assert [a["asked_by"] for a in page["results"]] == ["mallory", "carol", "mallory", "carol"]
    assert {a["id"] for a in page["results"] if a["asked_by"] == "carol"} == {a.pk for a in mine}
    theirs = client_for(bob).get(f"{API}/approvals?status=pending&asked_by=carol").json()
    assert theirs["count"] == 2 and {a["id"] for a in theirs["results"]} == {a.pk for a in mine}
    one = client_for(bob).get(f"{API}/approvals/{mine[0].pk}").json()
    assert one["asked_by"] == "carol"


@pytest.mark.django_db
def test_an_asker_named_with_nul_or_past_a_username_s_length_is_refused(make_user: Any) -> None:
    bob = make_user("bob")
    for value, rule in (("car\x00ol", "nul"), ("c" * 201, "max_length")):
        answer = client_for(bob).get(f"{API}/approvals", {"status": "pending", "asked_by": value})
        assert answer.status_code == 400 and answer.json()["details"] == {"field": "asked_by", "rule": rule} | (
            {"limit": 200} if rule == "max_length" else {}), answer.json()


@pytest.mark.django_db
def test_a_page_of_gates_naming_a_hundred_names_each_is_answered(make_user: Any) -> None:
    """Who can decide each approval of a page is judged from every name it lists, and a page of
    700 gates of 100 names (the schema's most) sent 70,000 parameters: past PostgreSQL's 65,535, a
    503 for the person named, every time (a red team's). One JSON parameter now."""
    from django.db import connection

    bob, carol, mallory = make_user("bob"), make_user("carol"), make_user("mallory")
    run = stored_run(mallory)
    with connection.cursor() as cursor:
        cursor.execute("""INSERT INTO approvals_approval (run_id, node_id, kind, status, message, context, approvers,
                            required_approvals, allow_self_approval, on_timeout, escalate_to, escalated,
                            action_digest, notifications_not_sent, created_at)
                          SELECT %s, 'g' || i, 'node', 'pending', 'x', '{}'::jsonb,
                                 (SELECT jsonb_agg(CASE WHEN k = 0 THEN 'bob' WHEN k = 1 THEN 'carol'
                                                   ELSE rpad(i || '-' || k || '-', 150, 'n') END)
                                    FROM generate_series(0, 99) k),
                                 2, false, '', '[]'::jsonb, false, '', 0, now()
                            FROM generate_series(1, 700) i""", [run.pk])

    page = client_for(bob).get(f"{API}/approvals", {"status": "pending", "limit": 1000})

    assert page.status_code == 200, page.content[:300]
    results = page.json()["results"]
    assert len(results) == 700 and carol.is_active
    # bob and carol may each approve: two of the two asked, nobody's vote needed elsewhere
    assert {(a["nobody_can_decide"], a["cannot_be_approved"]) for a in results} == {(False, False)}
