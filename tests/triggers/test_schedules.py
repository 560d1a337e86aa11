"""Schedules run by the real beat (django-celery-beat's database scheduler) and real workers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import client_for, wait_for_run
from tests.engine.flow import wait_until
from triggers.models import Schedule, ScheduleFiring
from triggers.services.schedules import due_time
from workflows.models import Run
from workflows.services.definitions import workflow_save

GREETING = {"nodes": [{"id": "hello", "type": "transform", "config": {"expression": "'hello ' + inputs.name"}}],
            "edges": []}


def test_a_firing_sent_twice_starts_one_run(engine, api, user):
    """What beat does when it dies before it wrote down a firing and is back within the minute: it
    sends the same firing again. A firing is unique by its schedule and due time, so the second
    delivery finds it and starts nothing. (The real beat killed and restarted, which waits for a
    minute's turn: ``tests/faults/test_beat_restarted.py``, in ``make test-faults``.)"""
    from aob_project.celery import app

    workflow_save(owner=user, tag="every-minute", definition=GREETING)
    # due once a year (11:30 in Paris on 4 December): the stack's beat sends no later firing of it
    # meanwhile, which would supersede this one (``schedules.superseded_by``)
    response = api.post("/api/v1/schedules", {"tag": "every-minute", "cron": "30 11 4 12 *", "timezone": "Europe/Paris",
                                              "inputs": {"name": "beat"}}, format="json")
    assert response.status_code == 201, response.json()
    schedule_id = response.json()["id"]
    fired_at = datetime(2026, 12, 4, 10, 30, 0, 300000, tzinfo=UTC).isoformat()  # beat's send, a moment late

    for _ in range(2):
        app.send_task("triggers.fire_schedule", args=[schedule_id, fired_at])

    firing = wait_until(lambda: ScheduleFiring.objects.filter(schedule_id=schedule_id, deliveries__gte=2).first(),
                        timeout=30, what="the firing delivered twice")
    assert ScheduleFiring.objects.filter(schedule_id=schedule_id, fire_time=firing.fire_time).count() == 1
    assert firing.fire_time == datetime(2026, 12, 4, 10, 30, tzinfo=UTC)
    assert firing.outcome == ScheduleFiring.Outcome.STARTED
    run = wait_for_run(firing.run_id)
    assert (run.status, run.inputs) == ("completed", {"name": "beat"})
    assert Run.objects.filter(tag="every-minute", owner=user).count() == 1


@pytest.mark.django_db
def test_the_due_time_is_the_cron_time_in_the_schedule_zone(user):
    schedule = Schedule(cron="30 9 * * 1-5", timezone="America/New_York")
    # beat sends it a moment after 09:30 New York time (14:30 UTC in winter)
    assert due_time(schedule, datetime(2026, 12, 2, 14, 30, 0, 400000, tzinfo=UTC)) == datetime(
        2026, 12, 2, 14, 30, tzinfo=UTC)
    # a firing sent at 16:00 UTC (beat was down) still belongs to 09:30
    assert due_time(schedule, datetime(2026, 12, 2, 16, 0, tzinfo=UTC)) == datetime(2026, 12, 2, 14, 30, tzinfo=UTC)


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "field", "rule"), [
    ({"cron": "61 * * * *"}, "cron", "cron_syntax"),
    ({"cron": "* * * *"}, "cron", "cron_syntax"),
    ({"cron": "0 9 * * 7"}, "cron", "cron_syntax"),  # croniter's Sunday, which beat cannot load: refused, not skipped
    ({"cron": "0 0 30 2 *"}, "cron", "cron_never"),  # 30 February: beat would skip it and say nothing
    ({"cron": "0 0 31 4,6 *"}, "cron", "cron_never"),
    # read one way by beat, another by the due time: sent every Sunday, dated the second Sunday weeks back
    ({"cron": "7 17 * * sun#2"}, "cron", "cron_syntax"),
    ({"cron": "0-0/1 * * * *"}, "cron", "cron_syntax"),  # beat: minute 0; croniter: every minute
    ({"cron": "0 0 * * mon-1"}, "cron", "cron_syntax"),
    ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone", "timezone"),
    # this host's own files, which beat's host may not have (its reload would fail on the entry)
    ({"cron": "* * * * *", "timezone": "localtime"}, "timezone", "timezone"),
    ({"cron": "* * * * *", "timezone": "posix/Europe/Paris"}, "timezone", "timezone"),
    ({"cron": "* * * * *", "version": 7}, "version", "version_exists"),
    ({"cron": "* * * * *", "catch_up": "always"}, "catch_up", "invalid_choice"),
])
def test_a_bad_schedule_is_refused_by_field_and_rule(api, user, body, field, rule):
    workflow_save(owner=user, tag="greet", definition=GREETING)

    response = api.post("/api/v1/schedules", {"tag": "greet", **body}, format="json")

    assert response.status_code == 400, response.json()
    assert response.json()["details"]["field"] == field
    assert response.json()["details"]["rule"] == rule
    assert not Schedule.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(("cron", "expected"), [
    ("0 0 15 * *", {"day_of_month": {15}, "month_of_year": set(range(1, 13))}),
    ("0 9 1 1 *", {"day_of_month": {1}, "month_of_year": {1}, "day_of_week": set(range(7))}),
    ("30 9 * * 1-5", {"minute": {30}, "day_of_week": {1, 2, 3, 4, 5}, "day_of_month": set(range(1, 32))}),
])
def test_a_schedule_is_judged_by_the_fields_beat_will_load(api, user, cron, expected):
    """Day of month before month before weekday, read by name as beat builds the entry: the check
    once passed them by position, refused the 15th of the month and accepted what beat skipped."""
    workflow_save(owner=user, tag="greet", definition=GREETING)
    response = api.post("/api/v1/schedules", {"tag": "greet", "cron": cron}, format="json")
    assert response.status_code == 201, response.json()
    task = Schedule.objects.get(pk=response.json()["id"]).periodic_task
    task.refresh_from_db()
    loaded = task.schedule  # what django-celery-beat builds: a ValueError here and beat skips the entry
    assert {name: getattr(loaded, name) for name in expected} == expected


