from celery import shared_task


@shared_task(name="agents.sweep", acks_late=True, ignore_result=True, expires=30)
def sweep() -> int:
    """Nodes paused on a budget whose next call fits now, left so by a wake that never ran; and calls
    cut off mid-call in runs that ended before they were charged."""
    from django.conf import settings

    from agents.budget import sweep_lapsed, sweep_paused

    return sweep_paused(older_than_s=settings.AOB_REPUBLISH_AFTER_S) + sweep_lapsed()


@shared_task(name="agents.wake", acks_late=True, ignore_result=True)
def wake(line: list[str], owner_id: int) -> None:
    """Nodes paused on a budget whose next call fits since a release in ``line`` (agents.budget)."""
    from agents.budget import wake as wake_paused

    wake_paused(line, owner_id)


@shared_task(name="agents.settle", acks_late=True, ignore_result=True)
def settle(run_id: str) -> int:
    """A finished run's calls cut off mid-call, charged (agents.budget.settle_lapsed)."""
    from agents.budget import settle_lapsed

    return settle_lapsed(run_id)
