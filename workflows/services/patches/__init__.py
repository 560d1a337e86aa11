"""Run patches: one service for agents, the API, the web UI, the admin and the CLI.

``jsonpatch`` applies RFC 6902; it is not a policy engine and will happily rewrite history, so the
rules are ours, in ``policy`` (one validator, judged on the definitions before and after). A patch
is applied atomically as a new ``dag_version`` artifact, takes effect at the coordinator's next
decision (at once for an idle run), and never touches the workflow tag. A refused patch stores
nothing of the run's: its definition, patch list, node runs and events stay as they were; the
refusal itself is kept apart (``PatchRefusal``) for the run page and the admin.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F
from django.db.models.expressions import RawSQL
from django.utils import timezone

from aob_project.exceptions import AobError, Conflict, ValidationFailed
from aob_project.metrics import PATCHES
from workflows import registry
from workflows.definition import gates
from workflows.definition.ir import InvalidDefinition, compile_definition
from workflows.engine import coordinator, events, planner
from workflows.models import Artifact, Event, NodeRun, PatchRefusal, Run, RunPatch, canonical_json, size_of
from workflows.selectors import run_owner_check

from ..artifacts import artifact_store
from ..definitions import apply_operations
from ..idempotency import Recorder
from ..runs import handed_down, run_hand_down, run_locked, run_rules_above, runs_below, runs_below_locked
from .policy import (
    MAX_OPERATIONS,
    PatchDenied,
    PatchRejected,
    Proposer,
    Rule,
    RunState,
    SpawnLimitExceeded,
    Verdict,
    agent_limit,
    judge,
    patch_policy,
)
from .provenance import NOBODY, agent_written, authored_base_id, patch_wrote, persons_steps

__all__ = [
    "DESCRIPTION_MAX_CHARS", "MAX_OPERATIONS", "PatchDenied", "PatchRejected", "Proposer", "Rule",
    "SpawnLimitExceeded", "agent_limit", "graph_summary", "patch_approval_settled", "refusals", "run_patch_propose", "run_state",
]

logger = logging.getLogger(__name__)


def graph_summary(definition: dict[str, Any]) -> dict[str, Any]:
    return {"nodes": [{"id": n["id"], "type": n["type"]} for n in definition["nodes"]],
            "edges": [[e["from"], e["to"]] for e in definition.get("edges", [])]}


# A patch's description, whoever proposes it (a person through the API, an agent's tool call): kept
# in the patch, its patch_applied event and, for a held patch, the approval people read.
DESCRIPTION_MAX_CHARS = 10_000


def run_patch_propose(*, run: Run, operations: Any, description: str = "", node_id: str = "",
                      user: User | None = None, from_agent: bool = False, proposal_key: str = "",
                      record: Recorder | None = None, base_artifact_id: str | None = None) -> RunPatch:
    """Judge, then apply (or hold for approval) a patch to a live run. A patch that names a
    proposing node (``node_id``) is an agent's, whoever carries it. ``proposal_key`` (an agent's
    node run, attempt and turn) makes a repeated proposal return the patch it already made;
    ``record(patch)`` is called in the patch's transaction (a request's ``Idempotency-Key``).
    ``base_artifact_id`` is the definition the operations were written against (the run's
    ``current_artifact_id`` as its proposer read it): when the run has another now, the patch is
    refused (``_check_base``). None: they apply to whatever is current.

    A ``user`` must be the run's owner (``run_owner_check``); no refusal is recorded for anyone
    else, whose patch is never judged. ``user=None`` is the run's own agent, or the system."""
    if user is not None:
        run_owner_check(run=run, user=user, action="patch it")
    proposer = Proposer(agent=from_agent or bool(node_id), node_id=node_id)
    try:
        if len(description) > DESCRIPTION_MAX_CHARS:
            raise ValidationFailed(f"description is {len(description)} characters; at most {DESCRIPTION_MAX_CHARS}",
                                   code="invalid_description", extra={"field": "description", "rule": "max_length",
                                                                      "limit": DESCRIPTION_MAX_CHARS})
        patch = _propose(run=run, operations=operations, description=description, proposer=proposer, user=user,
                         proposal_key=proposal_key, record=record, base_artifact_id=base_artifact_id)
        PATCHES.labels(patch.status).inc()
        return patch
    except (ValidationFailed, PatchDenied) as exc:
        _record_refusal(run, proposer, user, operations, exc)
        PATCHES.labels("rejected").inc()
        raise


