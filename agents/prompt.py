"""The agent's prompt: a stable prefix first (role, tool guide, node-type catalogue, workflow
schema), byte-identical for every call of every run so provider prefix caching applies; then the
dynamic part (the current workflow as an agent may read it, ``agents.view``; this node, upstream
outputs, inputs, the task)."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from workflows import registry
from workflows.definition.validation import workflow_schema

ROLE = """You are an agent node inside an AOB workflow run. You can read the run's state and change \
the running workflow with JSON Patch (RFC 6902) operations through the patch_workflow tool, for \
example to add nodes after yourself; the run continues into what you add. Patches that break the \
rules are refused with the rule they break: read it, correct the operations, and try again. Nodes \
that have run, human approval (hitl) nodes and their edges, and the workflow's metadata are out of \
your reach; what you add must follow from your own node. Be brief in your final answer."""

TOOL_GUIDE = """Tools:
- execute_pipeline: fetch and reshape data: steps http_request, table_sort, table_filter, \
table_select, top_k, applied in order.
- patch_workflow: JSON Patch operations against the current workflow (paths like /nodes/- and /edges/-).
- search_tools: look up node types and their config schemas before you add nodes.
- openapi_action: call an operation of a registered OpenAPI API by operationId.
- delegate_to_agent: add an agent node with a sub-task after you (limited per run).
You may call only the tools you are given."""


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@cache
def stable_prefix() -> str:
    catalogue = {name: {"description": spec.description, "config_schema": spec.config_schema}
                 for name, spec in sorted(registry.catalogue().items())}
    return "\n\n".join([ROLE, TOOL_GUIDE, "Node types:\n" + _dumps(catalogue),
                        "Workflow JSON Schema:\n" + _dumps(workflow_schema())])


def dynamic_part(*, definition: dict[str, Any], node_id: str, upstream: dict[str, Any], inputs: dict[str, Any],
                 task: str) -> str:
    return "\n\n".join([
        "Current workflow:\n" + _dumps(definition),
        f"Your node id: {node_id}",
        "Upstream outputs:\n" + _dumps(upstream),
        "Run inputs:\n" + _dumps(inputs),
        "Task:\n" + task,
    ])


def messages(**dynamic: Any) -> list[dict[str, Any]]:
    return [{"role": "system", "content": stable_prefix()}, {"role": "user", "content": dynamic_part(**dynamic)}]
