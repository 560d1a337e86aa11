"""Read selectors: what a user may see, and the shapes the API and UI draw."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef, Q, QuerySet

from aob_project.exceptions import NotFound
from workflows.engine.coordinator import load_ir
from workflows.models import Artifact, Event, NodeRun, PatchRefusal, Run, RunPatch, Workflow, WorkflowVersion


def workflows_visible(*, user: User, scope: str = "user") -> QuerySet[Workflow]:
    qs = Workflow.objects.select_related("current_version__artifact", "owner")
    if scope in ("global", "all") and user.is_staff:
        return qs
    return qs.filter(owner=user)


def runs_visible(*, user: User) -> QuerySet[Run]:
    from approvals.models import Approval

    approver_of = Approval.objects.filter(run=OuterRef("pk"), approvers__contains=[user.username])
    return Run.objects.filter(Q(owner=user) | Q(Exists(approver_of)))


def run_get(*, user: User, run_id: Any) -> Run:
    try:
        return runs_visible(user=user).get(pk=run_id)
    except (Run.DoesNotExist, ValueError, TypeError, ValidationError):  # ValidationError: not a UUID
        raise NotFound("run not found") from None


def artifact_get(*, user: User, artifact_id: str) -> Artifact:
    visible = (
        WorkflowVersion.objects.filter(artifact_id=artifact_id, workflow__owner=user).exists()
        or Run.objects.filter(Q(base_artifact_id=artifact_id) | Q(current_artifact_id=artifact_id), owner=user).exists()
        or NodeRun.objects.filter(output_artifact_id=artifact_id, run__owner=user).exists()
        or RunPatch.objects.filter(Q(patch_artifact_id=artifact_id) | Q(after_artifact_id=artifact_id),
                                   run__owner=user).exists()
    )
    if not visible:
        raise NotFound("artifact not found")
    return Artifact.objects.get(pk=artifact_id)


def _ms(start: Any, end: Any) -> int | None:
    if start is None or end is None:
        return None
    return max(0, int((end - start).total_seconds() * 1000))


def _passthrough(output: Any) -> bool:
    """The marker of a node skipped for want of an executor; any JSON value is a real output."""
    return isinstance(output, dict) and bool(output.get("_passthrough"))


def run_details(*, run: Run) -> dict[str, Any]:
    ir = load_ir(run)
    base = Artifact.objects.values_list("content", flat=True).get(pk=run.base_artifact_id)
    current = base if run.current_artifact_id == run.base_artifact_id else Artifact.objects.values_list(
        "content", flat=True).get(pk=run.current_artifact_id)
    base_ids = {n["id"] for n in base["nodes"]}
    by_node: dict[str, list[NodeRun]] = {}
    for nr in NodeRun.objects.filter(run=run).order_by("node_id", "iteration"):
        by_node.setdefault(nr.node_id, []).append(nr)
    nodes = []
    for node_id, node in ir.nodes.items():
        runs = by_node.get(node_id, [])
        last = runs[-1] if runs else None
        nodes.append({
            "node_id": node_id,
            "type": node.type,
            "added_by_patch": node_id not in base_ids,
            "status": last.status if last else "not_executed",
            "input": last.input if last else None,
            "output": None if last is None or _passthrough(last.output) else last.output,
            "output_artifact_id": last.output_artifact_id if last else None,
            "error": last.error if last else None,
            "attempts": last.attempts if last else 0,
            "attempt_log": last.attempt_log if last else [],
            "iterations": len(runs),
            "reused": last.reused if last else False,
            "queued_at": last.queued_at if last else None,
            "started_at": last.started_at if last else None,
            "finished_at": last.finished_at if last else None,
            "queue_time_ms": _ms(last.queued_at, last.started_at) if last else None,
            "execution_time_ms": _ms(last.started_at, last.finished_at) if last else None,
            "total_duration_ms": _ms(last.queued_at, last.finished_at) if last else None,
            "usage": last.usage if last else {},
            "wait_reason": last.wait_reason if last else "",
        })
    patches = [{"id": p.pk, "seq": p.seq, "status": p.status, "description": p.description, "node_id": p.node_id,
                "op_count": len(p.operations), "operations": p.operations, "artifact_id": p.after_artifact_id,
                "created_at": p.created_at} for p in RunPatch.objects.filter(run=run).order_by("seq")]
    refusals = PatchRefusal.objects.filter(run=run).select_related("proposed_by").order_by("-created_at", "-id")[:50]
    return {"run": run, "base_definition": base, "current_definition": current, "nodes": nodes, "patches": patches,
            "patch_refusals": list(refusals)}


def events_after(*, run: Run, after: int = 0, limit: int = 1000) -> QuerySet[Event]:
    return Event.objects.filter(run=run, seq__gt=after).order_by("seq")[:limit]