def run_state(run: Run) -> RunState:
    """What the policy reads of a locked run."""
    # no outputs read: a loop's 48 passes of 1.4 MB made every patch (an empty one too) read and
    # parse 68 MB in the web process, its run locked (a red team's find); a gate's decision is one
    # key of its latest output, judged in the database
    # every pass of a node is read, not only its latest: a gate in a loop's body waits, or approved,
    # once per pass, and a patch to its action is judged for each (``check_approved_actions``)
    latest: dict[str, str] = {}
    started: set[str] = set()
    completed: list[int] = []  # the gates' completed node runs: did they approve?
    for pk, node_id, node_type, status, attempts in (NodeRun.objects.filter(run=run).order_by("iteration", "id")
                                                     .values_list("pk", "node_id", "node_type", "status", "attempts")):
        if latest.get(node_id) != NodeRun.Status.WAITING:  # one pass waits: the node waits
            latest[node_id] = status
        if NodeRun.begun(status, attempts):
            started.add(node_id)
        if node_type == gates.GATE and status == NodeRun.Status.COMPLETED:
            completed.append(pk)
    # a replay's node that goes on with its source's unsettled work (``Run.key_origins``: its request
    # may have taken effect there) has begun, as one queued for its retry has, before its first attempt
    # here: changed, it went out under the source's key and the payee answered the first request's answer
    started |= Run.going_on_nodes(run.key_origins)
    base = Artifact.objects.values_list("content", flat=True).get(pk=authored_base_id(
        run.pk, base_artifact_id=run.base_artifact_id))
    approved = set(NodeRun.objects.filter(pk__in=completed, output__approved=True)
                   .values_list("node_id", flat=True)) if completed else set()
    owner = User.objects.values_list("username", flat=True).get(pk=run.owner_id)
    bound = run.within is not None and any(spec.started_approved(run.pk) for spec in registry.catalogue().values()
                                           if spec.started_approved is not None)
    # a replay (``replay_from_node``, kept when its source goes) inherits what its source's agents wrote
    written = agent_written(run.pk) if run.patch_seq or run.replay_from_node else NOBODY
    # the steps a person set since the run began that an agent wrote since, or that are gone (an
    # agent may add one again): each as that person left it
    people = {*written.persons, *written.inherited_persons}
    here: set[str] = set()
    if people:
        here = set(Artifact.objects.filter(pk=run.current_artifact_id).values_list(
            RawSQL("jsonb_path_query_array(content, '$.nodes[*].id')", ()), flat=True).first() or ())
    persons_set = persons_steps(written, {node_id for node_id in people if node_id in written.nodes or node_id not in here})
    return RunState(statuses=latest, started=frozenset(started),
                    approved=frozenset(approved), base=base, owner=owner, spawned=run.spawned_agents,
                    patches=run.patch_seq, bound=bound, hosts_above=run.hosts_above, rules_above=run_rules_above(run),
                    agents_wrote=frozenset(written.nodes), persons_set=persons_set)


