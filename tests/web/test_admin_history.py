"""The admin protects history: runs, node runs, events, artifacts, patches and approvals offer no
add, change or delete (actions go through services), times show seconds, approver lists are whole;
Flower's task list is not buried under the maintenance tasks."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from aob_project.celery import app
from approvals.models import Approval
from tests.conftest import stored_run
from workflows.models import Artifact, Event, NodeRun, Run

READ_ONLY = ["run", "noderun", "event", "artifact", "runpatch", "patchrefusal"]




@pytest.fixture
def history(root: Any) -> Run:
    run = stored_run(root)
    now = timezone.now().replace(microsecond=0)
    Run.objects.filter(pk=run.pk).update(status="completed", finished_at=now)
    NodeRun.objects.create(run=run, node_id="a", node_type="transform", status="completed", started_at=now,
                           finished_at=now, output=1)
    Event.objects.create(run=run, seq=1, type="workflow_started", node_id="", data={})
    Approval.objects.create(run=run, node_id="a", message="ok?", approvers=["alice.long-name", "bob", "carol"])
    return Run.objects.get(pk=run.pk)


def test_run_pages_have_no_add_change_or_delete(admin_client: Client, history: Run) -> None:
    page = admin_client.get(f"/admin/workflows/run/{history.pk}/change/").content.decode()

    # no "Add another node run / event": node runs and events are read-only tables, no forms
    assert 'class="add-row"' not in page and "MAX_NUM_FORMS" not in page
    assert 'name="_save"' not in page and 'name="_continue"' not in page
    assert "/delete/" not in page
    assert "Node runs" in page and "workflow_started" in page
    changelist = admin_client.get("/admin/workflows/run/").content.decode()
    assert "cancel_runs" in changelist and "delete_selected" not in changelist
    assert admin_client.get("/admin/workflows/run/add/").status_code == 403
    assert admin_client.post(f"/admin/workflows/run/{history.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Run.objects.filter(pk=history.pk).exists()


@pytest.mark.parametrize("model", READ_ONLY)
def test_history_models_are_read_only(admin_client: Client, history: Run, model: str) -> None:
    changelist = admin_client.get(f"/admin/workflows/{model}/")

    assert changelist.status_code == 200
    assert f"/admin/workflows/{model}/add/" not in changelist.content.decode()
    assert admin_client.get(f"/admin/workflows/{model}/add/").status_code == 403
    objects = {"run": Run, "noderun": NodeRun, "event": Event, "artifact": Artifact}
    if model in objects:
        obj = objects[model].objects.first()
        change = admin_client.post(f"/admin/workflows/{model}/{obj.pk}/change/", {})
        assert change.status_code == 403  # viewable, never saved
        assert admin_client.post(f"/admin/workflows/{model}/{obj.pk}/delete/", {"post": "yes"}).status_code == 403


def test_times_show_seconds_and_approvers_are_listed_whole(admin_client: Client, history: Run) -> None:
    runs = admin_client.get("/admin/workflows/run/").content.decode()
    assert history.finished_at.strftime("%Y-%m-%d %H:%M:%S") in runs

    approvals = admin_client.get("/admin/approvals/approval/").content.decode()
    for name in ("alice.long-name", "bob", "carol"):
        assert f"<div style='white-space:nowrap'>{name}</div>" in approvals
    approval = Approval.objects.get(run=history)
    page = admin_client.get(f"/admin/approvals/approval/{approval.pk}/change/").content.decode()
    assert 'name="_save"' not in page and "alice.long-name" in page


def test_maintenance_tasks_send_no_events_so_flower_lists_workflow_work() -> None:
    app.loader.import_default_modules()
    assert app.tasks["workflows.sweep"].send_events is False
    assert app.tasks["approvals.expire"].send_events is False
    assert app.tasks["workflows.coordinate"].send_events is True
