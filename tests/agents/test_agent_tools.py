"""The agent's data and discovery tools on real workers: execute_pipeline, search_tools,
openapi_action and delegate_to_agent."""

from __future__ import annotations

import json

from tests.agents.flows import agent, finish, node, start, tool_messages
from workflows import registry
from workflows.models import Artifact

TEXT = {"content": "Done."}
SCORES = [{"name": "ada", "score": 71}, {"name": "bob", "score": 93}, {"name": "cy", "score": 55},
          {"name": "dee", "score": 88}, {"name": "eve", "score": 64}]


def test_a_pipeline_fetches_sorts_and_takes_the_top_three(engine, api, fake_llm, remote):
    remote.script("scores", [SCORES])
    pipeline = {"steps": [{"op": "http_request", "url": f"{remote.base}/seq/scores"},
                          {"op": "table_sort", "by": "score", "descending": True},
                          {"op": "top_k", "k": 3}]}
    blocked = {"steps": [{"op": "http_request", "url": "http://169.254.169.254/latest/meta-data"}]}
    fake_llm.reset([{"tool_calls": [("execute_pipeline", pipeline), ("execute_pipeline", blocked)]}, TEXT])

    run = finish(start(api, [agent(task="top three scores")]))

    assert run.status == "completed", run.error
    top3 = [{"name": "bob", "score": 93}, {"name": "dee", "score": 88}, {"name": "ada", "score": 71}]
    first, second = node(run, "plan").output["tool_calls"]
    assert first["result"]["status"] == "success" and first["result"]["data"] == top3
    assert [s["op"] for s in first["result"]["pipeline_steps"]] == ["http_request", "table_sort", "top_k"]
    assert first["result"]["pipeline_steps"][0]["status_code"] == 200
    assert second["result"]["status"] == "error"  # the SSRF-safe client refused the metadata address
    fed_back = tool_messages(fake_llm.requests[1])
    assert fed_back[0]["data"] == top3 and fed_back[1]["status"] == "error"
    assert len(remote.hits("/seq/scores")) == 1


def test_search_tools_returns_the_http_node_config_schema(engine, api, fake_llm):
    fake_llm.reset([{"tool_calls": [("search_tools", {"query": "http"})]}, TEXT])

    run = finish(start(api, [agent()]))

    result = node(run, "plan").output["tool_calls"][0]["result"]
    found = {t["type"]: t for t in result["node_types"]}
    assert found["http"]["config_schema"] == registry.catalogue()["http"].config_schema
    assert found["http"]["config_schema"]["required"] == ["url"]
    assert "hitl" not in found
    assert tool_messages(fake_llm.requests[1])[0] == json.loads(json.dumps(result))


def test_openapi_action_calls_an_operation_of_a_registered_spec(engine, api, fake_llm, remote):
    create = {"api": "remote", "operation_id": "createOrder", "body": {"sku": "A-1", "qty": 2}}
    get = {"api": "remote", "operation_id": "getItem", "parameters": {"item_id": "a b", "verbose": True}}
    missing = {"api": "remote", "operation_id": "getItem"}
    unknown = {"api": "nowhere", "operation_id": "x"}
    # ".." went out unencoded and the client removed the dot segment: GET /echo, no operation of the
    # spec, with the node's credentials for the API (a red-team helper's finding)
    climbs = [{"api": "remote", "operation_id": "getItem", "parameters": {"item_id": dots}} for dots in ("..", ".")]
    fake_llm.reset([{"tool_calls": [("openapi_action", a) for a in (create, get, missing, unknown, *climbs)]}, TEXT])

    run = finish(start(api, [agent(tools=["openapi_action"])]))

    assert run.status == "completed", run.error
    created, got, no_param, no_api, *climbed = [c["result"] for c in node(run, "plan").output["tool_calls"]]
    assert all(c["status"] == "error" and "'.' or '..'" in c["message"] for c in climbed), climbed
    assert created["status"] == "success" and created["status_code"] == 200
    assert created["body"]["method"] == "POST" and created["body"]["json"] == {"sku": "A-1", "qty": 2}
    assert got["body"]["path"] == "/echo/items/a%20b" and got["body"]["query"] == {"verbose": ["true"]}
    assert no_param["status"] == "error" and "item_id" in no_param["message"]
    assert no_api["status"] == "error" and "remote" in no_api["message"]
    assert [h["path"] for h in remote.hits("/echo")] == ["/echo/orders", "/echo/items/a%20b"]


