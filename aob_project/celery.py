"""The Celery app: one queue per node type plus the coordinator's, routed by task name."""

from __future__ import annotations

import contextlib
import logging
import os

import click
from celery import Celery, bootsteps, signals
from kombu import Exchange, Queue

from aob_project import broker

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aob_project.settings")

# The queues' names and the node types' queues come from the node-type registry (workflows/registry.py),
# which imports nothing of the project but the error tree, so this module stays importable before
# Django is set up.
from workflows.registry import (
    COORDINATOR_QUEUE,
    DEFAULT_NODE_QUEUE,
    EXECUTOR_TASK,
    MAINTENANCE_QUEUE,
    NOTIFY_QUEUE,
    OUTPUT_QUEUE,
    OUTPUT_TASK,
    TRIGGERS_QUEUE,
)

# Declared up front; a node type's queue (``wf.tasks.<type>``) is declared when it is first used, in the
# same shape (``task_create_missing_queue_*`` below), because the types are known only once Django has
# loaded the apps that register them. Routing: ``dispatch.publish_now`` names the type's queue.
STATIC_QUEUES = [COORDINATOR_QUEUE, DEFAULT_NODE_QUEUE, MAINTENANCE_QUEUE, NOTIFY_QUEUE, OUTPUT_QUEUE, TRIGGERS_QUEUE]


def quorum_queues() -> bool:
    """RabbitMQ with quorum queues (replicated, durable; docs/OPERATIONS.md)? Read from the
    environment, as the settings do: importing this module must not load the settings."""
    broker = os.environ.get("AOB_BROKER_URL", "")
    quorum = os.environ.get("AOB_BROKER_QUORUM_QUEUES", "true").strip().lower() in {"1", "true", "yes", "on"}
    return broker.startswith(("amqp://", "amqps://", "pyamqp://")) and quorum


def _queue(name: str) -> Queue:
    if not quorum_queues():
        return Queue(name, Exchange(name, type="direct"), routing_key=name)
    # Quorum queues behind topic exchanges: a retry's countdown then waits in RabbitMQ (Celery's native
    # delayed delivery), not in a worker's memory, which quorum queues' per-consumer QoS cannot count.
    return Queue(name, Exchange(name, type="topic"), routing_key=name, queue_arguments={"x-queue-type": "quorum"})


broker.install()  # kombu's Redis transport, one client per pool (aob_project/broker.py)
app = Celery("aob")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [_queue(name) for name in STATIC_QUEUES]
app.conf.task_create_missing_queue_type = "quorum" if quorum_queues() else "classic"
app.conf.task_create_missing_queue_exchange_type = "topic" if quorum_queues() else "direct"
app.conf.task_default_queue = DEFAULT_NODE_QUEUE
app.conf.task_default_exchange = DEFAULT_NODE_QUEUE
app.conf.task_default_routing_key = DEFAULT_NODE_QUEUE
app.conf.task_routes = {
    "workflows.coordinate": {"queue": COORDINATOR_QUEUE},
    "workflows.sweep": {"queue": MAINTENANCE_QUEUE},
    "workflows.check_queues": {"queue": MAINTENANCE_QUEUE},
    "approvals.expire": {"queue": MAINTENANCE_QUEUE},
    # issue 18: reminders, the sub-workflow and budget backstops and retention are maintenance work;
    # a schedule's firing starts a run, up to an owner's run-start rate: its own queue (registry)
    "triggers.resend_lost": {"queue": MAINTENANCE_QUEUE},  # the backstop of firings lost on their way
    "triggers.*": {"queue": TRIGGERS_QUEUE},
    # Sending a notification waits on a mail server or a webhook, and one run may ask many people:
    # its own queue, so a backlog of them never stands between the sweeper and the maintenance queue.
    "approvals.notify": {"queue": NOTIFY_QUEUE},
    "approvals.remind": {"queue": MAINTENANCE_QUEUE},
    # A completed run's metadata.output: up to AOB_OUTPUT_TIME_LIMIT_S of one owner's evaluation,
    # never on a node type's queue in front of every user's nodes.
    OUTPUT_TASK: {"queue": OUTPUT_QUEUE},
    "subflows.*": {"queue": MAINTENANCE_QUEUE},
    "agents.sweep": {"queue": MAINTENANCE_QUEUE},
    "agents.wake": {"queue": MAINTENANCE_QUEUE},
    "agents.settle": {"queue": MAINTENANCE_QUEUE},
    "retention.*": {"queue": MAINTENANCE_QUEUE},
    # The executor task goes to its node type's queue, named at publish time from the registry.
    EXECUTOR_TASK: {"queue": DEFAULT_NODE_QUEUE},
}
# The maintenance tasks run every few seconds; without events of their own they stay out of
# Flower's task list, which then shows workflow work (AOB_FLOWER_SHOW_MAINTENANCE=true shows them).
MAINTENANCE_TASKS = ["workflows.sweep", "workflows.check_queues", "approvals.expire", "approvals.remind", "subflows.sweep", "agents.sweep",
                     "retention.prune", "triggers.resend_lost"]
if os.environ.get("AOB_FLOWER_SHOW_MAINTENANCE", "").lower() not in {"1", "true", "yes"}:
    app.conf.task_annotations = {name: {"send_events": False} for name in MAINTENANCE_TASKS}
app.autodiscover_tasks(["workflows", "workers", "approvals", "agents", "triggers", "subflows", "retention"])



