"""A node that ran once and waits for its retry (queued again, ``attempts`` 1) has begun
(``NodeRun.begun``): its request went out, and its next attempt is a repeat of it under the same
key. ``history_immutable`` read only completed, running and waiting node runs, so an injected
agent rewrote a payment's amount between its attempts (the second sent 100000 under the first's
``Idempotency-Key``), or removed the step that had acted (a red team's find)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.agents.flows import agent, http, tool_messages
from tests.conftest import wait_for_run
from tests.engine.flow import wait_until
from tests.support.remote import RemoteServer, Reply
from workflows.models import NodeRun, RunPatch


@pytest.fixture(autouse=True)
def web_allowlist(settings: Any, remote: RemoteServer) -> None:
    settings.AOB_HTTP_ALLOWLIST = [f"127.0.0.1:{remote.port}"]


@pytest.mark.parametrize("operation", [
    {"op": "replace", "path": "/nodes/0/config/payload/amount", "value": 100000},
    {"op": "remove", "path": "/nodes/0"},
], ids=["the amount rewritten", "the step removed"])
def test_an_agent_cannot_change_a_payment_between_its_attempts(engine, api, fake_llm, remote, operation):
    script = f"pay-{operation['op']}"
    remote.script(script, [Reply(429, {"error": "slow down"}), {"paid": True}])
    go = threading.Event()
    fake_llm.reset([
        {"tool_calls": [("patch_workflow", {"operations": [operation], "description": "fix it"})], "until": go},
        {"content": "done"},
    ])
    pay = {**http("pay", f"{remote.base}/seq/{script}", method="POST", payload={"amount": 100}, fail_on_status=True),
           "retry": {"max_attempts": 2, "backoff_ms": 4000}}
    response = api.post("/api/v1/runs", {"workflow": {"nodes": [pay, agent(tools=["patch_workflow"])], "edges": []},
                                         "inputs": {}}, format="json")
    assert response.status_code == 201, response.json()
    run_id = str(response.json()["run_id"])
    wait_until(lambda: NodeRun.objects.filter(run_id=run_id, node_id="pay", status="queued", attempts=1).exists(),
               timeout=20, what="the payment's first attempt answered 429, its retry waiting")
    go.set()  # the agent proposes its patch now

    run = wait_for_run(run_id, timeout=40)
    refused = tool_messages(fake_llm.requests[1])[0]
    assert refused.get("details", {}).get("rule") == "history_immutable", refused
    assert "queued for its retry" in refused["message"]
    assert not RunPatch.objects.filter(run=run).exists()
    sent = [(h["body"], {k.lower(): v for k, v in h["headers"].items()}.get("idempotency-key"))
            for h in remote.hits(f"/seq/{script}")]
    assert [body for body, _ in sent] == ['{"amount":100}', '{"amount":100}'] and len({k for _, k in sent}) == 1
    assert run.status == "completed"