def _propose(*, run: Run, operations: Any, description: str, proposer: Proposer, user: User | None,
             proposal_key: str, record: Recorder | None, base_artifact_id: str | None = None) -> RunPatch:
    with transaction.atomic():
        # the runs below are taken before the run, as every change of both takes them (_hand_down)
        below = runs_below_locked(run.pk) if not proposer.agent and _may_bind(operations) else None
        run = run_locked(run.pk, action="patch it")
        if record is not None:
            record.check()  # the same request, retried: its first may have committed while this one waited
        if proposal_key:
            already = RunPatch.objects.filter(run=run, proposal_key=proposal_key).first()
            if already is not None:
                return already  # a resumed agent attempt proposing what it proposed before
        if run.is_finished:
            raise Conflict(f"run is {run.status}; a finished run cannot be patched", code="run_finished",
                           extra={"status": run.status})
        _check_base(run, base_artifact_id)  # under the run's lock: two patches from one read cannot both pass
        before = Artifact.objects.values_list("content", flat=True).get(pk=run.current_artifact_id)
        verdict = judge(before=before, operations=operations, proposer=proposer, state=run_state(run))
        if not operations:
            noop = _noop(run, description, proposer)
            if record is not None:
                record(noop)
            return noop
        held = proposer.agent and patch_policy(before, run_rules_above(run)) == "require_approval"
        run.patch_seq += 1
        patch = RunPatch.objects.create(
            run=run, seq=run.patch_seq, operations=operations, op_count=len(operations), description=description,
            node_id=proposer.node_id,
            status=RunPatch.Status.PENDING_APPROVAL if held else RunPatch.Status.APPLIED, proposal_key=proposal_key,
            patch_artifact=artifact_store(kind=Artifact.Kind.PATCH_SET, content=operations),
            before_artifact_id=run.current_artifact_id,
            after_artifact=artifact_store(kind=Artifact.Kind.DAG_VERSION, content=verdict.after),
            proposed_by=user, applied_at=None if held else timezone.now(),
            wrote={} if held else patch_wrote(before, verdict.after))
        Run.objects.filter(pk=run.pk).update(patch_seq=run.patch_seq)
        if held:
            _hold_for_approval(run, patch, before, verdict.after)
        else:
            _apply(run, patch, verdict, before, below)
        if record is not None:
            record(patch)
    return patch


def _check_base(run: Run, base_artifact_id: str | None) -> None:
    """Refuse operations written against a definition the run no longer has. JSON Pointers name
    array positions, and an agent may reorder ``/nodes`` (or add and remove nodes) at will: once
    another patch changed the definition, ``/nodes/2`` may be another node, and the operations
    would change what their writer never meant to. A held agent patch is bound the same way
    (``_stale``); a person's is bound when it says what it was written against. Artifacts are
    content-addressed: a definition changed and changed back has its id again, and the positions
    its writer read."""
    if base_artifact_id is None or base_artifact_id == run.current_artifact_id:
        return
    raise Conflict(f"the run's definition is {run.current_artifact_id} now; these operations were written against "
                   f"{base_artifact_id}, and another patch changed it since (its array positions may name other "
                   "nodes now): read the run's definition again, and send the operations written against it with "
                   "its current_artifact_id as base_artifact_id", code=STALE,
                   extra={"field": "base_artifact_id", "rule": STALE, "base_artifact_id": base_artifact_id,
                          "current_artifact_id": run.current_artifact_id})


def _noop(run: Run, description: str, proposer: Proposer) -> RunPatch:
    """RFC 6902 allows an empty patch: it changes nothing, so nothing is stored."""
    return RunPatch(run=run, seq=None, operations=[], description=description, node_id=proposer.node_id,
                    status=RunPatch.Status.NOOP, before_artifact_id=run.current_artifact_id,
                    after_artifact_id=run.current_artifact_id, patch_artifact_id=None, created_at=timezone.now())


