"""``hitl``: a human approval, registered by the approvals app (the registry's loader imports this
module). The executor records an Approval and parks the node run as ``waiting``; the worker is
free at once. A decision (approvals.services) resumes it; a run that ends cancels what is still
pending (``on_run_ending``), so the engine never imports this app."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User

from approvals.models import Approval
from approvals.services import (
    MAX_WAIT_MS,
    approval_create_for_node,
    approval_hold_patch,
    approvals_cancel_for_run,
    approvals_void_for_changed_action,
    gate_context,
    gates_nobody_can_decide,
)
from workflows.definition.forms import form_problems
from workflows.engine.execution import WAITING, park
from workflows.registry import NodeContext, NodeFailed, executor
from workflows.services.patches import patches_held_end

# Who decides is written out, never a reference: an upstream output (an injected agent's answer, a
# remote server's body) or a run's inputs (a hook sender's) would otherwise choose who approves the
# gate, and who may read the run behind it. A username holds no "$" (Django's rule); a group's name
# may not either. Nor a control character (none in a username either): a name with a line break drew
# a forged line (another run's `aob approve`) under the gate in an approver's `aob run watch`.
NAME = {"type": "string", "minLength": 1, "maxLength": 150, "pattern": r"^[^$\x00-\x1f\x7f-\x9f]+$",
        "description": "a username or group name, written out (no $ reference)"}

CONFIG_SCHEMA = {
    "type": "object",
    "properties": {
        "message": {"type": "string", "maxLength": 20000},
        "approvers": {"type": "array", "items": NAME, "maxItems": 100},
        "required_approvals": {"type": "integer", "minimum": 1, "maximum": 100},
        "allow_self_approval": {"type": "boolean"},
        "timeout_ms": {"type": "integer", "minimum": 1, "maximum": MAX_WAIT_MS},
        "remind_before_ms": {"type": "integer", "minimum": 1, "maximum": MAX_WAIT_MS,
                             "description": "remind the approvers (email, webhooks) this long before timeout_ms ends"},
        "on_timeout": {"enum": Approval.OnTimeout.values},
        "escalate_to": {"type": "array", "items": NAME, "maxItems": 100},
        "escalation_timeout_ms": {"type": "integer", "minimum": 1, "maximum": MAX_WAIT_MS},
        "form": {"type": "object"},
    },
    "additionalProperties": False,
}


def check_config(config: dict[str, Any]) -> list[tuple[str, str, str]]:
    """What the schema cannot say: an escalation needs someone to escalate to, and a form is a
    form (``workflows/definition/forms.py``)."""
    problems = []
    if config.get("on_timeout") == Approval.OnTimeout.ESCALATE and not config.get("escalate_to"):
        problems.append(("/escalate_to", "config.required", "on_timeout escalate needs escalate_to"))
    if isinstance(config.get("form"), dict):
        problems += [(f"/form{p.path}", p.rule, f"form: {p.message}") for p in form_problems(config["form"])]
    return problems


def cancel_pending(run_id: str, status: str, now: Any) -> None:
    """A failed or cancelled run has nothing left to decide: its pending approvals (node gates and
    held patches alike) leave the inbox, and its held patches are rejected, in the transaction that
    ends the run."""
    if status in ("failed", "cancelled"):
        approvals_cancel_for_run(run_id=run_id, now=now)
        patches_held_end(run_id=run_id, status=status)


@executor("hitl", config_schema=CONFIG_SCHEMA, check=check_config, reads_upstream=True, on_run_ending=cancel_pending,
          hold_patch=approval_hold_patch, void_approvals=approvals_void_for_changed_action, answers_outside=True,
          waiting_for=gates_nobody_can_decide,
          description="Pauses its branch until approvers decide. Output {approved, decision, decisions, data}: "
          "put `$.approved == true` on the approve edge and an unconditional edge for reject.")
def run_hitl(ctx: NodeContext) -> Any:
    # Checked at save too; again here because `$inputs` references resolve only now.
    problems = form_problems(ctx.config["form"]) if isinstance(ctx.config.get("form"), dict) else []
    if problems:
        first = problems[0]
        raise NodeFailed(f"the approval form is refused: {first.path or '/'}: {first.message}",
                         code="InvalidForm", extra={"rule": first.rule, "path": f"/config/form{first.path}"})
    owner = User.objects.only("username").get(pk=ctx.owner_id).username
    # measured before the park's transaction: a context may be megabytes before it is bounded. It
    # reads what cannot change once the gate runs (the run's inputs, finished upstream outputs); what
    # a patch may change meanwhile (the action, so ``action_changed``) is read under the park's lock.
    context = gate_context(run_id=ctx.run_id, inputs=ctx.inputs, upstream=ctx.outputs)

    def create() -> list:
        _, items = approval_create_for_node(run_id=ctx.run_id, owner_id=ctx.owner_id, node_run_id=ctx.node_run_id,
                                            node_id=ctx.node_id, config=ctx.config, context=context,
                                            owner_username=owner)
        return items

    park(ctx, create)
    return WAITING
