"""Run patches: one service for agents, the API, the web UI and the CLI.

``jsonpatch`` applies RFC 6902; it is not a policy engine and will happily rewrite history, so the
rules are ours: the result must be a valid workflow; nodes that are completed, running or waiting
keep their definition and their incoming edges; no node changes type; the agent spawn limit holds
on the patched definition; literal URLs of new or changed HTTP nodes pass the SSRF policy. A patch
is applied atomically as a new ``dag_version`` artifact, takes effect at the coordinator's next
decision (at once for an idle run), and never touches the workflow tag.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from aob_project.exceptions import AobError, Conflict, ValidationFailed
from aob_project.metrics import PATCHES
from workflows.definition.validation import validate
from workflows.engine import coordinator, events
from workflows.models import Artifact, NodeRun, Run, RunPatch

from .artifacts import artifact_store
from .definitions import apply_operations

logger = logging.getLogger(__name__)

HISTORY = (NodeRun.Status.COMPLETED, NodeRun.Status.RUNNING, NodeRun.Status.WAITING)


class PatchRejected(ValidationFailed):
    code = "patch_rejected"


class SpawnLimitExceeded(PatchRejected):
    code = "excessive_agent_nodes"


class PatchDenied(AobError):
    code = "patch_denied"
    status = 403


def agent_limit(definition: dict[str, Any]) -> int:
    return int(definition.get("metadata", {}).get("max_agent_nodes", settings.AOB_MAX_AGENT_NODES))


def check_policy(*, run: Run, before: dict[str, Any], after: dict[str, Any]) -> None:
    """Raise PatchRejected naming the rule a patched definition breaks."""
    report = validate(after)
    shaped = isinstance(after, dict) and isinstance(after.get("nodes"), list) and all(
        isinstance(n, dict) and isinstance(n.get("id"), str) and "type" in n for n in after["nodes"]) and isinstance(
        after.get("edges", []), list) and all(isinstance(e, dict) and isinstance(e.get("from"), str) and isinstance(
            e.get("to"), str) for e in after.get("edges", []))
    if not shaped:
        _invalid(report)
    old = {n["id"]: n for n in before["nodes"]}
    new = {n["id"]: n for n in after["nodes"]}
    touched = set(NodeRun.objects.filter(run=run, status__in=HISTORY).values_list("node_id", flat=True))

    def incoming(definition: dict[str, Any], node_id: str) -> list[tuple]:
        return sorted((e["from"], e.get("condition") or "") for e in definition.get("edges", []) if e["to"] == node_id)

    for node_id in sorted(touched):
        if node_id not in new:
            raise PatchRejected(f"node {node_id!r} has already run or is running and cannot be removed",
                                extra={"rule": "history_immutable", "node_id": node_id})
        if node_id in old and new[node_id] != old[node_id]:
            raise PatchRejected(f"node {node_id!r} has already run or is running and cannot be changed",
                                extra={"rule": "history_immutable", "node_id": node_id})
        if incoming(before, node_id) != incoming(after, node_id):
            raise PatchRejected(f"the incoming edges of node {node_id!r}, which has already run, cannot change",
                                extra={"rule": "history_immutable", "node_id": node_id})
    for node_id, node in new.items():
        if node_id in old and old[node_id]["type"] != node["type"]:
            raise PatchRejected(f"node {node_id!r} cannot change type ({old[node_id]['type']} → {node['type']})",
                                extra={"rule": "type_immutable", "node_id": node_id})
    if not report.valid:
        _invalid(report)
    agents = sum(1 for n in after["nodes"] if n["type"] == "agent")
    limit = agent_limit(before)
    if agents > limit and agents > sum(1 for n in before["nodes"] if n["type"] == "agent"):
        raise SpawnLimitExceeded(f"the patch would make {agents} agent nodes; the limit per run is {limit}",
                                 extra={"rule": "excessive_agent_nodes", "reason": "excessive_agent_nodes",
                                        "limit": limit, "count": agents})
    from workers.http import SSRFBlocked, check_url_static

    for node_id, node in new.items():
        url = node.get("config", {}).get("url") if node["type"] == "http" else None
        changed = node_id not in old or old[node_id] != node
        if changed and isinstance(url, str) and "$" not in url:
            try:
                check_url_static(url)
            except SSRFBlocked as exc:
                raise PatchRejected(f"node {node_id!r}: {exc.message}",
                                    extra={**exc.extra, "rule": "ssrf", "reason": exc.rule, "node_id": node_id}) from exc


def _invalid(report: Any) -> None:
    first = report.errors[0]
    raise PatchRejected(f"the patched workflow is invalid: {first.path}: {first.message}",
                        extra={"rule": first.rule, "path": first.path, "errors": [p.as_dict() for p in report.errors]})


def graph_summary(definition: dict[str, Any]) -> dict[str, Any]:
    return {"nodes": [{"id": n["id"], "type": n["type"]} for n in definition["nodes"]],
            "edges": [[e["from"], e["to"]] for e in definition.get("edges", [])]}


def run_patch_propose(*, run: Run, operations: Any, description: str = "", node_id: str = "",
                      user: User | None = None, from_agent: bool = False) -> RunPatch:
    """Validate, then apply (or hold for approval) a patch to a live run."""
    try:
        patch = _propose(run=run, operations=operations, description=description, node_id=node_id, user=user,
                         from_agent=from_agent)
        PATCHES.labels(patch.status).inc()
        return patch
    except (ValidationFailed, PatchDenied) as exc:
        _record_rejection(run, node_id, exc)
        PATCHES.labels("rejected").inc()
        raise


def _propose(*, run: Run, operations: Any, description: str, node_id: str, user: User | None,
             from_agent: bool) -> RunPatch:
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        if run.is_finished:
            raise Conflict(f"run is {run.status}; a finished run cannot be patched", code="run_finished",
                           extra={"status": run.status})
        before = Artifact.objects.values_list("content", flat=True).get(pk=run.current_artifact_id)
        after = apply_operations(before, operations)
        check_policy(run=run, before=before, after=after)
        policy = before.get("metadata", {}).get("patch_policy", "auto")
        if from_agent and policy == "deny":
            raise PatchDenied("this workflow's patch_policy is deny: agents may not patch its runs",
                              extra={"rule": "patch_policy"})
        held = from_agent and policy == "require_approval"
        run.patch_seq += 1
        patch = RunPatch.objects.create(
            run=run, seq=run.patch_seq, operations=operations, description=description, node_id=node_id,
            status=RunPatch.Status.PENDING_APPROVAL if held else RunPatch.Status.APPLIED,
            patch_artifact=artifact_store(kind=Artifact.Kind.PATCH_SET, content=operations),
            before_artifact_id=run.current_artifact_id,
            after_artifact=artifact_store(kind=Artifact.Kind.DAG_VERSION, content=after),
            proposed_by=user, applied_at=None if held else timezone.now())
        Run.objects.filter(pk=run.pk).update(patch_seq=run.patch_seq)
        if held:
            _hold_for_approval(run, patch, before, after)
        else:
            _apply(run, patch)
    return patch


def _apply(run: Run, patch: RunPatch) -> None:
    run.current_artifact_id = patch.after_artifact_id
    Run.objects.filter(pk=run.pk).update(current_artifact_id=patch.after_artifact_id)
    events.append(run.pk, run.owner_id, [("patch_applied", patch.node_id, {
        "patch_id": patch.pk, "seq": patch.seq, "op_count": len(patch.operations),
        "description": patch.description, "artifact_id": patch.after_artifact_id})])
    coordinator.refresh(run)


def _hold_for_approval(run: Run, patch: RunPatch, before: dict[str, Any], after: dict[str, Any]) -> None:
    from approvals.models import Approval

    owner = User.objects.only("username").get(pk=run.owner_id).username
    approval = Approval.objects.create(
        run=run, patch=patch, node_id=patch.node_id, kind=Approval.Kind.PATCH, approvers=[owner],
        message=patch.description or f"An agent proposes {len(patch.operations)} change(s) to this run",
        context={"operations": patch.operations, "before": graph_summary(before), "after": graph_summary(after)})
    events.append(run.pk, run.owner_id, [("approval_required", patch.node_id, {
        "run_id": str(run.pk), "node_id": patch.node_id, "approval_id": approval.pk, "kind": "patch",
        "patch_id": patch.pk, "message": approval.message, "approvers": approval.approvers, "deadline": None})])


def patch_approval_settled(*, approval: Any, approved: bool) -> None:
    """Called by approvals.services inside the decision's transaction."""
    run = Run.objects.select_for_update().get(pk=approval.run_id)
    patch = RunPatch.objects.select_for_update().get(pk=approval.patch_id)
    if patch.status != RunPatch.Status.PENDING_APPROVAL:
        return
    if not approved or run.is_finished:
        _reject_held(run, patch, "rejected by an approver" if not approved else f"run is {run.status}")
        return
    before = Artifact.objects.values_list("content", flat=True).get(pk=run.current_artifact_id)
    try:
        after = apply_operations(before, patch.operations)
        check_policy(run=run, before=before, after=after)
    except AobError as exc:
        _reject_held(run, patch, f"no longer applies: {exc.message}")
        return
    patch.after_artifact = artifact_store(kind=Artifact.Kind.DAG_VERSION, content=after)
    patch.before_artifact_id = run.current_artifact_id
    patch.status = RunPatch.Status.APPLIED
    patch.applied_at = timezone.now()
    patch.save(update_fields=["after_artifact", "before_artifact", "status", "applied_at"])
    _apply(run, patch)


def _reject_held(run: Run, patch: RunPatch, reason: str) -> None:
    patch.status = RunPatch.Status.REJECTED
    patch.reason = reason
    patch.save(update_fields=["status", "reason"])
    events.append(run.pk, run.owner_id, [("patch_rejected", patch.node_id, {
        "patch_id": patch.pk, "seq": patch.seq, "reason": reason})])
    if not run.is_finished:
        coordinator.refresh(run)  # the run may have been waiting only for this decision


def _record_rejection(run: Run, node_id: str, exc: AobError) -> None:
    """A refused patch stores nothing but leaves a visible reason in the run's events."""
    try:
        with transaction.atomic():
            owner_id = Run.objects.values_list("owner_id", flat=True).get(pk=run.pk)
            events.append(run.pk, owner_id, [("patch_rejected", node_id, {
                "reason": exc.message, "error": exc.code, "rule": exc.extra.get("rule")})])
    except Exception:  # noqa: BLE001 - the refusal itself is what the caller must see
        logger.warning("patch.rejection_event_failed", exc_info=True)
