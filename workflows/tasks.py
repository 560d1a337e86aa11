"""Celery tasks of the engine: thin, named, taking ids."""

from typing import Any

from celery import shared_task

from workflows.engine import coordinator, events, sweeper


@shared_task(name="workflows.coordinate", acks_late=True, ignore_result=True)
def coordinate(result: Any, node_run_id: int | None = None) -> None:
    """As an executor's link: ``(executor result, node_run_id)``; sent directly: ``(node_run_id,)``."""
    events.hold_until_task_end()  # the decision's events go out after the next executor's publish
    if node_run_id is None:
        coordinator.coordinate(result)
    else:
        coordinator.coordinate(node_run_id, facts=result if isinstance(result, dict) else None)


@shared_task(name="workflows.sweep", acks_late=True, ignore_result=True, expires=30)
def sweep() -> dict[str, int]:
    return sweeper.sweep()
