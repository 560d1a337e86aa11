from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workers.registry import NodeContext


@dataclass
class AgentState:
    """What a tool call may see and change: the node's context, and what the loop learns."""

    ctx: NodeContext
    patches_applied: int = 0
    spawn_limit_hit: bool = False
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
