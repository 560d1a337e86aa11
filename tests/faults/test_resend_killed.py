"""kill -9 of the schedules' backstop (``triggers.resend_lost``) between its claim of a lost firing's
due time (a Redis key) and its send. The claim was kept a day: every later pass took the due time
for sent, and the lost firing never ran. Now a claim lives ``RESEND_CLAIM_S`` until its send is
made (a day from then): a later pass sends it. The control keeps the claim a day from the claim, as
before (``aob:test:resend_claim_kept``), and nothing is ever sent.

The lost firing is set up as the backstop finds one (beat's send written down twenty minutes ago,
no firing recorded: tests/triggers/test_schedules.py); the backstop runs in a worker of its own, as
beat would send it, asked here so the test need not wait its minute."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from django_celery_beat.models import PeriodicTask

from aob_project.celery import MAINTENANCE_QUEUE, app
from tests.engine.flow import wait_until
from tests.triggers.test_schedules import GREETING
from triggers.models import Schedule, ScheduleFiring
from triggers.services import schedules
from workflows.models import Workflow
from workflows.services.definitions import workflow_save

from .harness import Victim, hooks

pytestmark = pytest.mark.fault


@pytest.fixture
def backstop(workers, stack_env):
    """The only consumer of the maintenance queue (the backstop's) while a test runs."""
    victim = Victim(workers, stack_env, [MAINTENANCE_QUEUE])
    yield victim
    victim.close(workers)
    for key in ("aob:test:resend_kill", "aob:test:resend_claim_kept", "aob:test:kills:resend"):
        hooks().delete(key)


def lost_firing(user, tag: str) -> tuple[Schedule, datetime, str]:
    """A schedule whose firing beat sent twenty minutes ago and no worker recorded."""
    slot = (datetime.now(UTC) - timedelta(minutes=20)).replace(second=0, microsecond=0)
    workflow_save(owner=user, tag=tag, definition=GREETING)
    schedule = schedules.schedule_create(owner=user, workflow=Workflow.objects.get(tag=tag), inputs={"name": tag},
                                         cron=f"{slot.minute} {slot.hour} * * *", catch_up="skip")
    Schedule.objects.filter(pk=schedule.pk).update(updated_at=slot - timedelta(minutes=1))
    PeriodicTask.objects.filter(pk=schedule.periodic_task_id).update(last_run_at=slot + timedelta(seconds=0.3))
    return schedule, slot, schedules.RESENT_KEY.format(schedule.pk, int(slot.timestamp()))


def killed_in_its_send() -> None:
    """A pass of the backstop, killed between its claim and its send."""
    hooks().set("aob:test:resend_kill", 1)
    app.send_task("triggers.resend_lost")
    wait_until(lambda: hooks().get("aob:test:kills:resend"), timeout=30, what="the backstop killed in its send")


def a_pass_after_the_claim_s_life() -> None:
    time.sleep(schedules.RESEND_CLAIM_S + 1)
    ran = float(hooks().get("aob:test:resend_ran") or 0)
    app.send_task("triggers.resend_lost")
    wait_until(lambda: float(hooks().get("aob:test:resend_ran") or 0) > ran, timeout=30, what="the backstop's pass")


def test_a_backstop_killed_between_its_claim_and_its_send_leaves_the_firing_to_the_next_pass(
        engine, user, backstop):
    schedule, slot, key = lost_firing(user, "resend-killed")
    try:
        killed_in_its_send()
        assert hooks().get(key) == b"sending"  # the claim it left

        a_pass_after_the_claim_s_life()

        firing = wait_until(lambda: ScheduleFiring.objects.filter(schedule=schedule).first(), timeout=30,
                            what="the lost firing sent by the next pass")
        assert (firing.fire_time, firing.outcome, firing.deliveries) == (slot, "started", 1)
        assert hooks().get(key) == b"sent" and hooks().ttl(key) > schedules.RESEND_AFTER_S  # not sent again
    finally:
        hooks().delete(key)


@pytest.mark.faults_full  # a control: `make test-faults` only (tests/conftest.py)
def test_control_a_claim_kept_a_day_loses_the_firing_for_good(engine, user, backstop):
    hooks().set("aob:test:resend_claim_kept", 1)
    schedule, _, key = lost_firing(user, "resend-killed-control")
    try:
        killed_in_its_send()

        a_pass_after_the_claim_s_life()

        assert not ScheduleFiring.objects.filter(schedule=schedule).exists()
        assert hooks().get(key) == b"sending" and hooks().ttl(key) > schedules.RESEND_AFTER_S
    finally:
        hooks().delete(key)
