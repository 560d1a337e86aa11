"""Beat's firings of schedules, and the retention of firings and delivery ids."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from celery import shared_task

# Beat sends each due time once: a firing the database could not take for a moment (a restart, a
# failover) is tried again, about 7 minutes in all, with the moment beat sent it, so it is the same
# firing (its unique key) whether or not the failed try's commit had landed.
FIRE_MAX_RETRIES = 12
FIRE_RETRY_BACKOFF_MAX_S = 60


@shared_task(name="triggers.fire_schedule", bind=True, acks_late=True, ignore_result=True,
             max_retries=FIRE_MAX_RETRIES)
def fire_schedule(self: Any, schedule_id: int, fired_at: str | None = None) -> str:
    from django.db import InterfaceError, OperationalError

    from triggers.services.schedules import schedule_fire

    sent = datetime.fromisoformat(fired_at) if fired_at else datetime.now(UTC)
    try:
        firing = schedule_fire(schedule_id=schedule_id, fired_at=sent)
    except (OperationalError, InterfaceError) as exc:
        countdown = min(FIRE_RETRY_BACKOFF_MAX_S, 2 ** self.request.retries)
        raise self.retry(exc=exc, countdown=countdown, args=[schedule_id, sent.isoformat()], kwargs={}) from exc
    return firing.outcome if firing else "duplicate_or_disabled"
