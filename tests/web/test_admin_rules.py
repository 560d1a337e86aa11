"""The admin obeys the rules every other surface obeys: a run is cancelled only by its owner and
only by a user allowed to change runs; a workflow is read here, made and changed by its service."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Permission
from django.test import Client

from tests.conftest import stored_run
from workflows.models import Run, Workflow
from workflows.services.definitions import workflow_save

CHANGELIST = "/admin/workflows/run/"
ONE = {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "1"}}], "edges": []}


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def cancel(client: Client, run: Run) -> list[str]:
    response = client.post(CHANGELIST, {"action": "cancel_runs", "_selected_action": [str(run.pk)], "index": 0},
                           follow=True)
    assert response.status_code == 200
    return [str(m) for m in response.context["messages"]]


def test_view_only_staff_is_not_offered_the_cancel_and_cannot_post_it(make_user: Any, user: Any) -> None:
    viewer = make_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_run"))
    run = stored_run(user)
    client = logged_in(viewer)

    assert client.get(CHANGELIST).status_code == 200
    assert "cancel_runs" not in client.get(CHANGELIST).content.decode()
    cancel(client, run)
    assert Run.objects.get(pk=run.pk).status == run.status != "cancelled"


def test_staff_cancel_only_their_own_runs_as_on_the_api(make_user: Any, user: Any) -> None:
    root = make_user("root", is_staff=True, is_superuser=True)
    theirs, own = stored_run(user), stored_run(root)
    client = logged_in(root)

    assert cancel(client, theirs) == [f"{theirs.pk}: only the run's owner may cancel it"]
    assert Run.objects.get(pk=theirs.pk).status == theirs.status != "cancelled"
    assert cancel(client, own) == [f"cancelled {own.pk}"]
    assert Run.objects.get(pk=own.pk).status == "cancelled"


def test_a_workflows_owner_and_tag_are_not_edited_in_the_admin(make_user: Any, user: Any) -> None:
    root, bob = make_user("root", is_staff=True, is_superuser=True), make_user("bob")
    workflow = workflow_save(owner=user, tag="refunds", definition=ONE).workflow
    client = logged_in(root)
    change = f"/admin/workflows/workflow/{workflow.pk}/change/"

    page = client.get(change).content.decode()
    assert 'name="tag"' not in page and 'name="owner"' not in page and 'name="_save"' not in page
    assert client.post(change, {"tag": "stolen", "owner": bob.pk}).status_code == 403
    assert client.post("/admin/workflows/workflow/add/", {"tag": "new", "owner": bob.pk}).status_code == 403
    workflow.refresh_from_db()
    assert (workflow.tag, workflow.owner) == ("refunds", user)

    assert client.post(f"/admin/workflows/workflow/{workflow.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Workflow.objects.filter(pk=workflow.pk).exists()  # deleted by workflow_delete (API, CLI)
