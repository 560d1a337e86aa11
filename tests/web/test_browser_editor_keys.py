"""The workflow page's editor in a real browser (Debian's Chromium through Playwright) keeps every
key of a definition's open metadata: it shows a definition in authoring order (api.js
authoringOrder), whose ``k in out`` read Object.prototype too, so a key named like one of its
members (constructor, toString, __proto__...) was left out of the editor's text, and a save from
the page dropped it from the workflow (a red-team find)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from tests.web.browsing import PASSWORD, chromium_page, log_in
from workflows.models import Workflow
from workflows.services.definitions import workflow_save

pytestmark = pytest.mark.browser


def test_the_editor_keeps_metadata_keys_named_like_object_prototype_members(web: str) -> None:
    from playwright.sync_api import expect

    user = User.objects.create_user("editor-keys", password=PASSWORD)
    metadata = {"name": "greet", "constructor": "team-payments", "toString": "x", "__proto__": {"a": 1},
                "owner_team": "payments"}
    definition = {"metadata": metadata,
                  "nodes": [{"id": "hello", "type": "transform", "config": {"expression": "'hi'"}}], "edges": []}
    workflow_save(owner=user, tag="greet", definition=definition)
    with chromium_page("editor-keys-failure.png") as (page, problems):
        log_in(page, web, "editor-keys", "/workflows/greet/")
        expect(page.locator("#validation")).to_contain_text("Valid", timeout=20_000)
        text = page.locator("#definition").input_value()
        page.get_by_role("button", name="Save as a new version").click()
        expect(page.locator("#save-status")).to_contain_text("version", timeout=20_000)
        status = page.locator("#save-status").inner_text()
        assert not problems, problems

    for key in metadata:
        assert f'"{key}"' in text, f"the editor's text lost {key}: {text}"
    latest = Workflow.objects.get(owner=user, tag="greet").versions.order_by("seq").last().artifact.content
    assert latest["metadata"] == metadata, f"saved from the page: {latest['metadata']}; {status}"
