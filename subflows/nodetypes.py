"""``workflow``: run another of the owner's workflows as a child run and wait for it.

The node parks as ``waiting`` (reason ``workflow``) in the transaction that starts the child, so no
worker waits; the child's end resumes it with ``{run_id, status, outputs}`` (the outputs of the
child's last nodes), or fails it when the child failed or was cancelled. The child runs as the
parent's owner. Its LLM spend counts against the parent's ceilings (and theirs, up the nesting) as
it happens: children side by side share what the parent has left, and raising the parent's budget
raises theirs (``agents.budget``, ``Run.within``). Cancelling or failing the parent cancels the child. Runs nest at most
``AOB_SUBWORKFLOW_MAX_DEPTH`` deep. The node's ``timeout_ms``, when it has one, bounds the wait from
the child's start: past it the node fails (``SubWorkflowTimeout``) and the child is cancelled
(``subflows_sweep``); without one the node waits as long as the child runs. A start the owner's
run limits refuse (``workflows.ratelimit``) is transient: the node's ``retry`` applies.

An unpinned tag runs its current version, except in an action a gate approved: there it runs the
version that was current when the gate was approved (its first approving vote, for a gate several
people approve; the earliest, if several gates guard it),
and so do the unpinned ``workflow`` nodes of the child runs it starts, so saving a new version
afterwards cannot change what the approvers let run."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from aob_project.exceptions import NotFound, ServiceUnavailable
from workers.http.idempotency import decided_before_acting, effect_key
from workflows.definition.gates import binding
from workflows.engine import locks, time_limit
from workflows.engine.execution import WAITING, park
from workflows.engine.sweeper import ClockTimestamp
from workflows.models import Artifact, Event, NodeRun, Run, Workflow, WorkflowVersion
from workflows.models.workflow import TAG_PATTERN
from workflows.ratelimit import RateLimited
from workflows.registry import NodeContext, NodeFailed, executor
from workflows.services.definitions import workflow_version_for_start
from workflows.services.runs import run_hand_down, run_start

from .models import SubRun
from .services import on_run_finished

CONFIG_SCHEMA = {
    "type": "object",
    "required": ["tag"],
    "properties": {
        # written out, never a reference: an upstream node's output (an agent's, a hook sender's
        # input) must not choose which of the owner's workflows runs, as the owner
        "tag": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": TAG_PATTERN,
                "description": "the owner's workflow to run, written out (no $ reference)"},
        "version": {"type": "integer", "minimum": 0, "description": "a pinned version (seq); omitted: the latest"},
        "inputs": {"type": ["object", "string"],
                   "description": "the child's inputs; values may use $inputs / $nodes references"},
    },
    "additionalProperties": False,
}

# The artifact of the version a node's child runs, as resolved at its start and kept with its input
# (never written in a definition: the schema refuses it). First of what it sends, so a source kept
# on an older release, without it, is one with no input to compare (``request_digest``).
RESOLVED = "resolved_artifact"


@executor("workflow", config_schema=CONFIG_SCHEMA, on_run_finished=on_run_finished, started_approved=lambda r: started_approved(r),
          acts_for_owner=True, times_wait=True, sends=(RESOLVED, "tag", "version", "inputs"),
          description="Runs another workflow (tag, optional pinned version) of the same owner as a child run with "
          "`inputs`, waits for it without a worker, and outputs {run_id, status, outputs} (the child's last nodes' "
          "outputs); fails when the child fails or is cancelled. Not available to agents.")
def run_workflow(ctx: NodeContext) -> Any:
    # what fails before its child starts says ``sent: false`` (``NodeRun.acted``): a replay of its run
    # goes on with the request of the run before it in the replay chain, not with this one's
    if SubRun.objects.filter(parent_node_run_id=ctx.node_run_id).exists():
        raise NodeFailed("this node's child run was already started", code="SubWorkflowStarted")
    above = SubRun.objects.filter(child_run_id=ctx.run_id).values_list("depth", flat=True).first() or 0
    depth = above + 1
    if depth > settings.AOB_SUBWORKFLOW_MAX_DEPTH:
        raise NodeFailed(f"sub-workflows nest at most {settings.AOB_SUBWORKFLOW_MAX_DEPTH} deep "
                         "(AOB_SUBWORKFLOW_MAX_DEPTH)", code="SubWorkflowTooDeep",
                         extra={"depth": depth, "limit": settings.AOB_SUBWORKFLOW_MAX_DEPTH, "transient": False,
                                "sent": False})
    tag = ctx.config["tag"]
    workflow = Workflow.objects.filter(owner_id=ctx.owner_id, tag=tag).select_related("current_version").first()
    pinned = ctx.config.get("version")
    approved_at = _approved_at(ctx) if pinned is None else None
    if workflow is None:
        version = None
    elif pinned is not None:
        version = WorkflowVersion.objects.filter(workflow=workflow, seq=pinned).first()
    elif approved_at is not None:  # the version the approvers could see: current when they approved
        version = WorkflowVersion.objects.filter(workflow=workflow, created_at__lte=approved_at).order_by("-seq").first()
    else:
        version = workflow.current_version
    if version is None:
        when = f" when this action was approved ({approved_at.isoformat()})" if approved_at and workflow else ""
        raise NodeFailed(f"the owner has no workflow {tag!r}" + (f" version {pinned}" if pinned is not None else "")
                         + when, code="SubWorkflowNotFound",
                         extra={"tag": tag, "version": pinned, "transient": False, "sent": False})
    inputs = ctx.config.get("inputs", {})
    if not isinstance(inputs, dict):
        raise NodeFailed("inputs must resolve to a JSON object", code="SubWorkflowInputs",
                         extra={"transient": False, "sent": False})
    owner = User.objects.get(pk=ctx.owner_id)
    # the node's own timeout_ms bounds the wait for its child, not this task (which starts it:
    # ``times_wait``), set and judged (subflows_sweep) by the database's clock, not by either host's
    timeout_ms = (ctx.definition or {}).get("timeout_ms")
    keyed: dict[str, Any] | None = None

    def start_child() -> list[tuple[str, str, dict[str, Any]]]:
        # the version resolved and compared below, in this transaction, never one read again: what a
        # replay's key was decided for is what starts
        # its requests' keys are named by this node's (``Run.key_run``), not by its own new id: a
        # replay that goes on with this node's unsettled work starts a child whose requests the
        # remotes know for the first child's
        child = run_start(owner=owner, artifact_id=version.artifact_id, inputs=inputs, workflow=workflow,
                          request_id=f"sub-{ctx.node_run_id}", key_origins={"": effect_key(ctx, "child")})
        # its spend counts against the parent's ceilings, its requests go only where the parent's may and
        # its agents are bound by the parent's rules (as they are now, under its lock: a person's patch
        # since this node was claimed included; patches._hand_down hands later ones down)
        Run.objects.filter(pk=child.pk).update(budget={Run.WITHIN: str(ctx.run_id)}, **run_hand_down(ctx.run_id))
        link = SubRun.objects.create(parent_run_id=ctx.run_id, parent_node_run_id=ctx.node_run_id, child_run=child,
                                     depth=depth, deadline=ClockTimestamp() + timedelta(milliseconds=timeout_ms)
                                     if timeout_ms else None)
        deadline = SubRun.objects.filter(pk=link.pk).values_list("deadline", flat=True).get() if timeout_ms else None
        return [(Event.Type.SUBWORKFLOW_STARTED, ctx.node_id, {"iteration": ctx.iteration, "child_run_id": str(child.pk),
                                                      "tag": tag, "version": version.seq, "depth": depth,
                                                      **({"as_approved_at": approved_at.isoformat()}
                                                         if approved_at else {}),
                                                      **({"idempotency_key": keyed} if keyed else {}),
                                                      **({"timeout_ms": timeout_ms, "deadline": deadline.isoformat()}
                                                         if deadline else {})})]

    try:
        # one transaction from the version's read to the child's start, the run's lock first (park's
        # order): the tag held (``workflow_version_for_start``) until the child commits, so a save
        # either waits for it or is what it runs, and a key decided for a start that did not happen
        # (a limit refused it) is not kept
        with time_limit.held(), transaction.atomic():
            locks.lock_run(ctx.run_id)
            if pinned is None and approved_at is None:
                # the tag's current version as committed, as every start of a tag reads it: read
                # earlier, a save meanwhile made the child run the version the save had replaced,
                # after the save answered (a review's find)
                try:
                    version = workflow_version_for_start(workflow=workflow)
                except NotFound as exc:
                    raise NodeFailed(f"the owner has no workflow {tag!r}: it was deleted as the child started",
                                     code="SubWorkflowNotFound",
                                     extra={"tag": tag, "transient": False, "sent": False}) from exc
            # a replay's node whose source's child did not settle starts its child under the source's
            # node's key when it starts the same one (``NodeType.sends``: the version that runs, as
            # resolved here, with the tag, pinned version and inputs; an unpinned tag saved since is
            # another child): the first child's payment in flight is then one payment outside, as an
            # http node's request is (one rule for both)
            ctx = dataclasses.replace(ctx, config={**ctx.config, RESOLVED: str(version.artifact_id)})
            ctx, keyed = decided_before_acting(ctx)
            park(ctx, start_child, reason="workflow")
    except (RateLimited, ServiceUnavailable) as exc:
        # the owner's run limits, or Redis that counts them, refused the start: nothing was written
        # (the park's transaction rolled back), and a later attempt may fit, so the node's retry applies
        raise NodeFailed(exc.message, code=exc.code, extra={**exc.extra, "transient": True, "sent": False}) from exc
    return WAITING


def _approved_at(ctx: NodeContext) -> datetime | None:
    """When the action this node is part of was approved, the earliest time: a gate of its own
    run that guards it or whose action reads what it makes, or, for a child run, whatever approved the node that started it (so a
    grandchild is bound by the parent's approval as the child is)."""
    return _node_approved_at(ctx.run_id, ctx.node_id, ctx.iteration)


def started_approved(run_id: Any) -> bool:
    """Whether ``run_id`` is a child run its parent started inside an approved action (the node that
    started it, or one above it, guarded by a gate that approved, or read by that gate's action): the whole child is what the
    approvers let run, so every patch to it is judged as changing an approved action that has begun
    (``NodeType.started_approved``; the child's version is bound at its start, ``run_workflow``)."""
    link = (SubRun.objects.filter(child_run_id=run_id)
            .values_list("parent_run_id", "parent_node_run__node_id", "parent_node_run__iteration").first())
    return link is not None and _node_approved_at(*link) is not None


def _node_approved_at(run_id: Any, node_id: str, iteration: int) -> datetime | None:
    times = []
    for _ in range(settings.AOB_SUBWORKFLOW_MAX_DEPTH + 1):
        own = _gates_approved_at(run_id, node_id, iteration)
        if own is not None:
            times.append(own)
        link = (SubRun.objects.filter(child_run_id=run_id)
                .values_list("parent_run_id", "parent_node_run__node_id", "parent_node_run__iteration").first())
        if link is None:
            break
        run_id, node_id, iteration = link
    return min(times, default=None)


def _gates_approved_at(run_id: Any, node_id: str, iteration: int) -> datetime | None:
    """When the gates of ``run_id`` that bind ``node_id`` (``gates.binding``, in the run's current
    definition: that guard it, or whose action reads what it makes) were approved, the earliest. A gate's node run completes when its approval is
    decided, by the last vote it needs; its output lists the votes that counted, each with its time,
    and the first approving one is when the action was approved: a gate that several people approve
    binds the version the first of them could see, not one saved between their votes (a gate that
    approved itself on its timer, with no vote, at its completion). Only a gate's iterations up to
    the node's own count."""
    artifact_id = Run.objects.filter(pk=run_id).values_list("current_artifact_id", flat=True).first()
    definition = Artifact.objects.filter(pk=artifact_id).values_list("content", flat=True).first() or {}
    gates = binding(definition, node_id)
    times = []
    for gate in gates:
        latest = (NodeRun.objects.filter(run_id=run_id, node_id=gate, status=NodeRun.Status.COMPLETED,
                                         iteration__lte=iteration)
                  .order_by("-iteration").values_list("finished_at", "output").first())
        if latest and isinstance(latest[1], dict) and latest[1].get("approved") is True:
            times.append(min([latest[0], *_votes_at(latest[1].get("decisions"))]))
    return min(times, default=None)


def _votes_at(decisions: Any) -> list[datetime]:
    """The times of the approving votes a gate's output lists (``approvals.services._output``)."""
    times = []
    for vote in decisions if isinstance(decisions, list) else []:
        if isinstance(vote, dict) and vote.get("approve") is True and isinstance(vote.get("at"), str):
            try:
                at = datetime.fromisoformat(vote["at"])
            except ValueError:
                continue
            if at.tzinfo is not None:
                times.append(at)
    return times
