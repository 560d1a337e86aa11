import logging

from celery import shared_task

logger = logging.getLogger(__name__)

# The advisory lock one prune holds on its database session: a tick of beat that finds a chain of
# slices still going leaves it alone (each tick started another, a process of the maintenance
# worker each). A worker that dies ends its session, and the lock with it.
PRUNE_LOCK = 0x70_72_75_6E_65  # "prune"


@shared_task(name="retention.prune", bind=True, acks_late=True, ignore_result=True, expires=600)
def prune(self) -> dict:
    """Beat's prune, in slices of ``AOB_PRUNE_TASK_S``: it shares the maintenance queue's worker
    with the coordinator, and a backlog (retention lowered, a long outage) held one of its
    processes for as long as it took. What a slice leaves, the next one, sent at once, takes on;
    one chain at a time (``PRUNE_LOCK``)."""
    from django.conf import settings
    from django.db import connection

    from retention.services import prune as prune_now

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [PRUNE_LOCK])
        if not cursor.fetchone()[0]:
            logger.info("retention.prune_skipped", extra={"reason": "another prune is running"})
            return {"skipped": True}
    try:
        counts = prune_now(within_s=settings.AOB_PRUNE_TASK_S)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [PRUNE_LOCK])
    if not counts["finished"]:
        self.apply_async()
    return counts
