"""Publishing node runs and coordinator messages to the broker, after commit, carrying only ids."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction

from aob_project.celery import app, quorum_queues
from workflows import registry
from workflows.definition.ir import timeout_ms_of

logger = logging.getLogger(__name__)

# The lowest of the Redis transport's priorities: a worker takes a message at it only when none of
# its queues holds one at a higher (``engine/shares.py``).
LAST = 9


@dataclass(frozen=True)
class Dispatch:
    node_run_id: int
    node_id: str
    node_type: str
    run_id: str
    timeout_ms: int | None
    countdown_s: float = 0.0
    # Appended to the task id of a message sent again under an id no revoke names (the sweeper's,
    # for a node run no worker claims: ``sweeper.UNCLAIMED``).
    renamed: str = ""


def broker_countdown(seconds: float) -> float:
    """The countdown every delayed message is published with. On quorum queues it waits in RabbitMQ
    (Celery's native delayed delivery), which counts whole seconds and refuses a wait under one
    (kombu: "countdown must be a positive number"): there a wait under a second is one. Other brokers
    wait exactly; 0 is due now."""
    return 1.0 if 0 < seconds < 1 and quorum_queues() else seconds


def task_timeout_ms(node_type: str, timeout_ms: int | None) -> int:
    """The soft time limit of a node's executor task: its ``timeout_ms``, else the default; the
    default for a type whose ``timeout_ms`` bounds its wait instead (``registry.times_wait``)."""
    return timeout_ms_of(None if registry.times_wait(node_type) else timeout_ms)


def _time_limits(node_type: str, timeout_ms: int | None) -> tuple[float, float]:
    soft = task_timeout_ms(node_type, timeout_ms) / 1000
    return soft, soft + 10


def enforces(timelimit: Any, node_type: str, timeout_ms: int | None) -> bool:
    """Whether an executor message whose Celery ``timelimit`` (``task.request.timelimit``: hard,
    soft) is the one ``publish_now`` sends for a node of ``node_type`` with ``timeout_ms``. The limits a message carries are set
    when it is published; a patch may change the node's ``timeout_ms`` while it is queued, and the
    claim (which reads the definition) is where the two are compared (``execution.send_again``). A
    message with no limit was not sent by ``publish_now``: sending it again would not give it one."""
    if not timelimit or timelimit[1] is None:
        return True
    soft, hard = _time_limits(node_type, timeout_ms)
    return tuple(timelimit) == (hard, soft)


def task_id(run_id: Any, node_run_id: int) -> str:
    """Every executor message of a node run carries this id, so cancel can revoke it by id without
    storing which messages went out (the first, a retry's, the sweeper's). Workers remember a revoked
    id for hours and drop every message that carries it, so no other node run may ever get it: a
    primary key alone comes back when its sequence restarts (a flush, a restore), the run's UUID
    does not (tests/engine/test_task_ids.py)."""
    return f"aob-node-run-{node_run_id}-{run_id}"


def revoke_after_commit(run_id: Any, node_run_ids: Iterable[int]) -> None:
    """Revoke the executor messages of ``run_id``'s node runs that will never run (the run was
    cancelled): a worker drops them unclaimed. A running one is stopped by its heartbeat
    (``heartbeat.LeaseLost``)."""
    ids = [task_id(run_id, i) for i in node_run_ids]
    if not ids:
        return

    def send() -> None:
        try:
            app.control.revoke(ids)
        except Exception:
            logger.warning("dispatch.revoke_failed", exc_info=True)

    transaction.on_commit(send)


def publish_now(item: Dispatch) -> None:
    soft, hard = _time_limits(item.node_type, item.timeout_ms)
    app.send_task(
        registry.EXECUTOR_TASK,
        args=[item.node_run_id],
        task_id=task_id(item.run_id, item.node_run_id) + item.renamed,
        queue=registry.queue_for(item.node_type),
        soft_time_limit=soft,
        time_limit=hard,
        countdown=broker_countdown(item.countdown_s),
        # Not immutable: Celery prepends the executor's return value (a ``Completion`` as a dict,
        # or a status word): ``workflows.coordinate(result, node_run_id)``.
        link=app.signature("workflows.coordinate", args=[item.node_run_id],
                           # what Flower shows for the arguments, instead of a repr of the completion
                           argsrepr=f"[<completion>, {item.node_run_id}]"),
    )


def publish_after_commit(items: Iterable[Dispatch]) -> None:
    items = list(items)
    if not items:
        return

    def send() -> None:
        for item in items:
            try:
                publish_now(item)
            except Exception:  # the sweeper re-publishes anything left queued
                logger.exception("dispatch.publish_failed", extra={"node_run_id": item.node_run_id})

    transaction.on_commit(send)


def coordinate_after_commit(node_run_ids: Iterable[int], over_share: bool = False) -> None:
    ids = list(node_run_ids)

    def send() -> None:
        for node_run_id in ids:
            coordinate_now(node_run_id, over_share=over_share)

    if ids:
        transaction.on_commit(send)


def coordinate_now(node_run_id: int, over_share: bool = False) -> None:
    coordinate_later(node_run_id, over_share=over_share)


def coordinate_later(node_run_id: int, countdown_s: float = 0.0, over_share: bool = False) -> None:
    try:
        # the one signature ``(result, node_run_id)``, with no executor result
        app.send_task("workflows.coordinate", args=[None, node_run_id], countdown=broker_countdown(countdown_s),
                      **_lane(over_share))
    except Exception:
        logger.exception("dispatch.coordinate_failed", extra={"node_run_id": node_run_id})


def _lane(over_share: bool) -> dict[str, Any]:
    """How a decision is asked for: as any other, or for an owner past its share of the coordinator,
    behind every other message (``engine/shares.py``), marked so it is decided when it comes."""
    return {"kwargs": {"over_share": True}, "priority": LAST} if over_share else {}


def compute_output_now(run_id: str) -> None:
    """Ask a worker to compute a completed run's ``metadata.output`` (``services.runs.run_output_store``),
    on its own queue (``registry.OUTPUT_QUEUE``, routed in ``aob_project/celery.py``)."""
    soft = settings.AOB_OUTPUT_TIME_LIMIT_S
    try:
        app.send_task(registry.OUTPUT_TASK, args=[run_id], soft_time_limit=soft, time_limit=soft + 10)
    except Exception:  # the sweeper asks again for an output still pending
        logger.exception("dispatch.output_failed", extra={"run_id": run_id})


def compute_output_after_commit(run_id: str) -> None:
    transaction.on_commit(lambda: compute_output_now(run_id))
