"""Periodic work never lands on a node type's queue: every task beat sends from code, and the
budget's wake, is routed to the maintenance queue (a task left unrouted goes to the default node
queue, behind node work)."""

from __future__ import annotations

from aob_project.celery import MAINTENANCE_TASKS, app
from workflows.registry import MAINTENANCE_QUEUE


def test_every_periodic_task_of_the_engine_goes_to_the_maintenance_queue() -> None:
    app.finalize()
    periodic = {entry["task"] for entry in app.conf.beat_schedule.values()}

    assert {"workflows.sweep", "subflows.sweep", "agents.sweep"} <= periodic
    for task in periodic | set(MAINTENANCE_TASKS) | {"agents.wake"}:
        assert app.amqp.router.route({}, task)["queue"].name == MAINTENANCE_QUEUE, task
