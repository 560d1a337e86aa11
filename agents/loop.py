"""The agent loop: call the model, run the tools it asks for in order, feed the results back,
until it answers without tools or the rounds run out. A refused patch is a tool result, so the
model can correct itself within ``max_tool_rounds``."""

from __future__ import annotations

import json
import logging
from typing import Any

import openai
from django.conf import settings
from jsonschema import Draft202012Validator

from agents import budget, llm, prompt
from agents.exceptions import SecurityError
from agents.tools import TOOLS, AgentState, schemas
from aob_project.exceptions import AobError
from workers.registry import NodeContext
from workflows.models import Artifact, Run

logger = logging.getLogger(__name__)


def _usage_totals(calls: list[llm.Call]) -> dict[str, Any]:
    return {"calls": len(calls), "prompt_tokens": sum(c.prompt_tokens for c in calls),
            "completion_tokens": sum(c.completion_tokens for c in calls),
            "cached_tokens": sum(c.cached_tokens for c in calls),
            "cost_usd": round(sum(c.cost_usd for c in calls), 8)}


def _run_tool(state: AgentState, name: str, raw_args: str) -> Any:
    tool = TOOLS.get(name)
    allowed = state.ctx.config.get("tools")
    if tool is None or (allowed and name not in allowed):
        return {"status": "error", "error": "unknown_tool", "message": f"tool {name!r} is not available"}
    try:
        args = json.loads(raw_args or "{}")
    except ValueError as exc:
        return {"status": "error", "error": "invalid_arguments", "message": f"arguments are not JSON: {exc}"}
    if not isinstance(args, dict):
        return {"status": "error", "error": "invalid_arguments", "message": "arguments must be a JSON object"}
    problem = next(iter(sorted(Draft202012Validator(tool.parameters).iter_errors(args), key=lambda e: list(e.path))),
                   None)
    if problem is not None:  # the schema is only advice to the model: hold it to it
        where = "/" + "/".join(str(p) for p in problem.absolute_path)
        return {"status": "error", "error": "invalid_arguments", "message": f"{where}: {problem.message}"}
    try:
        return tool.run(state, args)
    except AobError as exc:
        return {"status": "error", "error": exc.code, "message": exc.message}


def run_agent(ctx: NodeContext) -> dict[str, Any]:
    config = ctx.config
    model = config.get("model") or settings.AOB_LLM_MODEL
    rounds = int(config.get("max_tool_rounds", 5))
    run = Run.objects.only("current_artifact_id").get(pk=ctx.run_id)
    definition = Artifact.objects.values_list("content", flat=True).get(pk=run.current_artifact_id)
    messages = prompt.messages(definition=definition, node_id=ctx.node_id, upstream=ctx.outputs, inputs=ctx.inputs,
                               task=str(config.get("task", "")))
    tools = schemas(config.get("tools"))
    state = AgentState(ctx=ctx)
    calls: list[llm.Call] = []
    tool_calls: list[dict[str, Any]] = []
    for _ in range(rounds + 1):
        budget.check(ctx.run_id, config.get("budget"))
        try:
            response, call = llm.chat(model=model, messages=messages, tools=tools)
        except openai.APIError as exc:
            retryable = isinstance(exc, llm.TRANSIENT)
            raise AobError(f"LLM call failed: {exc}", code=type(exc).__name__,
                           extra={"retryable": retryable, "transient": False}) from exc
        calls.append(call)
        budget.record(ctx.run_id, ctx.node_run_id, call)
        message = response.choices[0].message
        if not message.tool_calls:
            return {"status": "success", "type": "text_response", "message": message.content or "",
                    "tool_calls": tool_calls, "usage": _usage_totals(calls)}
        if len(calls) > rounds:
            break
        messages.append({"role": "assistant", "content": message.content,
                         "tool_calls": [{"id": c.id, "type": "function",
                                         "function": {"name": c.function.name, "arguments": c.function.arguments}}
                                        for c in message.tool_calls]})
        for call_ in message.tool_calls:
            result = _run_tool(state, call_.function.name, call_.function.arguments)
            tool_calls.append({"name": call_.function.name, "arguments": _parsed(call_.function.arguments),
                               "result": result})
            messages.append({"role": "tool", "tool_call_id": call_.id, "content": json.dumps(result, default=str)})
    if state.spawn_limit_hit:
        raise SecurityError("the agent kept asking for more agent nodes than the run allows",
                            extra={"reason": "excessive_agent_nodes", "tool_calls": tool_calls[-3:]})
    last = tool_calls[-1]["result"] if tool_calls else None
    return {"status": "success", "type": "tool_result",
            "message": f"stopped after {len(calls)} model calls; last tool result attached",
            "tool_calls": tool_calls, "usage": _usage_totals(calls), "result": last}


def _parsed(raw: str) -> Any:
    try:
        return json.loads(raw or "{}")
    except ValueError:
        return raw


