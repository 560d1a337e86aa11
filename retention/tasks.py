from celery import shared_task


@shared_task(name="retention.prune", acks_late=True, ignore_result=True, expires=600)
def prune() -> dict:
    from retention.services import prune as prune_now

    return prune_now()
