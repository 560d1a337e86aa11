"""``delegate_to_agent``: add an agent node with a sub-task after this one, via a patch (so the
spawn limit and every other patch rule apply). The delegate inherits the delegating node's tools
(or fewer, if asked), its budget, tool rounds, attempts and timeout, never more."""

from __future__ import annotations

import re
from typing import Any

from workflows.models import Artifact, Run, RunPatch
from workflows.services.patches.policy import AGENT_NODE_ID_MAX_CHARS

from .base import AgentState
from .patching import propose

DESCRIPTION = "Add an agent node after you with a sub-task; limited per run (the spawn limit)."

PARAMETERS = {
    "type": "object",
    "properties": {
        "task": {"type": "string", "minLength": 1},
        "node_id": {"type": "string", "pattern": "^[a-zA-Z0-9_-]+$"},
        "tools": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["task"],
}


def run(state: AgentState, args: dict[str, Any]) -> dict[str, Any]:

    run_ = Run.objects.get(pk=state.ctx.run_id)
    current = Artifact.objects.values_list("content", flat=True).get(pk=run_.current_artifact_id)
    taken = {n["id"] for n in current["nodes"]}
    # an id the policy takes from an agent: at most AGENT_NODE_ID_MAX_CHARS, its number included
    base = re.sub(r"[^a-zA-Z0-9_-]", "_", str(args.get("node_id") or f"{state.ctx.node_id}_delegate"))
    node_id, n = base[:AGENT_NODE_ID_MAX_CHARS], 1
    while node_id in taken:
        n += 1
        node_id = f"{base[:AGENT_NODE_ID_MAX_CHARS - len(str(n)) - 1]}_{n}"
    config: dict[str, Any] = {"task": str(args["task"])}
    asked = args.get("tools")
    config["tools"] = [t for t in state.tools if asked is None or t in asked]
    if state.ctx.raw_config.get("budget"):
        config["budget"] = dict(state.ctx.raw_config["budget"])
    for key in ("model", "max_tokens", "max_tool_rounds"):
        if state.ctx.raw_config.get(key) is not None:
            config[key] = state.ctx.raw_config[key]
    delegate: dict[str, Any] = {"id": node_id, "type": "agent", "config": config}
    for key in ("retry", "timeout_ms"):  # its attempts and time, as the policy bounds them
        if (state.ctx.definition or {}).get(key) is not None:
            delegate[key] = state.ctx.definition[key]
    operations = [
        {"op": "add", "path": "/nodes/-", "value": delegate},
        {"op": "add", "path": "/edges/-", "value": {"from": state.ctx.node_id, "to": node_id}},
    ]
    result = propose(state, operations, f"delegate: {str(args['task'])[:200]}")
    if result.get("status") != "error":
        # A resumed attempt (its worker died after the patch committed, before the journal kept this
        # answer) gets back the patch its proposal key already made, but picked node_id above against a
        # definition holding that patch's node: it came out "plan_delegate_2", a node no patch added.
        # The node is the one the stored patch adds.
        stored = RunPatch.objects.values_list("operations", flat=True).get(pk=result["patch_id"])
        result["node_id"] = next(op["value"]["id"] for op in stored if op["path"] == "/nodes/-")
    return result
