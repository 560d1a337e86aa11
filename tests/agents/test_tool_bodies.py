"""An agent's outbound tools on real workers: a page nested past the JSON parser is text for the
model, not the end of the node (a red-team helper's finding)."""

from __future__ import annotations

from tests.agents.flows import agent, finish, node, start, tool_messages

TEXT = {"content": "Done."}


def test_a_page_nested_past_the_json_parser_is_a_tool_error_not_the_agent_s_end(engine, api, fake_llm, remote):
    """An agent fetches a page (``execute_pipeline``), as prompt-injected agents and honest ones do;
    whoever serves it answers 200 KB of ``[[[…]]]``. ``workers/http/client._result`` catches only
    ``ValueError`` around ``json.loads``, so ``RecursionError`` leaves ``request()``; the agent loop
    (``agents/loop._run_tool``) turns only ``AobError`` into a tool result, so the whole agent node
    failed (``RecursionError``, not transient), its model never told, the run failed with it. A body the
    parser cannot take is text (or a tool error), and the agent goes on."""
    fetch = {"steps": [{"op": "http_request", "url": f"{remote.base}/nested/100000"}]}
    fake_llm.reset([{"tool_calls": [("execute_pipeline", fetch)]}, TEXT])

    run = finish(start(api, [agent(task="read the page", tools=["execute_pipeline"])]))

    plan = node(run, "plan")
    assert run.status == "completed", (run.error, plan.error)
    assert len(fake_llm.requests) == 2  # the model was told what the tool got, and answered
    assert len(tool_messages(fake_llm.requests[1])) == 1


def test_a_page_nested_past_what_the_output_keeps_is_a_tool_error_the_model_reads(engine, api, fake_llm, remote):
    """A page the parser takes but 300 deep (600 bytes): the node's output keeps each tool result
    three levels down, past ``OUTPUT_MAX_DEPTH`` (256), so the agent failed (``NonJSONOutput``, a
    600-character pointer) after its calls were made and charged, its model never told (a red team's
    find). The result is a tool error naming the rule; the agent goes on."""
    fetch = {"steps": [{"op": "http_request", "url": f"{remote.base}/nested/300"}]}
    fake_llm.reset([{"tool_calls": [("execute_pipeline", fetch)]}, TEXT])

    run = finish(start(api, [agent(task="read the page", tools=["execute_pipeline"])]))

    plan = node(run, "plan")
    assert run.status == "completed", (run.error, plan.error)
    told = tool_messages(fake_llm.requests[1])[0]
    assert told["error"] == "result_too_deep" and told["rule"] == "max_depth", told


def test_a_model_s_arguments_nested_past_what_the_output_keeps_are_refused_and_kept_as_text(engine, api, fake_llm):
    """The model's own arguments 300 deep: the call is refused (``invalid_arguments``, ``max_depth``)
    and its arguments are kept as the text they came as, where the node failed on them."""
    deep: object = 1
    for _ in range(300):
        deep = [deep]
    args = {"data": [{"x": deep}], "steps": [{"op": "top_k", "k": 1}]}
    fake_llm.reset([{"tool_calls": [("execute_pipeline", args)]}, TEXT])

    run = finish(start(api, [agent(task="sort it", tools=["execute_pipeline"])]))

    plan = node(run, "plan")
    assert run.status == "completed", (run.error, plan.error)
    told = tool_messages(fake_llm.requests[1])[0]
    assert told["error"] == "invalid_arguments" and told["rule"] == "max_depth", told
    assert isinstance(plan.output["tool_calls"][0]["arguments"], str)
