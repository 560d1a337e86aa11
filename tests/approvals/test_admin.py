"""The admin decides through the same service as every other surface, as the admin user, and
lists pending approvals first."""

from __future__ import annotations

import re
from typing import Any

from django.test import Client

from approvals.models import Approval, Decision
from tests.approvals.runs import events, finished, output, parked, statuses

CHANGELIST = "/admin/approvals/approval/"


def admin_client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def act(client: Client, action: str, approval: Approval, comment: str) -> list[str]:
    response = client.post(CHANGELIST, {"action": action, "_selected_action": [approval.pk], "comment": comment,
                                        "index": 0}, follow=True)
    assert response.status_code == 200
    return [str(m) for m in response.context["messages"]]


def listed(client: Client) -> list[int]:
    response = client.get(CHANGELIST)
    assert response.status_code == 200
    return [int(pk) for pk in re.findall(r'name="_selected_action" value="(\d+)"', response.content.decode())]


def test_admin_approve_action_decides_as_the_admin_user_with_the_comment(engine, user, boss):
    run_id, approval = parked(user, {"approvers": ["boss"]})
    client = admin_client(boss)

    assert act(client, "approve", approval, "ok from the admin") == [f"approval {approval.pk}: approved"]

    decision = Decision.objects.get(approval=approval)
    assert (decision.user, decision.username, decision.approve, decision.comment) == (
        boss, "boss", True, "ok from the admin")
    assert finished(run_id).status == "completed"
    assert statuses(run_id)["refund"] == "completed"
    assert [(d["user"], d["comment"]) for d in output(run_id)["decisions"]] == [("boss", "ok from the admin")]
    (decided,) = events(run_id, "approval_decided")
    assert (decided["user"], decided["settled"]) == ("boss", "approved")


def test_admin_actions_obey_the_same_rules(engine, user, boss):
    """A staff user who is not an approver is refused like on the API, and nothing is counted."""
    run_id, approval = parked(user, {"approvers": ["bob"]})

    (message,) = act(admin_client(boss), "reject", approval, "no")
    assert "not an approver" in message
    assert Approval.objects.get(pk=approval.pk).status == "pending"
    assert statuses(run_id)["review"] == "waiting"


def test_admin_lists_pending_first(engine, user, boss):
    _, older = parked(user, {"approvers": ["boss"]})
    newer_run, newer = parked(user, {"approvers": ["boss"]})
    client = admin_client(boss)
    assert listed(client) == [newer.pk, older.pk]

    act(client, "reject", newer, "")
    finished(newer_run)
    assert listed(client) == [older.pk, newer.pk]
    detail = client.get(f"{CHANGELIST}{older.pk}/change/").content.decode()
    assert "Refund 42 to ACME?" in detail and "&quot;customer&quot;: &quot;ACME&quot;" in detail


def test_a_comment_past_the_limit_is_refused_whoever_decides(db, user, boss):
    """The limit lived in the API's serializer only: the admin once stored a 500,000-character
    comment (and put it in the event and the node's output). The service is the authority now, for
    a NUL too (which PostgreSQL's text refuses at the insert)."""
    import pytest

    from approvals.exceptions import CommentInvalid
    from approvals.services import COMMENT_MAX_CHARS, approval_decide
    from tests.conftest import stored_run

    run = stored_run(user)
    approval = Approval.objects.create(run=run, node_id="a", approvers=["boss"], required_approvals=2)
    client = admin_client(boss)

    (too_long,) = act(client, "approve", approval, "C" * (COMMENT_MAX_CHARS + 1))
    assert too_long == (f"approval {approval.pk}: comment is {COMMENT_MAX_CHARS + 1} characters; "
                        f"at most {COMMENT_MAX_CHARS} are kept")
    with pytest.raises(CommentInvalid) as nul:
        approval_decide(approval=approval, user=boss, approve=True, comment="a\x00b")
    assert (nul.value.code, nul.value.extra) == ("invalid_comment", {"field": "comment", "rule": "no_nul"})
    assert not Decision.objects.exists()
    assert act(client, "approve", approval, "C" * COMMENT_MAX_CHARS) == [f"approval {approval.pk}: approved"]
    assert len(Decision.objects.get(approval=approval).comment) == COMMENT_MAX_CHARS


def test_the_admin_says_when_nobody_can_decide_an_approval(engine, user, boss):
    """Staff decide only as approvers; a gate whose approvers reach no active person is one only a
    cancel (or its deadline) ends, and its page says so. Its run's page lists why each node waits."""
    run_id, approval = parked(user, {"approvers": ["no-such-person"]})
    client = admin_client(boss)

    page = client.get(f"{CHANGELIST}{approval.pk}/change/").content.decode()
    assert "nobody can decide it" in page
    run_page = client.get(f"/admin/workflows/run/{run_id}/change/").content.decode()
    assert "<th>wait reason</th>" in run_page and "<td>approval</td>" in run_page

    _, reachable = parked(user, {"approvers": ["boss"]})  # control
    assert "nobody can decide it" not in client.get(f"{CHANGELIST}{reachable.pk}/change/").content.decode()
