"""Sessions past their expiry go with the prune: nothing else ever removed them (Django leaves that
to ``clearsessions``, which nothing ran), so every login of the web pages kept a row for ever: one
user at the login limit (10 a minute) left 14,400 a day."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from retention.services import prune


def test_expired_sessions_are_removed_and_live_ones_kept(db: Any, user: Any) -> None:
    browser = Client()
    browser.force_login(user)
    live = browser.session.session_key
    for key in ("expired-a", "expired-b"):
        Session.objects.create(session_key=key, session_data="", expire_date=timezone.now() - timedelta(seconds=1))

    assert prune(dry_run=True)["sessions"] == 2
    counts = prune(batch_size=1)

    assert counts["sessions"] == 2 and counts["finished"] is True
    assert list(Session.objects.values_list("session_key", flat=True)) == [live]
    assert browser.get("/").status_code == 200  # still logged in
