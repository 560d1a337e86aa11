"""The agent node on real workers against a scripted OpenAI-compatible server: patching itself a
successor, correcting a refused patch, the spawn limit, plain answers, transient and permanent
LLM errors, budgets, usage and cost, and a prompt prefix that never changes."""

from __future__ import annotations

import json

import pytest

from tests.agents.flows import add_after, agent, edge, finish, http, node, start, tool_messages
from workflows.models import Event, PatchRefusal, RunPatch, Workflow

TEXT = {"content": "Done."}


def test_agent_adds_notify_node_that_runs_once_and_the_tag_does_not_move(engine, api, fake_llm, remote):
    definition = {"nodes": [agent(task="notify the team")], "edges": []}
    saved = api.post("/api/v1/workflows", {"tag_name": "agentic", "workflow": definition}, format="json").json()
    notify = http("notify", f"{remote.base}/echo", method="POST", payload={"msg": "done"})
    fake_llm.reset([{"tool_calls": [("patch_workflow", {"description": "notify", "operations": add_after("plan", notify)})]},
                    {"content": "Added a notify step."}])

    run_id = api.post("/api/v1/workflows/agentic/execute", {"inputs": {}}, format="json").json()["run_id"]
    run = finish(run_id)

    assert run.status == "completed", run.error
    assert node(run, "notify").status == "completed"
    assert [json.loads(h["body"]) for h in remote.hits("/echo")] == [{"msg": "done"}]
    plan = node(run, "plan").output
    assert plan["type"] == "text_response" and plan["message"] == "Added a notify step."
    assert plan["tool_calls"][0]["name"] == "patch_workflow"
    assert plan["tool_calls"][0]["result"]["status"] == "applied"
    patch = RunPatch.objects.get(run=run)
    assert (patch.seq, patch.node_id, run.current_artifact_id) == (1, "plan", patch.after_artifact_id)
    assert Event.objects.filter(run=run, type="patch_applied").count() == 1
    assert Workflow.objects.get(tag="agentic").current_version.artifact_id == saved["artifact_id"]
    assert run.base_artifact_id == saved["artifact_id"] != run.current_artifact_id


def test_a_refused_patch_goes_back_to_the_model_which_corrects_it(engine, api, fake_llm, remote):
    broken = add_after("plan", {"id": "notify", "type": "http", "config": {"method": "POST"}})  # no url
    fixed = add_after("plan", http("notify", f"{remote.base}/echo"))
    fake_llm.reset([{"tool_calls": [("patch_workflow", {"operations": broken})]},
                    {"tool_calls": [("patch_workflow", {"operations": fixed})]},
                    TEXT])

    run = finish(start(api, [agent()]))

    assert run.status == "completed", run.error
    refusal = tool_messages(fake_llm.requests[1])
    assert len(refusal) == 1 and refusal[0]["status"] == "error" and refusal[0]["error"] == "patch_rejected"
    assert "url" in refusal[0]["message"]
    last = fake_llm.requests[1]["body"]["messages"]
    assert last[-2]["role"] == "assistant" and last[-1]["tool_call_id"] == last[-2]["tool_calls"][0]["id"]
    assert tool_messages(fake_llm.requests[2])[-1]["status"] == "applied"
    assert [c["result"]["status"] for c in node(run, "plan").output["tool_calls"]] == ["error", "applied"]
    assert node(run, "notify").status == "completed" and len(remote.hits("/echo")) == 1
    assert RunPatch.objects.filter(run=run).count() == 1
    assert not Event.objects.filter(run=run, type="patch_rejected").exists()  # a refusal changes nothing
    refused = PatchRefusal.objects.get(run=run)
    assert (refused.agent, refused.node_id, refused.rule, refused.op) == (True, "plan", "config.required", 0)


SIX_HELPERS = [op for i in range(6) for op in add_after("plan", agent(f"helper{i}", "help", tools=[], max_tool_rounds=2))]