def _apply(run: Run, patch: RunPatch, verdict: Verdict, before: dict[str, Any], below: list[Run] | None = None) -> None:
    """``below``: the runs below, locked before the run (a person's patch that may change its
    ``allowed_hosts``)."""
    run.current_artifact_id = patch.after_artifact_id
    Run.objects.filter(pk=run.pk).update(current_artifact_id=patch.after_artifact_id,
                                         spawned_agents=F("spawned_agents") + verdict.spawned)
    if _hands_down(run, before) != _hands_down(run, verdict.after):
        _hand_down(run, below)
    events.append(run.pk, run.owner_id, [(Event.Type.PATCH_APPLIED, patch.node_id, {
        "patch_id": patch.pk, "seq": patch.seq, "op_count": len(patch.operations),
        "description": patch.description, "artifact_id": patch.after_artifact_id})])
    if verdict.reopen or verdict.revote:
        below = {gate: _below(before, gate) | _below(verdict.after, gate) for gate in verdict.reopen}
        _gate().void_approvals(run=run, reopen=verdict.reopen, revote=verdict.revote, below=below,
                                          patch_seq=patch.seq)
    coordinator.refresh(run)


def _may_bind(operations: Any) -> bool:
    """Whether a patch may change what the run hands down (``metadata``: its ``allowed_hosts``, its
    agent rules), read before it is judged: its runs below are locked first if so."""
    def touches(path: Any) -> bool:
        return isinstance(path, str) and (path in ("", "/metadata") or path.startswith("/metadata/"))
    return isinstance(operations, list) and any(
        isinstance(op, dict) and (touches(op.get("path")) or touches(op.get("from"))) for op in operations)


def _hands_down(run: Run, definition: dict[str, Any]) -> dict[str, Any]:
    return handed_down(definition.get("metadata"), hosts_above=run.hosts_above, rules_above=run_rules_above(run))


def _hand_down(run: Run, below: list[Run] | None) -> None:
    """What a run hands down changed (a person's patch of its ``allowed_hosts`` or agent rules: an
    agent's cannot): the runs its ``workflow`` nodes started, and theirs, run under it from their
    next node on (``Run.hosts_above``, read by each claim; ``Run.rules_above``, by each patch); a
    child started after this commits reads it (``run_workflow``, under the run's lock). ``below``
    was locked before the run; a child started between that and the run's lock would be locked
    after its parent, against the order every other change keeps (agents.budget's): the patch is
    refused, to be sent again."""
    if below is None or {str(pk) for pk in runs_below(run.pk)} - {str(r.pk) for r in below}:
        raise Conflict("a sub-workflow of this run started while the patch waited for it: send the patch again",
                       code="run_busy", extra={"rule": "runs_below_changed"})
    metadata = dict(Artifact.objects.filter(pk__in={r.current_artifact_id for r in below})
                    .values_list("pk", "content__metadata"))
    down = {str(run.pk): run_hand_down(run.pk)}
    for child in reversed(below):  # the deepest first: handed down from the top
        if str(child.within) not in down:
            continue  # its parent ended (a child outlives it only while being cancelled)
        fields = down[str(child.within)]
        Run.objects.filter(pk=child.pk).update(**fields)
        down[str(child.pk)] = handed_down(metadata.get(child.current_artifact_id), **fields)


def _below(definition: dict[str, Any], gate: str) -> set[str]:
    adjacency = gates.successors(definition)
    return gates.reachable(adjacency, adjacency.get(gate, []), avoid=gate)


def _hold_for_approval(run: Run, patch: RunPatch, before: dict[str, Any], after: dict[str, Any]) -> None:
    """The human-gate type (``hitl``, registered by the approvals app) holds the patch for the run's
    owner: an approval of kind ``patch``, its notifications and ``approval_required``."""
    _gate().hold_patch(run=run, patch=patch, before=graph_summary(before), after=graph_summary(after))


def _gate() -> Any:
    spec = registry.get(gates.GATE)
    if spec is None or spec.hold_patch is None or spec.void_approvals is None:
        raise Conflict("this installation has no human gate (the approvals app) to hold or void approvals")
    return spec