@pytest.mark.django_db
def test_an_owner_has_at_most_the_operators_number_of_schedules(api, user, make_user, settings):
    """Beat sends every firing itself: one owner cannot load it with thousands of schedules."""
    settings.AOB_MAX_SCHEDULES_PER_OWNER = 3
    workflow_save(owner=user, tag="greet", definition=GREETING)
    made = [api.post("/api/v1/schedules", {"tag": "greet", "cron": "* * * * *"}, format="json") for _ in range(4)]
    assert [r.status_code for r in made] == [201, 201, 201, 400]
    assert made[-1].json()["details"] == {"field": "schedules", "rule": "max_schedules", "limit": 3}
    assert Schedule.objects.filter(owner=user).count() == 3
    other = make_user("other")  # the cap is each owner's
    workflow_save(owner=other, tag="greet", definition=GREETING)
    assert client_for(other).post("/api/v1/schedules", {"tag": "greet", "cron": "* * * * *"},
                                  format="json").status_code == 201
    assert api.delete(f"/api/v1/schedules/{made[0].json()['id']}").status_code == 204  # room again
    assert api.post("/api/v1/schedules", {"tag": "greet", "cron": "* * * * *"}, format="json").status_code == 201


@pytest.mark.django_db
def test_a_missed_firing_is_skipped_or_run_once_as_its_schedule_says(user, settings):
    from triggers.services.schedules import schedule_create, schedule_fire
    from workflows.models import Workflow

    saved = workflow_save(owner=user, tag="nightly", definition=GREETING)
    workflow = Workflow.objects.get(pk=saved.workflow.pk)
    skip = schedule_create(owner=user, workflow=workflow, cron="0 2 * * *", inputs={"name": "x"})
    once = schedule_create(owner=user, workflow=workflow, cron="0 2 * * *", inputs={"name": "x"}, catch_up="run_once")
    back_at = datetime(2026, 12, 2, 7, 45, tzinfo=UTC)  # beat was down from before 02:00 until 07:45

    skipped = schedule_fire(schedule_id=skip.pk, fired_at=back_at)
    ran = schedule_fire(schedule_id=once.pk, fired_at=back_at)

    assert skipped.outcome == "skipped" and skipped.run_id is None
    assert skipped.fire_time == datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
    assert ran.outcome == "started" and ran.run_id is not None
    assert Run.objects.filter(tag="nightly").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("removal", ["workflow through the API", "owner", "bulk delete", "schedule through the API"])
def test_beat_s_entry_goes_with_its_schedule_however_the_schedule_is_removed(api, user, removal):
    """A schedule deleted by its workflow's cascade once left its PeriodicTask behind: beat sent
    ``triggers.fire_schedule`` to the shared maintenance queue every tick, for ever, and the owner's
    cap (which counts schedules) let them do it again without end."""
    from django.contrib.auth.models import User
    from django_celery_beat.models import PeriodicTask

    workflow_save(owner=user, tag="greet", definition=GREETING)
    made = api.post("/api/v1/schedules", {"tag": "greet", "cron": "* * * * *"}, format="json")
    assert made.status_code == 201, made.json()
    schedule = Schedule.objects.get(pk=made.json()["id"])
    assert PeriodicTask.objects.filter(pk=schedule.periodic_task_id, name=f"aob-schedule-{schedule.pk}").exists()

    if removal == "workflow through the API":  # asked for: a tag in use is kept, naming what uses it
        refused = api.delete("/api/v1/workflows/greet")
        assert refused.status_code == 409 and refused.json()["error"] == "workflow_in_use", refused.json()
        assert refused.json()["details"]["used_by"] == [{"kind": "schedule", "id": schedule.pk, "name": ""}]
        assert Schedule.objects.filter(pk=schedule.pk).exists()
        assert api.delete("/api/v1/workflows/greet?force=true").status_code == 204
    elif removal == "owner":
        User.objects.filter(pk=user.pk).delete()
    elif removal == "bulk delete":  # as the admin's "delete selected" does
        Schedule.objects.filter(pk=schedule.pk).delete()
    else:
        assert api.delete(f"/api/v1/schedules/{schedule.pk}").status_code == 204

    assert not Schedule.objects.filter(pk=schedule.pk).exists()
    assert not PeriodicTask.objects.filter(task="triggers.fire_schedule").exists()


def test_a_firing_of_a_schedule_that_is_gone_removes_its_beat_entry(engine, user):
    """The backstop for entries left behind before the rule, or by a row removed outside the ORM:
    the first firing beat sends for it removes it, and starts nothing."""
    from django.db import connection
    from django_celery_beat.models import PeriodicTask

    from aob_project.celery import app
    from triggers.services.schedules import schedule_create

    workflow = workflow_save(owner=user, tag="yearly", definition=GREETING).workflow
    schedule = schedule_create(owner=user, workflow=workflow, cron="0 0 1 1 *")
    with connection.cursor() as cursor:  # past the ORM: no signal follows it
        cursor.execute("DELETE FROM triggers_schedule WHERE id = %s", [schedule.pk])
    assert PeriodicTask.objects.filter(name=f"aob-schedule-{schedule.pk}").exists()

    app.send_task("triggers.fire_schedule", args=[schedule.pk])  # what beat sends for the entry

    wait_until(lambda: not PeriodicTask.objects.filter(name=f"aob-schedule-{schedule.pk}").exists(), timeout=30,
               what="the firing removing the orphaned beat entry")
    assert not Run.objects.filter(tag="yearly").exists()


