"""Which model an agent node calls is one fact, the agent type's (``agents.nodetypes.effective_model``,
its registry record's ``model``): the agent loop calls that model, and the patch policy allows an
agent's new agent node the model the type says one naming none calls, whatever the operator's
default is today."""

from __future__ import annotations

from typing import Any

import pytest

from agents import loop
from agents.nodetypes import effective_model
from workflows import registry
from workflows.services.patches import policy
from workflows.services.patches.policy import PatchRejected, Proposer, RunState, judge


def agent(node_id: str, **config: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "agent", "config": {"task": f"{node_id}: settle the invoice", **config}}


def test_the_agent_type_says_which_model_a_config_calls(settings) -> None:
    settings.AOB_LLM_MODEL = "gpt-4.1-mini"

    assert registry.get("agent").model is effective_model is loop.effective_model
    assert effective_model({"task": "t"}) == policy.effective_model({"task": "t"}) == "gpt-4.1-mini"
    named = {"task": "t", "model": "gpt-4o"}
    assert effective_model(named) == policy.effective_model(named) == "gpt-4o"


def test_the_policy_allows_the_default_model_the_agent_type_says(settings) -> None:
    """The proposer names gpt-4o; a helper it adds on gpt-4.1-mini is refused while the default is
    another model, and accepted once gpt-4.1-mini is what an agent naming none calls."""
    before = {"nodes": [agent("plan", model="gpt-4o")], "edges": []}
    operations = [{"op": "add", "path": "/nodes/-", "value": agent("helper", model="gpt-4.1-mini")},
                  {"op": "add", "path": "/edges/-", "value": {"from": "plan", "to": "helper"}}]
    proposer = Proposer(agent=True, node_id="plan")

    settings.AOB_LLM_MODEL = "gpt-4o-mini"
    with pytest.raises(PatchRejected) as refused:
        judge(before=before, operations=operations, proposer=proposer, state=RunState(base=before))
    assert refused.value.extra["rule"] == "agent_privilege" and "gpt-4.1-mini" in refused.value.message

    settings.AOB_LLM_MODEL = "gpt-4.1-mini"
    verdict = judge(before=before, operations=operations, proposer=proposer, state=RunState(base=before))
    assert verdict.spawned == 1
