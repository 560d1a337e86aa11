"""Celery tasks of the engine: thin, named, taking ids."""

from celery import shared_task

from workflows.engine import coordinator, sweeper


@shared_task(name="workflows.coordinate", acks_late=True, ignore_result=True)
def coordinate(node_run_id: int) -> None:
    coordinator.coordinate(node_run_id)


@shared_task(name="workflows.sweep", acks_late=True, ignore_result=True, expires=30)
def sweep() -> dict[str, int]:
    return sweeper.sweep()
