"""Approval deadlines are rows swept by beat, not sleeping tasks."""

from celery import shared_task


@shared_task(name="approvals.expire", acks_late=True, ignore_result=True, expires=30)
def expire() -> int:
    from approvals import services

    return services.approvals_expire_due()


@shared_task(name="approvals.notify", bind=True, acks_late=True, ignore_result=True)
def notify(self, delivery_id: int) -> str:
    """Send one approval notification; transient failures retry with exponential backoff."""
    from django.conf import settings

    from approvals.notifications import TransientNotifyError, delivery_send

    final = self.request.retries >= settings.AOB_NOTIFY_MAX_RETRIES
    try:
        return delivery_send(delivery_id=delivery_id, final_attempt=final)
    except TransientNotifyError as exc:
        raise self.retry(exc=exc, countdown=settings.AOB_NOTIFY_RETRY_BACKOFF_S * 2 ** self.request.retries,
                         max_retries=settings.AOB_NOTIFY_MAX_RETRIES) from exc


@shared_task(name="approvals.remind", acks_late=True, ignore_result=True, expires=30)
def remind() -> int:
    """Reminders that are due, and notifications whose publish was lost."""
    from django.conf import settings

    from approvals.notifications import approvals_remind_due, deliveries_republish

    deliveries_republish(older_than_s=settings.AOB_NOTIFY_REPUBLISH_AFTER_S)
    return approvals_remind_due()
