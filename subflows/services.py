"""Sub-workflows: a ``workflow`` node runs another tag as a child run and waits for it without a
worker; the child's end resumes the node (``subflow_settle``), so does the node's ``timeout_ms``
passing first (``subflow_time_out``, which cancels the child), and a parent's end cancels its
children (``subflow_cancel_children``, in bounded batches by the ``subflows.cancel_children`` task
that the parent's end sends). Both start from the engine's run-finished hook, and again from a
periodic sweep for whatever a crash in between left undone."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from aob_project.exceptions import Conflict, NotFound
from workflows.engine import poison
from workflows.engine.execution import error_payload, resume
from workflows.engine.outputs import OutputTooLarge, refuse_large_output
from workflows.engine.sweeper import ClockTimestamp
from workflows.models import NodeRun, Run
from workflows.models.run import usage_add
from workflows.selectors import owners_in_turn

from .models import SubRun

logger = logging.getLogger(__name__)


def final_outputs(run: Run) -> dict[str, Any]:
    """The outputs of the child's last nodes (those with no out-edge) that completed, by node id.
    Their kept sizes are added up first: those are the database's text of each (a space after every
    comma and colon), at most half as long again as the canonical JSON a node's output is judged by,
    so past that much of ``AOB_MAX_NODE_OUTPUT_BYTES`` together the node's output could not be
    stored, and OutputTooLarge is raised with none read (settling a child of 16 MiB of outputs
    against a 1 MiB ceiling read and wrote 48 MiB in the coordinator first). Below it they are read,
    and ``resume`` judges them exactly."""
    from workflows.engine.coordinator import load_ir

    ir = load_ir(run)
    latest = (NodeRun.objects.filter(run=run, node_id__in=ir.ends, status=NodeRun.Status.COMPLETED)
              .order_by("node_id", "-iteration").distinct("node_id"))
    kept = sum(size or 0 for size in latest.values_list("output_bytes", flat=True))
    if kept > settings.AOB_MAX_NODE_OUTPUT_BYTES * 3 // 2:  # the canonical text is at least two thirds of it
        refuse_large_output(kept * 2 // 3)
    return dict(latest.values_list("node_id", "output"))


def subflow_settle(*, link: SubRun) -> bool:
    """Resume the parent's waiting node with the finished child's outcome; False if there was
    nothing to do (the child runs on, or the node no longer waits)."""
    child = Run.objects.get(pk=link.child_run_id)
    if child.status not in Run.FINISHED:
        return False
    with transaction.atomic():
        if child.status == Run.Status.COMPLETED:
            try:
                resumed = resume(link.parent_node_run_id, output={
                    "run_id": str(child.pk), "status": child.status, "outputs": final_outputs(child)})
            except OutputTooLarge as exc:  # measured before read: the node fails, as resume would fail it
                resumed = resume(link.parent_node_run_id, error=error_payload(exc))
        else:
            cause = (child.error or {}).get("message") if child.status == Run.Status.FAILED else "it was cancelled"
            resumed = resume(link.parent_node_run_id, error={
                "error_type": "SubWorkflowFailed" if child.status == Run.Status.FAILED else "SubWorkflowCancelled",
                "message": f"child run {child.pk} {child.status}: {cause}", "child_run_id": str(child.pk),
                "child_error": child.error, "transient": False})
        if resumed:
            if child.within is None:  # started before its spend counted against the parent as it happened
                _roll_up_usage(link.parent_run_id, child)
            SubRun.objects.filter(pk=link.pk).update(settled_at=timezone.now())
    if resumed:
        logger.info("subflow.settled", extra={"run_id": str(link.parent_run_id), "child_run_id": str(child.pk),
                                              "status": child.status})
    return resumed


def subflow_time_out(*, link: SubRun) -> bool:
    """Fail the parent's node still waiting past its ``timeout_ms`` (``link.deadline``) with
    ``SubWorkflowTimeout``, then cancel the child, in a transaction of its own (a child is locked
    before its parent, never after); False if the node no longer waits. A crash between leaves
    the child to its parent's end (the failed node fails it, which cancels its children) and to
    the sweep's pass over children of ended parents."""
    from workflows.engine.coordinator import graph
    from workflows.services.runs import run_cancel

    node_id, artifact_id = (NodeRun.objects.filter(pk=link.parent_node_run_id)
                            .values_list("node_id", "run__current_artifact_id").get())
    node = graph(artifact_id).nodes.get(node_id)
    timeout_ms = node.timeout_ms if node else None
    with transaction.atomic():
        resumed = resume(link.parent_node_run_id, error={
            "error_type": "SubWorkflowTimeout", "child_run_id": str(link.child_run_id), "timeout_ms": timeout_ms,
            "message": f"child run {link.child_run_id} did not end within the node's timeout_ms ({timeout_ms} ms): "
                       "it is cancelled", "transient": False})
        if resumed:
            SubRun.objects.filter(pk=link.pk).update(settled_at=timezone.now())
    if not resumed:
        return False
    child = Run.objects.defer("inputs").filter(pk=link.child_run_id).exclude(status__in=Run.FINISHED).first()
    if child is not None:
        try:
            run_cancel(run=child, reason="its workflow node's timeout_ms passed")
        except (Conflict, NotFound):  # it ended (or was removed) meanwhile
            pass
    logger.info("subflow.timed_out", extra={"run_id": str(link.parent_run_id), "child_run_id": str(link.child_run_id),
                                            "timeout_ms": timeout_ms})
    return True


