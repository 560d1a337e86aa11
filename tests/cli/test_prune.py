"""``aob prune --dry-run`` against a live server: staff who may delete runs see what would go; nothing
goes. Staff without that permission, and anyone else, are refused."""

from __future__ import annotations

from django.utils import timezone

from tests.conftest import stored_run, with_permissions
from workflows.models import Run


def test_prune_dry_run_shows_what_would_go_and_removes_nothing(aob, make_user, transactional_db):
    staff = with_permissions(make_user("ops", is_staff=True), "workflows.view_run", "workflows.delete_run")
    old = stored_run(staff)
    Run.objects.filter(pk=old.pk).update(status="completed", finished_at=timezone.now() - timezone.timedelta(days=45))

    shown = aob("-o", "json", "prune", "--dry-run", token=staff.auth_token.key)
    refused = aob("prune", "--dry-run", token=make_user("alice").auth_token.key)
    staff_only = aob("prune", "--dry-run", token=make_user("scheduler", is_staff=True).auth_token.key)

    assert shown.code == 0, shown.err
    assert shown.json()["dry_run"] is True and shown.json()["runs"] == 1
    assert Run.objects.filter(pk=old.pk).exists()
    assert refused.code == 1 and "permission" in refused.err.lower()
    assert staff_only.code == 1 and "workflows.delete_run" in staff_only.err, staff_only.err
    text = aob("prune", "--dry-run", token=staff.auth_token.key)
    assert text.code == 0 and any(line.split() == ["runs", "1"] for line in text.out.splitlines()), text.out
    assert "at_least" not in text.out and "more is past retention" not in text.out
