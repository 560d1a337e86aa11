"""``patch_workflow``: the agent's JSON Patch, through the one run-patch service. A refusal goes
back to the model as the tool result, so it can correct itself."""

from __future__ import annotations

from typing import Any

from agents.view import refusal
from aob_project.exceptions import AobError
from workflows.models import Run
from workflows.services.patches import DESCRIPTION_MAX_CHARS, run_patch_propose

from .base import AgentState

DESCRIPTION = ("Change the running workflow with RFC 6902 operations against the current definition "
               "(add nodes with /nodes/-, edges with /edges/-). Returns the applied patch or the reason it was refused.")

PARAMETERS = {
    "type": "object",
    "properties": {
        "operations": {"type": "array", "items": {"type": "object"}, "minItems": 1},
        "description": {"type": "string", "maxLength": DESCRIPTION_MAX_CHARS},
    },
    "required": ["operations"],
}


def propose(state: AgentState, operations: Any, description: str) -> dict[str, Any]:

    run = Run.objects.get(pk=state.ctx.run_id)
    try:
        patch = run_patch_propose(run=run, operations=operations, description=description,
                                  node_id=state.ctx.node_id, from_agent=True, proposal_key=state.proposal_key)
    except AobError as exc:
        # a refusal's message may quote the definition (a failed ``test``, a value judged invalid),
        # another agent's words included: the answer is built from facts that quote no value
        return refusal(code=exc.code, extra=exc.extra, operations=operations)
    return {"status": patch.status, "patch_id": patch.pk, "seq": patch.seq, "artifact_id": patch.after_artifact_id}


def run(state: AgentState, args: dict[str, Any]) -> dict[str, Any]:
    return propose(state, args.get("operations"), str(args.get("description", "")))
