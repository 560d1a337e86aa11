"""The real beat (django-celery-beat's database scheduler) killed before it wrote down a firing it
sent, and started again within the minute: it sends the same firing again, and the run starts
once. It waits for the minute's turn (up to 60 s), so it runs in ``make test-faults``;
``make test`` sends the same firing twice itself (``tests/triggers/test_schedules.py``)."""

from __future__ import annotations

import pytest

from tests.conftest import wait_for_run
from tests.engine.flow import wait_until
from tests.support import stack
from tests.triggers.test_schedules import GREETING
from triggers.models import ScheduleFiring
from workflows.models import Run
from workflows.services.definitions import workflow_save

pytestmark = [pytest.mark.fault, pytest.mark.faults_full]


def test_a_schedule_fires_and_a_beat_restart_in_the_same_minute_starts_it_once(engine, api, user, stack_env):
    workflow_save(owner=user, tag="every-minute", definition=GREETING)
    response = api.post("/api/v1/schedules", {"tag": "every-minute", "cron": "* * * * *", "timezone": "Europe/Paris",
                                              "inputs": {"name": "beat"}}, format="json")
    assert response.status_code == 201, response.json()
    schedule_id = response.json()["id"]

    try:
        firing = wait_until(lambda: ScheduleFiring.objects.filter(schedule_id=schedule_id).first(), timeout=90,
                            what="the first firing")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nbeat:\n{engine['beat'].tail(60)}\nworker:\n{engine['worker'].tail(30)}") from None
    # Beat dies before it wrote down that it fired (as on a crash or a kill -9), and is back within the
    # minute: with the firing's time unrecorded, it sends the same firing again.
    engine["beat"].kill()
    engine["beat"] = stack.start_beat(stack_env)
    wait_until(lambda: ScheduleFiring.objects.get(pk=firing.pk).deliveries >= 2, timeout=30,
               what="beat sending the firing again after its restart")

    assert ScheduleFiring.objects.filter(schedule_id=schedule_id, fire_time=firing.fire_time).count() == 1
    assert firing.fire_time.second == 0 and firing.outcome == ScheduleFiring.Outcome.STARTED
    run = wait_for_run(firing.run_id)
    assert run.status == "completed"
    assert run.inputs == {"name": "beat"}
    runs_in_that_minute = Run.objects.filter(tag="every-minute", created_at__gte=firing.fire_time,
                                             created_at__lt=firing.fire_time.replace(second=59))
    assert runs_in_that_minute.count() == 1
