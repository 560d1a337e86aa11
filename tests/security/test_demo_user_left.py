"""``make up`` runs ``aob_demo`` as a launch step: a step that fails stops the launch
(``aob/launcher.py`` ``run_step``: LaunchError). A name its holder left is given to no one else
(``workflows.approvers``, LeftName), the demo user's included."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError


@pytest.mark.django_db
def test_make_up_still_starts_after_the_demo_user_was_renamed(monkeypatch):
    """A developer renames ``demo`` to themselves in /admin/ (or deletes it). The next ``make up``
    runs ``aob_demo``, which asks for a new ``demo`` (AOB_DEMO_USER), refused ``name_left``: the
    command exits 1 and the whole launch stops, in development, with nothing telling them to set
    AOB_DEMO_USER. The demo user may not take the name back, but the platform should still start
    (the demo step skipped with a warning, or the left user's account used)."""
    monkeypatch.delenv("AOB_DEMO_USER", raising=False)
    monkeypatch.setenv("AOB_DEMO_PASSWORD", "a-kept-password-1")
    call_command("aob_demo", stdout=io.StringIO())
    demo = User.objects.get(username="demo")
    demo.username = "dana"
    demo.save()

    try:
        call_command("aob_demo", stdout=io.StringIO(), stderr=io.StringIO())
    except CommandError as exc:
        pytest.fail(f"aob_demo failed, so `make up` stops (LaunchError): {exc}")
