"""The beat scheduler: django-celery-beat's database scheduler, with two additions.

- The engine's own periodic tasks (the sweeper, approval deadlines and reminders, retention; see
  ``aob_project.celery``) are kept from code, in memory, beside the database's rows: deleting a row in
  the admin (or a test flushing its tables) cannot stop the engine. The database holds what people
  schedule (``triggers.Schedule`` rows, one ``PeriodicTask`` each).
- A schedule's firing carries the moment beat sent it (``fired_at``, beat's clock), and the cron
  and zone of the entry it sent (a change saved while the firing waits in its queue does not date
  it), from which the task finds the cron time it was due, not from a worker's clock when it runs: with the schedule's id it is the firing's
  idempotency key (``triggers.ScheduleFiring``), so a beat restart that sends a firing again, or a
  queue that delivers it twice, starts one run. The latest moment it sent one of a schedule is kept
  (``schedules.sent_record``): a firing that waited in its queue past a later one's send is
  superseded, and does not run.

Beat loads every enabled entry: django-celery-beat 2.8+ leaves out of each load the cron entries
whose hour, moved to the server's by its zone's offset on 1 January 2023, is more than two hours
from now, which a later load would bring in. A zone whose offset changed since (Antarctica/Casey:
+11 then, +8 now) or differs in summer (America/Nuuk) was never loaded at its due time, and the
schedule never fired; a ``run_once`` firing missed by more than two hours was not sent when beat
came back. A load of 5,000 entries takes some 0.6 s.

A database that cannot be read (PostgreSQL restarting) does not end beat: django-celery-beat lets
an ``OperationalError`` out of its schedule reload, which would stop beat and with it the sweeper
that recovers what the outage interrupted. The reload keeps the schedule already loaded, logs the
error and is tried again on the next tick (the fault suite's PostgreSQL restart proves it).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from celery.beat import ScheduleEntry
from celery.schedules import schedstate
from django.db import DatabaseError, InterfaceError, close_old_connections
from django_celery_beat.schedulers import DatabaseScheduler

logger = logging.getLogger(__name__)

FIRE_TASK = "triggers.fire_schedule"
UNSENT_RETRY_S = 5.0  # a firing the broker did not take is sent again this long after, while it fails


class Scheduler(DatabaseScheduler):
    _static: dict[str, ScheduleEntry]
    _reload_failed = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._unsent: dict[str, float] = {}  # entry name: when a firing the broker did not take is sent again
        super().__init__(*args, **kwargs)

    def setup_schedule(self) -> None:
        self._static = {name: ScheduleEntry(**dict(fields, name=name, app=self.app))
                        for name, fields in self.app.conf.beat_schedule.items()}
        self.schedule  # noqa: B018 - the first read loads the database's rows

    def all_as_schedule(self) -> dict[str, Any]:
        try:
            schedule = super().all_as_schedule()
        except (DatabaseError, InterfaceError) as exc:
            # Keep what is loaded (at first, the engine's own entries) and read again next tick.
            logger.warning("beat.schedule_reload_failed", extra={"error": repr(exc)})
            close_old_connections()  # a broken connection is replaced on the next read
            self._reload_failed = True
            schedule = dict(self._schedule or {})
        else:
            self._reload_failed = False
        schedule.update(getattr(self, "_static", {}))
        return schedule

    def enabled_models_qs(self) -> Any:
        return self.Model.objects.enabled()  # every one, whatever its hour (the module's docstring)

    def reserve(self, entry: Any) -> Any:
        if entry.name in getattr(self, "_static", {}):
            new = self._static[entry.name] = next(entry)
        else:
            new = super().reserve(entry)
        # the loaded schedule holds the entry as sent (django-celery-beat keeps the one it loaded): a
        # heap built from it before the next reload took every entry sent since for due, and sent it
        if self._schedule and entry.name in self._schedule:
            self._schedule[entry.name] = new
        return new

    def schedule_changed(self) -> bool:
        # The change marker row appearing (its first write ever, or after a flush) is a change too.
        # A reload that failed is tried again.
        before = self._last_timestamp
        changed = super().schedule_changed()
        return changed or self._reload_failed or (before is None and self._last_timestamp is not None)

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:
        if entry.task != FIRE_TASK or "schedule_id" not in (entry.kwargs or {}):
            return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        from triggers.services.schedules import FIELDS, sent_record

        original = entry.kwargs  # beat is one thread: the entry carries the moment for this send only
        fired_at = datetime.now(UTC)
        crontab = getattr(getattr(entry, "model", None), "crontab", None)
        reading = {} if crontab is None else {  # the cron and zone it was due by (``schedules.as_sent``)
            "cron": " ".join(str(getattr(crontab, name)) for name in FIELDS), "timezone": str(crontab.timezone)}
        entry.kwargs = {**original, "fired_at": fired_at.isoformat(), **reading}
        try:
            sent = super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        except Exception:
            self._not_sent(entry)
            raise
        finally:
            entry.kwargs = original
        self._unsent.pop(entry.name, None)
        sent_record(original["schedule_id"], fired_at)  # what it supersedes (``schedules.superseded_by``)
        return sent

    def _not_sent(self, entry: Any) -> None:
        """A firing the broker did not take (Redis away for a moment) is sent again: beat had moved the
        entry's last run on before sending (``reserve``), logged the failure and gone on, and the due
        time was lost with no trace; kept, the next sync wrote it to the database as sent. The entry
        keeps its last run as it was, and is due again after ``UNSENT_RETRY_S``; then the firing goes
        out as one sent late, judged by its schedule's ``catch_up``."""
        entry.model.last_run_at, entry.model.total_run_count = entry.last_run_at, entry.total_run_count
        self._unsent[entry.name] = time.monotonic() + UNSENT_RETRY_S
        if self._schedule and entry.name in self._schedule:
            self._schedule[entry.name] = entry  # as it was before ``reserve`` moved it on
        self._heap = None  # built again on the next tick, from the loaded entries as they are now
        logger.warning("beat.firing_not_sent", extra={"entry": entry.name, "retry_in_s": UNSENT_RETRY_S})

    def is_due(self, entry: Any) -> Any:
        wait = self._unsent.get(entry.name, 0.0) - time.monotonic()
        return schedstate(False, wait) if wait > 0 else super().is_due(entry)