@pytest.mark.parametrize(("call", "metadata", "limit", "count"), [
    (("patch_workflow", {"operations": SIX_HELPERS}), None, 5, 6),  # AOB_MAX_AGENT_NODES: agents added
    (("delegate_to_agent", {"task": "help"}), {"max_agent_nodes": 0}, 0, 1),
    (("patch_workflow", {"operations": SIX_HELPERS}), {"max_agent_nodes": 50}, 5, 6),  # never raised
], ids=["default-limit-patch", "workflow-limit-delegate", "workflow-cannot-raise-the-ceiling"])
def test_the_spawn_limit_is_fed_back_then_fails_the_node_as_a_security_error(engine, api, fake_llm, call, metadata,
                                                                             limit, count):
    fake_llm.reset([{"tool_calls": [call]}] * 3)

    run = finish(start(api, [agent(max_tool_rounds=2, tools=["patch_workflow", "delegate_to_agent"])],
                       metadata=metadata))

    plan = node(run, "plan")
    assert (run.status, plan.status) == ("failed", "failed")
    assert plan.error["error_type"] == "SecurityError" and plan.error["reason"] == "excessive_agent_nodes"
    fed_back = tool_messages(fake_llm.requests[1])[0]
    assert fed_back["error"] == "excessive_agent_nodes"
    assert (fed_back["details"]["limit"], fed_back["details"]["count"]) == (limit, count)
    assert len(fake_llm.requests) == 3
    assert not RunPatch.objects.filter(run=run).exists()
    assert list(run.node_runs.values_list("node_id", flat=True)) == ["plan"]


def test_a_plain_text_answer_completes_the_node(engine, api, fake_llm):
    fake_llm.reset([{"content": "The answer is 42."}])

    run = finish(start(api, [agent(task="What is six times seven?")]))

    assert run.status == "completed", run.error
    output = node(run, "plan").output
    assert output["status"] == "success" and output["type"] == "text_response"
    assert output["message"] == "The answer is 42." and output["tool_calls"] == []
    assert "What is six times seven?" in fake_llm.requests[0]["body"]["messages"][1]["content"]


def test_a_500_is_retried_and_the_node_completes(engine, api, fake_llm):
    fake_llm.reset([{"status": 500}, {"content": "recovered"}])

    run = finish(start(api, [agent()]))

    assert run.status == "completed", run.error
    plan = node(run, "plan")
    assert plan.output["message"] == "recovered"
    assert plan.usage["calls"][0]["attempts"] == 2 and "InternalServerError" in plan.usage["calls"][0]["errors"][0]
    assert len(fake_llm.requests) == 2 and plan.attempts == 1
    keys = {r["headers"].get("idempotency-key") for r in fake_llm.requests}  # one call tried twice: one key
    assert len(keys) == 1 and None not in keys


@pytest.mark.parametrize(("script", "error_type", "retryable", "requests"), [
    ([{"status": 400, "message": "bad tool schema"}], "BadRequestError", False, 1),
    ([{"status": 503}] * 4, "InternalServerError", True, 4),
])
def test_an_llm_error_fails_the_node_with_its_class_and_a_retryable_flag(engine, api, fake_llm, script,
                                                                          error_type, retryable, requests):
    fake_llm.reset(script)

    run = finish(start(api, [agent()]))

    plan = node(run, "plan")
    assert (run.status, plan.status) == ("failed", "failed")
    assert (plan.error["error_type"], plan.error["retryable"]) == (error_type, retryable)
    assert len(fake_llm.requests) == requests


def test_over_budget_no_call_is_made(engine, api, fake_llm):
    fake_llm.reset([TEXT, TEXT])
    budget = {"max_tokens": 100}

    run = finish(start(api, [agent("first"), agent("second", budget=budget)], [edge("first", "second")]))

    second = node(run, "second")
    assert (run.status, second.status) == ("failed", "failed")
    assert second.error["error_type"] == "BudgetExceeded"
    assert len(fake_llm.requests) == 1  # the first node's only; the second made none
    assert run.usage["tokens"] == 120 and not second.usage


def test_a_zero_cost_budget_makes_no_call_at_all(engine, api, fake_llm):
    fake_llm.reset([TEXT])

    run = finish(start(api, [agent(budget={"max_cost_usd": 0})]))

    assert node(run, "plan").error["error_type"] == "BudgetExceeded"
    assert fake_llm.requests == []


