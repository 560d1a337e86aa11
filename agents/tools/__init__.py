"""The five agent tools: their JSON Schema parameters, and the code that runs each call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import delegate, openapi, patching, pipeline, search
from .base import AgentState

__all__ = ["TOOLS", "AgentState", "Tool", "schemas"]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[[AgentState, dict[str, Any]], Any]


TOOLS: dict[str, Tool] = {
    t.name: t
    for t in [
        Tool("execute_pipeline", pipeline.DESCRIPTION, pipeline.PARAMETERS, pipeline.run),
        Tool("patch_workflow", patching.DESCRIPTION, patching.PARAMETERS, patching.run),
        Tool("search_tools", search.DESCRIPTION, search.PARAMETERS, search.run),
        Tool("openapi_action", openapi.DESCRIPTION, openapi.PARAMETERS, openapi.run),
        Tool("delegate_to_agent", delegate.DESCRIPTION, delegate.PARAMETERS, delegate.run),
    ]
}


def schemas(names: list[str]) -> list[dict[str, Any]]:
    """The function definitions of the named tools (an empty list: none)."""
    chosen = [TOOLS[n] for n in names if n in TOOLS]
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": t.parameters}} for t in chosen]
