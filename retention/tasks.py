from celery import shared_task


@shared_task(name="retention.prune", bind=True, acks_late=True, ignore_result=True, expires=600)
def prune(self) -> dict:
    """Beat's prune, in slices of ``AOB_PRUNE_TASK_S``: it shares the maintenance queue's worker
    with the coordinator, and a backlog (retention lowered, a long outage) held one of its
    processes for as long as it took. What a slice leaves, the next one, sent at once, takes on."""
    from django.conf import settings

    from retention.services import prune as prune_now

    counts = prune_now(within_s=settings.AOB_PRUNE_TASK_S)
    if not counts["finished"]:
        self.apply_async()
    return counts
