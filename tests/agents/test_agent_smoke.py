"""The agent adds a notify HTTP node after itself; it runs once; the tag does not move."""

from __future__ import annotations

from tests.conftest import wait_for_run
from workflows.models import NodeRun, Workflow


def test_agent_adds_notify_node_that_runs_once(engine, api, fake_llm, remote):
    definition = {"nodes": [{"id": "plan", "type": "agent", "config": {"task": "notify the team"}}], "edges": []}
    saved = api.post("/api/v1/workflows", {"tag_name": "agentic", "workflow": definition}, format="json").json()
    fake_llm.reset([
        {"tool_calls": [("patch_workflow", {"description": "notify", "operations": [
            {"op": "add", "path": "/nodes/-", "value": {"id": "notify", "type": "http",
                                                        "config": {"url": f"{remote.base}/echo", "method": "POST",
                                                                   "payload": {"msg": "done"}}}},
            {"op": "add", "path": "/edges/-", "value": {"from": "plan", "to": "notify"}}]})]},
        {"content": "Added a notify step."},
    ])
    run_id = api.post("/api/v1/workflows/agentic/execute", {"inputs": {}}, format="json").json()["run_id"]
    run = wait_for_run(run_id, timeout=30)
    assert run.status == "completed", run.error
    notify = NodeRun.objects.get(run=run, node_id="notify")
    assert notify.status == "completed"
    assert len(remote.hits("/echo")) == 1
    plan = NodeRun.objects.get(run=run, node_id="plan")
    assert plan.output["type"] == "text_response"
    assert plan.output["tool_calls"][0]["result"]["status"] == "applied"
    assert Workflow.objects.get(tag="agentic").current_version.artifact_id == saved["artifact_id"]
    assert len(fake_llm.requests) == 2
    system = [r["body"]["messages"][0]["content"] for r in fake_llm.requests]
    assert system[0] == system[1]
