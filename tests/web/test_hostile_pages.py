"""Markup an agent or a run's caller writes is shown as text, and the pages work under the site's
Content-Security-Policy: a run whose inputs, approval message, edge condition and patch description
carry HTML and SVG payloads is opened on its run page (graph, events, patches), in the approvals
inbox, on the approval's page and in the admin; no payload becomes an element or runs, nothing is
refused by the policy (Chromium reports a refusal as a console error), the run page's socket goes
live, and the approver decides through the page."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token

from approvals.models import Approval
from tests.approvals.runs import approval_of, finished, refund_flow, submit
from tests.conftest import client_for
from tests.web.browsing import PASSWORD, chromium_page, log_in
from workflows.models import RunPatch

pytestmark = pytest.mark.browser

IMG = "<img src=x onerror=window.__pwned=1>"
SVG = '"><svg onload=window.__pwned=2>'
# A right-to-left override: drawn as is, "00001$" shows as "$10000"; and tag characters, which draw
# nothing and which a model reads as ASCII ("ok"). The pages show their escapes instead (api.js
# ``shown``), as the CLI does
SPOOF = " \u202e00001$\u202c\U000e006f\U000e006b"
SPOOF_SHOWN = " \\u202e00001$\\u202c\\udb40\\udc6f\\udb40\\udc6b"
HIDDEN = "\U000e0061\U000e0070"  # "ap" in tag characters, in the config of a node a patch adds
HIDDEN_SHOWN = "\\udb40\\udc61\\udb40\\udc70"


def hostile_run(owner: User) -> str:
    definition = refund_flow({"approvers": [owner.username]})
    definition["edges"][1]["condition"] = f"$.approved == true || $.decision == '{SVG}'"
    run_id = submit(owner, definition, {"amount": 42, "customer": IMG + SPOOF})
    approval_of(run_id)
    patched = client_for(owner).post(f"/api/v1/runs/{run_id}/patches", {
        "description": f"tidy up {IMG}{SPOOF}",
        "operations": [{"op": "add", "path": "/nodes/-",
                        "value": {"id": "extra", "type": "transform", "config": {"expression": f"'{HIDDEN}'"}}}]},
        format="json")
    assert patched.status_code == 201, patched.json()
    return run_id


def assert_inert(page: Any) -> None:
    assert page.locator("img[src='x'], svg[onload], [onerror]").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_payloads_stay_text_and_the_pages_work_under_the_policy(web: str) -> None:
    from playwright.sync_api import expect

    owner = User.objects.create_user("hostile", password=PASSWORD, is_staff=True, is_superuser=True)
    Token.objects.create(user=owner)
    run_id = hostile_run(owner)
    approval = approval_of(run_id)
    approval_id = approval.pk
    patch_id = RunPatch.objects.get(run_id=run_id).pk
    # as the gate's park writes it when a patch changed what it guards (approvals.services.action_changed)
    Approval.objects.filter(pk=approval_id).update(context={**approval.context, "action_changed": {
        "gate_added_by_patch": False, "patches": [{"seq": 1, "node_id": "plan", "description": f"tidy up {IMG}"}],
        "href": f"/api/v1/runs/{run_id}/patches", "warning": "what this gate lets run was changed by a patch"}})

    with chromium_page("web-hostile-failure.png") as (page, problems):
        log_in(page, web, "hostile", f"/runs/{run_id}/")
        expect(page.locator("#live")).to_have_text("● live")  # connect-src lets the socket through
        expect(page.locator("#run-meta")).to_contain_text(IMG)
        assert "\u202e" not in page.locator("body").inner_text()  # the controls are nowhere drawn
        page.locator('#graph svg.dag [data-node="review"]').click()
        expect(page.locator("#node-panel .message")).to_have_text(f"Refund 42 to {IMG}{SPOOF_SHOWN}?")
        expect(page.locator("#graph svg.dag .edge-label").first).to_have_text(f"$.approved == true || $.decision == '{SVG}'")
        page.get_by_role("tab", name="Patches").click()
        expect(page.locator("#patches")).to_contain_text(f"tidy up {IMG}{SPOOF_SHOWN}")
        expect(page.locator("#patches")).to_contain_text(HIDDEN_SHOWN)  # an added node's words too
        assert "\U000e0061" not in page.locator("#patches").inner_text()
        page.get_by_role("tab", name="Events").click()
        expect(page.locator("#events")).to_contain_text(f"tidy up {IMG}")
        assert_inert(page)

        page.goto(f"{web}/approvals/")
        expect(page.locator(f"#approval-{approval_id}-h")).to_have_text(f"Refund 42 to {IMG}{SPOOF_SHOWN}?")
        # who asks, and the list narrowed to one asker (anyone may name anyone as an approver)
        expect(page.locator(f'[data-approval="{approval_id}"] [data-field="asked-by"]')).to_have_text("hostile")
        page.get_by_label("Asked by").select_option("hostile")
        expect(page.locator(f"#approval-{approval_id}-h")).to_be_visible()
        expect(page.get_by_role("note")).to_contain_text("Changed since the run started: what this gate lets run "
                                                         "was changed by a patch (patches #1 by plan;")
        assert_inert(page)

        page.goto(f"{web}/admin/approvals/approval/{approval_id}/change/")
        expect(page.locator("#content")).to_contain_text(f"Refund 42 to {IMG}{SPOOF_SHOWN}?")  # the message
        expect(page.locator("#content")).to_contain_text(f'"customer": "{IMG}{SPOOF_SHOWN}"')  # the context
        assert "\U000e006f" not in page.locator("#content").inner_text()
        assert_inert(page)
        page.goto(f"{web}/admin/workflows/runpatch/{patch_id}/change/")
        expect(page.locator("#content")).to_contain_text(f"tidy up {IMG}{SPOOF_SHOWN}")
        expect(page.locator("#content")).to_contain_text(HIDDEN_SHOWN)
        assert "\U000e0061" not in page.locator("#content").inner_text()
        assert_inert(page)

        page.goto(f"{web}/approvals/{approval_id}/")
        expect(page.locator("#approval h2")).to_have_text(f"Refund 42 to {IMG}{SPOOF_SHOWN}?")
        expect(page.locator('#approval [data-field="asked-by"]')).to_have_text("hostile")
        expect(page.get_by_role("note")).to_contain_text("Changed since the run started")
        assert_inert(page)
        page.get_by_role("button", name="Approve").click()
        expect(page.locator("#approval")).to_contain_text("Decided: approved.")

    assert finished(run_id).status == "completed"
    assert problems == []
