"""Approval deadlines are rows swept by beat, not sleeping tasks."""

from celery import shared_task


@shared_task(name="approvals.expire", acks_late=True, ignore_result=True, expires=30)
def expire() -> int:
    from approvals import services

    return services.approvals_expire_due()