def test_delegate_to_agent_adds_an_agent_node_that_runs(engine, api, fake_llm):
    fake_llm.reset([{"tool_calls": [("delegate_to_agent", {"task": "summarize the findings"})]},
                    {"content": "delegated"},
                    {"content": "summary"}])

    delegator = {**agent(tools=["delegate_to_agent", "search_tools"], budget={"max_cost_usd": 1}, max_tool_rounds=3),
                 "timeout_ms": 60000, "retry": {"max_attempts": 2}}
    run = finish(start(api, [delegator]))

    assert run.status == "completed", run.error
    result = node(run, "plan").output["tool_calls"][0]["result"]
    assert result["status"] == "applied" and result["node_id"] == "plan_delegate"
    sub = node(run, "plan_delegate")
    assert (sub.node_type, sub.status, sub.output["message"]) == ("agent", "completed", "summary")
    assert len(fake_llm.requests) == 3
    dynamic = fake_llm.requests[2]["body"]["messages"][1]["content"]
    assert "Your node id: plan_delegate" in dynamic and "summarize the findings" in dynamic
    # the delegate inherits its delegator's tools, budget, tool rounds, attempts and time, never more
    assert sub.input["tools"] == ["delegate_to_agent", "search_tools"] and sub.input["budget"] == {"max_cost_usd": 1}
    assert sub.input["max_tool_rounds"] == 3
    added = Artifact.objects.get(pk=run.current_artifact_id).content["nodes"][-1]
    assert (added["id"], added["timeout_ms"], added["retry"]) == ("plan_delegate", 60000, {"max_attempts": 2})
    assert [t["function"]["name"] for t in fake_llm.requests[2]["body"]["tools"]] == ["delegate_to_agent",
                                                                                     "search_tools"]


def test_arguments_that_break_a_tools_schema_go_back_to_the_model(engine, api, fake_llm):
    fake_llm.reset([{"tool_calls": [("delegate_to_agent", {}), ("execute_pipeline", {"steps": [{"op": "top_k",
                                                                                                "k": "three"}]})]},
                    TEXT])

    run = finish(start(api, [agent(tools=["delegate_to_agent", "execute_pipeline"])]))

    assert run.status == "completed", run.error
    missing, wrong = tool_messages(fake_llm.requests[1])
    assert (missing["status"], missing["error"]) == ("error", "invalid_arguments") and "task" in missing["message"]
    assert (wrong["status"], wrong["error"]) == ("error", "invalid_arguments") and "three" in wrong["message"]


def test_each_tool_request_carries_its_own_idempotency_key(engine, api, fake_llm, remote):
    pipeline = {"steps": [{"op": "http_request", "url": f"{remote.base}/echo/one"},
                          {"op": "http_request", "url": f"{remote.base}/echo/two", "method": "POST", "payload": {}}]}
    own = {"steps": [{"op": "http_request", "url": f"{remote.base}/echo/own", "headers": {"Idempotency-Key": "mine"}}]}
    create = {"api": "remote", "operation_id": "createOrder", "body": {"sku": "A-1", "qty": 1}}
    fake_llm.reset([{"tool_calls": [("execute_pipeline", pipeline), ("execute_pipeline", own),
                                    ("openapi_action", create)]}, TEXT])

    run = finish(start(api, [agent(tools=["execute_pipeline", "openapi_action"])]))

    assert run.status == "completed", run.error
    keys = {h["path"]: next((v for k, v in h["headers"].items() if k.lower() == "idempotency-key"), None)
            for h in remote.hits("/echo")}
    assert set(keys) == {"/echo/one", "/echo/two", "/echo/own", "/echo/orders"}
    assert keys["/echo/own"] == "mine"  # a step's own header wins
    generated = [keys[p] for p in ("/echo/one", "/echo/two", "/echo/orders")]
    assert all(generated) and len(set(generated)) == 3  # one per step and per call