@pytest.mark.django_db
def test_a_schedule_s_inputs_are_bounded_as_it_is_listed_with_them(api, user):
    workflow_save(owner=user, tag="greet", definition=GREETING)
    big = {"name": "n" * 70_000}

    made = api.post("/api/v1/schedules", {"tag": "greet", "cron": "* * * * *", "inputs": big}, format="json")
    fits = api.post("/api/v1/schedules", {"tag": "greet", "cron": "* * * * *", "inputs": {"name": "x"}}, format="json")
    grown = api.patch(f"/api/v1/schedules/{fits.json()['id']}", {"inputs": big}, format="json")

    for refused in (made, grown):
        assert refused.status_code == 400, refused.json()
        assert refused.json()["details"] == {"field": "inputs", "rule": "max_bytes", "limit": 65536, "size": 70_011}
    assert Schedule.objects.get().inputs == {"name": "x"}


@pytest.mark.django_db
def test_a_schedule_s_inputs_are_judged_by_a_run_s_rules_at_its_save(api, user, settings):
    """Each firing starts a run with the schedule's inputs: inputs no run may start with were
    saved (an operator's lower ``AOB_MAX_RUN_INPUTS_BYTES``; text holding NUL, through the service)
    and every firing failed on them. Judged at the save now, by the run's own rule."""
    from triggers.exceptions import ScheduleInvalid
    from triggers.services.schedules import schedule_create
    from workflows.models import Workflow

    workflow_save(owner=user, tag="greet", definition=GREETING)
    workflow = Workflow.objects.get(owner=user, tag="greet")
    settings.AOB_MAX_RUN_INPUTS_BYTES = 1024

    made = api.post("/api/v1/schedules", {"tag": "greet", "cron": "* * * * *", "inputs": {"name": "n" * 2000}},
                    format="json")

    assert made.status_code == 400, made.json()
    assert made.json()["details"] == {"field": "inputs", "rule": "max_bytes", "limit": 1024, "size": 2011}
    assert "AOB_MAX_RUN_INPUTS_BYTES" in made.json()["message"]
    with pytest.raises(ScheduleInvalid) as refused:
        schedule_create(owner=user, workflow=workflow, cron="* * * * *", inputs={"name": "a\x00b"})
    assert (refused.value.extra["field"], refused.value.extra["path"]) == ("inputs", "/name")
    assert not Schedule.objects.exists()


def test_a_deactivated_owners_schedule_starts_no_run_and_its_firing_says_why(engine, api, user):
    """Deactivating a person stops what starts runs as them: a run of theirs would run as no one who
    can sign in, and any approval it asks of them (the default approver) would wait forever. The
    firing is recorded as failed, with the reason, where the schedule's owner and staff read it."""
    from aob_project.celery import app

    workflow_save(owner=user, tag="left-behind", definition=GREETING)
    response = api.post("/api/v1/schedules", {"tag": "left-behind", "cron": "0 9 * * *", "inputs": {"name": "x"}},
                        format="json")
    assert response.status_code == 201, response.json()
    schedule_id = response.json()["id"]
    user.is_active = False
    user.save(update_fields=["is_active"])

    app.send_task("triggers.fire_schedule", args=[schedule_id, datetime(2026, 12, 4, 9, 0, 1, tzinfo=UTC).isoformat()])

    firing = wait_until(lambda: ScheduleFiring.objects.filter(schedule_id=schedule_id).first(), timeout=30,
                        what="the firing")
    assert firing.outcome == ScheduleFiring.Outcome.FAILED and firing.run_id is None
    assert firing.error["error"] == "owner_inactive" and "deactivated" in firing.error["message"], firing.error
    assert not Run.objects.filter(owner=user).exists()


def test_a_nightly_schedule_in_the_hour_a_spring_clock_change_skips_still_runs_that_night(engine, api, user):
    """``30 2 * * *`` in Europe/Paris: on 29 March 2026 the clocks go from 02:00 CET to 03:00 CEST, so
    02:30 never happens that night. Beat (django-celery-beat's ``TzAwareCrontab``, asked here minute by
    minute as beat asks it) sends that night's firing at 01:30 UTC, 03:30 local, on time by its
    clock. ``due_time`` asks croniter for the latest cron time at or before 03:30:01 CEST and gets
    03:00 CEST (01:00 UTC), which it takes for the slot; the firing is then 1,800 s "late", past
    ``AOB_SCHEDULE_GRACE_S`` (60 s), and a schedule with the default ``catch_up: skip`` records it as
    missed: the nightly job does not run that night, though beat was up the whole time, and
    nothing but a skipped firing says so. It should start its run (once), as on any other night
    (control: the night before, the same send starts it)."""
    from datetime import timedelta

    from aob_project.celery import app

    workflow_save(owner=user, tag="nightly", definition=GREETING)
    response = api.post("/api/v1/schedules", {"tag": "nightly", "cron": "30 2 * * *", "timezone": "Europe/Paris",
                                              "inputs": {"name": "night"}}, format="json")
    assert response.status_code == 201, response.json()
    schedule = Schedule.objects.select_related("periodic_task").get(pk=response.json()["id"])
    crontab = schedule.periodic_task.schedule  # beat's own schedule object for this entry

    def beat_sends(start: datetime) -> datetime:
        """The first moment after ``start`` at which beat finds the entry due, a minute at a time."""
        moment = [start]
        crontab.nowfun = lambda: moment[0]
        while moment[0] < start + timedelta(days=1):
            moment[0] += timedelta(minutes=1)
            if crontab.is_due(start)[0]:
                return moment[0]
        raise AssertionError("beat never sends it")

    before = beat_sends(datetime(2026, 3, 27, 12, 0, tzinfo=UTC))
    spring = beat_sends(datetime(2026, 3, 28, 12, 0, tzinfo=UTC))
    assert before == datetime(2026, 3, 28, 1, 30, tzinfo=UTC)  # 02:30 CET
    assert spring == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 CEST: beat's send that night

    for fired_at in (before, spring):
        app.send_task("triggers.fire_schedule", args=[schedule.pk, (fired_at + timedelta(seconds=0.3)).isoformat()])
    firings = wait_until(lambda: list(ScheduleFiring.objects.filter(schedule=schedule).order_by("fire_time"))
                         if ScheduleFiring.objects.filter(schedule=schedule, fired_at__lt=datetime(2026, 4, 1, tzinfo=UTC)
                                                          ).count() == 2 else None, timeout=30, what="both firings")
    firings = [f for f in firings if f.fired_at < datetime(2026, 4, 1, tzinfo=UTC)]
    assert firings[0].outcome == "started", "control: the night before, beat's send starts the run"
    assert firings[1].outcome == "started", (
        f"the spring-forward night's firing, sent by beat at {spring:%H:%M}Z, was recorded {firings[1].outcome} "
        f"as due at {firings[1].fire_time:%H:%M}Z with {firings[1].error}: the nightly job did not run that night")


