"""Replay with ``reuse_llm``: the replayed agent node reuses the source run's recorded model
responses while its conversation matches the source's — no call, no cost — and calls the model
again from the first tool result that differs."""

from __future__ import annotations

from typing import Any

from tests.agents.flows import agent, finish, node, start

TEXT = {"content": "Done."}


def replay(api: Any, run_id: str, body: dict[str, Any] | None) -> str:
    response = api.post(f"/api/v1/runs/{run_id}/nodes/plan/replay", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["run_id"]


def test_a_replay_with_reuse_llm_makes_no_model_call(engine, api, fake_llm):
    fake_llm.reset([{"tool_calls": [("search_tools", {"query": "http"})]}, TEXT])
    source = finish(start(api, [agent(tools=["search_tools"])]))
    assert source.status == "completed", source.error
    assert len(fake_llm.requests) == 2
    spent = node(source, "plan").output["usage"]["cost_usd"]
    assert spent > 0

    fake_llm.reset([])  # any call now would answer "(script exhausted)"
    again = finish(replay(api, str(source.pk), {"reuse_llm": True}))
    assert again.status == "completed", again.error
    assert fake_llm.requests == []  # no call
    plan = node(again, "plan")
    assert plan.output["message"] == "Done."
    assert plan.output["tool_calls"] == node(source, "plan").output["tool_calls"]  # the tool ran again, same result
    assert plan.output["usage"]["cost_usd"] == 0  # no cost
    assert again.usage.get("cost_usd", 0) == 0


def test_a_replay_without_it_calls_the_model_again(engine, api, fake_llm):
    fake_llm.reset([{"tool_calls": [("search_tools", {"query": "http"})]}, TEXT])
    source = finish(start(api, [agent(tools=["search_tools"])]))
    fake_llm.reset([{"tool_calls": [("search_tools", {"query": "http"})]}, TEXT])
    again = finish(replay(api, str(source.pk), None))
    assert again.status == "completed", again.error
    assert len(fake_llm.requests) == 2


def test_reuse_ends_at_the_first_tool_result_that_differs(engine, api, fake_llm, remote):
    remote.script("moving", [{"v": 1}, {"v": 2}])
    pipeline = {"steps": [{"op": "http_request", "url": f"{remote.base}/seq/moving"}]}
    fake_llm.reset([{"tool_calls": [("execute_pipeline", pipeline)]}, {"content": "saw 1"}])
    source = finish(start(api, [agent(tools=["execute_pipeline"])]))
    assert node(source, "plan").output["message"] == "saw 1"

    fake_llm.reset([{"content": "saw 2"}])
    again = finish(replay(api, str(source.pk), {"reuse_llm": True}))
    assert again.status == "completed", again.error
    assert len(fake_llm.requests) == 1  # turn 0 reused; the tool answered otherwise, so turn 1 was called
    assert node(again, "plan").output["message"] == "saw 2"


def test_reuse_llm_must_be_a_boolean(engine, api, fake_llm):
    fake_llm.reset([TEXT])
    source = finish(start(api, [agent(tools=[])]))
    response = api.post(f"/api/v1/runs/{source.pk}/nodes/plan/replay", {"reuse_llm": "yes"}, format="json")
    assert response.status_code == 400
    assert "reuse_llm" in str(response.json())
    a_list = api.post(f"/api/v1/runs/{source.pk}/nodes/plan/replay", [], format="json")  # was read as {}
    assert a_list.status_code == 400 and a_list.json()["error"] == "validation_error", a_list.json()
