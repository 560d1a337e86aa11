"""Two windows edit one workflow in a real browser (Playwright on Debian's Chromium): the second save
is refused, naming the version the first made, with the second tab's text kept in its editor, until
its author chooses to save over it. The "New workflow" page never saves over a tag in use."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User

from tests.web.browsing import PASSWORD, chromium_page, log_in
from workflows.models import Workflow
from workflows.services.definitions import workflow_save

pytestmark = pytest.mark.browser


def definition(expression: str) -> dict[str, Any]:
    return {"nodes": [{"id": "a", "type": "transform", "config": {"expression": expression}}], "edges": []}


def type_definition(page: Any, value: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    page.locator(".cm-content").click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.locator(".cm-content").fill(json.dumps(value, indent=2))
    expect(page.locator("#validation")).to_contain_text("Valid")


def test_a_save_from_a_stale_window_is_refused_and_keeps_its_text_until_saved_over(web: str) -> None:
    from playwright.sync_api import expect

    user = User.objects.create_user("editor", password=PASSWORD)
    workflow_save(owner=user, tag="shared", definition=definition("1"))

    with chromium_page("web-conflict-failure.png") as (first, problems):
        second = first.context.browser.new_page()  # another window: a session of its own
        for tab in (first, second):
            log_in(tab, web, "editor", "/")
        for tab in (first, second):
            tab.goto(f"{web}/workflows/shared/")
            expect(tab.locator("#validation")).to_contain_text("Valid")

        type_definition(second, definition("2"))
        second.get_by_role("button", name="Save as a new version").click()
        expect(second.locator("#save-status")).to_have_text("Saved as version 1.")

        type_definition(first, definition("3"))
        first.get_by_role("button", name="Save as a new version").click()
        alert = first.locator("#wf-alert")
        expect(alert).to_contain_text("is at version 1; this edit was based on version 0")
        expect(alert).to_contain_text("Your text is still in the editor.")
        assert json.loads(first.locator("#definition").input_value()) == definition("3")
        expect(alert.get_by_role("link", name="Open version 1 in a new tab")).to_have_attribute(
            "href", "/workflows/shared/")

        first.get_by_role("button", name="Save mine over version 1").click()
        expect(first.locator("#save-status")).to_have_text("Saved as version 2.")
        expect(alert).to_be_hidden()

        new = second  # "New workflow" with a tag already in use
        new.goto(f"{web}/workflows/new/?tag=shared")
        expect(new.locator("#validation")).to_contain_text("Valid")
        new.get_by_role("button", name="Save", exact=True).click()
        expect(new.locator("#wf-alert")).to_contain_text("a workflow tagged 'shared' exists already (version 2)")
        assert new.url == f"{web}/workflows/new/?tag=shared"

    # the browser logs every 409 answer as a failed resource load: nothing else may be there
    assert [p for p in problems if "409" not in p] == []
    versions = Workflow.objects.get(tag="shared").versions.order_by("seq")
    assert [v.artifact.content for v in versions] == [definition("1"), definition("2"), definition("3")]
