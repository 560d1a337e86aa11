"""Beat's firings of schedules, and the retention of firings and delivery ids."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from celery import shared_task

logger = logging.getLogger(__name__)

# Beat sends each due time once. A firing the database could not take for a moment (a restart, a
# failover), or whose start a passing refusal held back (the owner's run limit, which every
# schedule of theirs due at the same minute shares; Redis away), is tried again with the moment
# beat sent it, so it is the same firing (its unique key) whether or not a failed try's commit had
# landed: about 10 minutes in all, after which a held firing is recorded failed with its refusal.
FIRE_MAX_RETRIES = 12
FIRE_RETRY_BACKOFF_MAX_S = 60


@shared_task(name="triggers.fire_schedule", bind=True, acks_late=True, ignore_result=True,
             max_retries=FIRE_MAX_RETRIES)
def fire_schedule(self: Any, schedule_id: int, fired_at: str | None = None, cron: str | None = None,
                  timezone: str | None = None, **_later: Any) -> str:
    from django.db import InterfaceError, OperationalError

    from triggers.exceptions import StartHeld
    from triggers.services.schedules import schedule_fire

    sent = datetime.fromisoformat(fired_at) if fired_at else datetime.now(UTC)
    # the entry beat read (a retry is the same firing); none from an older beat, and then none sent,
    # so a retry reaches a worker still on the code before them (``**_later``: arguments to come)
    as_sent = {name: value for name, value in (("cron", cron), ("timezone", timezone)) if value}
    last = self.request.retries >= FIRE_MAX_RETRIES
    try:
        firing = schedule_fire(schedule_id=schedule_id, fired_at=sent, cron=cron, zone=timezone, hold_passing=not last)
    except (OperationalError, InterfaceError) as exc:
        if last:  # beat will not send this due time again: the backstop will (``schedules_resend_lost``)
            logger.error("schedule.firing_lost", extra={"schedule_id": schedule_id, "fired_at": sent.isoformat()})
        countdown = min(FIRE_RETRY_BACKOFF_MAX_S, 2 ** self.request.retries)
        raise self.retry(exc=exc, countdown=countdown, args=[schedule_id, sent.isoformat()],
                         kwargs=as_sent) from exc
    except StartHeld as exc:  # held back: a rate limit says when there is room
        countdown = min(FIRE_RETRY_BACKOFF_MAX_S, max(1, int(exc.extra.get("retry_after_seconds") or 5)))
        raise self.retry(exc=exc, countdown=countdown, args=[schedule_id, sent.isoformat()],
                         kwargs=as_sent) from exc
    return firing.outcome if firing else "duplicate_or_disabled"


@shared_task(name="triggers.resend_lost", acks_late=True, ignore_result=True, expires=30)
def resend_lost() -> int:
    from triggers.services.schedules import schedules_resend_lost

    return schedules_resend_lost()