def _roll_up_usage(parent_id: Any, child: Run) -> None:
    parent = Run.objects.select_for_update().only("usage").get(pk=parent_id)
    usage = dict(parent.usage or {})
    usage_add(usage, child.usage or {})
    Run.objects.filter(pk=parent_id).update(usage=usage)


# Children one ``subflows.cancel_children`` task cancels (each about 20 statements, some 15 ms): a
# parent with more sends the task again for the rest, and each child's own end sends its children's,
# so a tree of any size is cancelled by tasks of bounded time, never in the request or decision that
# ended the parent (300 children there: 6,000 statements, 4 s of a web process or a coordinator).
CANCEL_BATCH = 20
# Children the sweep cancels at most, over every parent it finds, should a task have been lost.
SWEEP_CANCELS = 100
# Nodes past their timeout_ms the sweep fails at most (the owners in turn).
SWEEP_TIMEOUTS = 100


def _unfinished_children(run_id: Any) -> Any:
    return Run.objects.filter(parent_link__parent_run_id=run_id).exclude(status__in=Run.FINISHED)


def subflow_cancel_children(*, run_id: Any, limit: int = CANCEL_BATCH) -> tuple[int, bool]:
    """Cancel up to ``limit`` unfinished children of a run that has ended (their own ends cancel
    theirs); the number cancelled, and whether more are left."""
    from workflows.services.runs import run_cancel

    children = list(_unfinished_children(run_id).order_by("pk").defer("inputs")[:limit + 1])
    cancelled = 0
    for child in children[:limit]:
        try:
            run_cancel(run=child, reason="its parent run ended")
            cancelled += 1
        except Exception as exc:  # noqa: BLE001 - a child that ended meanwhile (Conflict) is fine
            logger.info("subflow.cancel_skipped", extra={"child_run_id": str(child.pk), "reason": str(exc)})
    return cancelled, len(children) > limit


def cancel_children_later(run_id: Any) -> None:
    """Ask ``subflows.cancel_children`` to cancel the run's unfinished children, when it has any; a
    send that fails is left to ``subflows.sweep``."""
    from .tasks import cancel_children

    try:
        if _unfinished_children(run_id).exists():
            cancel_children.delay(str(run_id))
    except Exception:  # the sweep is the backstop
        logger.warning("subflow.cancel_not_sent", exc_info=True, extra={"run_id": str(run_id)})


def on_run_finished(run_id: str, status: str) -> None:
    """The ``workflow`` type's run-finished hook (workflows.engine.hooks)."""
    link = SubRun.objects.filter(child_run_id=run_id, settled_at__isnull=True).first()
    if link is not None:
        subflow_settle(link=link)
    if status != Run.Status.COMPLETED:
        cancel_children_later(run_id)


def subflows_sweep() -> dict[str, int]:
    """The backstop: children that ended with their parent's node still waiting, and children still
    running under a parent that ended; and the deadline of a node's ``timeout_ms``, the owners in
    turn, each one's oldest first (one owner's thousands of due timeouts took every sweep's 100)."""
    timed_out = 0
    due = SubRun.objects.filter(settled_at__isnull=True, deadline__lte=ClockTimestamp(),
                                parent_node_run__status=NodeRun.Status.WAITING)
    for link in owners_in_turn(due, owner="parent_run__owner_id",
                               order=[F("deadline").asc(), F("pk").asc()])[:SWEEP_TIMEOUTS]:
        with poison.sweep_row("subflow_time_out", run_id=link.parent_run_id, node_run_id=link.parent_node_run_id) as taken:
            if not taken:
                continue  # its handling killed the process too often (poison.sweep_row)
            timed_out += subflow_time_out(link=link)
    settled = 0
    for link in SubRun.objects.filter(settled_at__isnull=True, child_run__status__in=Run.FINISHED,
                                      parent_node_run__status=NodeRun.Status.WAITING)[:100]:
        with poison.sweep_row("subflow_settle", run_id=link.parent_run_id, node_run_id=link.parent_node_run_id) as taken:
            if not taken:
                continue  # its handling killed the process too often (poison.sweep_row)
            settled += subflow_settle(link=link)
    # (no ordering: the model's would make each parent distinct per link, the same one repeated)
    orphaned = (SubRun.objects.filter(parent_run__status__in=Run.FINISHED).exclude(child_run__status__in=Run.FINISHED)
                .order_by().values_list("parent_run_id", flat=True).distinct()[:100])
    cancelled = 0
    for run_id in orphaned:  # a parent that ended: failing it would say nothing, so only logged
        if cancelled >= SWEEP_CANCELS:
            break
        with poison.sweep_row("subflow_cancel_children", parent_run_id=str(run_id)) as taken:
            if not taken:
                continue  # its handling killed the process too often (poison.sweep_row)
            cancelled += subflow_cancel_children(run_id=run_id, limit=SWEEP_CANCELS - cancelled)[0]
    return {"settled": settled, "cancelled": cancelled, "timed_out": timed_out}
