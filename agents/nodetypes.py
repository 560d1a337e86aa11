"""``agent``: an LLM with tools that may patch the running workflow, registered by the agents app
(the registry's loader imports this module)."""

from __future__ import annotations

from typing import Any

from workflows.registry import NodeContext, executor

TOOL_NAMES = ("execute_pipeline", "patch_workflow", "search_tools", "openapi_action", "delegate_to_agent")
# Least privilege: no outbound calls (openapi_action) and no spawning (delegate_to_agent) unless asked.
DEFAULT_TOOLS = ("execute_pipeline", "patch_workflow", "search_tools")
DEFAULT_TOOL_ROUNDS = 5


def effective_tools(config: dict[str, Any]) -> list[str]:
    """The tools an agent node may call: ``tools`` as given (``[]`` is none), else the default set."""
    tools = config.get("tools") if isinstance(config, dict) else None
    if not isinstance(tools, list):
        return list(DEFAULT_TOOLS)
    return [t for t in dict.fromkeys(tools) if t in TOOL_NAMES]


def effective_tool_rounds(config: dict[str, Any]) -> int:
    """How many rounds of tool calls an agent node may make: ``max_tool_rounds``, else 5."""
    rounds = config.get("max_tool_rounds") if isinstance(config, dict) else None
    # the schema's ``integer`` takes ``50.0`` too: read as the number it is
    return int(rounds) if isinstance(rounds, int | float) and not isinstance(rounds, bool) else DEFAULT_TOOL_ROUNDS


def effective_model(config: dict[str, Any]) -> str:
    """The model an agent node with this config calls: the one it names, else the operator's
    default (``AOB_LLM_MODEL``). The loop calls it with the resolved config, the patch policy (through
    the registry) with the config as written."""
    from django.conf import settings

    model = config.get("model") if isinstance(config, dict) else None
    return model or settings.AOB_LLM_MODEL


CONFIG_SCHEMA = {
    "type": "object",
    "required": ["task"],
    "properties": {
        "task": {"type": "string", "minLength": 1, "maxLength": 50000},
        "model": {"type": "string", "minLength": 1, "maxLength": 200},
        "max_tool_rounds": {"type": "integer", "minimum": 0, "maximum": 50},
        "tools": {"type": "array", "items": {"enum": list(TOOL_NAMES)}, "uniqueItems": True,
                  "description": "The tools this agent may call; [] is none; missing gives "
                                 + ", ".join(DEFAULT_TOOLS)},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 200000,
                       "description": "Most completion tokens per model call (reserved from the budget before it)"},
        "auth": {
            "type": "object",
            "description": "Credentials openapi_action sends, per registered API: {api: {headers, query}}; "
                           "values may use $secrets.NAME (resolved at send time, never shown to the model)",
            "additionalProperties": {
                "type": "object",
                "properties": {"headers": {"type": "object", "additionalProperties": {"type": "string"}},
                               "query": {"type": "object", "additionalProperties": {"type": "string"}}},
                "additionalProperties": False,
            },
        },
        "budget": {
            "type": "object",
            "properties": {"max_tokens": {"type": "integer", "minimum": 0},
                           "max_cost_usd": {"type": "number", "minimum": 0}},
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}


def check_config(config: dict[str, Any]) -> list[tuple[str, str, str]]:
    """A model without a price is refused at save (and again before any call): no call is free."""
    from django.conf import settings

    model = config.get("model")
    if isinstance(model, str) and "$" not in model and model not in settings.AOB_LLM_PRICES:
        return [("/model", "model_unpriced", f"model {model!r} has no price in AOB_LLM_PRICES")]
    return []


def _settle_lapsed(run_id: str, status: str) -> None:
    """A run's end: its calls cut off mid-call are charged, a lease's time later (``budget.settle_later``)."""
    from agents import budget

    budget.settle_later(run_id)


@executor("agent", config_schema=CONFIG_SCHEMA, check=check_config, reads_upstream=True, grants=effective_tools,
          model=effective_model, tool_rounds=effective_tool_rounds, on_run_finished=_settle_lapsed,
          description="An LLM agent (OpenAI function calling) with tools (default execute_pipeline, patch_workflow, "
          "search_tools; also openapi_action, delegate_to_agent when listed); it may add nodes after itself.")
def run_agent_node(ctx: NodeContext) -> Any:
    from agents.loop import run_agent

    return run_agent(ctx)