def test_a_firing_s_due_time_is_read_on_the_zone_s_wall_clock_across_its_changes():
    """``due_time``: on the spring-forward night a skipped wall time is due when beat sends it (01:30
    UTC for 02:30 Europe/Paris); on the autumn night the repeated 02:30 is its first instant, so a
    send at the second one is the same firing (its unique key), never a second run."""
    from triggers.services.schedules import due_time

    nightly = Schedule(cron="30 2 * * *", timezone="Europe/Paris")
    at = lambda *parts: datetime(*parts, tzinfo=UTC)  # noqa: E731
    assert due_time(nightly, at(2026, 3, 28, 1, 30, 0, 300_000)) == at(2026, 3, 28, 1, 30)  # 02:30 CET
    assert due_time(nightly, at(2026, 3, 29, 1, 30, 0, 300_000)) == at(2026, 3, 29, 1, 30)  # 03:30 CEST, no 02:30
    assert due_time(nightly, at(2026, 10, 25, 0, 30, 0, 300_000)) == at(2026, 10, 25, 0, 30)  # 02:30 CEST
    assert due_time(nightly, at(2026, 10, 25, 1, 30, 0, 300_000)) == at(2026, 10, 25, 0, 30)  # 02:30 CET again
    assert due_time(Schedule(cron="0 * * * *", timezone="UTC"), at(2026, 12, 5, 12, 0, 0, 500_000)) == at(2026, 12, 5, 12)


# The first insert of a firing fails as a PostgreSQL restart or failover ends a statement (57P01,
# "terminating connection due to administrator command"); a sequence, outside the transaction
# the error rolls back, counts the inserts tried.
FAIL_FIRST_FIRING = """
CREATE SEQUENCE aob_test_firing_tries;
CREATE FUNCTION aob_test_fail_first_firing() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('aob_test_firing_tries') = 1 THEN
        RAISE EXCEPTION 'terminating connection due to administrator command' USING ERRCODE = '57P01';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER aob_test_fail_first_firing BEFORE INSERT ON triggers_schedulefiring
    FOR EACH ROW EXECUTE FUNCTION aob_test_fail_first_firing();
"""
UNDO_FAIL_FIRST_FIRING = """
DROP TRIGGER IF EXISTS aob_test_fail_first_firing ON triggers_schedulefiring;
DROP FUNCTION IF EXISTS aob_test_fail_first_firing();
DROP SEQUENCE IF EXISTS aob_test_firing_tries;
"""


def test_a_firing_a_database_outage_interrupts_is_tried_again_and_runs_once(engine, api, user):
    """Beat sends each due time of a schedule once. A firing whose statement the database ended (a
    restart, a failover) failed its task, which Celery acknowledged: that night's run never
    started, and nothing said so, no firing recorded, only a traceback in a worker's log. The
    firing is tried again with the moment beat sent it, so it is the same firing: one run."""
    from django.db import connection

    from aob_project.celery import app

    workflow_save(owner=user, tag="nightly", definition=GREETING)
    response = api.post("/api/v1/schedules", {"tag": "nightly", "cron": "0 3 * * *", "inputs": {"name": "db"}},
                        format="json")
    assert response.status_code == 201, response.json()
    schedule_id = response.json()["id"]
    with connection.cursor() as cursor:
        cursor.execute(FAIL_FIRST_FIRING)
    try:
        app.send_task("triggers.fire_schedule",
                      args=[schedule_id, datetime(2026, 12, 4, 3, 0, 0, 200000, tzinfo=UTC).isoformat()])
        firing = wait_until(lambda: ScheduleFiring.objects.filter(schedule_id=schedule_id, run__isnull=False).first(),
                            timeout=60, what="the firing's run, once the database is back")
        with connection.cursor() as cursor:
            cursor.execute("SELECT last_value FROM aob_test_firing_tries")
            assert cursor.fetchone()[0] >= 2  # the first try was the one that failed
    finally:
        with connection.cursor() as cursor:
            cursor.execute(UNDO_FAIL_FIRST_FIRING)

    assert (firing.fire_time, firing.outcome, firing.deliveries) == (
        datetime(2026, 12, 4, 3, 0, tzinfo=UTC), ScheduleFiring.Outcome.STARTED, 1)
    run = wait_for_run(firing.run_id)
    assert (run.status, run.inputs) == ("completed", {"name": "db"})
    assert ScheduleFiring.objects.filter(schedule_id=schedule_id).count() == 1