def patch_approval_settled(*, approval: Any, approved: bool) -> None:
    """Called by approvals.services inside the decision's transaction. A held patch applies only to
    the definition its approver saw (``_stale``); it is then judged again, as the agent's it is,
    against the run's state as it is now (a node may have started since)."""
    run = Run.objects.select_for_update().get(pk=approval.run_id)
    patch = RunPatch.objects.select_for_update().get(pk=approval.patch_id)
    if patch.status != RunPatch.Status.PENDING_APPROVAL:
        return
    if not approved or run.is_finished:
        _reject_held(run, patch, "rejected by an approver" if not approved else f"run is {run.status}")
        return
    stale = _stale(run, patch)
    if stale and not _commutes(run, patch):
        _reject_held(run, patch, stale, rule=STALE)
        return
    before = Artifact.objects.values_list("content", flat=True).get(pk=run.current_artifact_id)
    try:
        verdict = judge(before=before, operations=patch.operations,
                        proposer=Proposer(agent=True, node_id=patch.node_id), state=run_state(run))
    except AobError as exc:
        _reject_held(run, patch, f"no longer applies: {exc.message}")
        return
    patch.after_artifact = artifact_store(kind=Artifact.Kind.DAG_VERSION, content=verdict.after)
    patch.status = RunPatch.Status.APPLIED
    patch.applied_at = timezone.now()
    patch.wrote = patch_wrote(before, verdict.after)  # against the definition it applies to now
    patch.save(update_fields=["after_artifact", "status", "applied_at", "wrote"])
    _apply(run, patch, verdict, before)


# The rule a held patch refused as stale names, in its patch_rejected event.
STALE = "stale_base"


def _stale(run: Run, patch: RunPatch) -> str:
    """Why a held patch no longer applies to what its approver saw, or "" when it still does.

    The approver read the operations and the graph before and after them, computed on the
    definition the patch was held against (``before_artifact``). JSON Pointers name array
    positions: once another patch changes the run's definition (a node moved, removed or added),
    ``/nodes/3`` may be another node, and re-applying the operations to the new definition would
    change what nobody approved. Applying the stored ``after`` instead would silently undo the
    change made in between. So the patch applies only to the very definition it was held against
    (artifacts are content-addressed: the same definition has the same id); otherwise it is
    refused, and must be proposed again against the run as it is."""
    if run.current_artifact_id == patch.before_artifact_id:
        return ""
    since = list(RunPatch.objects.filter(run=run, status=RunPatch.Status.APPLIED, applied_at__gt=patch.created_at)
                 .order_by("applied_at").values_list("seq", flat=True)[:6])  # named in the reason: a few
    named = ", ".join(map(str, since[:5])) + (" and more" if len(since) > 5 else "")
    changed = f" (patch{'es' if len(since) > 1 else ''} {named} applied since)" if since else ""
    return (f"stale: the run's definition changed after this patch was held{changed}; its operations were "
            "approved against the definition shown with it, and may name other nodes now, so it was not applied")


_COMMUTE_AT_MOST = 20  # patches applied since a held one that are replayed to see whether it still applies


def _commutes(run: Run, patch: RunPatch) -> bool:
    """Whether a held patch, applied to the run's definition as it is now, makes exactly what its
    approver approved with the patches applied since on top (two agents' patches adding a node
    each, say): then its operations name what they named when it was held, and it may apply. The
    definitions are compared as the engine reads them (``_as_read``)."""
    since = list(RunPatch.objects.filter(run=run, status=RunPatch.Status.APPLIED, applied_at__gt=patch.created_at)
                 .order_by("applied_at").values_list("patch_artifact_id", flat=True)[:_COMMUTE_AT_MOST + 1])
    if not since or len(since) > _COMMUTE_AT_MOST or None in since or patch.patch_artifact_id is None:
        return False
    contents = dict(Artifact.objects.filter(pk__in=[*since, patch.patch_artifact_id, patch.after_artifact_id,
                                                    run.current_artifact_id]).values_list("pk", "content"))
    try:
        here = apply_operations(contents[run.current_artifact_id], contents[patch.patch_artifact_id])
        there = contents[patch.after_artifact_id]
        for artifact_id in since:
            there = apply_operations(there, contents[artifact_id])
        return _as_read(here) == _as_read(there)
    except (AobError, KeyError, InvalidDefinition):  # one the engine would not run commutes with none
        return False


