"""An approver's open inbox in a real browser (Debian's Chromium through Playwright), while another
user keeps asking them: the inbox reads itself at the rate the server allows, not the asker's."""

from __future__ import annotations

import threading
import time

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connections
from rest_framework.authtoken.models import Token

from tests.conftest import client_for, wait_for_run
from tests.web.browsing import PASSWORD, chromium_page, log_in
from tests.web.test_consumers import gated_for

CHANGES = 15


@pytest.mark.browser
def test_an_askers_stream_of_gates_reloads_an_approvers_open_inbox_at_most_once_an_interval(web: str) -> None:
    """Anyone may name anyone as an approver, and each change to an approval naming bob nudged each
    of his open inbox sockets, each nudge a read of his inbox (``GET /approvals?status=pending``):
    alice's 15 gates in 5 s read bob's open inbox 15 times (a red-team helper's measurement). A
    socket now tells its client at most every ``AOB_WS_INBOX_NUDGE_MIN_S``, the changes meanwhile
    once at the interval's end: the inbox still shows every gate, the last one too."""
    from playwright.sync_api import expect

    alice = User.objects.create_user("alice", password=PASSWORD)
    User.objects.create_user("bob", password=PASSWORD)
    Token.objects.create(user=alice)
    definition = gated_for(["bob"])
    for node in definition["nodes"]:
        if node["type"] == "hitl":
            node["config"].update(required_approvals=1)
    loads: list[float] = []

    def ask() -> None:  # alice's gates, one after another, each waiting before the next starts
        try:
            for i in range(CHANGES):
                answer = client_for(alice).post("/api/v1/runs", {"workflow": definition,
                                                                 "inputs": {"amount": i, "customer": "Ada"}},
                                                format="json")
                assert answer.status_code == 201, answer.json()
                wait_for_run(answer.json()["run_id"], statuses={"waiting_for_approval"})
        finally:
            connections.close_all()

    with chromium_page("inbox-nudges.png") as (page, problems):
        page.on("request", lambda r: loads.append(time.monotonic())
                if "/api/v1/approvals?status=pending" in r.url else None)
        log_in(page, web, "bob", "/approvals/")
        expect(page.locator("#inbox")).to_contain_text("Nothing to decide right now.")
        deadline = time.monotonic() + 10
        while len(loads) < 2 and time.monotonic() < deadline:  # the page's read, and its socket's opening one
            page.wait_for_timeout(100)
        assert len(loads) == 2, loads
        started = time.monotonic()
        asker = threading.Thread(target=ask)
        asker.start()
        while asker.is_alive():
            page.wait_for_timeout(200)
        asker.join()
        expect(page.locator("[data-approval]")).to_have_count(CHANGES, timeout=15_000)  # the last gate too
        took = time.monotonic() - started
        assert not problems, problems
    during = len(loads) - 2
    # nudges at least an interval apart, the first at once
    assert 1 <= during <= 1 + took / settings.AOB_WS_INBOX_NUDGE_MIN_S, (during, took)
