"""The admin obeys the rules every other surface obeys: a run is cancelled only by its owner and
only by a user allowed to change runs; a workflow's owner and tag change only through its service."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Permission
from django.test import Client

from tests.conftest import stored_run
from workflows.models import Run

CHANGELIST = "/admin/workflows/run/"


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
