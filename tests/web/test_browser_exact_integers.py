"""An integer past 2**53 (within int64, which the API takes in definitions, inputs and patches) in a
real browser (Playwright on Debian's Chromium): the approval page shows the digits the engine
holds, not the nearest double, and a definition holding one goes through the workflow page (the
builder's edit, the JSON view, the save) and comes back with the same digits."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from tests.web.browsing import chromium_page
from workflows.models import Workflow
from workflows.services.definitions import workflow_save

pytestmark = pytest.mark.browser

BIG = 2**53 + 1  # 9007199254740993: a double reads it as 9007199254740992


def test_an_integer_past_2_53_keeps_its_digits_on_the_approval_page_and_through_an_editor_save(web: str) -> None:
    from playwright.sync_api import expect

    from tests.approvals.runs import approval_of, refund_flow

    user = User.objects.create_user("browser")
    api = APIClient()
    api.force_authenticate(user)
    started = api.post("/api/v1/runs", {"workflow": refund_flow(), "inputs": {"amount": BIG, "customer": "Ada"}},
                       format="json")
    assert started.status_code == 201, started.json()
    approval = approval_of(started.json()["run_id"])
    assert approval.context["upstream"]["prepare"]["amount"] == BIG  # what the engine holds
    definition = {"metadata": {"output": {"template": {"amount": BIG}}},
                  "nodes": [{"id": "a", "type": "transform", "config": {"expression": "1"}}], "edges": []}
    workflow_save(owner=user, tag="big", definition=definition)
    session = Client()
    session.force_login(user)  # logged in without the login page: two page loads in all
    cookie = {"name": settings.SESSION_COOKIE_NAME, "value": session.cookies[settings.SESSION_COOKIE_NAME].value,
              "url": web}

    with chromium_page("web-exact-integers-failure.png") as (page, problems):
        page.context.add_cookies([cookie])
        page.goto(f"{web}/approvals/{approval.pk}/")
        context = page.get_by_label("approval context")
        expect(context).to_contain_text("amount")
        shown = json.loads(context.text_content())
        assert (shown["inputs"]["amount"], shown["upstream"]["prepare"]["amount"]) == (BIG, BIG)
        expect(page.locator("#inexact-note")).to_have_count(0)  # this browser reads them exactly

        # a browser without JSON.rawJSON (no source text) cannot: the page says so, once
        rounded = page.evaluate("""async () => {
            const { parseJson } = await import("/static/aob/api.js");
            const raw = JSON.rawJSON;
            delete JSON.rawJSON;
            try { return String(parseJson('{"a": 9007199254740993}').a); } finally { JSON.rawJSON = raw; }
        }""")
        assert rounded == "9007199254740992"
        expect(page.locator("#inexact-note")).to_contain_text("cannot show integers above 2^53 exactly")

        page.goto(f"{web}/workflows/big/")
        expect(page.locator("#validation")).to_contain_text("Valid")
        page.locator('svg.builder-canvas [data-node="a"] .box').click()
        page.locator("fieldset.config-form").get_by_label("expression").fill("2")
        expect(page.locator("#validation")).to_contain_text("Valid")
        assert json.loads(page.locator("#definition").input_value())["metadata"]["output"] == {"template": {"amount": BIG}}
        page.get_by_role("button", name="Save as a new version").click()
        expect(page.locator("#save-status")).to_have_text("Saved as version 1.")

    saved = Workflow.objects.get(tag="big").versions.order_by("-seq").first().artifact.content
    assert saved["nodes"][0]["config"] == {"expression": "2"}  # the edit made through the page
    assert saved["metadata"]["output"] == {"template": {"amount": BIG}}  # and the integer, digit for digit
    assert problems == []