def _as_read(definition: Any) -> Any:
    """A definition as the engine reads it (InvalidDefinition if it would not run it): its nodes by
    id (the order of ``/nodes`` means nothing), each node's edges out as the planner routes them
    (``planner.Routes.reading``: the order of its branch rules counts, that of its other edges does
    not), and every edge as written (a label, a loop's jump back), in no order."""
    ir = compile_definition(definition)
    nodes = {n["id"]: n for n in definition["nodes"]}
    routes = {node_id: planner.routes(ir, node_id).reading() for node_id in ir.nodes}
    edges = sorted(json.dumps(e, sort_keys=True) for e in definition.get("edges", []))
    rest = {k: v for k, v in definition.items() if k not in ("nodes", "edges")}
    return nodes, routes, edges, rest


def _reject_held(run: Run, patch: RunPatch, reason: str, rule: str = "", *, ending: bool = False) -> None:
    patch.status = RunPatch.Status.REJECTED
    patch.reason = reason
    patch.save(update_fields=["status", "reason"])
    events.append(run.pk, run.owner_id, [(Event.Type.PATCH_REJECTED, patch.node_id, {
        "patch_id": patch.pk, "seq": patch.seq, "reason": reason, **({"rule": rule} if rule else {})})])
    if not (ending or run.is_finished):
        coordinator.refresh(run)  # the run may have been waiting only for this decision


def patches_held_end(*, run_id: Any, status: str) -> None:
    """A run that failed or was cancelled decides none of its held patches: each is rejected saying
    so, in the transaction that ends the run (they stayed ``pending_approval`` for ever, beside
    their approvals cancelled, with no ``patch_rejected``)."""
    held = list(RunPatch.objects.filter(run_id=run_id, status=RunPatch.Status.PENDING_APPROVAL).order_by("seq"))
    if held:
        run = Run.objects.get(pk=run_id)
        for patch in held:
            _reject_held(run, patch, f"run is {status}", ending=True)


_KEPT_OPERATIONS_BYTES = 64 * 1024


def _storable(value: Any) -> Any:
    """``value`` as PostgreSQL stores it: JSON without NUL (which jsonb and text refuse), bounded."""
    try:
        text = canonical_json(value)
    except (TypeError, ValueError):
        return {"unreadable": True}
    size = size_of(text)  # bytes, as the budgets count (a character may be four)
    if size > _KEPT_OPERATIONS_BYTES:
        return {"truncated": True, "bytes": size}
    return json.loads(text.replace("\\u0000", "\\ufffd"))


def _record_refusal(run: Run, proposer: Proposer, user: User | None, operations: Any, exc: AobError) -> None:
    """A refused patch changes nothing of the run; the refusal is kept apart, for people to see."""
    op = exc.extra.get("op")
    kept = _storable(operations)
    try:
        with transaction.atomic():
            PatchRefusal.objects.create(
                run_id=run.pk, node_id=proposer.node_id, agent=proposer.agent, proposed_by=user,
                rule=str(exc.extra.get("rule") or exc.code)[:64], op=op if isinstance(op, int) else None,
                path=str(exc.extra.get("path") or "").replace("\x00", "\ufffd")[:1000],
                message=exc.message.replace("\x00", "\ufffd")[:4000],
                operations=kept if kept is not None else {"operations": None})
    except Exception:  # the refusal itself is what the caller must see
        logger.warning("patch.refusal_record_failed", exc_info=True)


def refusals(run: Run, limit: int = 50) -> list[PatchRefusal]:
    return list(PatchRefusal.objects.filter(run=run).order_by("-created_at", "-id")[:limit])

