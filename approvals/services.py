"""Approval services: one decision path for every surface (API, admin, web UI, CLI)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import CharField, F, Func, Subquery
from django.utils import timezone

from approvals.exceptions import (
    ActionChanged,
    AlreadyDecided,
    ApprovalNotFound,
    ApprovalSettled,
    CommentInvalid,
    FormDataInvalid,
    FourEyesViolation,
    NotAnApprover,
)
from approvals.models import Approval, Decision, Delivery
from approvals.notifications import approval_notify
from approvals.selectors import DUE_BATCH, RUN_UNREAD, clock, due_in_turns, fill_decidable, is_approver
from workflows.answers import Page, left_out, node_value_href, run_inputs_href
from workflows.approvers import names_of_both
from workflows.definition.forms import form_data_failure
from workflows.definition.gates import action_digest, nodes_by_id
from workflows.engine import events, locks, poison, transitions
from workflows.engine.execution import resume
from workflows.engine.outputs import count_output
from workflows.limits import clipped, refuse_past
from workflows.models import Artifact, Event, NodeRun, Run
from workflows.models.artifact import canonical_json, size_of
from workflows.services.patches import patch_approval_settled
from workflows.services.patches.policy import loop_bodies
from workflows.services.patches.provenance import authored_base_id, patches_in
from workflows.storage import UNFINISHED

logger = logging.getLogger(__name__)

# The longest a gate waits, and escalates for: its deadline is a date PostgreSQL and Python both
# hold (a wait of 10^17 ms is past either). The node's schema refuses a longer one at save, for a
# person and an agent's patch alike; ``_after`` holds to it for a row written before that.
MAX_WAIT_MS = 366 * 24 * 3600 * 1000


def _after(now: Any, ms: int) -> Any:
    return now + timedelta(milliseconds=min(ms, MAX_WAIT_MS))


# A decision's comment is kept on the decision, in its event and in the node's output: bounded here,
# for every surface (the API's serializer states the same number for its schema).
COMMENT_MAX_CHARS = 10_000
# A decision's form data is kept on the decision and in the node's output, and answered with the
# approval in every inbox that lists it.
DATA_MAX_BYTES = 64 * 1024


def gate_context(*, run_id: str, inputs: Any, upstream: dict[str, Any]) -> dict[str, Any]:
    """What a node gate shows its approvers: the run's inputs and its upstream nodes' outputs,
    within ``AOB_APPROVAL_CONTEXT_MAX_BYTES`` (the inbox lists many gates, each with its context).
    The smallest values go in first; one that does not fit is a marker linking to it whole (the
    inputs: the run; an output: as in the run's details), and ``truncated`` says so."""
    sizes = {name: size_of(canonical_json(value)) for name, value in upstream.items()}
    page = Page(settings.AOB_APPROVAL_CONTEXT_MAX_BYTES)
    size = size_of(canonical_json(inputs))
    shown = inputs if page.fits(size) else left_out(size, run_inputs_href(run_id=run_id))
    kept = {name for name in sorted(sizes, key=lambda n: (sizes[n], n)) if page.fits(sizes[name])}
    latest = {node: (iteration, artifact) for node, iteration, artifact in NodeRun.objects.filter(
        run_id=run_id, node_id__in=set(sizes) - kept).order_by("node_id", "-iteration").distinct("node_id")
        .values_list("node_id", "iteration", "output_artifact_id")} if len(kept) < len(sizes) else {}
    return {"inputs": shown, "upstream": {
        name: value if name in kept else left_out(sizes[name], node_value_href(
            run_id=run_id, node_id=name, iteration=latest[name][0], field="output", artifact_id=latest[name][1]))
        for name, value in upstream.items()}, "truncated": shown is not inputs or len(kept) < len(sizes)}


def action_changed(*, run_id: str, gate: str) -> dict[str, Any] | None:
    """Whether what ``gate`` guards differs from the workflow the run started with, and the
    patches applied since, for its approvers to read (the gate's context's ``action_changed``).
    An agent's patch may change what an undecided gate guards (a decision is bound to the action
    as it is when it is made: ``_action_digest``), so an approver must be able to see that it did,
    and not only the message, which the author wrote for the action as it was. None when the run
    was never patched, or the patches left this gate's action alone."""
    base_id, current_id, replay_of_id = (Run.objects.filter(pk=run_id)
                                         .values_list("base_artifact_id", "current_artifact_id", "replay_of_id").get())
    base_id = authored_base_id(run_id, base_artifact_id=base_id, replay_of_id=replay_of_id)
    if base_id == current_id:
        return None
    contents = dict(Artifact.objects.filter(pk__in=[base_id, current_id]).values_list("pk", "content"))
    base, current = contents[base_id], contents[current_id]
    added = gate not in nodes_by_id(base)
    if not added and action_digest(base, gate, bodies=loop_bodies(base)) == action_digest(
            current, gate, bodies=loop_bodies(current)):
        return None
    patches = list(patches_in(run_id).order_by("-applied_at", "-seq")  # a replay's source's too
                   .values("seq", "node_id", "description")[:10])
    return {"gate_added_by_patch": added, "patches": [{**p, "description": clipped(p["description"], 200)}
                                                      for p in reversed(patches)],
            "href": f"/api/v1/runs/{run_id}/patches",
            "warning": ("this gate was added by a patch during the run" if added else
                        "what this gate lets run was changed by a patch since the run started: read the patches "
                        "before deciding")}


def approval_create_for_node(*, run_id: str, owner_id: int, node_run_id: int, node_id: str, config: dict[str, Any],
                             context: dict[str, Any], owner_username: str) -> tuple[Approval, list]:
    """The rows a waiting ``hitl`` node is; called inside the executor's park transaction, with
    the ``context`` ``gate_context`` bounded before it. Whether a patch changed the action
    (``action_changed``) is read here, under the park's run lock, as the digest the approvers are
    asked about is: read by the executor before it, a patch committed in between was neither told
    to the approvers nor voided anything (the gate was running, not waiting), and the approval
    asked about the patched action as unchanged."""
    now = clock()  # the deadline's clock
    changed = action_changed(run_id=run_id, gate=node_id)
    if changed is not None:
        context = {**context, "action_changed": changed}
    timeout_ms = config.get("timeout_ms")
    approvers = list(config.get("approvers") or [owner_username])
    approval = Approval.objects.create(
        run_id=run_id, node_run_id=node_run_id, node_id=node_id, kind=Approval.Kind.NODE,
        action_digest=_digest_now(run_id, node_id),  # what its approvers are asked about (approval_decide)
        message=str(config.get("message", "")), context=context, approvers=approvers,
        required_approvals=int(config.get("required_approvals", 1)),
        allow_self_approval=bool(config.get("allow_self_approval", True)), form=config.get("form"),
        deadline=_after(now, timeout_ms) if timeout_ms else None,
        on_timeout=config.get("on_timeout", Approval.OnTimeout.REJECT) if timeout_ms else "",
        escalate_to=list(config.get("escalate_to") or []),
        escalation_timeout_ms=config.get("escalation_timeout_ms"),
        remind_at=(_after(now, max(0, timeout_ms - config["remind_before_ms"]))
                   if timeout_ms and config.get("remind_before_ms") else None),
    )
    approval_notify(approval=approval)
    _nudge(approval)
    return approval, [(Event.Type.APPROVAL_REQUIRED, node_id, _required_payload(approval))]


def _nudge(approval: Approval) -> None:
    """The open inboxes of the people ``approval`` names read themselves again after commit: a gate
    on another's run reaches no approver by its run's events (``events.inboxes_nudge_after_commit``).
    Every change to a pending approval, or out of pending, calls it."""
    events.inboxes_nudge_after_commit(approval.approvers or [])


def _required_payload(approval: Approval, **extra: Any) -> dict[str, Any]:
    return {"run_id": str(approval.run_id), "node_id": approval.node_id, "approval_id": approval.pk,
            "message": approval.message, "approvers": approval.approvers,
            "required_approvals": approval.required_approvals,
            "deadline": approval.deadline.isoformat() if approval.deadline else None,
            **nobody_can_decide(approval), **extra}


def nobody_can_decide(approval: Approval) -> dict[str, Any]:
    """What an ``approval_required`` event adds when the gate cannot be settled by a vote as asked:
    no active user has one of its approvers' names or is in a group of one (a typo, a deactivated
    account, an empty group): ``nobody_can_decide``; or fewer people could approve it than it needs
    (four-eyes with the owner as its only approver, two approvals asked of one person):
    ``cannot_be_approved``. The gate still waits (a person provisioned later under that name would
    be asked), but its run's page says why nothing moves, and what ends it. It adds too the approver
    names that are both a user's and a group's (rows made before such clashes were refused):
    ``read_as_groups``, each asking the group only (``workflows.approvers``), so the run's owner
    reads who decides. Two to three queries."""
    said = _unsettled(approval)
    shared = names_of_both(approval.approvers or [])
    if not shared:
        return said
    logger.warning("approval.names_read_as_groups", extra={"run_id": str(approval.run_id),
                                                           "approval_id": approval.pk, "names": shared})
    note = (f"the approvers {shared} each name a user and a group: each is read as the group (its members "
            f"decide approval {approval.pk}; the user of that name only as a member)")
    return {**said, "read_as_groups": shared, "warning": "; ".join(filter(None, [said.get("warning"), note]))}


def _ends(approval: Approval) -> str:
    """What ends a gate no vote can settle."""
    return (f"its deadline ({approval.deadline.isoformat()}) applies {approval.on_timeout}"
            if approval.deadline else "it has no deadline: only cancelling the run ends it")


def gates_nobody_can_decide(node_run_ids: list[Any]) -> dict[Any, str]:
    """What a waiting ``hitl`` node run waits for when nobody can decide its approval now (an approver
    deactivated or a group emptied since it asked: ``fill_decidable``, as the approval's answer reads
    it), by node run id; the run's details and timeline say it (``NodeType.waiting_for``) instead of
    only "a person's decision". Three to six queries for any number of them."""
    pending = list(Approval.objects.filter(node_run_id__in=node_run_ids, status=Approval.Status.PENDING)
                   .only("id", "run", "node_run", "status", "approvers", "required_approvals",
                         "allow_self_approval", "deadline", "on_timeout"))
    return {a.node_run_id: f"a decision nobody can make: no active person asked can vote on its approval {a.pk} "
                           f"(an approver deactivated, a group emptied); {_ends(a)}"
            for a in fill_decidable(pending) if a.nobody_can_decide}  # type: ignore[attr-defined]


def _unsettled(approval: Approval) -> dict[str, Any]:
    fill_decidable([approval])  # the one rule the answers and the admin read too
    names = list(approval.approvers or [])
    ends = _ends(approval)
    if approval.nobody_can_decide:  # type: ignore[attr-defined]
        logger.warning("approval.nobody_can_decide", extra={"run_id": str(approval.run_id),
                                                            "approval_id": approval.pk})
        return {"nobody_can_decide": True, "cannot_be_approved": True,
                "warning": f"no active user is named by, or in a group named by, the approvers {names}: nobody can "
                           f"decide approval {approval.pk}; {ends}"}
    if approval.cannot_be_approved:  # type: ignore[attr-defined]
        able = approval.could_approve  # type: ignore[attr-defined]
        logger.warning("approval.cannot_be_approved", extra={"run_id": str(approval.run_id),
                                                             "approval_id": approval.pk})
        owner = "" if approval.allow_self_approval else " (the run's owner may not: allow_self_approval is false)"
        return {"cannot_be_approved": True,
                "warning": f"only {able} active person(s) could approve approval {approval.pk}{owner}, and it "
                           f"needs {approval.required_approvals}: it can be rejected, never approved; "
                           + (f"a rejection or its deadline ({approval.deadline.isoformat()}) ends it"
                              if approval.deadline else "a rejection or cancelling the run ends it")}
    return {}


def approval_decide(*, approval: Approval, user: User, approve: bool, comment: str = "",
                    data: Any = None, action_digest: str | None = None) -> Approval:
    """Count one person's decision; settle the approval and resume the run when it is decided.
    Concurrent decisions serialize on the approval row, so it settles and routes once.
    ``action_digest``, when given, is the approval's as the person read it: a vote cast on a page
    read before a patch changed the action is refused (``ActionChanged``), not counted for the new one."""
    _check_comment(comment)
    refuse_past(data, DATA_MAX_BYTES, field="data", error=FormDataInvalid)
    with transaction.atomic():
        run_status = locks.lock_run(approval.run_id)  # the run row first (workflows/engine/locks.py)
        # then the runs above a sub-workflow's, share-locked: a parent's cancel, committed, is read here
        # (its children are cancelled later, on the maintenance queue), or it waits for this decision
        above = locks.ended_above(approval.run_id) if run_status not in (None, *Run.FINISHED) else None
        found = (Approval.objects.select_for_update().select_related("run__owner").defer(*RUN_UNREAD)
                 .filter(pk=approval.pk).first()) if run_status is not None else None
        if found is None:  # its run removed (a prune) while the decision waited on the run's lock
            raise ApprovalNotFound(f"approval {approval.pk} not found: its run was removed before the decision could "
                                   "be counted", extra={"approval_id": approval.pk})
        approval = found
        if approval.status != Approval.Status.PENDING:
            raise ApprovalSettled(f"approval {approval.pk} is already {approval.status}",
                                  extra={"status": approval.status})
        if run_status in Run.FINISHED:
            raise ApprovalSettled(f"run {approval.run_id} is already {run_status}", code="run_finished",
                                  extra={"status": run_status})
        if above is not None:  # the run above is not named: its approver may not see it (runs_visible)
            raise ApprovalSettled(f"run {approval.run_id} is a sub-workflow of a run that is already {above}: it "
                                  "ends with it (its cancel is on its way), and its approvals can no longer be "
                                  "decided", code="run_finished", extra={"status": run_status, "above": above})
        # Past its deadline, the approval's on_timeout applies now, as the sweep would apply it
        # (escalate widens the approvers and sets a new deadline: the decision is judged after it).
        deadline = approval.deadline.isoformat() if approval.deadline else None
        _expire_if_due(approval, clock())
        expired = approval.status != Approval.Status.PENDING
        if not expired:
            _count(approval, user=user, approve=approve, comment=comment, data=data, seen=action_digest)
    if expired:  # refused after the commit: the expiry stands
        raise ApprovalSettled(f"approval {approval.pk} passed its deadline ({deadline}): its on_timeout applied, "
                              f"it is {approval.status}",
                              code="deadline_passed", extra={"status": approval.status, "rule": "deadline",
                                                             "deadline": deadline})
    return approval


def _count(approval: Approval, *, user: User, approve: bool, comment: str, data: Any, seen: str | None) -> None:
    """One decision on a pending approval within its deadline; the caller holds the run and approval locks."""
    if not is_approver(approval, user):
        raise NotAnApprover(f"{user.username} is not an approver of approval {approval.pk}",
                            extra={"approvers": approval.approvers})
    # the digest the approvers were asked about (set when the gate asks, moved when a patch voids its
    # votes): not the current one recomputed, which would let a stale page vote after a blind reload
    if seen is not None and seen != approval.action_digest:
        raise ActionChanged(f"what approval {approval.pk} guards was changed by a patch since it was read "
                            "(action_digest is not its digest now): read the approval again and decide on it as "
                            "it is", extra={"field": "action_digest", "rule": "action_changed"})
    if approve and not approval.allow_self_approval and approval.run.owner_id == user.pk:
        raise FourEyesViolation("four-eyes: the run's owner cannot approve their own run",
                                extra={"rule": "allow_self_approval"})
    if approve and approval.form:  # omitted data is checked too: a required field cannot be skipped
        failure = form_data_failure(approval.form, {} if data is None else data)
        if failure is not None:
            path = "/data" + failure.path
            raise FormDataInvalid(f"data does not match the form: {path}: {failure.message}",
                                  extra={"field": "data", "path": path, "rule": failure.rule})
    if Decision.objects.counting().filter(approval=approval, user=user).exists():
        raise AlreadyDecided(f"{user.username} has already decided approval {approval.pk}")
    digest = _action_digest(approval)
    decision = Decision.objects.create(approval=approval, user=user, username=user.username, approve=approve,
                                       comment=comment, data=data, action_digest=digest)
    approvals = approval.decisions.counting().filter(approve=True).count()
    settled = None
    if not approve:
        settled = Approval.Status.REJECTED
    elif approvals >= approval.required_approvals:
        settled = Approval.Status.APPROVED
    events.append(approval.run_id, approval.run.owner_id, [(Event.Type.APPROVAL_DECIDED, approval.node_id, {
        "approval_id": approval.pk, "user": user.username, "approve": approve, "comment": comment,
        "approvals": approvals, "required_approvals": approval.required_approvals,
        "settled": settled, "at": decision.at.isoformat()})])
    _nudge(approval)
    if settled:
        _settle(approval, settled, approved=settled == Approval.Status.APPROVED)


def _check_comment(comment: Any) -> None:
    if not isinstance(comment, str):
        raise CommentInvalid("comment must be a string", extra={"field": "comment", "rule": "type"})
    if len(comment) > COMMENT_MAX_CHARS:
        raise CommentInvalid(f"comment is {len(comment)} characters; at most {COMMENT_MAX_CHARS} are kept",
                             extra={"field": "comment", "rule": "max_length", "limit": COMMENT_MAX_CHARS})
    if "\x00" in comment:  # PostgreSQL text cannot hold it: refused here, not failed at the insert
        raise CommentInvalid("comment must not contain NUL (\\x00) characters",
                             extra={"field": "comment", "rule": "no_nul"})


def _action_digest(approval: Approval) -> str:
    """The digest of the action a node approval's gate guards, in the run's current definition."""
    return _digest_now(approval.run_id, approval.node_id) if approval.kind == Approval.Kind.NODE else ""


def _digest_now(run_id: Any, node_id: str) -> str:
    current = Run.objects.filter(pk=run_id).values("current_artifact_id")  # the run's row is not read whole
    definition = Artifact.objects.values_list("content", flat=True).get(pk=Subquery(current))
    return action_digest(definition, node_id, bodies=loop_bodies(definition))


def approval_hold_patch(*, run: Any, patch: Any, before: dict[str, Any], after: dict[str, Any]) -> Approval:
    """An agent's patch that policy sends to a person: the run's owner decides it (``approval_decide``
    then applies or rejects it, ``patch_approval_settled``). ``before`` and ``after`` are graph summaries."""
    owner = User.objects.only("username").get(pk=run.owner_id).username
    approval = Approval.objects.create(
        run=run, patch=patch, node_id=patch.node_id, kind=Approval.Kind.PATCH, approvers=[owner],
        message=patch.description or f"An agent proposes {len(patch.operations)} change(s) to this run",
        context={"operations": patch.operations, "before": before, "after": after})
    approval_notify(approval=approval)
    _nudge(approval)
    events.append(run.pk, run.owner_id, [(Event.Type.APPROVAL_REQUIRED, patch.node_id, {
        "run_id": str(run.pk), "node_id": patch.node_id, "approval_id": approval.pk, "kind": "patch",
        "patch_id": patch.pk, "message": approval.message, "approvers": approval.approvers, "deadline": None,
        **nobody_can_decide(approval)})])
    return approval


def approvals_cancel_for_run(*, run_id: Any, now: Any) -> int:
    """Every pending approval of a run that ended leaves the inbox; called inside the run's last
    transaction. The inboxes of the distinct names they list are nudged (read in the database, at
    most ``events.INBOX_NUDGE_MAX_NAMES``: a run may wait on many gates at once)."""
    pending = Approval.objects.filter(run_id=run_id, status=Approval.Status.PENDING)
    names = (pending.annotate(name=Func(F("approvers"), function="jsonb_array_elements_text", output_field=CharField()))
             .order_by().values_list("name", flat=True).distinct()[:events.INBOX_NUDGE_MAX_NAMES])
    events.inboxes_nudge_after_commit(list(names))
    return pending.update(status=Approval.Status.CANCELLED, decided_at=now)


def approvals_void_for_changed_action(*, run: Any, reopen: tuple[str, ...], revote: tuple[str, ...],
                                      below: dict[str, set[str]], patch_seq: int) -> None:
    """A patch changed the action a gate guards (the run is locked by the caller). Votes cast on a
    pending gate lapse; an approved gate whose action has not begun asks again: its decision is
    void, the node runs its decision emitted (none begun) are taken back, and it waits once more.
    A gate in a loop's body waits, or approved, once per pass, each on the one action: every pass
    of it is taken (``check_approved_actions`` judged them all)."""

    now = clock()
    items: list[tuple[str, str, dict[str, Any]]] = []
    for approval in (Approval.objects.select_for_update().filter(run=run, node_id__in=revote, kind=Approval.Kind.NODE,
                                                                 status=Approval.Status.PENDING).order_by("pk")):
        node_id = approval.node_id
        _say_changed(approval)
        approval.action_digest = _action_digest(approval)  # a vote on the page read before is refused
        approval.save(update_fields=["action_digest"])
        voided = approval.decisions.counting().update(voided=True)
        _nudge(approval)  # its page's digest moved: a vote on the page read before is refused
        if voided:
            items.append((Event.Type.APPROVAL_VOIDED, node_id, {"approval_id": approval.pk, "reason": "action_changed",
                                                       "patch_seq": patch_seq, "voided_decisions": voided}))
    for node_id in reopen:
        passes = []  # each approved pass (as ``run_state`` reads them)
        for gate in NodeRun.objects.filter(run=run, node_id=node_id, status=NodeRun.Status.COMPLETED,
                                           output__approved=True).order_by("iteration"):
            asked = Approval.objects.select_for_update().filter(node_run=gate).first()
            if asked is not None:
                passes.append((gate, asked))
        if not passes:
            continue
        emitted = set(NodeRun.objects.filter(run=run, node_id__in=below[node_id]).values_list("pk", flat=True))
        lockable = set(NodeRun.objects.select_for_update(skip_locked=True).filter(pk__in=emitted)
                       .values_list("pk", flat=True))
        if lockable != emitted:
            raise ApprovalSettled(f"the action gate {node_id!r} approved began while the patch was judged",
                                  code="approved_action_started", extra={"rule": "approved_action_started"})
        NodeRun.objects.filter(pk__in=emitted).delete()
        for gate, approval in passes:
            _reopen(run, gate, approval, now=now, patch_seq=patch_seq, items=items)
    events.append(run.pk, run.owner_id, items)


def _reopen(run: Any, gate: NodeRun, approval: Approval, *, now: Any, patch_seq: int,
            items: list[tuple[str, str, dict[str, Any]]]) -> None:
    """One approved pass of a gate asks again about the action as patched (``approvals_void_for_changed_action``)."""
    node_id = gate.node_id
    if not transitions.move_node_run(gate.pk, NodeRun.Status.WAITING, sources=[NodeRun.Status.COMPLETED],
                                     consumed=False, taken=None, output=None, output_artifact=None,
                                     finished_at=None, wait_reason="approval"):
        raise ApprovalSettled(f"the gate {node_id!r} is no longer an approved, completed step",
                              code="approved_action_started", extra={"rule": "approved_action_started"})
    # its decision's output goes: no longer counted in what the run stores (resume counted it)
    count_output(run.pk, -size_of(canonical_json(gate.output)) if gate.output is not None else 0)
    approval.decisions.counting().update(voided=True)
    approval.status, approval.decided_at = Approval.Status.PENDING, None
    approval.action_digest = _action_digest(approval)  # asked again about the action as patched
    if approval.deadline is not None:
        # its timeout again, from now: the deadline's clock (``clock``) is not ``created_at``'s (a worker's)
        timeout_ms = gate.input.get("timeout_ms") if isinstance(gate.input, dict) else None
        approval.deadline = (_after(now, timeout_ms) if timeout_ms
                             else now + (approval.deadline - approval.created_at))
    approval.save(update_fields=["status", "decided_at", "action_digest", "deadline"])
    _say_changed(approval)
    items.append((Event.Type.APPROVAL_VOIDED, node_id, {"approval_id": approval.pk, "reason": "action_changed",
                                               "patch_seq": patch_seq, "reopened": True}))
    items.append((Event.Type.APPROVAL_REQUIRED, node_id, _required_payload(approval, reopened=True)))
    approval_notify(approval=approval, reason=Delivery.Reason.REOPENED)
    _nudge(approval)


def _say_changed(approval: Approval) -> None:
    """The approvers asked again after a patch changed the action read that it did, as those of a
    gate that asked after one do (``action_changed``; the run's current definition is the patched
    one by now, and the patch is among the applied)."""
    changed = action_changed(run_id=str(approval.run_id), gate=approval.node_id)
    if changed is not None:
        approval.context = {**(approval.context or {}), "action_changed": changed}
        approval.save(update_fields=["context"])


def _output(approval: Approval, *, approved: bool, decision: str) -> dict[str, Any]:
    decisions = list(approval.decisions.counting().order_by("at"))
    data = next((d.data for d in reversed(decisions) if d.approve and d.data is not None), None)
    return {"approved": approved, "decision": decision, "approval_id": approval.pk,
            "decisions": [{"user": d.username, "approve": d.approve, "comment": d.comment, "at": d.at.isoformat()}
                          for d in decisions], "data": data}


def _settle(approval: Approval, status: str, *, approved: bool, decision: str | None = None,
            error: dict[str, Any] | None = None) -> None:
    approval.status = status
    approval.decided_at = timezone.now()
    approval.action_digest = _action_digest(approval)
    approval.save(update_fields=["status", "decided_at", "action_digest"])
    if approval.kind == Approval.Kind.PATCH:

        patch_approval_settled(approval=approval, approved=approved)
        return
    if approval.node_run_id:
        if error is not None:
            resume(approval.node_run_id, error=error)
        else:
            resume(approval.node_run_id,
                   output=_output(approval, approved=approved, decision=decision or (
                       Approval.Status.APPROVED.value if approved else Approval.Status.REJECTED.value)))


def approvals_expire_due(batch: int = DUE_BATCH) -> int:
    """Apply ``on_timeout`` to approvals whose deadline passed; run by beat, so the wait survives
    any restart (nothing lives in memory). Each in its own transaction: one that cannot be applied
    is logged and left, and never keeps the others' deadlines from applying. At most ``batch`` a
    tick, the owners in turn (``due_in_turns``): one owner's 2,000 due gates held one task 11.6 s,
    newest first, while another's, due minutes before, was expired last."""
    now = clock()
    count = 0
    due = due_in_turns(Approval.objects.filter(status=Approval.Status.PENDING, deadline__lte=now), "deadline", batch)
    for pk, run_id, node_id in due.values_list("pk", "run_id", "node_id"):
        # the run waits on this expiry: one that keeps failing is said on it, and in the end fails it
        with poison.sweep_row("approval_expire", run_id=run_id, node_id=node_id, approval_id=pk) as taken:
            if not taken:
                continue  # its handling killed the process too often (poison.sweep_row)
            count += _expire_one(pk, now)
    return count


def approvals_end_for_inactive_owners(batch: int = DUE_BATCH) -> int:
    """End the pending approvals of runs whose owner was deactivated while they waited: the gate
    node fails (``owner_inactive``, ``workflows.engine.owners``), and its run with it; a patch's
    approval rejects the patch. Nothing of such a run starts as its owner any more, so a decision
    would lead nowhere; and a gate only its owner could decide (the default approver) waited for
    ever, uncancellable (a run is its owner's alone to cancel) and never pruned (unfinished).
    Run with the deadlines' sweep, ``batch`` a tick; the number ended."""
    # from the deactivated owners' unfinished runs (their partial index), never the approvals of
    # every run in turn: a walk of the whole approvals table read 2.3 million rows a tick to end none
    theirs = Run.objects.filter(owner__is_active=False, status__in=UNFINISHED).values("pk")
    pending = (Approval.objects.filter(status=Approval.Status.PENDING, run__in=theirs)
               .values_list("pk", "run_id", "node_id")[:batch])
    count = 0
    for pk, run_id, node_id in pending:
        with poison.sweep_row("approval_owner_inactive", run_id=run_id, node_id=node_id, approval_id=pk) as taken:
            if not taken:
                continue  # its handling killed the process too often (poison.sweep_row)
            count += _end_for_inactive_owner(pk, run_id)
    return count


def _end_for_inactive_owner(pk: int, run_id: Any) -> int:
    from workflows.engine.owners import OwnerInactive

    with transaction.atomic():
        locks.lock_run(run_id)  # the run row first (workflows/engine/locks.py)
        approval = (Approval.objects.select_for_update(skip_locked=True).select_related("run").defer(*RUN_UNREAD)
                    .filter(pk=pk, status=Approval.Status.PENDING, run__owner__is_active=False).first())
        if approval is None:
            return 0
        failure = OwnerInactive.of(approval.run.owner_id, f"approval {pk} of run {run_id} is decided by nobody")
        error = {"error_type": failure.code, "message": failure.message, **failure.extra}
        events.append(approval.run_id, approval.run.owner_id, [(Event.Type.APPROVAL_DECIDED, approval.node_id, {
            "approval_id": approval.pk, "settled": Approval.Status.CANCELLED, "reason": failure.code,
            "message": failure.message})])
        _settle(approval, Approval.Status.CANCELLED, approved=False, error=error)
        _nudge(approval)
        return 1


def _expire_one(pk: int, now: Any) -> int:
    with transaction.atomic():
        run_id = Approval.objects.filter(pk=pk).values_list("run_id", flat=True).first()
        if run_id is None:
            return 0
        locks.lock_run(run_id)  # the run row first (workflows/engine/locks.py)
        approval = (Approval.objects.select_for_update(skip_locked=True).select_related("run").defer(*RUN_UNREAD)
                    .filter(pk=pk, status=Approval.Status.PENDING).first())
        if approval is None:
            return 0
        run = approval.run
        # a sub-workflow's gate whose tree has ended applies no on_timeout (an approve would lead
        # on): its run is cancelled, and the gate with it, as its next claim would (execution.claim)
        if (run.within and run.status not in Run.FINISHED
                and transitions.cancel_below_ended(run.pk, run.status, run.owner_id, parent=run.within)):
            return 0
        return int(_expire_if_due(approval, now))


def _expire_if_due(approval: Approval, now: Any) -> bool:
    """Apply ``on_timeout`` to a pending approval whose deadline has come (the caller locked the run
    and the approval): the one deadline rule of the sweep and of a decision that comes too late.
    An escalation leaves it pending, with new approvers and a new deadline. True when it applied."""
    if approval.deadline is None or approval.deadline > now:
        return False
    _expire(approval, now)
    return True


def _expire(approval: Approval, now: Any) -> None:
    outcome = approval.on_timeout or Approval.OnTimeout.REJECT
    if outcome == Approval.OnTimeout.ESCALATE and approval.escalated:
        outcome = Approval.OnTimeout.REJECT  # escalated by a process of the release before (a rolling deploy)
    if outcome == Approval.OnTimeout.ESCALATE:
        approval.escalated = True
        approval.approvers = list(dict.fromkeys([*approval.approvers, *approval.escalate_to]))
        approval.deadline = _after(now, approval.escalation_timeout_ms) if approval.escalation_timeout_ms else None
        # once escalated, the next deadline rejects: stored, so every reader (the events, the
        # notifications, the pages, the admin, the CLI) says what it will do, not what it did
        approval.on_timeout = Approval.OnTimeout.REJECT if approval.deadline else ""
        approval.save(update_fields=["escalated", "approvers", "deadline", "on_timeout"])
        _nudge(approval)  # the approvers it escalated to among them
        approval_notify(approval=approval, reason=Delivery.Reason.ESCALATED, names=list(approval.escalate_to))
        events.append(approval.run_id, approval.run.owner_id, [(
            Event.Type.APPROVAL_REQUIRED, approval.node_id, _required_payload(approval, escalated=True,
                                                                     escalated_to=approval.escalate_to))])
        return
    events.append(approval.run_id, approval.run.owner_id, [(Event.Type.APPROVAL_DECIDED, approval.node_id, {
        "approval_id": approval.pk, "timeout": True, "on_timeout": outcome, "settled": Approval.Status.EXPIRED})])
    _nudge(approval)
    if outcome == Approval.OnTimeout.FAIL:
        _settle(approval, Approval.Status.EXPIRED, approved=False, error={
            "error_type": "ApprovalTimeout", "message": f"approval {approval.pk} was not decided before its deadline"})
    else:
        _settle(approval, Approval.Status.EXPIRED, approved=outcome == Approval.OnTimeout.APPROVE,
                decision=Approval.Status.EXPIRED.value)
