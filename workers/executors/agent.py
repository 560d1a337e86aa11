"""``agent``: an LLM with tools that may patch the running workflow (agents/)."""

from __future__ import annotations

from typing import Any

from workers.registry import NodeContext, executor

CONFIG_SCHEMA = {
    "type": "object",
    "required": ["task"],
    "properties": {
        "task": {"type": "string", "minLength": 1, "maxLength": 50000},
        "model": {"type": "string", "minLength": 1, "maxLength": 200},
        "max_tool_rounds": {"type": "integer", "minimum": 0, "maximum": 50},
        "tools": {"type": "array", "items": {"enum": ["execute_pipeline", "patch_workflow", "search_tools",
                                                      "openapi_action", "delegate_to_agent"]}},
        "budget": {
            "type": "object",
            "properties": {"max_tokens": {"type": "integer", "minimum": 0},
                           "max_cost_usd": {"type": "number", "minimum": 0}},
            "additionalProperties": False,
        },
    },
}


@executor("agent", config_schema=CONFIG_SCHEMA,
          description="An LLM agent (OpenAI function calling) with tools execute_pipeline, patch_workflow, "
          "search_tools, openapi_action, delegate_to_agent; it may add nodes after itself.")
def run_agent_node(ctx: NodeContext) -> Any:
    from agents.loop import run_agent

    return run_agent(ctx)
