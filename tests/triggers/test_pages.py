"""The triggers page of a workflow and the secrets page render, with their scripts."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.triggers.test_schedules import GREETING
from workflows.services.definitions import workflow_save


@pytest.mark.django_db
def test_the_triggers_and_secrets_pages_render(user):
    workflow_save(owner=user, tag="greet", definition=GREETING)
    browser = Client()
    browser.force_login(user)

    triggers = browser.get("/workflows/greet/triggers/")
    secrets = browser.get("/secrets/")
    workflow = browser.get("/workflows/greet/")

    assert triggers.status_code == 200 and 'id="schedule-form"' in triggers.content.decode()
    assert secrets.status_code == 200 and 'type="password"' in secrets.content.decode()
    assert 'minlength="8" maxlength="65536"' in secrets.content.decode()  # the service's bounds
    assert "/workflows/greet/triggers/" in workflow.content.decode()
    assert browser.get("/workflows/nope/triggers/").status_code == 404
    for script in ("/static/triggers/triggers.js", "/static/vault/secrets.js", "/static/approvals/approval.js"):
        assert browser.get(script).status_code == 200, script
