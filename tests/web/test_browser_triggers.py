"""The triggers and secrets pages in a real browser (Debian's Chromium through Playwright): add a
schedule and a webhook to a workflow, set a secret; the secret's value never comes back."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from tests.web.browsing import ARTIFACTS, PASSWORD, chromium_page, log_in
from triggers.models import Hook, Schedule
from vault.models import Secret
from workflows.services.definitions import workflow_save

GREETING = {"nodes": [{"id": "hello", "type": "transform", "config": {"expression": "'hi'"}}], "edges": []}


@pytest.mark.browser
def test_add_a_schedule_a_webhook_and_a_secret_in_the_browser(web: str) -> None:
    from playwright.sync_api import expect

    user = User.objects.create_user("trigger-browser", password=PASSWORD)
    workflow_save(owner=user, tag="greet", definition=GREETING)
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page("web-triggers-failure.png") as (page, problems):
        log_in(page, web, "trigger-browser", "/workflows/greet/")
        page.get_by_role("link", name="Schedules and webhooks").click()
        page.get_by_label("Cron (minute hour day month weekday)").fill("15 6 * * *")
        page.get_by_label("Time zone").fill("Europe/Berlin")
        page.get_by_role("button", name="Add schedule").click()
        expect(page.locator("#schedules")).to_contain_text("15 6 * * *")
        page.get_by_role("button", name="Add webhook").click()
        expect(page.locator("#hook-secret")).to_contain_text("whsec_")
        expect(page.locator("#hooks")).to_contain_text("/api/v1/hooks/hk_")
        page.screenshot(path=str(ARTIFACTS / "web-triggers.png"), full_page=True)
        page.get_by_role("link", name="Secrets").click()
        page.get_by_label("Name").fill("CRM_TOKEN")
        page.get_by_label("Value").fill("crm-token-value-123")
        page.get_by_role("button", name="Save").click()
        expect(page.locator("#secrets")).to_contain_text("CRM_TOKEN")
        page.screenshot(path=str(ARTIFACTS / "web-secrets.png"), full_page=True)
        html = page.content()

    assert "crm-token-value-123" not in html
    assert Schedule.objects.get().timezone == "Europe/Berlin" and Hook.objects.count() == 1
    assert Secret.objects.get().name == "CRM_TOKEN"
    assert problems == []


@pytest.mark.browser
def test_a_webhook_s_refused_deliveries_are_shown_on_the_triggers_page(web: str) -> None:
    import json
    import time

    from playwright.sync_api import expect
    from rest_framework.test import APIClient

    from triggers.services.hooks import hook_create, signature_for

    user = User.objects.create_user("hook-browser", password=PASSWORD)
    workflow = workflow_save(owner=user, tag="greet", definition=GREETING).workflow
    hook, secret = hook_create(owner=user, workflow=workflow, mapping={"cel": "{'n': body.missing}"})
    body, ts = json.dumps({"x": 1}).encode(), str(int(time.time()))
    refused = APIClient().post(f"/api/v1/hooks/{hook.pk}", body, content_type="application/json",
                               HTTP_X_AOB_TIMESTAMP=ts, HTTP_X_AOB_DELIVERY="gh-delivery-9",
                               HTTP_X_AOB_SIGNATURE="sha256=" + signature_for(secret, ts, body))
    assert refused.status_code == 400
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page("web-hook-deliveries-failure.png") as (page, problems):
        log_in(page, web, "hook-browser", "/workflows/greet/triggers/")
        page.get_by_role("button", name=f"Deliveries of webhook {hook.pk}").click()
        expect(page.locator("#hook-deliveries")).to_contain_text("gh-delivery-9")
        expect(page.locator("#hook-deliveries")).to_contain_text("mapping_failed")
        page.screenshot(path=str(ARTIFACTS / "web-hook-deliveries.png"), full_page=True)

    assert problems == []


@pytest.mark.browser
def test_a_new_webhook_secret_says_how_long_the_old_one_still_signs(web: str) -> None:
    from playwright.sync_api import expect

    from triggers.services.hooks import hook_create

    user = User.objects.create_user("rotate-browser", password=PASSWORD)
    workflow = workflow_save(owner=user, tag="greet", definition=GREETING).workflow
    hook, _ = hook_create(owner=user, workflow=workflow)
    with chromium_page("web-hook-rotate-failure.png") as (page, problems):
        log_in(page, web, "rotate-browser", "/workflows/greet/triggers/")
        page.get_by_role("button", name="New secret", exact=True).click()
        expect(page.locator("#hook-secret")).to_contain_text("whsec_")
        expect(page.locator("#hook-secret")).to_contain_text("The previous secret still signs deliveries until")
        page.get_by_role("button", name="New secret, old one stops now").click()  # asks a second press
        page.get_by_role("button", name="Confirm: new secret, the old one stops signing now").click()
        expect(page.locator("#hook-secret")).to_contain_text("The previous secret no longer signs")

    assert problems == []


@pytest.mark.browser
def test_removing_a_secret_or_a_webhook_asks_a_second_press(web: str) -> None:
    """A secret's value is never shown again and a webhook's URL and secret are gone with it: Remove
    asks a second press within 5 s, as the run page's Cancel and Delete do (api.js onSecondPress).
    It removed at once, on one slip of the mouse (a red-team find)."""
    from playwright.sync_api import expect

    from triggers.services.hooks import hook_create
    from vault.services import secret_set

    user = User.objects.create_user("remove-browser", password=PASSWORD)
    workflow = workflow_save(owner=user, tag="greet", definition=GREETING).workflow
    hook_create(owner=user, workflow=workflow)
    secret_set(owner=user, name="PROD_DB_PASSWORD", value="only-copy-of-this-value")
    with chromium_page("web-remove-twice-failure.png") as (page, problems):
        log_in(page, web, "remove-browser", "/secrets/")
        secrets = page.locator("#secrets")
        secrets.get_by_role("button", name="Remove").click()
        expect(secrets.get_by_role("button")).to_have_text("Confirm: remove this secret")
        expect(secrets).to_contain_text("PROD_DB_PASSWORD")
        secrets.get_by_role("button", name="Confirm: remove this secret").click()
        expect(secrets).to_contain_text("No secrets yet.")

        page.goto(f"{web}/workflows/greet/triggers/")
        hooks = page.locator("#hooks")
        hooks.get_by_role("button", name="Remove").click()
        expect(hooks.get_by_role("button", name="Confirm: remove this webhook")).to_be_visible()
        hooks.get_by_role("button", name="Confirm: remove this webhook").click()
        expect(hooks.locator("tbody tr")).to_have_count(0)

    assert not Secret.objects.filter(owner=user).exists() and not Hook.objects.filter(owner=user).exists()
    assert problems == []
