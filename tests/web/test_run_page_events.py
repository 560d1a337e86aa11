"""The run page's events in a real browser: its socket starts at the run's newest page of events
(``selectors.events_latest_after``: ``AOB_DETAILS_MAX_BYTES`` of them, at most 1,000), its list
keeps the newest 1,000 and says where the older ones are read, and an event's data is drawn when
it is opened. Before, the page took every event of the run and drew each: 4,000 events of 8 KiB
were 33 MB over the socket, 4,000 items and 12 s to settle."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, transaction

from tests.conftest import stored_run
from tests.web.browsing import PASSWORD, chromium_page, log_in
from workflows.models import Event, Run

pytestmark = pytest.mark.browser


def stored_events(run: Run, count: int, error: str) -> None:
    """``count`` node_retrying events of a run, each with ``error`` as its message."""
    Event.objects.bulk_create(
        [Event(run=run, seq=seq, type=Event.Type.NODE_RETRYING, node_id="a",
               data={"iteration": seq, "attempt": 2, "error": {"error_type": "HTTPError", "message": error}})
         for seq in range(1, count + 1)], batch_size=500)
    Run.objects.filter(pk=run.pk).update(event_seq=count, status="running")


def socket_bytes(page: Any) -> dict[str, int]:
    received = {"bytes": 0, "frames": 0}

    def on_socket(ws: Any) -> None:
        def on_frame(payload: Any) -> None:
            received["bytes"] += len(payload)
            received["frames"] += 1
        ws.on("framereceived", on_frame)

    page.on("websocket", on_socket)
    return received


def test_a_run_of_many_large_events_sends_and_draws_its_newest_page_only(web: str) -> None:
    from playwright.sync_api import expect

    owner = User.objects.create_user("watcher", password=PASSWORD)
    run = stored_run(owner)
    stored_events(run, 4000, "x" * 8000)  # a retry's error as bounded_error keeps it

    with chromium_page("web-run-page-events-failure.png") as (page, problems):
        received = socket_bytes(page)
        log_in(page, web, "watcher", f"/runs/{run.pk}/")
        page.get_by_role("tab", name="Events").click()
        expect(page.locator("#event-count")).to_have_text("4000")
        expect(page.locator("#events > li").first).to_contain_text("#4000")
        drawn = page.locator("#events > li").count()
        oldest = int(page.locator("#events > li").last.get_attribute("data-seq"))
        older = page.locator("#events-older")
        expect(older).to_contain_text(f"Events #1 to #{oldest - 1} are not listed here")
        expect(older.get_by_role("link", name="the API")).to_have_attribute("href", f"/api/v1/runs/{run.pk}/events")
        # the data is drawn when it is opened, not before
        expect(page.locator("#events pre")).to_have_count(0)
        page.locator("#events > li").first.locator("summary").click()
        expect(page.locator("#events pre")).to_have_count(1)
        expect(page.locator("#events pre")).to_contain_text("xxxx")
    assert 1 < drawn == 4001 - oldest < 1000, drawn
    assert received["frames"] == drawn
    assert received["bytes"] <= settings.AOB_DETAILS_MAX_BYTES + 512 * drawn, received
    assert problems == []


def appended(run: Run, items: list[tuple[str, str, dict[str, Any]]]) -> None:
    """A run's events appended and pushed live as a worker does, in a thread of its own (the
    browser's sync API runs an event loop in the test's)."""
    from workflows.engine.events import append

    try:
        with transaction.atomic():
            append(run.pk, run.owner_id, items)
    finally:
        connection.close()


def test_the_events_list_keeps_the_newest_thousand_as_more_arrive(web: str) -> None:
    from playwright.sync_api import expect

    owner = User.objects.create_user("watcher", password=PASSWORD)
    run = stored_run(owner)
    stored_events(run, 1000, "short")

    with chromium_page("web-run-page-events-live-failure.png") as (page, problems):
        log_in(page, web, "watcher", f"/runs/{run.pk}/")
        page.get_by_role("tab", name="Events").click()
        expect(page.locator("#events > li").first).to_contain_text("#1000")
        expect(page.locator("#events > li")).to_have_count(1000)
        expect(page.locator("#events-older")).to_be_hidden()
        expect(page.locator("#live")).to_have_class("live live")
        worker = threading.Thread(target=appended, args=(run, [("node_retrying", "a", {"attempt": 3})] * 5))
        worker.start()
        worker.join()
        expect(page.locator("#events > li").first).to_contain_text("#1005")
        expect(page.locator("#events > li")).to_have_count(1000)
        expect(page.locator("#events > li").last).to_have_attribute("data-seq", "6")
        expect(page.locator("#events-older")).to_contain_text("Events #1 to #5 are not listed here")
        expect(page.locator("#event-count")).to_have_text("1005")
    assert problems == []
