"""Changing a run is its owner's alone, whoever calls the service: the API answers a non-owner's
change with a 404 before any service runs (tests/approvals/test_run_access.py), and the services
refuse it themselves (Forbidden, ``not_run_owner``), so the admin, a command or a task cannot reach
around that rule. Staff are no exception."""

from __future__ import annotations

from typing import Any

import pytest

from aob_project.exceptions import Forbidden
from tests.conftest import stored_run
from workflows.models import Event, PatchRefusal, Run, RunPatch
from workflows.services import runs
from workflows.services.patches import run_patch_propose

ADD_B = [{"op": "add", "path": "/nodes/-", "value": {"id": "b", "type": "transform", "config": {"expression": "2"}}},
         {"op": "add", "path": "/edges/-", "value": {"from": "a", "to": "b"}}]


@pytest.fixture(params=["bob", "root"])
def stranger(request: pytest.FixtureRequest, make_user: Any) -> Any:
    """Another user: a plain one, and a superuser."""
    staff = request.param == "root"
    return make_user(request.param, is_staff=staff, is_superuser=staff)


def refused(exc: pytest.ExceptionInfo[Forbidden], run: Run, action: str) -> bool:
    error = exc.value
    return (error.status, error.code, error.message, error.extra) == (
        403, "not_run_owner", f"only the run's owner may {action}", {"run_id": str(run.pk), "rule": "run_owner"})


def test_only_the_owner_sets_a_runs_budget(user: Any, stranger: Any) -> None:
    run = stored_run(user)

    with pytest.raises(Forbidden) as exc:
        runs.run_budget_raise(run=run, user=stranger, max_cost_usd=5)

    assert refused(exc, run, "set its budget")
    assert Run.objects.get(pk=run.pk).budget in (None, {})
    assert not Event.objects.filter(run=run, type="budget_raised").exists()

    raised = runs.run_budget_raise(run=run, user=user, max_cost_usd=5)

    assert raised.budget["max_cost_usd"] == Run.objects.get(pk=run.pk).budget["max_cost_usd"] == 5
    assert Event.objects.get(run=run, type="budget_raised").data["by"] == "alice"


def test_only_the_owner_replays_a_run(user: Any, stranger: Any) -> None:
    run = stored_run(user)
    Run.objects.filter(pk=run.pk).update(status=Run.Status.FAILED)  # only a finished run is replayed
    run.refresh_from_db()

    with pytest.raises(Forbidden) as exc:
        runs.run_replay(run=run, node_id="a", user=stranger)

    assert refused(exc, run, "replay it")
    assert not Run.objects.filter(replay_of=run).exists()

    replay = runs.run_replay(run=run, node_id="a", user=user)

    assert (replay.owner, replay.replay_of, replay.replay_from_node) == (user, run, "a")


def test_only_the_owner_patches_a_run(user: Any, stranger: Any) -> None:
    run = stored_run(user)

    with pytest.raises(Forbidden) as exc:
        run_patch_propose(run=run, operations=ADD_B, description="theirs", user=stranger)

    assert refused(exc, run, "patch it")
    unchanged = Run.objects.get(pk=run.pk)
    assert (unchanged.patch_seq, unchanged.current_artifact_id) == (0, run.current_artifact_id)
    assert not RunPatch.objects.filter(run=run).exists() and not PatchRefusal.objects.filter(run=run).exists()

    patch = run_patch_propose(run=run, operations=ADD_B, description="mine", user=user)

    assert (patch.status, patch.seq, patch.proposed_by) == ("applied", 1, user)
    assert Run.objects.get(pk=run.pk).current_artifact_id == patch.after_artifact_id
