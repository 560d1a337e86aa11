"""A schedule's firing lost on its way: beat sent it, and its message went from the broker before
any worker took it (a Redis restart without persistence, a flush: the queue's list deleted here,
with no worker consuming ``wf.triggers`` meanwhile). Beat took it for sent, and nothing ran. The
backstop (``triggers.resend_lost``) sends beat's latest send again, with beat's moment, once
(``aob:test:resend_after_s`` shortens its 15 minutes). The control switches the backstop off
(``aob:test:resend_off``) and the due time never runs. Each waits for its minute and for the
backstop's turn (a minute) after beat writes its send down (3 minutes), so they run in
``make test-faults``; ``make test`` holds the backstop's
rules (``tests/triggers/test_schedules.py``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from django.conf import settings
from django_celery_beat.models import PeriodicTask

from aob_project.celery import TRIGGERS_QUEUE
from tests.conftest import wait_for_run
from tests.engine.flow import wait_until
from tests.faults.harness import Victim, hooks
from tests.triggers.test_schedules import GREETING
from triggers.models import Schedule, ScheduleFiring
from workflows.services.definitions import workflow_save

# its minute, beat's write of its sends and the backstop's turn take up to seven minutes
pytestmark = [pytest.mark.fault, pytest.mark.faults_full, pytest.mark.timeout(600)]


@pytest.fixture
def triggers(workers, stack_env):
    """The only consumer of ``wf.triggers`` while a test runs, stopped so a firing waits in the broker."""
    if settings.AOB_BROKER_IS_AMQP:
        pytest.skip("the broker's queue is deleted as Redis keeps it")
    victim = Victim(workers, stack_env, [TRIGGERS_QUEUE], concurrency=1)
    yield victim
    victim.close(workers)
    for key in ("aob:test:resend_after_s", "aob:test:resend_off", "aob:test:resend_ran"):
        hooks().delete(key)


def waiting(broker: redis.Redis) -> list[bytes]:
    """The broker's lists of ``wf.triggers`` (one a priority) holding messages."""
    return [key for key in broker.scan_iter(f"{TRIGGERS_QUEUE}*") if broker.type(key) == b"list" and broker.llen(key)]


def lose_a_firing(engine, api, user, stack_env, triggers, tag: str) -> tuple[Schedule, datetime, datetime]:
    """A daily schedule due at the next whole minute, its firing sent while no worker consumes
    ``wf.triggers`` and deleted from the broker; once beat has written down what it sent (every 3
    minutes), the consumer back. Returns the schedule, its due time and beat's send."""
    triggers.stop()
    now = datetime.now(UTC)
    due = (now + timedelta(minutes=2 if now.second > 40 else 1)).replace(second=0, microsecond=0)
    workflow_save(owner=user, tag=tag, definition=GREETING)
    response = api.post("/api/v1/schedules", {"tag": tag, "cron": f"{due.minute} {due.hour} * * *",
                                              "inputs": {"name": "lost"}}, format="json")
    assert response.status_code == 201, response.json()
    schedule = Schedule.objects.get(pk=response.json()["id"])
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    lists = wait_until(lambda: waiting(broker), timeout=150, what="beat's send of the firing, waiting in the broker")
    broker.delete(*lists)  # the message lost
    sent = wait_until(lambda: PeriodicTask.objects.filter(pk=schedule.periodic_task_id, last_run_at__gte=due)
                      .values_list("last_run_at", flat=True).first(), timeout=240,
                      what="beat's send written down (it writes its sends every 3 minutes)")
    triggers.restart()
    return schedule, due, sent


def test_a_firing_lost_in_the_broker_is_sent_again_once_and_its_run_starts(engine, api, user, stack_env, triggers):
    hooks().set("aob:test:resend_after_s", 1)
    schedule, due, sent = lose_a_firing(engine, api, user, stack_env, triggers, "lost-firing")

    firing = wait_until(lambda: ScheduleFiring.objects.filter(schedule=schedule).first(), timeout=150,
                        what="the lost firing sent again by the backstop")

    assert (firing.fire_time, firing.fired_at, firing.outcome) == (due, sent, ScheduleFiring.Outcome.STARTED)
    assert wait_for_run(firing.run_id).status == "completed"
    ran = float(hooks().get("aob:test:resend_ran"))
    wait_until(lambda: float(hooks().get("aob:test:resend_ran") or 0) > ran, timeout=90, what="the backstop's next pass")
    assert ScheduleFiring.objects.filter(schedule=schedule).count() == 1
    assert ScheduleFiring.objects.get(pk=firing.pk).deliveries == 1  # sent again once


def test_control_without_the_backstop_the_lost_firing_never_runs(engine, api, user, stack_env, triggers):
    hooks().set("aob:test:resend_after_s", 1)
    hooks().set("aob:test:resend_off", 1)
    schedule, _, sent = lose_a_firing(engine, api, user, stack_env, triggers, "lost-firing-control")
    back = time.time()

    wait_until(lambda: float(hooks().get("aob:test:resend_ran") or 0) > back, timeout=150,
               what="the backstop's pass once the consumer was back")

    firings = list(ScheduleFiring.objects.filter(schedule=schedule).values("fired_at", "deliveries", "fire_time"))
    assert not firings, (firings, sent, hooks().get("aob:test:resend_off"))
