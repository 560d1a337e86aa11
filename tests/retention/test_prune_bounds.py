"""A prune asked for over the API is bounded: it starts no batch after ``AOB_PRUNE_REQUEST_S`` and
says what is left; a dry run counts each kind of row up to ``AOB_PRUNE_PREVIEW_CAP``."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from retention.services import prune
from tests.conftest import client_for, stored_run
from workflows.models import Run


def old_runs(owner: Any, n: int) -> list[Any]:
    runs = [stored_run(owner) for _ in range(n)]
    Run.objects.filter(pk__in=[r.pk for r in runs]).update(
        status="completed", finished_at=timezone.now() - timezone.timedelta(days=45))
    return runs


def test_a_prune_over_the_api_stops_at_its_time_and_says_the_rest_is_left(db: Any, make_user: Any,
                                                                        settings: Any) -> None:
    staff = make_user("ops", is_staff=True)
    runs = old_runs(staff, 3)
    settings.AOB_PRUNE_REQUEST_S = 0  # out of time before the first batch (start-up allows 1 to 600)

    answer = client_for(staff).post("/api/v1/prune", {}, format="json")

    assert answer.status_code == 200
    assert answer.json() == {"runs": 0, "artifacts": 0, "hook_deliveries": 0, "schedule_firings": 0,
                             "finished": False}
    assert Run.objects.filter(pk__in=[r.pk for r in runs]).count() == 3
    # the next prune (the beat's has no bound) takes the rest
    assert prune(batch_size=2) | {"artifacts": 0} == {"runs": 3, "artifacts": 0, "hook_deliveries": 0,
                                                      "schedule_firings": 0, "finished": True}


def test_a_dry_run_counts_up_to_its_cap_and_names_what_reached_it(db: Any, make_user: Any, settings: Any) -> None:
    staff = make_user("ops", is_staff=True)
    old_runs(staff, 3)
    settings.AOB_PRUNE_PREVIEW_CAP = 2

    preview = client_for(staff).post("/api/v1/prune", {"dry_run": True}, format="json").json()

    assert preview["dry_run"] is True and preview["runs"] == 2 and "runs" in preview["at_least"]
    assert preview["events"] == 0 and "events" not in preview["at_least"]
    settings.AOB_PRUNE_PREVIEW_CAP = 100
    assert prune(dry_run=True)["runs"] == 3 and prune(dry_run=True)["at_least"] == []
