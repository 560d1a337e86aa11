"""``search_tools``: node types and their config schemas from the executor registry."""

from __future__ import annotations

from typing import Any

from workflows import registry

from .base import AgentState

DESCRIPTION = "Find node types (and their config JSON Schemas) matching a query, to build valid nodes."

PARAMETERS = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}


def run(state: AgentState, args: dict[str, Any]) -> dict[str, Any]:
    words = [w for w in str(args.get("query", "")).lower().split() if w]
    found = []
    for name, spec in sorted(registry.catalogue().items()):
        text = f"{name} {spec.description}".lower()
        if not words or any(w in text for w in words):
            found.append({"type": name, "description": spec.description, "config_schema": spec.config_schema,
                          "evaluated_by": "coordinator" if spec.inline else "worker"})
    return {"status": "success", "node_types": found}
