"""An approver's open inbox in a real browser (Debian's Chromium through Playwright) while the gate
it shows changes: a colleague's vote, then a patch to the action the gate guards. The inbox kept
each card as first drawn (for what is typed in it), so it said "0 of 2" after the colleague voted
and showed the action as it was before the patch, its vote refused (action_changed) with nothing
new to read until a reload (a red-team find)."""

from __future__ import annotations

import httpx
import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token

from approvals.models import Approval
from tests.approvals.runs import approval_of, refund_flow, submit
from tests.web.browsing import PASSWORD, chromium_page, log_in

pytestmark = pytest.mark.browser


def test_an_open_inbox_card_follows_a_colleagues_vote_and_a_patch_to_the_guarded_action(web: str) -> None:
    from playwright.sync_api import expect

    owner = User.objects.create_user("asker", password=PASSWORD)
    owner_auth = {"Authorization": f"Token {Token.objects.create(user=owner).key}"}
    User.objects.create_user("first", password=PASSWORD)
    second = User.objects.create_user("second", password=PASSWORD)
    second_auth = {"Authorization": f"Token {Token.objects.create(user=second).key}"}
    run_id = submit(owner, refund_flow({"approvers": ["first", "second"], "required_approvals": 2}))
    approval = approval_of(run_id)

    with chromium_page("inbox-changes-failure.png") as (page, problems):
        log_in(page, web, "first", "/approvals/")
        card = page.locator(f'[data-approval="{approval.pk}"]')
        expect(card).to_contain_text("0 of 2 approvals")
        comment = card.get_by_label("Comment (optional)")
        comment.fill("about 42")

        # a colleague's vote: the count follows, what is typed stays (the same action)
        voted = httpx.post(f"{web}/api/v1/approvals/{approval.pk}/decide", headers=second_auth,
                           json={"approve": True})
        assert voted.status_code == 200, voted.text
        expect(card).to_contain_text("1 of 2 approvals")
        expect(comment).to_have_value("about 42")
        expect(card).not_to_contain_text("Changed since the run started")

        # a patch changes the action the gate guards: the card says so, and the comment typed about
        # the old action goes with the form drawn for it
        patched = httpx.post(f"{web}/api/v1/runs/{run_id}/patches", headers=owner_auth, json={
            "description": "pay more", "operations": [
                {"op": "replace", "path": "/nodes/2/config/expression", "value": "{'refunded': 999999}"}]})
        assert patched.status_code == 201, patched.text
        expect(card).to_contain_text("Changed since the run started")
        expect(card.get_by_label("Comment (optional)")).to_have_value("")
        expect(card).to_contain_text("0 of 2 approvals")  # the colleague's vote lapsed with the old action

        # a vote from the card as redrawn is on the action as it is now: it counts, and the gate,
        # still waiting on a second vote, has nothing more for this approver to decide
        card.get_by_role("button", name="Approve").click()
        expect(card).to_have_count(0)
        assert not problems, problems

    votes = {d.username for d in Approval.objects.get(pk=approval.pk).decisions.counting()}
    assert votes == {"first"}
