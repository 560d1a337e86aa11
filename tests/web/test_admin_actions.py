"""An admin action over "select all" is bounded (``admin.act_on_each``: at most ACTION_MAX_ROWS rows, one message a distinct outcome; a red-team helper's finding).

The changelist counts at most COUNT_CAP rows and a run's page shows its latest LATEST_ROWS rows
(workflows/admin.py), but "Select all N runs" then "Cancel selected runs" hands the action every
matching run (``select_across``): ``RunAdmin.cancel_runs`` calls ``run_cancel`` once per run, in
the one request, and adds one message per run, all of which the next page renders (and the
session stores). With 10,000+ runs that is 10,000+ service calls and messages for one click.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests.conftest import stored_run
from workflows.admin import LATEST_ROWS
from workflows.models import Run


def test_cancel_over_select_all_answers_a_bounded_page(make_user: Any, user: Any) -> None:
    root = make_user("root", is_staff=True, is_superuser=True)
    runs = [stored_run(user) for _ in range(LATEST_ROWS + 20)]  # another's: each refused by run_cancel
    client = Client()
    client.force_login(root)

    # what the page posts after "Select all": the page's boxes ticked, and select_across
    response = client.post("/admin/workflows/run/", {"action": "cancel_runs", "select_across": "1", "index": 0,
                                                      "_selected_action": [str(runs[0].pk)]}, follow=True)
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    assert Run.objects.filter(status="cancelled").count() == 0
    assert len(shown) <= LATEST_ROWS + 1, (
        f"one click drew {len(shown)} messages, one per selected run (unbounded with the table): {shown[:2]}")


@pytest.mark.parametrize(("changelist", "action", "selected"), [
    ("/admin/workflows/run/", "cancel_runs", "not-a-run-id"), ("/admin/workflows/run/", "cancel_runs", "\x00"),
    ("/admin/workflows/run/", "cancel_runs", "1" * 40), ("/admin/triggers/hook/", "delete_selected", "hk_\x00"),
    ("/admin/workflows/runpatch/", "approve_patches", "one"), ("/admin/approvals/approval/", "approve", "\x00"),
])
def test_an_action_on_a_selection_that_names_no_row_says_so_not_a_500(make_user: Any, user: Any, changelist: str,
                                                                        action: str, selected: str) -> None:
    """The boxes' values are the rows' keys; a hand-made or stale post may carry anything. A run's
    key is a UUID, and Django's filter of the selection raised on one that is not (a 500), as
    PostgreSQL did on a NUL in a text key."""
    root = make_user("root", is_staff=True, is_superuser=True)
    run = stored_run(root)
    client = Client(raise_request_exception=False)
    client.force_login(root)

    response = client.post(changelist, {"action": action, "index": 0, "_selected_action": [selected, str(run.pk)]},
                           follow=True)

    assert response.status_code == 200, response.content[:300]
    assert [str(m) for m in response.context["messages"]] == [
        "The selection names rows that do not exist; nothing was done: select them again"]
    assert Run.objects.get(pk=run.pk).status == run.status != "cancelled"
