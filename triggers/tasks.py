"""Beat's firings of schedules, and the retention of firings and delivery ids."""

from __future__ import annotations

from datetime import datetime

from celery import shared_task


@shared_task(name="triggers.fire_schedule", acks_late=True, ignore_result=True)
def fire_schedule(schedule_id: int, fired_at: str | None = None) -> str:
    from triggers.services.schedules import schedule_fire

    firing = schedule_fire(schedule_id=schedule_id, fired_at=datetime.fromisoformat(fired_at) if fired_at else None)
    return firing.outcome if firing else "duplicate_or_disabled"
