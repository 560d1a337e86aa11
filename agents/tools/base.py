from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workflows.engine import heartbeat, owners
from workflows.registry import NodeContext


@dataclass
class AgentState:
    """What a tool call may see and change: the node's context, and what the loop learns."""

    ctx: NodeContext
    tools: list[str] = field(default_factory=list)  # the tools this node may call
    proposal_key: str = ""  # node run, turn and call of the tool call running now: its patch's name in the run
    # Turn and call of the tool call running now: its requests' Idempotency-Keys (``effect_key``)
    # add these to the key's run, node and iteration, and no node run id, so a replay that goes on
    # with its source's unsettled agent (``Run.key_origins``) repeats the source's calls under their keys.
    call_key: str = ""
    patches_applied: int = 0
    spawn_limit_hit: bool = False
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def before_acting(self, what: str) -> None:
        """Before a request as the run's owner, with their secrets (each tool call not yet journaled,
        each ``execute_pipeline`` step that sends): a node run cancelled or re-queued stops
        (``LeaseLost``), an owner deactivated fails the node (``OwnerInactive``, ``what`` saying what
        does not happen). The heartbeat's interrupt comes only at its next renewal, after every quick
        request had gone out, and never for a deactivation."""
        heartbeat.ensure_held(self.ctx.node_run_id, self.ctx.attempt)
        if not owners.owner_active(self.ctx.owner_id):
            raise owners.OwnerInactive.of(self.ctx.owner_id, f"run {self.ctx.run_id}'s agent {what}")

    def observe(self, name: str, result: Any) -> None:
        """Learn from a tool result, fresh or replayed from the journal."""
        if name not in ("patch_workflow", "delegate_to_agent") or not isinstance(result, dict):
            return
        if result.get("status") == "error":
            self.spawn_limit_hit = result.get("error") == "excessive_agent_nodes" or self.spawn_limit_hit
        else:
            self.spawn_limit_hit = False
            self.patches_applied += 1