def test_one_message_s_tool_calls_are_bounded_in_number_size_and_nesting(engine, api, fake_llm, remote, settings):
    """What an injected model can make a worker build and keep with one message: a few small rows
    times a hundred named fields (160 KB fetched became 56 MB stored, 350 MB of worker memory), a
    fetch larger than the model can read, arguments nested past the parser (the node failed), and
    as many calls as the message holds. Each is now a tool result the model can act on, none past
    ``AOB_AGENT_TOOL_RESULT_MAX_BYTES``, and the node completes."""
    from django.conf import settings as live

    from agents.models import AgentTurn
    from tests.support.fake_llm import RawArguments

    cap, most = live.AOB_AGENT_TOOL_RESULT_MAX_BYTES, live.AOB_AGENT_MAX_TOOL_CALLS_PER_TURN
    remote.script("empties", [[{}] * 40_000])
    remote.script("large", [[{"text": "x" * 1000}] * (cap // 1000 + 10)])
    widen = {"steps": [{"op": "http_request", "url": f"{remote.base}/seq/empties"},
                       {"op": "table_select", "fields": [f"field_{i:02}" for i in range(100)]}]}
    large = {"steps": [{"op": "http_request", "url": f"{remote.base}/seq/large"}]}
    nested = RawArguments("[" * 5000 + "]" * 5000)
    calls = [("execute_pipeline", widen), ("execute_pipeline", large), ("search_tools", nested)]
    calls += [("search_tools", {"query": "http"})] * (most + 2 - len(calls))
    fake_llm.reset([{"tool_calls": calls}, TEXT])

    run = finish(start(api, [agent(tools=["execute_pipeline", "search_tools"])]))

    assert run.status == "completed", run.error
    results = [c["result"] for c in node(run, "plan").output["tool_calls"]]
    assert len(results) == most + 2
    assert results[0]["status"] == "error" and "table_select would make" in results[0]["message"]
    assert (results[1]["error"], results[1]["limit"]) == ("result_too_large", cap) and results[1]["bytes"] > cap
    assert results[2]["error"] == "invalid_arguments"
    assert all(r["error"] == "too_many_tool_calls" for r in results[most:])
    assert all("node_types" in r for r in results[3:most])
    kept = [len(json.dumps(t.content)) for t in AgentTurn.objects.filter(node_run__run_id=run.pk)]
    assert kept and max(kept) < cap
    assert len(remote.hits("/seq/empties")) == len(remote.hits("/seq/large")) == 1


def test_a_select_may_make_what_it_was_given_and_a_result_jsonb_cannot_hold_is_an_error(engine, api, fake_llm,
                                                                                        remote):
    """A select is bounded by what the steps fetched, not by a tool result's bound: 3,000 rows of
    five fields, sorted and cut to ten, is a small result (it was refused while the select's
    in-between table passed 256 KiB). A remote's NaN or NUL in a result could not be journaled (the
    node crashed on its write); it is now a tool result saying so."""
    fields = ["identifier", "name_of_player", "score_total", "home_city", "team_name"]  # 93 bytes a row named
    rows = [{"identifier": i, "name_of_player": f"n{i}", "score_total": i % 97, "home_city": "c" * 40,
             "team_name": "t" * 40, "note": "x" * 60} for i in range(3000)]
    remote.script("rows", [rows])
    remote.script("odd", [{"value": "a\u0000b"}])
    select = {"steps": [{"op": "http_request", "url": f"{remote.base}/seq/rows"},
                        {"op": "table_select", "fields": fields},
                        {"op": "table_sort", "by": "score_total", "descending": True}, {"op": "top_k", "k": 10}]}
    odd = {"steps": [{"op": "http_request", "url": f"{remote.base}/seq/odd"}]}
    fake_llm.reset([{"tool_calls": [("execute_pipeline", select), ("execute_pipeline", odd)]}, TEXT])

    run = finish(start(api, [agent(tools=["execute_pipeline"])]))

    assert run.status == "completed", run.error
    first, second = (c["result"] for c in node(run, "plan").output["tool_calls"])
    assert first["status"] == "success" and [r["score_total"] for r in first["data"]] == [96] * 10
    assert (second["error"], second["rule"]) == ("result_not_storable", "nul_character")


def test_a_pipeline_refused_after_its_request_went_out_says_it_was_sent(engine, api, fake_llm, remote):
    """A later step's error threw away the steps done: the model was told only that the pipeline
    failed, called again with a new Idempotency-Key, and the remote applied the payment twice."""
    pay = {"steps": [{"op": "http_request", "method": "POST", "url": f"{remote.base}/effect/pay/0",
                      "payload": {"amount": 100}},
                     {"op": "table_sort", "by": "amount"}]}  # the answer is an object, not rows
    fake_llm.reset([{"tool_calls": [("execute_pipeline", pay)]}, TEXT])

    run = finish(start(api, [agent(tools=["execute_pipeline"])]))

    assert run.status == "completed", run.error
    assert len(remote.effects("pay")) == 1
    result = node(run, "plan").output["tool_calls"][0]["result"]
    assert (result["status"], result["sent"], result["requests_sent"]) == ("error", True, 1), result
    assert result["pipeline_steps"] == [{"step": 0, "op": "http_request", "status_code": 200}]
    assert "table_sort needs a list" in result["message"] and "step 0 (200)" in result["message"]
    assert tool_messages(fake_llm.requests[1])[0] == result


def test_an_answer_too_large_to_keep_still_says_its_request_was_sent(engine, api, fake_llm, remote):
    """The order was placed and its answer (an echo of 300 KB) replaced by ``result_too_large``,
    whose advice named table steps ``openapi_action`` has not, and nothing said the order went."""
    create = {"api": "remote", "operation_id": "createOrder", "body": {"sku": "A-1", "note": "x" * 300_000}}
    fake_llm.reset([{"tool_calls": [("openapi_action", create)]}, TEXT])

    run = finish(start(api, [agent(tools=["openapi_action"])]))

    assert run.status == "completed", run.error
    assert [h["method"] for h in remote.hits("/echo/orders")] == ["POST"]
    result = node(run, "plan").output["tool_calls"][0]["result"]
    assert (result["error"], result["sent"], result["status_code"]) == ("result_too_large", True, 200), result
    assert "answered 200" in result["message"] and "table_" not in result["message"]


def test_a_post_answered_by_a_redirect_then_refused_says_it_was_sent(engine, api, fake_llm, remote):
    """The remote answered the POST with a 307 (having applied it, maybe) to a place the SSRF policy
    refuses: the model was told only of the refusal, and called again with a new Idempotency-Key."""
    to = "http://169.254.169.254/latest"
    pay = {"steps": [{"op": "http_request", "method": "POST", "payload": {"amount": 100},
                      "url": f"{remote.base}/redirect?code=307&to={to}"}]}
    fake_llm.reset([{"tool_calls": [("execute_pipeline", pay)]}, TEXT])

    run = finish(start(api, [agent(tools=["execute_pipeline"])]))

    assert run.status == "completed", run.error
    assert [h["method"] for h in remote.hits("/redirect")] == ["POST"]
    result = node(run, "plan").output["tool_calls"][0]["result"]
    assert (result["error"], result["rule"]) == ("SSRFBlocked", "cloud-metadata"), result
    assert (result["sent"], result["requests_sent"]) == (True, 1), result
    assert "step 0 was sent and may have taken effect" in result["message"], result


def test_a_request_that_failed_after_it_went_out_says_it_may_have_taken_effect(engine, api, fake_llm, remote,
                                                                                 stack_env, tmp_path):
    """The remote applied the order (or the payment), then answered past the deadline, past the
    size cap, or dropped the connection: the client knew the request had gone out (its ``sent``),
    but the model was told only of a timeout, called again with a new Idempotency-Key, and the
    remote applied it twice. Each now says it was sent and may have taken effect."""
    from tests.security.conftest import swapped_worker

    spec = tmp_path / "shop.json"
    spec.write_text(json.dumps({"openapi": "3.0.3", "paths": {
        "/effect/order/8": {"post": {"operationId": "placeOrder"}},
        "/big/70000": {"post": {"operationId": "placeLargeOrder"}}}}))
    post = {"op": "http_request", "method": "POST", "payload": {"amount": 100}}
    calls = [("openapi_action", {"api": "shop", "operation_id": "placeOrder", "body": {"sku": "A-1"}}),
             ("openapi_action", {"api": "shop", "operation_id": "placeLargeOrder", "body": {"sku": "A-2"}}),
             ("execute_pipeline", {"steps": [{**post, "url": f"{remote.base}/echo/first"},
                                             {**post, "url": f"{remote.base}/effect/pay/8"}]}),
             ("execute_pipeline", {"steps": [{**post, "url": f"{remote.base}/big/70000"}]}),
             ("execute_pipeline", {"steps": [{**post, "url": f"{remote.base}/flaky/drop/1"}]})]
    fake_llm.reset([{"tool_calls": calls}, TEXT])

    specs = json.dumps({"shop": {"spec": str(spec), "base_url": remote.base}})
    with swapped_worker(engine, stack_env, "sent-unknown", AOB_HTTP_TIMEOUT_S="2",
                        AOB_HTTP_MAX_RESPONSE_BYTES="65536", AOB_OPENAPI_SPECS=specs):
        run = finish(start(api, [agent(tools=["openapi_action", "execute_pipeline"])]))

    assert run.status == "completed", run.error
    assert len(remote.effects("order")) == len(remote.effects("pay")) == 1
    assert len(remote.hits("/big")) == 2 and len(remote.hits("/flaky")) == 1
    late, large, paid, fetched, dropped = (c["result"] for c in node(run, "plan").output["tool_calls"])
    assert (late["error"], late["sent"]) == ("HTTPRequestError", True) and "timed out" in late["message"], late
    assert (large["error"], large["sent"]) == ("ResponseTooLarge", True), large
    assert all("may have taken effect (outcome unknown)" in r["message"] and "answered" not in r["message"]
               for r in (late, large, fetched, dropped)), (late, large, fetched, dropped)
    assert (paid["sent"], paid["requests_sent"]) == (True, 2), paid
    assert paid["pipeline_steps"] == [{"step": 0, "op": "http_request", "status_code": 200},
                                      {"step": 1, "op": "http_request", "status_code": None}]
    assert "step 0 (200)" in paid["message"] and "step 1 was sent and may have taken effect" in paid["message"], paid
    assert [(r["sent"], r["requests_sent"]) for r in (fetched, dropped)] == [(True, 1)] * 2, (fetched, dropped)
    assert tool_messages(fake_llm.requests[1]) == [late, large, paid, fetched, dropped]


def test_a_node_s_tool_results_are_bounded_in_all(engine, api, fake_llm, remote):
    """Each result within its bound, and as many as a message holds, still added up without limit
    (32 calls × 256 KiB a message, times up to 50 rounds, all kept in the journal, the prompt and
    the node's output). Past ``AOB_AGENT_TOOL_RESULTS_MAX_BYTES`` the calls are answered unrun.
    (What the node does next is the budget's: a prompt of 4 MiB of results pauses it.)"""
    from django.conf import settings as live

    from agents.models import AgentTurn
    from tests.engine.flow import wait_until

    each = live.AOB_AGENT_TOOL_RESULT_MAX_BYTES - 4096
    calls_to_spend = live.AOB_AGENT_TOOL_RESULTS_MAX_BYTES // each + 1
    remote.script("chunk", [{"text": "x" * (each - 100)}] * (calls_to_spend + 2))
    fetch = {"steps": [{"op": "http_request", "url": f"{remote.base}/seq/chunk"}]}
    fake_llm.reset([{"tool_calls": [("execute_pipeline", fetch)] * (calls_to_spend + 2)}, TEXT])

    run_id = start(api, [agent(tools=["execute_pipeline"])])

    rows = wait_until(lambda: list(AgentTurn.objects.filter(node_run__run_id=run_id, kind="tool").order_by("index"))
                      if AgentTurn.objects.filter(node_run__run_id=run_id, kind="tool").count() == calls_to_spend + 2
                      else None, timeout=60, what="every tool call of the message answered")
    results = [row.content for row in rows]
    assert [r["status"] for r in results[:calls_to_spend]] == ["success"] * calls_to_spend
    assert [r.get("error") for r in results[calls_to_spend:]] == ["tool_results_spent"] * 2
    assert sum(len(json.dumps(r)) for r in results) < live.AOB_AGENT_TOOL_RESULTS_MAX_BYTES + each
    assert len(remote.hits("/seq/chunk")) == calls_to_spend