@pytest.mark.faults_full  # a minute of the real rate limit's window: `make test-faults` runs it (tests/conftest.py)
@pytest.mark.ratelimit
def test_firings_the_owner_s_run_limit_holds_back_run_once_it_has_room(engine, api, user, stack_env):
    """An owner may have 100 schedules (AOB_MAX_SCHEDULES_PER_OWNER) but start 50 runs a minute
    (AOB_RATE_USER_RUNS_PER_MIN; 5 of three agents or more): schedules that share a due time (every
    morning's reports at 09:00) past that limit were recorded failed with the 429, every day, and
    never ran, though a minute later there was room. A refusal that passes (a rate limit, Redis
    away) holds the firing back until there is room: it runs late, once, still that due time's."""
    from aob_project.celery import app
    from tests.support import stack

    workflow_save(owner=user, tag="report", definition=GREETING)
    ids = []
    for name in ("sales", "stock", "support"):
        made = api.post("/api/v1/schedules", {"tag": "report", "cron": "0 9 * * *", "inputs": {"name": name}},
                        format="json")
        assert made.status_code == 201, made.json()
        ids.append(made.json()["id"])
    # a worker of its own with the owner's limit at 2 runs a minute (the stack's are relaxed)
    limited = stack.start_worker({**stack_env, "AOB_RATE_USER_RUNS_PER_MIN": "2"}, "limited",
                                 queues=["test.firings"], concurrency=1)
    try:
        for schedule_id in ids:  # as beat sends them, at 09:00 on the same tick
            app.send_task("triggers.fire_schedule", queue="test.firings",
                          args=[schedule_id, datetime(2026, 12, 4, 9, 0, 0, 200000, tzinfo=UTC).isoformat()])
        firings = wait_until(lambda: (lambda rows: rows if len(rows) == 3 else None)(
            list(ScheduleFiring.objects.filter(schedule_id__in=ids))), timeout=150, what="the three firings")
    finally:
        limited.stop()

    assert [(f.outcome, f.error) for f in firings] == [("started", None)] * 3
    assert {f.fire_time for f in firings} == {datetime(2026, 12, 4, 9, 0, tzinfo=UTC)}
    runs = [wait_for_run(f.run_id) for f in firings]
    assert sorted(r.inputs["name"] for r in runs) == ["sales", "stock", "support"]


@pytest.mark.django_db
def test_a_late_firing_of_a_cron_naming_a_day_and_a_weekday_is_due_when_beat_said(user):
    """Beat (celery's crontab) fires a cron that names both a day of the month and a weekday on the
    days that match both: ``0 9 1-7 * 1`` is 09:00 on a month's first Monday. The firing's due time
    was read with croniter's default, either (every day 1-7, and every Monday): a firing beat sent
    a week late, back from an outage over the first Monday, was recorded as due that morning, 20 s
    late, and ran, though its schedule says a missed firing is skipped, under a due time that was
    never the schedule's. It is due when beat said: the first Monday, a week late, skipped."""
    from triggers.services.schedules import schedule_create, schedule_fire
    from workflows.models import Workflow

    workflow_save(owner=user, tag="monthly", definition=GREETING)
    schedule = schedule_create(owner=user, workflow=Workflow.objects.get(tag="monthly"), cron="0 9 1-7 * 1",
                               inputs={"name": "x"})
    at = lambda *parts: datetime(*parts, tzinfo=UTC)  # noqa: E731
    beat = schedule.periodic_task.crontab.schedule  # the crontab beat loads from the schedule's entry
    last, delta, _ = beat.remaining_delta(at(2026, 10, 5, 9, 0))
    assert last + delta == at(2026, 11, 2, 9, 0)  # after October's first Monday, November's: both match
    last, delta, _ = beat.remaining_delta(at(2026, 11, 2, 9, 0))
    assert last + delta == at(2026, 12, 7, 9, 0)  # not the 3rd (a Tuesday), nor the 9th (a Monday)

    sent = at(2026, 11, 9, 9, 0, 20)  # beat down over 2 November, back on Monday the 9th
    assert due_time(schedule, sent) == at(2026, 11, 2, 9, 0)
    firing = schedule_fire(schedule_id=schedule.pk, fired_at=sent)

    assert (firing.outcome, firing.fire_time) == ("skipped", at(2026, 11, 2, 9, 0)), (firing.outcome,
                                                                                     firing.fire_time)
    assert not Run.objects.exists()
    assert due_time(schedule, at(2026, 12, 7, 9, 0, 0, 300_000)) == at(2026, 12, 7, 9, 0)  # on time: its own


@pytest.mark.django_db
@pytest.mark.parametrize("change", ["cron", "timezone"])
def test_a_schedule_whose_cron_changes_is_not_sent_at_once_for_a_time_before_the_change(api, user, change):
    """Beat reckons a schedule's next firing from its entry's last run. A cron changed after a
    firing kept that last run: a daily schedule run two hours ago and moved to an hour ago was due
    at once (its new time, after the last run and before now), so beat sent it as the change
    was saved, and with ``catch_up: run_once`` a run started there and then, for a time the
    schedule never had (with ``skip``, a missed firing in its history). A moved time zone alike. A
    schedule whose cron or zone changes is reckoned from the change, as a new one is."""
    from datetime import timedelta

    from django.utils import timezone
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import ModelEntry

    from aob_project.celery import app
    from triggers.services.schedules import task_name

    now = timezone.now().astimezone(UTC)
    ran = now - timedelta(hours=2)
    workflow_save(owner=user, tag="daily", definition=GREETING)
    made = api.post("/api/v1/schedules", {"tag": "daily", "cron": f"{ran.minute} {ran.hour} * * *", "timezone": "UTC",
                                          "catch_up": "run_once", "inputs": {"name": "x"}}, format="json")
    assert made.status_code == 201, made.json()
    entry = PeriodicTask.objects.filter(name=task_name(made.json()["id"]))
    entry.update(last_run_at=ran)  # as beat records its firing

    def beat_sends_it_now() -> bool:
        return bool(ModelEntry(entry.get(), app=app).is_due().is_due)

    assert not beat_sends_it_now()  # the control: next due tomorrow
    moved = now - timedelta(hours=1)
    body = ({"cron": f"{moved.minute} {moved.hour} * * *"} if change == "cron"
            else {"timezone": "Etc/GMT+1"})  # the same wall time, an hour later in UTC: an hour ago
    assert api.patch(f"/api/v1/schedules/{made.json()['id']}", body, format="json").status_code == 200

    assert not beat_sends_it_now(), f"beat sends the schedule as its {change} changes, for a time before the change"