def test_usage_is_recorded_per_call_on_the_node_and_totalled_on_the_run(engine, api, fake_llm):
    usage = {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200,
             "prompt_tokens_details": {"cached_tokens": 400}}
    fake_llm.reset([{"tool_calls": [("search_tools", {"query": "http"})], "usage": usage},
                    {"content": "ok", "usage": usage}])

    run = finish(start(api, [agent(model="gpt-4o")]))

    # gpt-4o in the price table: $2.50 input, $1.25 cached input, $10 output per million tokens
    per_call = (600 * 2.50 + 400 * 1.25 + 200 * 10.00) / 1_000_000
    plan = node(run, "plan")
    assert [c["model"] for c in plan.usage["calls"]] == ["gpt-4o", "gpt-4o"]
    assert plan.usage["calls"][0]["cost_usd"] == pytest.approx(per_call)
    assert {k: plan.usage[k] for k in ("prompt_tokens", "completion_tokens", "cached_tokens")} == {
        "prompt_tokens": 2000, "completion_tokens": 400, "cached_tokens": 800}
    assert plan.usage["cost_usd"] == pytest.approx(2 * per_call)
    assert all(c["latency_ms"] >= 0 for c in plan.usage["calls"])
    assert plan.output["usage"]["calls"] == 2 and plan.output["usage"]["cost_usd"] == pytest.approx(2 * per_call)
    assert run.usage["tokens"] == 2400 and run.usage["calls"] == 2
    assert run.usage["cost_usd"] == pytest.approx(2 * per_call)
    assert {r["body"]["model"] for r in fake_llm.requests} == {"gpt-4o"}
    assert api.get(f"/api/v1/runs/{run.pk}").json()["usage"]["tokens"] == 2400


def test_the_prompt_prefix_is_byte_identical_across_calls_and_runs(engine, api, fake_llm, remote):
    fake_llm.reset([{"tool_calls": [("search_tools", {"query": "http"})]}, TEXT, TEXT])
    first = finish(start(api, [agent(task="first task")]))
    second = finish(start(api, [http("fetch", f"{remote.base}/echo"), agent("other", task="second task")],
                          [edge("fetch", "other")], inputs={"x": 1}))

    assert first.status == second.status == "completed"
    systems = [r["body"]["messages"][0] for r in fake_llm.requests]
    assert len(systems) == 3 and systems[0]["role"] == "system"
    assert systems[0]["content"].encode() == systems[1]["content"].encode() == systems[2]["content"].encode()
    assert len({repr(r["body"]["tools"]) for r in fake_llm.requests}) == 1
    users = [r["body"]["messages"][1]["content"] for r in fake_llm.requests]
    assert "first task" in users[0] and "Your node id: plan" in users[0]
    assert "second task" in users[2] and "Your node id: other" in users[2] and '"x":1' in users[2]
    assert "fetch" in users[2] and "first task" not in systems[0]["content"]


def test_a_replay_counts_the_agent_nodes_its_source_s_agents_added_against_the_spawn_limit(engine, api, fake_llm):
    """The author allows one agent node added during a run. The agent adds a helper; the owner
    replays from the agent, whose definition (the source's, helper included) still shows the helper
    as the agent's (``agent_written`` follows ``replay_of``). Were the count to start again at 0, the
    replayed agent would add a second, a replay of that replay a third, and so on."""
    helper = agent("helper0", "help", tools=[], max_tool_rounds=1)
    fake_llm.reset([{"tool_calls": [("patch_workflow", {"operations": add_after("plan", helper)})]}, TEXT, TEXT])
    source = finish(start(api, [agent(max_tool_rounds=1, tools=["patch_workflow"])], metadata={"max_agent_nodes": 1}))
    assert source.status == "completed", source.error
    assert (node(source, "helper0").status, source.spawned_agents) == ("completed", 1)

    another = agent("helper1", "help", tools=[], max_tool_rounds=1)
    fake_llm.reset([{"tool_calls": [("patch_workflow", {"operations": add_after("plan", another)})]}, TEXT, TEXT])
    response = api.post(f"/api/v1/runs/{source.pk}/nodes/plan/replay", {}, format="json")
    assert response.status_code == 201, response.json()
    replay = finish(response.json()["run_id"])

    result = node(replay, "plan").output["tool_calls"][0]["result"]
    assert result["status"] == "error" and result["error"] == "excessive_agent_nodes", result
    assert (result["details"]["limit"], result["details"]["count"]) == (1, 2)
    assert not RunPatch.objects.filter(run=replay).exists()
    assert sorted(replay.node_runs.values_list("node_id", flat=True)) == ["helper0", "plan"]
    assert replay.spawned_agents == 1
