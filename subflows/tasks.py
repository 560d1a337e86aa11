from celery import shared_task


@shared_task(name="subflows.sweep", acks_late=True, ignore_result=True, expires=30)
def sweep() -> dict[str, int]:
    from subflows.services import subflows_sweep

    return subflows_sweep()


@shared_task(name="subflows.cancel_children", acks_late=True, ignore_result=True)
def cancel_children(run_id: str) -> int:
    """A batch of an ended run's unfinished children cancelled; the task again for the rest."""
    from subflows.services import subflow_cancel_children

    cancelled, more = subflow_cancel_children(run_id=run_id)
    if more:
        cancel_children.delay(run_id)
    return cancelled
