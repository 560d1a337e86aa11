"""A resumed agent attempt repeating its ``delegate_to_agent`` call: the worker died after the
delegate's patch committed and before the journal kept the tool's answer, so the tool runs again
with the same proposal key and must name the node the first call added."""

from __future__ import annotations

from agents.tools import delegate
from agents.tools.base import AgentState
from tests.agents.test_agent_view import running_run
from workflows.models import Artifact, Run, RunPatch
from workflows.registry import NodeContext


def test_a_resumed_delegate_call_names_the_node_its_patch_added(user):
    run = running_run(user, [{"id": "plan", "type": "agent", "config": {"task": "t", "tools": ["delegate_to_agent"]}}],
                      [], running=("plan",))
    node_run = run.node_runs.get(node_id="plan")

    def attempt(number: int) -> dict:
        ctx = NodeContext(run_id=str(run.pk), node_run_id=node_run.pk, node_id="plan", node_type="agent",
                          iteration=0, attempt=number, config={"task": "t"}, raw_config={"task": "t"}, inputs={},
                          outputs={}, timeout_s=None, owner_id=run.owner_id)
        state = AgentState(ctx=ctx, tools=["delegate_to_agent"], proposal_key=f"{node_run.pk}:0:0")
        return delegate.run(state, {"task": "summarise"})

    first = attempt(1)
    resumed = attempt(2)

    current = Artifact.objects.get(pk=Run.objects.get(pk=run.pk).current_artifact_id).content
    assert RunPatch.objects.filter(run=run).count() == 1
    assert resumed["patch_id"] == first["patch_id"]
    assert resumed["node_id"] == first["node_id"] == "plan_delegate"
    assert resumed["node_id"] in {n["id"] for n in current["nodes"]}
