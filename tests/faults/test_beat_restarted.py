"""The real beat (django-celery-beat's database scheduler) killed before it wrote down a firing it
sent, and started again within the minute: it sends the same firing again, and the run starts
once, because a firing is keyed by the cron time it was due. The control keys it by when it was
delivered (``aob:test:firing_key_off``) and the same restart starts two runs. Each waits for the
minute's turn (up to 60 s), so they run in ``make test-faults``; ``make test`` sends the same
firing twice itself (``tests/triggers/test_schedules.py``)."""

from __future__ import annotations

import pytest

from tests.conftest import wait_for_run
from tests.engine.flow import wait_until
from tests.faults.harness import hooks
from tests.support import stack
from tests.triggers.test_schedules import GREETING
from triggers.models import ScheduleFiring
from workflows.models import Run
from workflows.services.definitions import workflow_save

pytestmark = [pytest.mark.fault, pytest.mark.faults_full]


def fire_then_restart_beat(engine, api, user, stack_env, tag: str) -> ScheduleFiring:
    """A schedule's first firing, then beat killed before it wrote the firing down (as on a crash or
    a kill -9) and back within the minute: with the firing's time unrecorded, it sends it again."""
    workflow_save(owner=user, tag=tag, definition=GREETING)
    response = api.post("/api/v1/schedules", {"tag": tag, "cron": "* * * * *", "timezone": "Europe/Paris",
                                              "inputs": {"name": "beat"}}, format="json")
    assert response.status_code == 201, response.json()
    schedule_id = response.json()["id"]
    try:
        firing = wait_until(lambda: ScheduleFiring.objects.filter(schedule_id=schedule_id).first(), timeout=90,
                            what="the first firing")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nbeat:\n{engine['beat'].tail(60)}\nworker:\n{engine['worker'].tail(30)}") from None
    engine["beat"].kill()
    engine["beat"] = stack.start_beat(stack_env)
    return firing


def test_a_schedule_fires_and_a_beat_restart_in_the_same_minute_starts_it_once(engine, api, user, stack_env):
    firing = fire_then_restart_beat(engine, api, user, stack_env, "every-minute")
    wait_until(lambda: ScheduleFiring.objects.get(pk=firing.pk).deliveries >= 2, timeout=30,
               what="beat sending the firing again after its restart")

    assert ScheduleFiring.objects.filter(schedule_id=firing.schedule_id, fire_time=firing.fire_time).count() == 1
    assert firing.fire_time.second == 0 and firing.outcome == ScheduleFiring.Outcome.STARTED
    run = wait_for_run(firing.run_id)
    assert run.status == "completed"
    assert run.inputs == {"name": "beat"}
    runs_in_that_minute = Run.objects.filter(tag="every-minute", created_at__gte=firing.fire_time,
                                             created_at__lt=firing.fire_time.replace(second=59))
    assert runs_in_that_minute.count() == 1


def test_control_a_firing_keyed_by_its_delivery_starts_twice_on_the_restart(engine, api, user, stack_env):
    hooks().set("aob:test:firing_key_off", 1)
    try:
        firing = fire_then_restart_beat(engine, api, user, stack_env, "every-minute-unkeyed")
        wait_until(lambda: ScheduleFiring.objects.filter(schedule_id=firing.schedule_id).count() >= 2, timeout=30,
                   what="beat's second sending recorded as a firing of its own")
    finally:
        hooks().delete("aob:test:firing_key_off")
    firings = list(ScheduleFiring.objects.filter(schedule_id=firing.schedule_id).order_by("fired_at")[:2])
    assert firings[0].fire_time.minute == firings[1].fire_time.minute  # one due time, two firings
    assert all(f.outcome == ScheduleFiring.Outcome.STARTED and f.deliveries == 1 for f in firings)
    assert len({f.run_id for f in firings}) == 2
    assert Run.objects.filter(tag="every-minute-unkeyed").count() >= 2