@pytest.mark.django_db
def test_beat_loads_every_enabled_schedule_whatever_its_hour_and_zone(user):
    """django-celery-beat left out of each load the cron entries whose hour, moved by the zone's
    offset on 1 January 2023, was more than two hours from now: a schedule in a zone whose offset
    changed since (Antarctica/Casey) was never loaded at its due time, nor a ``run_once`` firing
    missed hours before. Beat's own load (``aob_project.beat.Scheduler``), in this process."""
    from datetime import timedelta

    from aob_project.beat import Scheduler
    from aob_project.celery import app
    from triggers.services.schedules import schedule_create, task_name
    from workflows.models import Workflow

    workflow_save(owner=user, tag="greet", definition=GREETING)
    workflow = Workflow.objects.get(owner=user, tag="greet")
    far = (datetime.now(UTC) + timedelta(hours=12)).hour  # twelve hours from now, in UTC
    made = [schedule_create(owner=user, workflow=workflow, cron=f"5 {far} * * *"),
            schedule_create(owner=user, workflow=workflow, cron="5 1 * * *", tz="Antarctica/Casey"),
            schedule_create(owner=user, workflow=workflow, cron=f"5 {far} * * *", enabled=False)]

    loaded = {entry.name for entry in Scheduler(app=app, lazy=True).enabled_models()}

    assert {task_name(s.pk) for s in made} & loaded == {task_name(made[0].pk), task_name(made[1].pk)}


@pytest.mark.django_db
@pytest.mark.parametrize("catch_up", ["run_once", "skip"])
def test_firings_that_waited_in_their_queue_past_a_later_send_are_superseded_and_the_latest_runs(user, catch_up):
    """No worker consumed ``wf.triggers`` for three minutes: beat sent an every-minute schedule's
    three firings, and when a worker came each started a run, back to back, whatever ``catch_up``
    said. Beat keeps the latest moment it sent one (``sent_record``, as ``aob_project.beat`` calls
    it): the two it had sent a later one past are recorded skipped, superseded; the latest runs."""
    from datetime import timedelta

    from aob_project import redis_client
    from triggers.services.schedules import SENT_KEY, schedule_create, schedule_fire, sent_record
    from workflows.models import Workflow

    workflow_save(owner=user, tag="minutely", definition=GREETING)
    schedule = schedule_create(owner=user, workflow=Workflow.objects.get(tag="minutely"), cron="* * * * *",
                               inputs={"name": "x"}, catch_up=catch_up)
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    sends = [minute - timedelta(minutes=n) + timedelta(seconds=0.3) for n in (3, 2, 1)]
    for sent in sends:  # beat's three sends while the worker was away
        sent_record(schedule.pk, sent)
    try:
        firings = [schedule_fire(schedule_id=schedule.pk, fired_at=sent) for sent in sends]
    finally:
        redis_client.shared().delete(SENT_KEY.format(schedule.pk))

    assert [f.outcome for f in firings] == ["skipped", "skipped", "started"]
    assert [f.error["by"] for f in firings[:2]] == [firings[1].fire_time.isoformat(), firings[2].fire_time.isoformat()]
    assert Run.objects.filter(tag="minutely").count() == 1


def test_beat_keeps_the_moment_it_sent_a_schedule_s_firing(engine, user):
    """What ``superseded_by`` reads is written by beat's own send (``aob_project.beat.Scheduler``)."""
    from django_celery_beat.schedulers import ModelEntry

    from aob_project import redis_client
    from aob_project.beat import Scheduler
    from aob_project.celery import app
    from triggers.services.schedules import SENT_KEY, schedule_create
    from workflows.models import Workflow

    workflow_save(owner=user, tag="sent", definition=GREETING)
    schedule = schedule_create(owner=user, workflow=Workflow.objects.get(tag="sent"), cron="0 9 4 12 *",
                               inputs={"name": "x"})
    before = datetime.now(UTC)

    entry = ModelEntry(schedule.periodic_task, app=app)
    # the cron changed once beat had read its entry: the firing is dated by the entry's (4 December, 09:00)
    Schedule.objects.filter(pk=schedule.pk).update(cron="0 14 * * *")

    Scheduler(app=app, lazy=True).apply_async(entry, advance=False)

    sent = redis_client.shared().get(SENT_KEY.format(schedule.pk))
    assert sent is not None and datetime.fromisoformat(sent.decode()) >= before
    firing = wait_until(lambda: ScheduleFiring.objects.filter(schedule=schedule).first(), timeout=30,
                        what="the firing beat's send started")
    assert firing.fired_at == datetime.fromisoformat(sent.decode())
    assert (firing.fire_time.month, firing.fire_time.day, firing.fire_time.hour) == (12, 4, 9)


