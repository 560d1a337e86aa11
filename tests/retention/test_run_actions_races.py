"""Retention and an owner's action on an old run at the same moment: the action that waited on the
prune's lock answers as the API answers a run that is gone (404) or finished (409), never a 500,
as a replay does (``test_replays.py``)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from approvals.models import Approval
from retention.services import prune
from tests.conftest import stored_run
from tests.engine.flow import wait_until
from tests.retention.test_replays import OLD, waiting_on_a_lock
from workflows.models import Artifact, NodeRun, Run

ACTIONS = {
    "cancel": ("/api/v1/runs/{run}/cancel", {}),
    "budget": ("/api/v1/runs/{run}/budget", {"max_tokens": 1000}),
    "patch": ("/api/v1/runs/{run}/patches", {"operations": [{"op": "add", "path": "/metadata", "value": {}}]}),
    "decide": ("/api/v1/approvals/{approval}/decide", {"approve": True}),
}


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_an_action_on_a_run_a_prune_removes_meanwhile_is_a_404_or_409_not_a_500(transactional_db: Any,
                                                                                 api: APIClient, user: User,
                                                                                 action: str) -> None:
    """The view reads the run (finished two months ago, still there), then the service locks it
    again with ``Run.objects.select_for_update().get(pk=...)`` (``run_cancel``,
    ``run_budget_raise``, ``run_patch_propose``; ``approval_decide`` locks the run, then gets the
    approval). A prune that removed the run and commits while that lock waits leaves the ``get``
    nothing: ``DoesNotExist``, a 500. It should answer as a moment later: the run's (or the
    approval's) 404, or the 409 of a finished run."""
    source = stored_run(user)
    gate = NodeRun.objects.create(run=source, node_id="a", node_type="hitl", status="completed",
                                  output={"approved": True}, finished_at=timezone.now())
    approval = Approval.objects.create(run=source, node_run=gate, node_id="a", status="approved",
                                       approvers=[user.username], decided_at=timezone.now())
    Run.objects.filter(pk=source.pk).update(status="completed", finished_at=timezone.now() - OLD)
    Artifact.objects.update(created_at=timezone.now() - OLD)
    connection.ensure_connection()
    api_pid = connection.connection.info.backend_pid  # the connection the request will use
    pruned, counts = threading.Event(), {}

    def prune_and_commit_once_the_action_waits() -> None:
        try:
            with transaction.atomic():
                counts.update(prune())
                pruned.set()
                wait_until(lambda: waiting_on_a_lock(api_pid), what="the action waiting on the prune's lock")
        finally:
            pruned.set()
            connection.close()

    pruning = threading.Thread(target=prune_and_commit_once_the_action_waits)
    pruning.start()
    assert pruned.wait(timeout=30)
    api.raise_request_exception = False
    path, body = ACTIONS[action]
    response = api.post(path.format(run=source.pk, approval=approval.pk), body, format="json")
    pruning.join()

    assert counts["runs"] == 1
    assert response.status_code in (404, 409), (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"] in ("not_found", "run_finished", "approval_settled"), response.json()
    assert not Run.objects.exists()
