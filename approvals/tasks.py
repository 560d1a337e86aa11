"""Approval deadlines are rows swept by beat, not sleeping tasks."""

from celery import shared_task
from django.conf import settings


@shared_task(name="approvals.expire", acks_late=True, ignore_result=True, expires=30)
def expire() -> int:
    from approvals import services

    return services.approvals_expire_due() + services.approvals_end_for_inactive_owners()


# max_retries=None: the row's count ends the retries (``delivery_send`` stops raising), not Celery's.
# A send ends well before the sweep may publish its delivery again (AOB_NOTIFY_REPUBLISH_AFTER_S after
# its claim): past the soft limit it is a failed attempt retried later, past the hard one its process
# goes, so no send is still going when a republished message makes the next attempt.
@shared_task(name="approvals.notify", bind=True, acks_late=True, ignore_result=True, max_retries=None,
             soft_time_limit=settings.AOB_NOTIFY_REPUBLISH_AFTER_S * 0.5,
             time_limit=settings.AOB_NOTIFY_REPUBLISH_AFTER_S * 0.8)
def notify(self, delivery_id: int) -> str:
    """Send one approval notification. The delivery's row counts its attempts and says when its
    next one is due (``delivery_send``); a transient failure publishes that attempt here, and a
    message lost on the way is published again by ``deliveries_republish``."""
    from approvals.notifications import RetryLater, delivery_send
    from workflows.engine.dispatch import broker_countdown

    try:
        return delivery_send(delivery_id=delivery_id)
    except RetryLater as later:
        raise self.retry(exc=later, countdown=broker_countdown(later.countdown_s)) from later


@shared_task(name="approvals.remind", acks_late=True, ignore_result=True, expires=30)
def remind() -> int:
    """Reminders that are due, and notifications whose publish was lost."""
    from django.conf import settings

    from approvals.notifications import approvals_remind_due, deliveries_republish

    deliveries_republish(older_than_s=settings.AOB_NOTIFY_REPUBLISH_AFTER_S)
    return approvals_remind_due()