@pytest.mark.django_db
def test_a_schedule_saved_before_a_stricter_cron_rule_can_still_be_disabled(api, user):
    """Its unchanged cron is not judged again: a PATCH of ``enabled`` alone was refused by the rule
    its cron was saved before (and beat went on firing it). A new cron is judged."""
    made = api.post("/api/v1/schedules", {"tag": "greet", "cron": "7 17 * * 0"}, format="json") if workflow_save(
        owner=user, tag="greet", definition=GREETING) else None
    assert made.status_code == 201, made.json()
    Schedule.objects.filter(pk=made.json()["id"]).update(cron="7 17 * * sun#2", timezone="localtime")  # as saved then

    disabled = api.patch(f"/api/v1/schedules/{made.json()['id']}", {"enabled": False}, format="json")
    changed = api.patch(f"/api/v1/schedules/{made.json()['id']}", {"cron": "0 0 * * mon-1"}, format="json")

    assert disabled.status_code == 200, disabled.json()
    assert Schedule.objects.get(pk=made.json()["id"]).enabled is False
    assert changed.status_code == 400 and changed.json()["details"]["rule"] == "cron_syntax", changed.json()


@pytest.mark.django_db
@pytest.mark.parametrize("catch_up", ["run_once", "skip"])
def test_a_firing_sent_before_its_cron_changed_is_dated_by_the_cron_it_was_sent_under(user, catch_up):
    """A firing waiting in its queue (a backlog, a held start's retries) when the owner changed the
    cron was dated by the new one: its latest time before the send, hours back, started under
    ``run_once`` for a time the schedule never had, or recorded missed under ``skip``."""
    from triggers.services.schedules import schedule_create, schedule_fire, schedule_update
    from workflows.models import Workflow

    workflow_save(owner=user, tag="minutely", definition=GREETING)
    schedule = schedule_create(owner=user, workflow=Workflow.objects.get(tag="minutely"), cron="* * * * *",
                               inputs={"name": "x"}, catch_up=catch_up)
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    schedule_update(schedule=schedule, cron="0 14 * * *")

    firing = schedule_fire(schedule_id=schedule.pk, fired_at=minute + timedelta(seconds=0.3), cron="*  * * * *",
                           zone="UTC")

    assert (firing.outcome, firing.fire_time, firing.error) == ("started", minute, None)
    assert Run.objects.filter(tag="minutely").count() == 1
    # a message without a cron that reads is dated by the schedule's own (14:00, hours back)
    unreadable = schedule_fire(schedule_id=schedule.pk, fired_at=minute + timedelta(seconds=0.3), cron="not a cron",
                               zone="UTC")
    assert (unreadable.fire_time.hour, unreadable.fire_time.minute) == (14, 0)


@pytest.mark.django_db
def test_a_firing_the_broker_did_not_take_is_sent_again(user):
    """Beat moves an entry's last run on before it sends (``reserve``) and logs a send that fails: the
    due time was lost with no trace (and the next sync stored it as sent). The entry keeps its last
    run and is due again a few seconds later (a send's start: ``test_beat_keeps_the_moment...``)."""
    from celery import Celery
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import ModelEntry

    from aob_project.beat import Scheduler
    from triggers.services.schedules import schedule_create
    from workflows.models import Workflow

    workflow_save(owner=user, tag="unsent", definition=GREETING)
    schedule = schedule_create(owner=user, workflow=Workflow.objects.get(tag="unsent"), cron="* * * * *",
                               inputs={"name": "x"}, catch_up="run_once")
    last = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=2)
    PeriodicTask.objects.filter(pk=schedule.periodic_task_id).update(last_run_at=last)
    away = Celery("away", broker="redis://127.0.0.1:1/0", set_as_current=False)  # nothing listens there
    away.conf.broker_connection_max_retries = 1
    away.conf.broker_connection_timeout = 1
    scheduler = Scheduler(app=away, lazy=True)
    entry = ModelEntry(PeriodicTask.objects.get(pk=schedule.periodic_task_id), app=away)
    assert scheduler.is_due(entry).is_due

    scheduler.reserve(entry)  # as beat's tick does, then the send
    scheduler.apply_entry(entry)

    assert entry.model.last_run_at == last  # not taken for sent
    assert not scheduler.is_due(entry).is_due  # not sent again at once, while the broker is away
    wait_until(lambda: scheduler.is_due(entry).is_due, timeout=15, what="the entry due again")
    scheduler._dirty.clear()  # nothing of this test's to write at the interpreter's exit, the database gone


def test_a_firing_beat_sent_that_no_worker_recorded_is_sent_again_once(engine, user, monkeypatch):
    """A firing's message lost on its way (Redis flushed or restarted without its data, a worker
    killed mid-firing whose message returns an hour later) left nothing: beat took it for sent. The
    backstop sends beat's latest send again, with its moment, once; a schedule whose latest send was
    a repeat of a recorded firing (beat restarted) is passed over, and does not take its place."""
    from django_celery_beat.models import PeriodicTask

    from aob_project import redis_client
    from triggers.services import schedules
    from triggers.services.schedules import RESENT_KEY, schedule_create, schedules_resend_lost
    from workflows.models import Workflow

    monkeypatch.setattr(schedules, "RESEND_BATCH", 1)  # one sent a pass, as 500 of them would be
    slot = (datetime.now(UTC) - timedelta(minutes=20)).replace(second=0, microsecond=0)
    sent = slot + timedelta(seconds=0.3)
    workflow_save(owner=user, tag="lost", definition=GREETING)
    made = [schedule_create(owner=user, workflow=Workflow.objects.get(tag="lost"), cron=f"{slot.minute} {slot.hour} * * *",
                            inputs={"name": name}, catch_up="skip") for name in ("repeated", "lost")]
    repeated, schedule = made
    Schedule.objects.filter(pk__in=[s.pk for s in made]).update(updated_at=slot - timedelta(minutes=1))
    PeriodicTask.objects.filter(pk=schedule.periodic_task_id).update(last_run_at=sent)  # beat's sync of its send
    # recorded at its send; beat, restarted before it wrote that down, sent it again two minutes on
    ScheduleFiring.objects.create(schedule=repeated, fire_time=slot, fired_at=sent, outcome="started", deliveries=2)
    PeriodicTask.objects.filter(pk=repeated.periodic_task_id).update(last_run_at=sent + timedelta(minutes=2))
    key = RESENT_KEY.format(schedule.pk, int(slot.timestamp()))
    try:
        assert not ScheduleFiring.objects.filter(schedule=schedule).exists()  # nothing else sends it

        assert schedules_resend_lost() == 1

        firing = wait_until(lambda: ScheduleFiring.objects.filter(schedule=schedule).first(), timeout=30,
                            what="the lost firing sent again")
        assert (firing.outcome, firing.fire_time, firing.fired_at) == ("started", slot, sent)  # on time: beat's
        assert schedules_resend_lost() == 0
        redis_client.shared().delete(key)
        assert schedules_resend_lost() == 0  # recorded now
    finally:
        redis_client.shared().delete(key)


