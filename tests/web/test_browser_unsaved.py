"""Unsaved edits on the workflow page (Playwright on Debian's Chromium): no click there throws them
away unasked. "Load" of an older version asks first, "Run" (which runs the saved version) opens its
run beside them instead of leaving the page, and leaving the page asks the browser's question."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User

from tests.web.browsing import PASSWORD, chromium_page, log_in
from tests.web.test_browser_conflict import definition, type_definition
from workflows.models import Run
from workflows.services.definitions import workflow_save

pytestmark = pytest.mark.browser


def test_unsaved_edits_are_not_thrown_away_by_load_run_or_leaving(web: str) -> None:
    from playwright.sync_api import expect

    user = User.objects.create_user("drafter", password=PASSWORD)
    workflow_save(owner=user, tag="draft", definition=definition("1"))
    workflow_save(owner=user, tag="draft", definition=definition("2"))

    with chromium_page("web-unsaved-failure.png") as (page, problems):
        log_in(page, web, "drafter", "/workflows/draft/")
        expect(page.locator("#validation")).to_contain_text("Valid")
        type_definition(page, definition("3"))
        edits = definition("3")

        load = page.get_by_role("button", name="Load version 0 into the editor")
        load.click()
        expect(load).to_have_text("Discard my edits and load")
        assert json.loads(page.locator("#definition").input_value()) == edits

        page.get_by_role("button", name="Run", exact=True).click()
        expect(page.locator("#run-status")).to_contain_text("of the saved version; your edits here are not saved")
        started = page.locator("#started-run").get_attribute("href")
        assert page.url == f"{web}/workflows/draft/" and json.loads(page.locator("#definition").input_value()) == edits
        assert started.startswith("/runs/")

        asked: list[str] = []

        def stay(dialog: Any) -> None:  # the browser's "Leave site?": stay
            asked.append(dialog.type)
            dialog.dismiss()

        page.on("dialog", stay)
        page.get_by_role("link", name="Runs", exact=True).click()  # returns once the question was answered
        page.remove_listener("dialog", stay)
        assert asked == ["beforeunload"] and page.url == f"{web}/workflows/draft/"
        assert json.loads(page.locator("#definition").input_value()) == edits

        load.click()  # armed: within 5 s the second click replaces the edits, as asked
        load.click()
        expect(page.locator("#save-status")).to_have_text(
            "Version 0 is in the editor; save to make it the current version.")
        assert json.loads(page.locator("#definition").input_value()) == definition("1")
        page.get_by_role("link", name="Runs", exact=True).click()  # nothing unsaved: no question
        page.wait_for_url(f"{web}/runs/")

    assert problems == []
    assert [f"/runs/{run.pk}/" for run in Run.objects.filter(owner=user)] == [started]
