"""Per-run LLM budgets and usage accounting: checked before every call, recorded after it."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from agents.exceptions import BudgetExceeded
from agents.llm import Call
from aob_project.metrics import LLM_COST, LLM_TOKENS
from workflows.models import NodeRun, Run


def totals(run_id: str) -> dict[str, Any]:
    usage = Run.objects.values_list("usage", flat=True).get(pk=run_id) or {}
    return {"tokens": usage.get("tokens", 0), "cost_usd": usage.get("cost_usd", 0.0), "calls": usage.get("calls", 0)}


def check(run_id: str, budget: dict[str, Any] | None) -> None:
    if not budget:
        return
    spent = totals(run_id)
    max_tokens, max_cost = budget.get("max_tokens"), budget.get("max_cost_usd")
    if max_tokens is not None and spent["tokens"] >= max_tokens:
        raise BudgetExceeded(f"run has used {spent['tokens']} tokens of its budget of {max_tokens}",
                             extra={"spent": spent, "budget": budget})
    if max_cost is not None and spent["cost_usd"] >= max_cost:
        raise BudgetExceeded(f"run has spent ${spent['cost_usd']:.6f} of its budget of ${max_cost}",
                             extra={"spent": spent, "budget": budget})


def record(run_id: str, node_run_id: int, call: Call) -> None:
    tokens = call.prompt_tokens + call.completion_tokens
    LLM_TOKENS.labels(call.model, "prompt").inc(call.prompt_tokens)
    LLM_TOKENS.labels(call.model, "completion").inc(call.completion_tokens)
    LLM_TOKENS.labels(call.model, "cached").inc(call.cached_tokens)
    LLM_COST.labels(call.model).inc(call.cost_usd)
    with transaction.atomic():
        run = Run.objects.select_for_update().only("usage").get(pk=run_id)
        usage = dict(run.usage or {})
        usage["tokens"] = usage.get("tokens", 0) + tokens
        usage["prompt_tokens"] = usage.get("prompt_tokens", 0) + call.prompt_tokens
        usage["completion_tokens"] = usage.get("completion_tokens", 0) + call.completion_tokens
        usage["cached_tokens"] = usage.get("cached_tokens", 0) + call.cached_tokens
        usage["cost_usd"] = round(usage.get("cost_usd", 0.0) + call.cost_usd, 8)
        usage["calls"] = usage.get("calls", 0) + 1
        Run.objects.filter(pk=run_id).update(usage=usage)
        node_usage = NodeRun.objects.values_list("usage", flat=True).get(pk=node_run_id) or {}
        calls = [*node_usage.get("calls", []), call.as_dict()]
        NodeRun.objects.filter(pk=node_run_id).update(usage={
            "calls": calls,
            "prompt_tokens": sum(c["prompt_tokens"] for c in calls),
            "completion_tokens": sum(c["completion_tokens"] for c in calls),
            "cached_tokens": sum(c["cached_tokens"] for c in calls),
            "cost_usd": round(sum(c["cost_usd"] for c in calls), 8),
            "latency_ms": sum(c["latency_ms"] for c in calls),
        })
