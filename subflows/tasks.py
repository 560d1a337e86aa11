from celery import shared_task


@shared_task(name="subflows.sweep", acks_late=True, ignore_result=True, expires=30)
def sweep() -> dict[str, int]:
    from subflows.services import subflows_sweep

    return subflows_sweep()
