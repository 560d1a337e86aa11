"""Periodic work never lands on a node type's queue: every task beat sends from code, and the
budget's wake, is routed to the maintenance queue (a task left unrouted goes to the default node
queue, behind node work). Approval notifications have a queue of their own, which every way of
starting workers consumes, and so has the computation of a run's output."""

from __future__ import annotations

from pathlib import Path

import yaml

from aob.launcher import worker_command
from aob_project.celery import MAINTENANCE_TASKS, app
from workflows import registry
from workflows.registry import MAINTENANCE_QUEUE, NOTIFY_QUEUE, OUTPUT_QUEUE, SERVICE_QUEUES, TRIGGERS_QUEUE

ROOT = Path(__file__).resolve().parents[2]


def test_every_periodic_task_of_the_engine_goes_to_the_maintenance_queue() -> None:
    app.finalize()
    periodic = {entry["task"] for entry in app.conf.beat_schedule.values()}

    assert {"workflows.sweep", "subflows.sweep", "agents.sweep"} <= periodic
    for task in periodic | set(MAINTENANCE_TASKS) | {"agents.wake"}:
        assert app.amqp.router.route({}, task)["queue"].name == MAINTENANCE_QUEUE, task


def test_notifications_and_outputs_go_to_queues_of_their_own_that_every_worker_set_up_consumes() -> None:
    """A run that asks thousands of people fills the notification queue, never the maintenance
    queue the sweeper recovers every tenant's lost work from; one owner's heavy ``metadata.output``
    (up to a minute each) waits on the output queue, never in front of every user's transform nodes."""
    app.finalize()

    assert app.amqp.router.route({}, "approvals.notify")["queue"].name == NOTIFY_QUEUE != MAINTENANCE_QUEUE
    assert app.amqp.router.route({}, "workflows.run_output")["queue"].name == OUTPUT_QUEUE
    # a schedule's firing starts a run (0.65 s with 1,000 entry nodes), up to each owner's start rate
    assert app.amqp.router.route({}, "triggers.fire_schedule")["queue"].name == TRIGGERS_QUEUE != MAINTENANCE_QUEUE
    assert OUTPUT_QUEUE not in registry.queues()  # no node type's queue
    assert set(SERVICE_QUEUES) <= set(registry.all_queues())  # make up's worker, the tests' workers
    probe = {"queues": registry.all_queues(), "service_queues": list(SERVICE_QUEUES)}
    by_type = worker_command(probe, "http")  # make up --node-types
    assert set(by_type[by_type.index("-Q") + 1].split(",")) == set(SERVICE_QUEUES)
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    consumed = {queue for service in services.values() for i, part in enumerate(service.get("command") or [])
                if i and service["command"][i - 1] == "-Q" for queue in part.split(",")}
    assert set(SERVICE_QUEUES) <= consumed
