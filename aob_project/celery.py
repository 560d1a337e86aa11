"""The Celery app: one queue per node type plus the coordinator's, routed by task name."""

from __future__ import annotations

import os

from celery import Celery, signals
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aob_project.settings")

COORDINATOR_QUEUE = "wf.coordinator"
MAINTENANCE_QUEUE = "wf.maintenance"
DEFAULT_NODE_QUEUE = "wf.tasks.default"
# Node types with a queue of their own; every other type runs on DEFAULT_NODE_QUEUE.
TYPED_QUEUES = {
    "http": "wf.tasks.http",
    "agent": "wf.tasks.agent",
    "hitl": "wf.tasks.hitl",
    "transform": "wf.tasks.transform",
}
ALL_QUEUES = [COORDINATOR_QUEUE, *TYPED_QUEUES.values(), DEFAULT_NODE_QUEUE, MAINTENANCE_QUEUE]


def queue_for_type(node_type: str) -> str:
    return TYPED_QUEUES.get(node_type, DEFAULT_NODE_QUEUE)


def executor_task_name(node_type: str) -> str:
    return f"workers.execute.{node_type}" if node_type in TYPED_QUEUES else "workers.execute.default"




def _quorum() -> bool:
    """RabbitMQ with quorum queues (replicated, durable; docs/OPERATIONS.md)? Read from the
    environment, as the settings do: importing this module must not load the settings."""
    broker = os.environ.get("AOB_BROKER_URL", "")
    quorum = os.environ.get("AOB_BROKER_QUORUM_QUEUES", "true").strip().lower() in {"1", "true", "yes", "on"}
    return broker.startswith(("amqp://", "amqps://", "pyamqp://")) and quorum


def _queue(name: str) -> Queue:
    if not _quorum():
        return Queue(name, Exchange(name, type="direct"), routing_key=name)
    # Quorum queues behind topic exchanges: a retry's countdown then waits in RabbitMQ (Celery's native
    # delayed delivery), not in a worker's memory, which quorum queues' per-consumer QoS cannot count.
    return Queue(name, Exchange(name, type="topic"), routing_key=name, queue_arguments={"x-queue-type": "quorum"})


app = Celery("aob")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [_queue(name) for name in ALL_QUEUES]
app.conf.task_default_queue = DEFAULT_NODE_QUEUE
app.conf.task_default_exchange = DEFAULT_NODE_QUEUE
app.conf.task_default_routing_key = DEFAULT_NODE_QUEUE
app.conf.task_routes = {
    "workflows.coordinate": {"queue": COORDINATOR_QUEUE},
    "workflows.sweep": {"queue": MAINTENANCE_QUEUE},
    "approvals.expire": {"queue": MAINTENANCE_QUEUE},
    # issue 18: triggers, notifications, sub-workflow backstop and retention are maintenance work
    "triggers.*": {"queue": MAINTENANCE_QUEUE},
    "approvals.notify": {"queue": MAINTENANCE_QUEUE},
    "approvals.remind": {"queue": MAINTENANCE_QUEUE},
    "subflows.*": {"queue": MAINTENANCE_QUEUE},
    "retention.*": {"queue": MAINTENANCE_QUEUE},
    **{executor_task_name(t): {"queue": q} for t, q in TYPED_QUEUES.items()},
    "workers.execute.default": {"queue": DEFAULT_NODE_QUEUE},
}
# The maintenance tasks run every few seconds; without events of their own they stay out of
# Flower's task list, which then shows workflow work (AOB_FLOWER_SHOW_MAINTENANCE=true shows them).
MAINTENANCE_TASKS = ["workflows.sweep", "approvals.expire", "approvals.remind", "subflows.sweep", "retention.prune"]
if os.environ.get("AOB_FLOWER_SHOW_MAINTENANCE", "").lower() not in {"1", "true", "yes"}:
    app.conf.task_annotations = {name: {"send_events": False} for name in MAINTENANCE_TASKS}
app.autodiscover_tasks(["workflows", "workers", "approvals", "agents", "triggers", "subflows", "retention"])

import aob_project.context  # noqa: E402,F401  (request-id propagation through task headers)


@signals.worker_init.connect
def _reuse_db_connections(**_: object) -> None:
    """Celery's Django fixup closes the database connection before and after every task, so each
    task pays a new PostgreSQL connection (about 6 ms, two per node hop). Apply Django's own rule
    instead, as a request would: keep a connection for CONN_MAX_AGE and drop it once it is broken
    or obsolete (``close_old_connections``)."""
    from django.db import close_old_connections

    for fixup in getattr(app, "_fixups", []):
        worker_fixup = getattr(fixup, "worker_fixup", None)
        if worker_fixup is not None:
            worker_fixup.close_database = lambda **kwargs: close_old_connections()


@app.on_after_finalize.connect
def _schedule(sender: Celery, **_: object) -> None:
    from django.conf import settings

    if settings.AOB_SWEEPER_ENABLED:
        sender.add_periodic_task(settings.AOB_SWEEP_INTERVAL_S, sender.signature("workflows.sweep"),
                                 name="sweep stale node runs")
    sender.add_periodic_task(settings.AOB_APPROVAL_SWEEP_INTERVAL_S, sender.signature("approvals.expire"),
                             name="expire approvals")
    sender.add_periodic_task(settings.AOB_APPROVAL_SWEEP_INTERVAL_S, sender.signature("approvals.remind"),
                             name="remind approvers")
    sender.add_periodic_task(settings.AOB_SWEEP_INTERVAL_S, sender.signature("subflows.sweep"),
                             name="settle sub-workflows")
    sender.add_periodic_task(settings.AOB_RETENTION_INTERVAL_S, sender.signature("retention.prune"),
                             name="prune finished runs past retention")
