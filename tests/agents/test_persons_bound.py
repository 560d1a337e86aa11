"""The bound of a step an agent may change is the step as a person last set it
(``policy.persons``). Once an agent had written the step (a harmless query added), that read the
step as the run started: the owner's mid-run tightening (``timeout_ms`` 60 s to 1 s) was undone by
the agent's next patch, before or after the tightening (a red team's find, and a limit left alone
the session before). The same raise in one patch was always refused."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.agents.flows import agent, edge, http, node, tool_messages
from tests.conftest import wait_for_run
from tests.engine.flow import wait_until
from tests.support.remote import RemoteServer
from workflows.models import NodeRun, RunPatch

HARMLESS = {"operations": [{"op": "add", "path": "/nodes/1/config/query", "value": {"page": "1"}}],
            "description": "the first page"}
RAISE = {"operations": [{"op": "replace", "path": "/nodes/1/timeout_ms", "value": 60000}], "description": "more time"}
REMOVE = {"operations": [{"op": "remove", "path": "/edges/0"}, {"op": "remove", "path": "/nodes/1"}],
          "description": "drop it"}


@pytest.fixture(autouse=True)
def web_allowlist(settings: Any, remote: RemoteServer) -> None:
    settings.AOB_HTTP_ALLOWLIST = [f"127.0.0.1:{remote.port}"]


@pytest.mark.parametrize("order", ["tightened, then changed and raised", "changed, tightened, then raised",
                                   "tightened, then removed and added again raised",
                                   "control: tightened, then raised in one patch"])
def test_an_agent_cannot_undo_the_owner_s_mid_run_tightening(engine, api, fake_llm, remote, order):
    before, after = threading.Event(), threading.Event()
    step = {**http("slow", f"{remote.base}/sleep/3"), "timeout_ms": 60000}
    readd = {"operations": [{"op": "add", "path": "/nodes/-", "value": step},
                            {"op": "add", "path": "/edges/-", "value": edge("plan", "slow")}], "description": "back"}
    calls = ([HARMLESS, RAISE] if order.startswith("tightened, then changed") else
             [REMOVE, readd] if "removed" in order else [RAISE])
    if order.startswith("changed, tightened"):
        fake_llm.reset([{"tool_calls": [("patch_workflow", HARMLESS)], "until": before},
                        {"tool_calls": [("patch_workflow", RAISE)], "until": after}, {"content": "done"}])
    else:
        fake_llm.reset([{"tool_calls": [("patch_workflow", call) for call in calls], "until": after},
                        {"content": "done"}])
    response = api.post("/api/v1/runs", {"workflow": {"nodes": [agent(tools=["patch_workflow"]), step],
                                                      "edges": [edge("plan", "slow")]}, "inputs": {}}, format="json")
    assert response.status_code == 201, response.json()
    run_id = str(response.json()["run_id"])
    wait_until(lambda: NodeRun.objects.filter(run_id=run_id, node_id="plan", status="running").exists(),
               timeout=20, what="the agent running")
    if order.startswith("changed, tightened"):
        before.set()
        wait_until(lambda: RunPatch.objects.filter(run_id=run_id, status="applied").exists(), timeout=20,
                   what="the agent's harmless change applied")
    tightened = api.post(f"/api/v1/runs/{run_id}/patches", {
        "operations": [{"op": "replace", "path": "/nodes/1/timeout_ms", "value": 1000}],
        "description": "the owner: this step gets one second"}, format="json")
    assert tightened.status_code == 201, tightened.json()
    after.set()

    run = wait_for_run(run_id, timeout=40)
    answers = tool_messages(fake_llm.requests[-1])  # the whole conversation: each patch's answer
    assert len(answers) == len(calls) + order.startswith("changed"), answers
    assert answers[-1].get("details", {}).get("rule") == "agent_privilege", answers
    if len(calls) == 2 or order.startswith("changed"):
        assert answers[0]["status"] == "applied"  # a harmless change (or a removal) is the agent's to make
    if "removed" in order:  # its removal stands; the looser copy was refused
        assert not NodeRun.objects.filter(run=run, node_id="slow").exists()
        return
    assert node(run, "slow").status == "failed"  # under the owner's second, not the agent's minute
