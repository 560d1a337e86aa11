"""Lists and the API docs in a real browser: the runs list filters by workflow and date and pages
by keyset; the workflows list shows each workflow's description and last run with a Run button; a
run page's patches come a page at a time, operations too large to list read on request;
Swagger UI and ReDoc render from this server's own static files, with no request leaving loopback."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from tests.api.test_list_bounds import patched_run
from tests.conftest import stored_run
from tests.web.browsing import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, PASSWORD, WAIT_MS, chromium_page
from tests.web.test_builder import log_in
from workflows.models import Run, RunPatch
from workflows.services.definitions import workflow_save

pytestmark = pytest.mark.browser
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


def dated_run(owner: Any, tag: str, days_ago: int, status: str = "completed", **extra: Any) -> Run:
    run = stored_run(owner)
    workflow = owner.workflows.filter(tag=tag).first()
    at = timezone.now() - timedelta(days=days_ago)
    Run.objects.filter(pk=run.pk).update(tag=tag, workflow=workflow, status=status, created_at=at,
                                         finished_at=at + timedelta(milliseconds=1500), **extra)
    return run


def test_the_runs_list_filters_by_workflow_and_date(web: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    user = User.objects.create_user("lister", password=PASSWORD)
    definition = {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "1"}}], "edges": []}
    workflow_save(owner=user, tag="billing", definition={**definition, "metadata": {
        "name": "Billing", "description": "Charge the card, then mail the receipt"}})
    workflow_save(owner=user, tag="reports", definition=definition)
    recent = dated_run(user, "billing", 1)
    old = dated_run(user, "billing", 20, status="failed", error={"message": "card declined", "node_id": "a"})
    dated_run(user, "reports", 1)
    since = (timezone.now() - timedelta(days=7)).date().isoformat()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(WAIT_MS)
        try:
            log_in(page, web, "lister")
            billing = page.locator('#workflows-table tr[data-tag="billing"]')
            expect(billing).to_contain_text("Charge the card, then mail the receipt")
            expect(billing.locator('[data-field="last-run"] .badge')).to_have_text("completed")
            expect(billing.get_by_role("link", name="Run billing")).to_be_visible()
            page.get_by_role("searchbox", name="Search").fill("receipt")
            page.get_by_role("button", name="Search").click()
            expect(page.locator("#workflows-table tbody tr")).to_have_count(1)
            page.screenshot(path=str(ARTIFACTS / "web-workflows-list.png"), full_page=True)

            page.goto(f"{web}/runs/")
            expect(page.locator("#runs-table tbody tr")).to_have_count(3)
            page.get_by_label("Workflow").fill("billing")
            page.get_by_role("button", name="Filter").click()
            expect(page.locator("#runs-table tbody tr")).to_have_count(2)
            expect(page.locator(f'tr[data-run="{old.pk}"] [data-field="error"]')).to_contain_text("card declined")
            expect(page.locator(f'tr[data-run="{old.pk}"] [data-field="duration"]')).to_have_text("1.50 s")
            page.get_by_label("Created from").fill(since)
            page.get_by_role("button", name="Filter").click()
            expect(page.locator("#runs-table tbody tr")).to_have_count(1)
            expect(page.locator(f'tr[data-run="{recent.pk}"]')).to_be_visible()
            assert "workflow=billing" in page.url and f"created_after={since}" in page.url
            page.screenshot(path=str(ARTIFACTS / "web-runs-list.png"), full_page=True)
        finally:
            browser.close()


def test_the_run_page_pages_its_patches_and_reads_operations_too_large_to_list(web: str) -> None:
    from playwright.sync_api import expect

    user = User.objects.create_user("patcher", password=PASSWORD)
    run = patched_run(user, [1100] + [0] * 51)  # the first past AOB_DETAILS_MAX_BYTES (1 MiB); 50 a page
    with chromium_page("web-run-patches-failure.png") as (page, problems):
        log_in(page, web, "patcher")
        page.goto(f"{web}/runs/{run.pk}/")
        expect(page.locator("#patch-count")).to_have_text("52")
        page.locator("#tab-patches").click()
        cards = page.locator("#patches article.patch")
        expect(cards).to_have_count(50)
        expect(cards.nth(1).locator("pre.json")).to_contain_text("pad2")
        first = cards.nth(0)
        expect(first).to_contain_text("Too large to list")
        first.get_by_role("button", name="Show them").click()
        expect(first.locator("pre.json")).to_contain_text("pad1")
        page.get_by_role("button", name="More patches (2 left)").click()
        expect(cards).to_have_count(52)
        expect(cards.nth(51)).to_contain_text("Patch 52")
        assert problems == []


def test_the_run_page_reads_a_patch_description_too_long_to_list_from_the_patch(web: str) -> None:
    """A page of patches carries their descriptions (an agent's, up to 10,000 characters) while the
    answer has room, else a marker: the card reads the rest from the patch on request."""
    from playwright.sync_api import expect

    user = User.objects.create_user("describer", password=PASSWORD)
    run = patched_run(user, [0] * 30)
    RunPatch.objects.filter(run=run).update(description="\U0001d11e" * 10_000)  # 40 kB each: 25 fit a page
    with chromium_page("web-run-patch-description-failure.png") as (page, problems):
        log_in(page, web, "describer")
        page.goto(f"{web}/runs/{run.pk}/")
        page.locator("#tab-patches").click()
        cards = page.locator("#patches article.patch")
        expect(cards).to_have_count(30)
        expect(cards.nth(0)).to_contain_text("\U0001d11e" * 100)
        last = cards.nth(29)
        expect(last).to_contain_text("Too long to list")
        last.get_by_role("button", name="Show it").click()
        expect(last).to_contain_text("\U0001d11e" * 10_000)
        assert problems == []


@pytest.mark.parametrize("path", ["/api/v1/docs/", "/api/v1/redoc/"])
def test_the_api_docs_render_offline(web: str, path: str) -> None:
    from playwright.sync_api import expect

    requested: list[str] = []
    with chromium_page(f"web-api-{path.strip('/').split('/')[-1]}-failed.png") as (page, _):
        page.on("request", lambda r: requested.append(r.url))
        page.goto(f"{web}{path}")
        if path.endswith("docs/"):
            expect(page.locator(".swagger-ui .info .title")).to_contain_text("AOB API")
            expect(page.locator(".opblock-summary-path").first).to_be_visible()
            assert page.locator(".opblock").count() > 20
        else:
            expect(page.locator("h1")).to_contain_text("AOB API")
            expect(page.get_by_text("/api/v1/runs/{id}/timeline").first).to_be_attached()
        page.screenshot(path=str(ARTIFACTS / f"web-api-{path.strip('/').split('/')[-1]}.png"))

    outside = [url for url in requested if not url.startswith(("data:", "blob:"))
               and urlsplit(url).hostname not in LOOPBACK]
    assert outside == [], f"requests left loopback: {outside}"
    assert any("/static/drf_spectacular_sidecar/" in url for url in requested)