@pytest.mark.django_db(transaction=True)
def test_after_a_refused_send_beat_sends_that_firing_again_and_nothing_else(user, caplog):
    """Beat's own loop (``tick``) over two due schedules, the second's send refused by a broker that is
    away: it goes out again some seconds later, once, and the first is not sent again (a heap built
    again from the entries loaded at the last reload took it for due; a reload in a start's first tick
    did the same)."""
    import logging
    import time

    import redis
    from celery import Celery
    from django.conf import settings
    from django_celery_beat.models import PeriodicTask

    from aob_project.beat import UNSENT_RETRY_S, Scheduler
    from triggers.services.schedules import SENT_KEY, schedule_create
    from workflows.models import Workflow

    workflow_save(owner=user, tag="ticks", definition=GREETING)
    made = [schedule_create(owner=user, workflow=Workflow.objects.get(tag="ticks"), cron="0 9 4 12 *",
                            inputs={"name": n}, catch_up="run_once") for n in ("a", "b")]
    for schedule in made:  # each due once, for 4 December
        PeriodicTask.objects.filter(pk=schedule.periodic_task_id).update(last_run_at=datetime(2026, 12, 1, tzinfo=UTC))
    queue = f"aob-test-beat-{made[0].pk}"  # a queue of its own: no worker takes these firings
    here = Celery("beat-test", broker=settings.CELERY_BROKER_URL, set_as_current=False)
    here.conf.task_default_queue = here.conf.task_default_routing_key = queue
    away = Celery("away", broker="redis://127.0.0.1:1/0", set_as_current=False)  # nothing listens there
    names = [PeriodicTask.objects.get(pk=s.periodic_task_id).name for s in made]
    caplog.set_level(logging.INFO, logger="celery.beat")

    def sends(name: str) -> int:
        return sum(1 for r in caplog.records if r.getMessage().startswith(f"Scheduler: Sending due task {name} "))

    scheduler = Scheduler(app=here, lazy=True)
    scheduler.setup_schedule()
    sending = scheduler.producer

    def tick() -> None:  # beat's loop: a tick, then a sleep as long as it says (a tenth of a second at most)
        time.sleep(max(0.0, min(scheduler.tick(), 0.1)))

    try:
        deadline = time.monotonic() + 10
        while not (sends(names[0]) or sends(names[1])) and time.monotonic() < deadline:
            tick()
        sent, other = (names[0], names[1]) if sends(names[0]) else (names[1], names[0])
        with away.connection_for_write() as refused:
            scheduler.producer = here.amqp.Producer(refused)  # the broker goes: the other's send is refused
            while not sends(other) and time.monotonic() < deadline:
                tick()
        refused_at = time.monotonic()
        scheduler.producer = sending  # and comes back
        assert (sends(sent), sends(other)) == (1, 1)

        while sends(other) < 2 and time.monotonic() < refused_at + 15:
            tick()

        assert sends(other) == 2 and time.monotonic() - refused_at >= UNSENT_RETRY_S - 0.5  # again, not at once
        for _ in range(10):
            tick()
        assert (sends(sent), sends(other)) == (1, 2)  # the one sent before was not sent again
    finally:
        scheduler._finalize()  # its last write now, not at the interpreter's exit with the database gone
        broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        for key in [*broker.scan_iter(f"{queue}*"), *(SENT_KEY.format(s.pk) for s in made)]:
            broker.delete(key)


@pytest.mark.django_db
def test_a_schedule_s_firings_are_paged_newest_first_and_none_is_out_of_reach(api, user):
    """The list was the latest 100, bare: the rest were out of reach, and nothing said more were there."""
    from triggers.services.schedules import schedule_create
    from workflows.models import Workflow

    saved = workflow_save(owner=user, tag="nightly", definition=GREETING)
    schedule = schedule_create(owner=user, workflow=Workflow.objects.get(pk=saved.workflow.pk), cron="0 2 * * *",
                               inputs={"name": "x"})
    first = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
    ScheduleFiring.objects.bulk_create([
        ScheduleFiring(schedule=schedule, fire_time=first + timedelta(days=day), fired_at=first + timedelta(days=day),
                       outcome="skipped") for day in range(150)])

    page = api.get(f"/api/v1/schedules/{schedule.pk}/firings?limit=100").json()
    rest = api.get(f"/api/v1/schedules/{schedule.pk}/firings?limit=100&offset=100").json()

    assert page["count"] == 150 and page["next"] and rest["next"] is None
    times = [f["fire_time"] for f in page["results"] + rest["results"]]
    assert len(set(times)) == 150 and times == sorted(times, reverse=True)
