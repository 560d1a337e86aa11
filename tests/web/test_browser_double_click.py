"""A careless double click in a real browser (Playwright on Debian's Chromium) does one thing: the
run page's "Replay from" starts one replay, not two."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from tests.conftest import wait_for_run
from tests.web.browsing import PASSWORD, chromium_page, run_from_its_page
from workflows.models import Run
from workflows.services.definitions import workflow_save

pytestmark = pytest.mark.browser
ROOT = Path(settings.BASE_DIR)


def test_a_double_click_on_replay_starts_one_replay(web: str) -> None:
    from playwright.sync_api import expect

    user = User.objects.create_user("twice", password=PASSWORD)
    workflow_save(owner=user, tag="greet", definition=json.loads((ROOT / "examples/greet.json").read_text()))

    with chromium_page("web-double-replay-failure.png") as (page, problems):
        first = run_from_its_page(page, web, "twice", "greet", '{"name": "Ada"}')
        expect(page.locator("#run-status")).to_have_attribute("data-status", "completed")
        page.locator('svg.dag [data-node="b"]').click()
        page.get_by_role("button", name="Replay from b").dblclick()
        page.wait_for_url(lambda url: url != first and "/runs/" in url)
    assert problems == []
    for run in Run.objects.all():
        wait_for_run(run.pk)
    assert Run.objects.filter(replay_of__isnull=False).count() == 1
