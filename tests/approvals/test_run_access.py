"""Who may read a run and who may change it, through the API: an approver sees the run it must
decide, but changing it (cancel, budget, replay, patch) is its owner's alone; to anyone else such a
request is the 404 of a run that does not exist, and the run is left as it was."""

from __future__ import annotations

from typing import Any

import pytest

from tests.approvals.runs import parked
from tests.conftest import client_for
from workflows.models import Run, RunPatch

CHANGES = [
    ("cancel", {}),
    ("budget", {"max_cost_usd": 5}),
    ("nodes/prepare/replay", {}),
    ("patches", {"operations": []}),
]


@pytest.mark.parametrize(("action", "body"), CHANGES, ids=[c[0] for c in CHANGES])
def test_an_approver_reads_the_run_but_only_its_owner_changes_it(engine: Any, user: Any, bob: Any, carol: Any,
                                                                 action: str, body: dict) -> None:
    run_id, _ = parked(user, {"approvers": ["bob"]})
    runs_before = Run.objects.count()

    approver, stranger = client_for(bob), client_for(carol)
    assert approver.get(f"/api/v1/runs/{run_id}").json()["status"] == "waiting_for_approval"
    assert approver.get(f"/api/v1/runs/{run_id}/patches").status_code == 200
    assert stranger.get(f"/api/v1/runs/{run_id}").status_code == 404

    for other in (approver, stranger):
        refused = other.post(f"/api/v1/runs/{run_id}/{action}", body, format="json")
        assert refused.status_code == 404, refused.json()
        assert refused.json()["message"] == "run not found"

    run = Run.objects.get(pk=run_id)
    assert run.status == "waiting_for_approval" and run.budget in (None, {})
    assert Run.objects.count() == runs_before and not RunPatch.objects.filter(run=run).exists()
    owner = client_for(user).post(f"/api/v1/runs/{run_id}/{action}", body, format="json")
    if action.endswith("replay"):  # the owner's to ask: refused only as a run still going is (run_finished_check)
        assert (owner.status_code, owner.json()["error"]) == (409, "run_not_finished"), owner.json()
        return
    assert owner.status_code in (200, 201), owner.json()
