"""Schedules: a workflow tag run on a cron (with time zone) by Celery beat through django-celery-beat.

Each schedule owns one ``PeriodicTask`` (task ``triggers.fire_schedule``) that beat reads from the
database. A firing goes through ``run_start`` like any other start (rate limits, budgets), keyed by
``(schedule, fire_time)``: the cron time the firing was due, found from the moment beat sent it. A
beat restart that sends a firing again, or a message delivered twice, meets the unique key and
starts nothing. A firing later than ``AOB_SCHEDULE_GRACE_S`` after its time was missed (beat was
down): ``catch_up`` skips it, or runs it once (the most recent missed time only).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis
from celery.schedules import crontab
from croniter import croniter
from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from aob_project import redis_client
from aob_project.exceptions import AobError, NotFound
from workflows.limits import refuse_more, refuse_past
from workflows.models import Workflow, WorkflowVersion
from workflows.services.definitions import workflow_lock_for_use, workflow_version_for_start
from workflows.services.runs import run_inputs_check

from ..exceptions import PASSING, ScheduleInvalid, ScheduleNotFound, StartHeld
from ..models import Schedule, ScheduleFiring
from ..tasks import FIRE_MAX_RETRIES, FIRE_RETRY_BACKOFF_MAX_S
from . import trigger_owner_check

logger = logging.getLogger(__name__)

FIRE_TASK = "triggers.fire_schedule"
FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")


def cron_check(cron: Any, tz: Any) -> tuple[str, ZoneInfo]:
    """The expression as five fields and its time zone, or ScheduleInvalid naming which is wrong."""
    if not isinstance(cron, str) or len(cron) > 200 or len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise ScheduleInvalid(f"cron {cron!r} is not a five-field cron expression (minute hour day month weekday)",
                              extra={"field": "cron", "rule": "cron_syntax"})
    parts = cron.split()
    for name, value in zip(FIELDS, parts, strict=True):  # as beat will build it: by name, never by position
        try:
            crontab(**{name: value})
        except (ValueError, TypeError) as exc:
            raise ScheduleInvalid(f"cron {cron!r}: {name} {value!r}: {exc}",
                                  extra={"field": "cron", "rule": "cron_syntax"}) from None
    try:  # whole, as beat loads it: a day no month named has (30 February) would be skipped there, unsaid
        beat_reads = crontab(**dict(zip(FIELDS, parts, strict=True)))
    except (ValueError, TypeError) as exc:
        raise ScheduleInvalid(f"cron {cron!r} never fires: {exc}", extra={"field": "cron", "rule": "cron_never"}) from None
    _check_one_reading(cron, parts, beat_reads)
    if str(tz) not in iana_zones():
        raise ScheduleInvalid(f"unknown time zone {tz!r} (an IANA name, e.g. Europe/Paris)",
                              extra={"field": "timezone", "rule": "timezone"})
    try:
        zone = ZoneInfo(str(tz))
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long, or a folder
        raise ScheduleInvalid(f"unknown time zone {tz!r}", extra={"field": "timezone", "rule": "timezone"}) from None
    return " ".join(parts), zone


@functools.cache
def iana_zones() -> frozenset[str]:
    """The zones a schedule may name: IANA's, as the ``tzdata`` package lists them (beat has it
    wherever it runs: django-celery-beat requires it). ``ZoneInfo`` also reads the host's own files
    (``localtime``, ``posix/…``, ``right/…``), which another host (beat's container) may not have,
    where its reload would fail on the entry."""
    return frozenset(resources.files("tzdata").joinpath("zones").read_text().split())


# Each field's every value, as croniter writes a field that names them all ("*").
_WHOLE = (range(60), range(24), range(1, 32), range(1, 13), range(7))


def _check_one_reading(cron: str, parts: list[str], beat_reads: crontab) -> None:
    """Beat sends a firing by celery's reading of the cron, and ``due_time`` finds the time it was
    due by croniter's: a field the two read differently was sent on days or minutes the other did
    not call due. ``sun#2`` (the second Sunday: celery drops the ``#2`` and sends every Sunday, a
    firing croniter then dated weeks back), ``0-0/1`` (celery: minute 0; croniter: every minute),
    ``mon-1``. Refused, naming the field."""
    expanded, nth_weekday = croniter.expand(cron)
    if nth_weekday:
        raise ScheduleInvalid(f"cron {cron!r}: day_of_week {parts[4]!r}: an n-th weekday (#) is not one beat can send",
                              extra={"field": "cron", "rule": "cron_syntax"})
    beats = (beat_reads.minute, beat_reads.hour, beat_reads.day_of_month, beat_reads.month_of_year,
             beat_reads.day_of_week)
    for name, value, reading, whole, beat in zip(FIELDS, parts, expanded, _WHOLE, beats, strict=True):
        if (set(whole) if reading == ["*"] else set(reading)) != set(beat):
            raise ScheduleInvalid(f"cron {cron!r}: {name} {value!r} reads two ways (beat: {sorted(beat)}); write "
                                  "it plainly", extra={"field": "cron", "rule": "cron_syntax"})


def schedule_check(*, owner: User, workflow: Workflow, cron: Any, tz: Any, version: int | None,
                   inputs: Any = None, schedule: Schedule | None = None) -> str:
    """The rules a schedule obeys whoever saves it, as ``schedule_create`` (no ``schedule``) and
    ``schedule_update`` apply them: a five-field cron and a known time zone, a pinned version the
    workflow has, inputs within ``INPUTS_MAX_BYTES`` (None: unchanged) and, for a new schedule,
    the owner's own workflow and room under the owner's limit (an update changes neither owner nor
    workflow). A form (the admin's) calls it to show the errors by field before it saves through
    those services, which call it again (and judge the limit again under the owner's lock). Returns
    the cron as five fields, or raises ScheduleInvalid. The owner's is judged first: of another's
    workflow nothing more is said (whether it has the pinned version)."""
    if schedule is None:
        trigger_owner_check(owner, workflow, what="schedule", error=ScheduleInvalid)
    if schedule is None or (cron, tz) != (schedule.cron, schedule.timezone):
        cron, _ = cron_check(cron, tz)
    # else as saved: one saved before a rule became stricter (an n-th weekday, a host's zone) can
    # still be disabled or given new inputs; beat fires it as it reads it
    _check_version(workflow, version)
    if inputs is not None:
        _check_inputs(inputs)
    if schedule is None:
        _check_room(owner)
    return cron


# A schedule is listed with its inputs (``GET /api/v1/schedules``), at most AOB_MAX_SCHEDULES_PER_OWNER of them.
INPUTS_MAX_BYTES = 64 * 1024


def _check_inputs(inputs: Any) -> None:
    """A run's rules for its inputs (each firing starts one with them: judged at the save, not at
    every firing), then the schedule's own, lower bound of what its list answers."""
    run_inputs_check(inputs, error=ScheduleInvalid, code=None)
    refuse_past(inputs, INPUTS_MAX_BYTES, field="inputs", error=ScheduleInvalid)


def _check_room(owner: User) -> None:
    refuse_more(Schedule.objects.filter(owner=owner), setting="AOB_MAX_SCHEDULES_PER_OWNER", what="schedules",
                field="schedules", rule="max_schedules", error=ScheduleInvalid)


def schedule_create(*, owner: User, workflow: Workflow, cron: str, tz: str = "UTC", inputs: dict | None = None,
                    name: str = "", version: int | None = None, catch_up: str = Schedule.CatchUp.SKIP,
                    enabled: bool = True) -> Schedule:
    cron = schedule_check(owner=owner, workflow=workflow, cron=cron, tz=tz, version=version, inputs=inputs or {})
    with transaction.atomic():
        workflow = workflow_lock_for_use(workflow=workflow)  # first: the tag's delete takes it before the owner's row
        User.objects.select_for_update().filter(pk=owner.pk).first()  # one owner's creations in turn: the count holds
        _check_room(owner)
        schedule = Schedule.objects.create(owner=owner, workflow=workflow, cron=cron, timezone=tz, inputs=inputs or {},
                                           name=name, version=version, catch_up=catch_up, enabled=enabled)
        _sync_periodic_task(schedule)
    logger.info("schedule.created", extra={"schedule_id": schedule.pk, "cron": cron, "tz": tz})
    return schedule


def schedule_update(*, schedule: Schedule, **changes: Any) -> Schedule:
    changes["cron"] = schedule_check(owner=schedule.owner, workflow=schedule.workflow,
                                     cron=changes.get("cron", schedule.cron),
                                     tz=changes.get("timezone", schedule.timezone), version=changes.get("version"),
                                     inputs=changes.get("inputs"), schedule=schedule)
    with transaction.atomic():
        locked = Schedule.objects.select_for_update().filter(pk=schedule.pk).first()
        if locked is None:  # deleted while this update waited on its lock: gone, as a moment later
            raise ScheduleNotFound("schedule not found")
        schedule = locked
        for key, value in changes.items():
            setattr(schedule, key, value)
        schedule.save()
        _sync_periodic_task(schedule)
    return schedule


def schedule_delete(*, schedule: Schedule) -> None:
    """Its beat entry goes with it, as with any removal of a schedule row (``periodic_task_remove``)."""
    with transaction.atomic():
        schedule.delete()


def periodic_task_remove(*, schedule_id: int, task_id: int | None = None) -> int:
    """Remove beat's entry for a schedule that no longer exists, by its id or its name.

    Run for every deleted ``Schedule`` row (``triggers.signals``: a workflow's or an owner's
    deletion cascades to its schedules from apps that never import triggers, and the admin deletes
    in bulk), and by a firing that finds its schedule gone (a row removed some other way, or before
    this rule existed): beat would otherwise send it to the maintenance queue every tick, for ever.
    Deleted through the ORM so that django-celery-beat's signal tells beat its schedule changed."""
    entry = Q(name=task_name(schedule_id))
    if task_id is not None:
        entry |= Q(pk=task_id)
    removed, _ = PeriodicTask.objects.filter(entry, task=FIRE_TASK).delete()
    if removed:
        logger.info("schedule.periodic_task_removed", extra={"schedule_id": schedule_id})
    return removed


def task_name(schedule_id: int) -> str:
    return f"aob-schedule-{schedule_id}"


def _check_version(workflow: Workflow, version: int | None) -> None:
    if version is not None and not WorkflowVersion.objects.filter(workflow=workflow, seq=version).exists():
        raise ScheduleInvalid(f"workflow {workflow.tag!r} has no version {version}",
                              extra={"field": "version", "rule": "version_exists"})


def _sync_periodic_task(schedule: Schedule) -> None:
    """The PeriodicTask beat reads for this schedule; a change marks beat's schedule as changed."""
    cron = dict(zip(FIELDS, schedule.cron.split(), strict=True))
    # the oldest row of this cron, shared by the schedules that have it: the table has no unique
    # key (django-celery-beat's admin can make or edit a row into a copy), so never get_or_create.
    # Locked until this save commits: the prune of rows no task uses (``retention``) skips it, or
    # took it first, and then it is gone here and made anew
    crontab_row = (CrontabSchedule.objects.select_for_update(no_key=True).filter(**cron, timezone=schedule.timezone)
                   .order_by("pk").first() or CrontabSchedule.objects.create(**cron, timezone=schedule.timezone))
    fields = {"task": FIRE_TASK, "crontab": crontab_row, "interval": None, "kwargs": json.dumps(
        {"schedule_id": schedule.pk}), "enabled": schedule.enabled,
              "description": f"AOB schedule {schedule.pk} of {schedule.workflow.tag}"}
    if schedule.periodic_task_id:
        entry = PeriodicTask.objects.filter(pk=schedule.periodic_task_id)
        if entry.exclude(crontab=crontab_row).exists():
            # a new cron or zone is reckoned from now, as a new entry is (from its date_changed):
            # beat reckons the next firing from the last run, and kept, the new cron's time between
            # that run and now was due at once, sent as the change was saved
            fields["last_run_at"] = None
        entry.update(**fields)
        task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
        task.save()  # the save signal tells beat its schedule changed (update() sends none)
    else:
        task = PeriodicTask.objects.create(name=task_name(schedule.pk), **fields)
        Schedule.objects.filter(pk=schedule.pk).update(periodic_task=task)
        schedule.periodic_task = task


def due_time(schedule: Schedule, fired_at: datetime) -> datetime:
    """The cron time a firing sent at ``fired_at`` was due: the latest at or before it, read on the
    zone's wall clock, as beat reads the cron. A wall time the clocks skip (02:30 on a spring-forward
    night in Europe/Paris) is due at the instant it names with the offset before the change (01:30
    UTC, 03:30 local), which is when beat sends it: read as an aware time, croniter gave 01:00 UTC,
    and the firing was recorded missed, 1,800 s late, though beat sent it on time. A wall time the
    clocks repeat is its first instant. A cron that names both a day of the month and a weekday is
    due on the days that match both, as beat's crontab reads it (``day_or=False``): with croniter's
    default, either (classic cron's), ``0 9 1-7 * 1`` (a month's first Monday) was due every day
    1-7 and every Monday, and a firing beat sent a week late was taken for one due that morning."""
    zone = ZoneInfo(schedule.timezone)
    # a second's slack: beat sends at (not before) the due time, by its own clock
    wall = (fired_at + timedelta(seconds=1)).astimezone(zone).replace(tzinfo=None)
    return croniter(schedule.cron, wall, day_or=False).get_prev(datetime).replace(tzinfo=zone).astimezone(UTC)


# The moment beat last sent a firing of a schedule (``aob_project.beat``), kept this long: a
# firing waiting in its queue longer is not found superseded (it runs, as before the rule).
SENT_KEY = "aob:schedule:{}:sent"
SENT_KEPT_S = 7 * 86_400


# Beat is one thread, which sends the sweeper's ticks too: its record waits on Redis half a second
# at most, tries once, and after a failure is not tried for this long (the firings go on unrecorded).
SENT_PAUSE_S = 30.0
_sent_paused_until = 0.0


def sent_record(schedule_id: int, fired_at: datetime) -> None:
    """Beat, as it sends a firing: the latest moment it sent one of this schedule. Best effort:
    without it a firing is judged as before (never superseded)."""
    global _sent_paused_until
    if time.monotonic() < _sent_paused_until:
        return
    try:
        redis_client.shared(0.5, once=True).set(SENT_KEY.format(schedule_id), fired_at.isoformat(), ex=SENT_KEPT_S)
    except redis.RedisError:
        _sent_paused_until = time.monotonic() + SENT_PAUSE_S
        logger.warning("schedule.sent_unrecorded", extra={"schedule_id": schedule_id}, exc_info=True)


# A firing beat sent that no worker recorded (its message lost: Redis flushed or restarted without
# its data; a worker killed mid-firing, whose message comes back only after the broker's visibility
# timeout, an hour; a firing whose every retry met the database away) is sent again once, this long
# after beat's send: past every retry of a firing's own and beat's writing down of its sends.
BEAT_SYNC_S = 180  # django-celery-beat writes an entry's last run every 3 minutes
RESEND_AFTER_S = FIRE_MAX_RETRIES * FIRE_RETRY_BACKOFF_MAX_S + BEAT_SYNC_S  # 15 minutes
RESEND_LOOKBACK_S = 86_400
RESEND_BATCH = 500  # firings sent again in one pass at most
RESEND_BUDGET_S = 5.0  # and the time one pass may take
RESENT_KEY = "aob:schedule:{}:resent:{}"
# A due time claimed for its send, not yet sent: held as long as a send may take, so passes that meet
# do not both send it; once sent, kept a day. A process killed between the claim and the send (it was
# kept a day: every later pass took the firing for sent, lost for good) leaves it to the next pass.
RESEND_CLAIM_S = 10


def schedules_resend_lost(*, now: datetime | None = None) -> int:
    """Send again each enabled schedule's latest firing beat sent (``PeriodicTask.last_run_at``,
    since its last change) that left no firing, with the moment beat sent it: judged as the lost
    one would have been. Once a due time (a Redis claim); the unique key keeps a late original
    from starting a second run. Returns how many were sent."""
    from triggers.tasks import fire_schedule

    now = now or timezone.now()
    beat_sent = OuterRef("periodic_task__last_run_at")
    # the latest firing, dated up to an hour before beat's send (the unique key's index): one beat sent
    # later than that after its due time (a catch-up) is found by its due time below
    recorded = ScheduleFiring.objects.filter(schedule=OuterRef("pk"), fire_time__gte=beat_sent - timedelta(hours=1),
                                             fired_at__gte=beat_sent - timedelta(seconds=30))
    candidates = (Schedule.objects.filter(enabled=True, updated_at__lt=F("periodic_task__last_run_at"),
                                          periodic_task__last_run_at__gte=now - timedelta(seconds=RESEND_LOOKBACK_S),
                                          periodic_task__last_run_at__lte=now - timedelta(seconds=RESEND_AFTER_S))
                  .exclude(Exists(recorded)).order_by("pk"))
    # a pass goes on from where the last stopped (its budget spent on repeats of recorded firings,
    # a restarted beat's: they stay candidates a day), round to the first schedule once
    after = _resend_cursor()
    deadline, sent, wrapped = time.monotonic() + RESEND_BUDGET_S, 0, after == 0
    while sent < RESEND_BATCH and time.monotonic() < deadline:
        page = list(candidates.filter(pk__gt=after).values_list("pk", "cron", "timezone",
                                                                "periodic_task__last_run_at")[:RESEND_BATCH])
        if not page:
            after = 0
            if wrapped:
                break
            wrapped = True
            continue
        for pk, cron, zone, last in page:
            if sent >= RESEND_BATCH or time.monotonic() >= deadline:
                break
            after = pk
            sent += _resend(fire_schedule, pk, cron, zone, last)
    _resend_cursor(after)
    return sent


RESEND_CURSOR_KEY = "aob:schedule:resend_after"


def _resend_cursor(after: int | None = None) -> int:
    """The schedule a backstop pass stopped after (kept in Redis a day; 0, the first, without it)."""
    try:
        client = redis_client.shared(0.5, once=True)
        if after is not None:
            client.set(RESEND_CURSOR_KEY, after, ex=RESEND_LOOKBACK_S)
            return after
        return int(client.get(RESEND_CURSOR_KEY) or 0)
    except (redis.RedisError, ValueError):
        return 0


def _resend(fire_schedule: Any, pk: int, cron: str, zone: str, last: datetime) -> int:
    slot = due_time(Schedule(pk=pk, cron=cron, timezone=zone), last)
    if ScheduleFiring.objects.filter(schedule_id=pk, fire_time=slot).exists():
        return 0  # a repeat of a recorded firing (beat sent a due time again after a restart)
    key = RESENT_KEY.format(pk, int(slot.timestamp()))
    try:
        if not redis_client.shared(0.5, once=True).set(key, "sending", nx=True, ex=RESEND_CLAIM_S):
            return 0
    except redis.RedisError:
        logger.warning("schedule.resend_unclaimed", extra={"schedule_id": pk}, exc_info=True)
        return 0
    try:
        fire_schedule.apply_async(args=[pk, last.isoformat()], kwargs={"cron": cron, "timezone": zone})
    except Exception:
        with contextlib.suppress(redis.RedisError):  # not sent: the next pass tries again
            redis_client.shared(0.5, once=True).delete(key)
        raise
    try:  # the unique key keeps a second send from starting a second run; this keeps passes from sending it
        redis_client.shared(0.5, once=True).set(key, "sent", ex=RESEND_LOOKBACK_S)
    except redis.RedisError:
        logger.warning("schedule.resend_unmarked", extra={"schedule_id": pk}, exc_info=True)
    logger.warning("schedule.firing_resent", extra={"schedule_id": pk, "fire_time": str(slot),
                                                    "fired_at": last.isoformat()})
    return 1


def superseded_by(schedule: Schedule, slot: datetime) -> datetime | None:
    """The schedule's next due time after ``slot``, when beat has already sent a firing for it (or
    a later one) before this one could start: firings that waited in their queue (no worker on
    ``wf.triggers`` for a while, a backlog) each started a run when a worker came, back to back,
    whatever ``catch_up`` said. Now only the latest runs (``run_once``'s "once, the most recent";
    under ``skip``, judged late or not by when beat sent it), and the others are recorded skipped,
    superseded. Beat's own clock on both sides (``fired_at`` and ``sent_record``)."""
    try:
        sent = redis_client.shared(0.5, once=True).get(SENT_KEY.format(schedule.pk))
    except redis.RedisError:
        return None
    if sent is None:
        return None
    zone = ZoneInfo(schedule.timezone)
    wall = slot.astimezone(zone).replace(tzinfo=None)  # read as ``due_time`` reads it
    later = croniter(schedule.cron, wall, day_or=False).get_next(datetime).replace(tzinfo=zone).astimezone(UTC)
    return later if later <= datetime.fromisoformat(sent.decode()) else None


def as_sent(schedule: Schedule, cron: str | None, zone: str | None) -> Schedule:
    """The schedule as beat read it when it sent a firing (the cron and zone of its entry, carried in
    the message): a firing sent before a change of either and started after it was dated by the new
    cron, its latest time before the send, hours back, and started for a time the schedule never had
    (``run_once``) or recorded missed (``skip``). A message without them (sent before they were
    carried), or with ones that do not read, is the schedule's as it is."""
    if not cron or not zone or (" ".join(cron.split()), zone) == (" ".join(schedule.cron.split()), schedule.timezone):
        return schedule
    then = Schedule(pk=schedule.pk, cron=cron, timezone=zone)
    try:
        due_time(then, timezone.now())
    except Exception:  # noqa: BLE001 - not beat's: the schedule's own reading
        return schedule
    return then


def schedule_fire(*, schedule_id: int, fired_at: datetime | None = None, cron: str | None = None,
                  zone: str | None = None, hold_passing: bool = False) -> ScheduleFiring | None:
    """Start the run of one firing, once: a firing already recorded is counted and left alone.
    With ``hold_passing`` a refusal that passes (``PASSING``: the owner's run limit, shared by every
    schedule of theirs due at the same minute) is raised as ``StartHeld`` and nothing is recorded, for the caller
    to try again later with the same ``fired_at``, so it is still this due time's firing."""
    schedule = Schedule.objects.select_related("workflow__current_version", "owner").filter(pk=schedule_id).first()
    if schedule is None:
        periodic_task_remove(schedule_id=schedule_id)
        return None
    if not schedule.enabled:
        return None
    now = timezone.now()
    fired_at = fired_at or now
    if fired_at > now + timedelta(seconds=settings.AOB_SCHEDULE_GRACE_S):
        # beat stamps the moment it sends: one ahead of this clock by more than the grace names a
        # slot that is not due (a message not beat's), and is refused, never run ahead of its time
        logger.warning("schedule.fired_ahead", extra={"schedule_id": schedule.pk, "fired_at": str(fired_at)})
        return None
    reading = as_sent(schedule, cron, zone)
    slot = due_time(reading, fired_at)
    late = (fired_at - slot).total_seconds() > settings.AOB_SCHEDULE_GRACE_S
    later = superseded_by(reading, slot)
    base = {"schedule": schedule, "fire_time": slot, "fired_at": fired_at}
    try:
        with transaction.atomic():
            # the tag first (as its delete takes it, then the schedule), then the schedule: the version
            # a save committed meanwhile is the one that runs, or the save waits for this run
            current = _current(schedule)
            held = _held(schedule.pk) if current is not None else None
            if held is None or not held.enabled:  # disabled or deleted while this firing was judged
                logger.info("schedule.changed_meanwhile", extra={"schedule_id": schedule.pk})
                return None
            schedule = base["schedule"] = held
            if later is not None:
                firing = ScheduleFiring.objects.create(**base, outcome=ScheduleFiring.Outcome.SKIPPED, error={
                    "reason": "superseded", "by": later.isoformat(),
                    "message": f"beat had sent the firing due at {later.isoformat()} before this one could start"})
                logger.info("schedule.superseded", extra={"schedule_id": schedule.pk, "fire_time": str(slot)})
                return firing
            if late and schedule.catch_up == Schedule.CatchUp.SKIP:
                firing = ScheduleFiring.objects.create(**base, outcome=ScheduleFiring.Outcome.SKIPPED,
                                                       error={"reason": "missed", "late_s": round(
                                                           (fired_at - slot).total_seconds(), 1)})
                logger.info("schedule.missed_skipped", extra={"schedule_id": schedule.pk, "fire_time": str(slot)})
                return firing
            firing = ScheduleFiring.objects.create(**base, outcome=ScheduleFiring.Outcome.STARTED)
            run = _start(schedule, slot, current)
            ScheduleFiring.objects.filter(pk=firing.pk).update(run=run)
            firing.run = run
    except IntegrityError:
        ScheduleFiring.objects.filter(schedule=schedule, fire_time=slot).update(deliveries=F("deliveries") + 1)
        logger.info("schedule.duplicate_firing", extra={"schedule_id": schedule.pk, "fire_time": str(slot)})
        return None
    except AobError as exc:
        if hold_passing and exc.status in PASSING:
            logger.info("schedule.start_held", extra={"schedule_id": schedule.pk, "error": exc.code})
            raise StartHeld(exc.message, extra={**exc.extra, "refusal": exc.code}) from exc
        # by its key alone: a second delivery of this due time (another moment beat sent it) that
        # failed too finds the first's row, where a lookup by the moment too met the key's IntegrityError
        firing, _ = ScheduleFiring.objects.get_or_create(schedule=schedule, fire_time=slot, defaults={
            "fired_at": fired_at, "outcome": ScheduleFiring.Outcome.FAILED,
            "error": {"error": exc.code, "message": exc.message}})
        logger.warning("schedule.start_failed", extra={"schedule_id": schedule.pk, "error": exc.code})
        return firing
    logger.info("schedule.fired", extra={"schedule_id": schedule.pk, "fire_time": str(slot), "run_id": str(run.pk)})
    return firing


_HOLD = "SELECT 1 FROM triggers_schedule WHERE id = %s FOR KEY SHARE"


def _held(schedule_id: int) -> Schedule | None:
    """In the transaction that starts a firing's run: the schedule as it is now, its row held
    (``FOR KEY SHARE``, as a webhook's delivery holds its hook's: the lock an update or a delete
    waits for) until the run commits. A firing read its schedule, met an update's lock at its
    insert, and started its run from what it had read after the update answered: a schedule
    disabled meanwhile still ran, with inputs the update had replaced. Now the update waits for
    the run, or the firing for the update and then reads what it left. None if it was deleted."""
    with connection.cursor() as cursor:
        cursor.execute(_HOLD, [schedule_id])
        if cursor.fetchone() is None:
            return None
    return Schedule.objects.select_related("workflow__current_version", "owner").filter(pk=schedule_id).first()


def _current(schedule: Schedule) -> WorkflowVersion | None:
    """The schedule's tag's current version, held for the run (``workflow_version_for_start``);
    None if the tag was deleted meanwhile (its schedules went with it)."""
    try:
        return workflow_version_for_start(workflow=schedule.workflow)
    except NotFound:
        return None


def _start(schedule: Schedule, slot: datetime, current: WorkflowVersion | None) -> Any:
    from workflows.services.runs import run_start

    workflow = schedule.workflow
    if schedule.version is None:
        version = current
    else:
        version = WorkflowVersion.objects.filter(workflow=workflow, seq=schedule.version).first()
    if version is None:
        raise ScheduleInvalid(f"workflow {workflow.tag!r} has no version {schedule.version}",
                              extra={"field": "version", "rule": "version_exists"})  # as at its save
    return run_start(owner=schedule.owner, artifact_id=version.artifact_id, inputs=dict(schedule.inputs),
                     workflow=workflow, request_id=f"schedule-{schedule.pk}-{int(slot.timestamp())}")