class ServeNodeTypes(bootsteps.Step):
    """``celery -A aob_project worker --node-types http,agent`` (or ``AOB_WORKER_NODE_TYPES``): this
    worker consumes those types' queues, as the registry names them, and with ``-Q`` the queues named
    there too (``-Q wf.coordinator`` for a worker that also decides), so a team can run HTTP, agent
    and coordinator workers on different hosts. A name no routed type has stops the worker."""

    def __init__(self, parent: object, node_types: str | None = None, **kwargs: object) -> None:
        super().__init__(parent, **kwargs)
        names = node_types or os.environ.get("AOB_WORKER_NODE_TYPES", "")
        if not names.strip():
            return
        from workflows import registry

        typed = registry.queues(names.split(","))
        queues = parent.app.amqp.queues  # type: ignore[attr-defined]
        if queues._consume_from is None:  # no -Q: the types' queues only
            queues.select(typed)
        else:
            for name in typed:
                queues.select_add(name)


app.user_options["worker"].add(click.Option(
    ["--node-types"], default=None, help="Serve only these node types' queues (comma separated; "
    "AOB_WORKER_NODE_TYPES); add -Q for other queues such as wf.coordinator."))
app.steps["worker"].add(ServeNodeTypes)


class RecordVaultKeys(bootsteps.StartStopStep):
    """The worker's vault keys, recorded for ``aob_rotate_secrets`` (``vault.processes``) at start and
    every ``REFRESH_S`` on the worker's own timer, from its main process: its pool's processes are
    forked from it, with the same environment (a thread would run while the pool forks, and a lock it
    held then would stay held in the child)."""

    requires = ("celery.worker.components:Timer",)

    def start(self, worker: object) -> None:
        from vault import processes

        name = getattr(worker, "hostname", "worker")
        processes.announce(name)
        self.renewal = worker.timer.call_repeatedly(  # type: ignore[attr-defined]
            processes.REFRESH_S, processes.announce, (name,))

    def stop(self, worker: object) -> None:
        from vault import processes

        renewal = getattr(self, "renewal", None)
        if renewal is not None:
            renewal.cancel()
            self.renewal = None
        processes.withdraw()

    shutdown = stop


app.steps["worker"].add(RecordVaultKeys)

import aob_project.context  # noqa: E402,F401  (request-id propagation through task headers)


@signals.worker_ready.connect
def _say_prefetch_per_queue(sender: object, **_: object) -> None:
    """On quorum queues RabbitMQ has no global QoS: a worker's prefetch is counted per queue, so one
    whose every process is busy still takes a message from each of its other queues and holds it
    unstarted, though another worker of those queues is idle. One queue a worker keeps it fair
    (docs/OPERATIONS.md, RabbitMQ); said at start, where it is not."""
    consumer = getattr(sender, "task_consumer", None)
    names = sorted(queue.name for queue in getattr(consumer, "queues", None) or [])
    if quorum_queues() and len(names) > 1:
        logging.getLogger(__name__).warning("worker.prefetch_per_queue", extra={
            "queues": names, "why": "quorum queues count prefetch per queue: while every process is busy, this "
            "worker still holds messages of its other queues (up to its concurrency each) unstarted; run one "
            "queue per worker, or AOB_BROKER_QUORUM_QUEUES=false (docs/OPERATIONS.md, RabbitMQ)"})


@signals.worker_init.connect
def _reuse_db_connections(**_: object) -> None:
    """Celery's Django fixup closes the database connection before and after every task, so each
    task pays a new PostgreSQL connection (about 6 ms, two per node hop). Apply Django's own rule
    instead, as a request would: keep a connection for CONN_MAX_AGE and drop it once it is broken
    or obsolete (``close_old_connections``)."""
    for fixup in getattr(app, "_fixups", []):
        worker_fixup = getattr(fixup, "worker_fixup", None)
        if worker_fixup is not None:
            worker_fixup.close_database = lambda **kwargs: _between_tasks()


def _between_tasks() -> None:
    """Django's rule for a kept connection, and one more: no task starts inside a transaction. An
    interrupt that lands inside Django's transaction machinery (a lost lease's ``LeaseLost``, a
    soft time limit) can leave the connection marked as inside an atomic block, after which every
    later task in the process fails with "Cannot open a new connection in an atomic block"; such a
    connection is closed and its wrapper replaced, so the next task opens a clean one."""
    from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections

    if DEFAULT_DB_ALIAS in connections.settings:
        wrapper = connections[DEFAULT_DB_ALIAS]
        if wrapper.in_atomic_block:
            logging.getLogger(__name__).warning("worker.connection_reset", extra={"reason": "left in a transaction"})
            with contextlib.suppress(Exception):  # already broken; it is being thrown away
                if wrapper.connection is not None:
                    wrapper.connection.close()  # the server rolls back whatever was open
            del connections[DEFAULT_DB_ALIAS]
    close_old_connections()


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
    sender.add_periodic_task(settings.AOB_SWEEP_INTERVAL_S, sender.signature("agents.sweep"),
                             name="resume nodes paused on a budget that fits again")
    sender.add_periodic_task(settings.AOB_QUEUES_CHECK_INTERVAL_S, sender.signature("workflows.check_queues"),
                             name="say which service queues no worker consumes")
    sender.add_periodic_task(60.0, sender.signature("triggers.resend_lost"),
                             name="send again schedules' firings lost on their way")
    sender.add_periodic_task(settings.AOB_RETENTION_INTERVAL_S, sender.signature("retention.prune"),
                             name="prune finished runs past retention")
