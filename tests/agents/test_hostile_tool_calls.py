"""An agent's tool calls when every argument, and every word of the model's answer, is an
attacker's (a prompt-injected model): what it asks for is a tool result it can read and act on,
never the end of its node and its run."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from tests.agents.flows import agent, finish, node, start, tool_messages
from tests.support.fake_llm import RawArguments

TEXT = {"content": "Done."}


def test_tool_requests_that_httpx_cannot_encode_are_tool_errors_not_the_agent_s_end(engine, api, fake_llm, remote):
    """A header value with a letter outside ASCII (an honest ``café``), a method with one, or a lone
    surrogate (``"\\ud800"``, which JSON lets a model write) in a body or a query: httpx raises
    ``UnicodeEncodeError`` or ``TypeError`` while it builds the request, ``workers.http.request``
    passes it on, and the agent loop turns only ``AobError`` into a tool result, so the whole agent
    node failed with the Python error, its model never told, and the run with it."""
    url = f"{remote.base}/echo/x"
    calls = [
        ("execute_pipeline", {"steps": [{"op": "http_request", "url": url, "headers": {"X-Title": "café"}}]}),
        ("execute_pipeline", {"steps": [{"op": "http_request", "url": url, "method": "gét"}]}),
        ("execute_pipeline", RawArguments('{"steps": [{"op": "http_request", "url": "' + url + '", "method": "POST", '
                                          '"payload": {"a": "\\ud800"}}]}')),
        ("openapi_action", RawArguments('{"api": "remote", "operation_id": "getItem", '
                                        '"parameters": {"item_id": "x", "verbose": "\\ud800"}}')),
        ("openapi_action", RawArguments('{"api": "remote", "operation_id": "getItem", '
                                        '"parameters": {"item_id": "\\ud800"}}')),
    ]
    fake_llm.reset([{"tool_calls": calls}, TEXT])

    run = finish(start(api, [agent(tools=["execute_pipeline", "openapi_action"])]))

    plan = node(run, "plan")
    assert run.status == "completed", (run.error, plan.error)
    results = tool_messages(fake_llm.requests[1])
    assert len(results) == len(calls)
    assert all(r["status"] == "error" for r in results), results
    assert remote.hits("/echo") == []  # nothing half-built went out


def test_nan_in_a_tool_call_s_arguments_is_invalid_arguments_not_the_agent_s_end(engine, api, fake_llm, remote):
    """Python's ``json.loads`` takes ``NaN``, ``Infinity`` and ``1e999`` (infinity too), which no JSON
    holds: the loop read a model's arguments with it and kept them in the node's output
    (``tool_calls[].arguments``), where strict outputs fail the node (``NonJSONOutput``) however the
    tool answered; and a body of them reached httpx, whose ``json.dumps`` raised ``ValueError``."""
    calls = [
        ("search_tools", RawArguments('{"query": "http", "x": NaN}')),
        ("openapi_action", RawArguments('{"api": "remote", "operation_id": "createOrder", "body": {"qty": Infinity}}')),
        ("execute_pipeline", RawArguments('{"steps": [{"op": "http_request", "url": "' + remote.base + '/echo/n", '
                                          '"method": "POST", "payload": {"qty": 1e999}}]}')),
    ]
    fake_llm.reset([{"tool_calls": calls}, TEXT])

    run = finish(start(api, [agent(tools=["search_tools", "openapi_action", "execute_pipeline"])]))

    plan = node(run, "plan")
    assert run.status == "completed", (run.error, plan.error)
    results = tool_messages(fake_llm.requests[1])
    assert [r.get("error") for r in results] == ["invalid_arguments"] * 3, results
    assert remote.hits("/echo") == []


def test_a_tiny_number_in_a_tool_call_s_arguments_is_sent_and_kept_as_the_model_wrote_it(engine, api, fake_llm,
                                                                                          remote):
    """A p-value of 5e-324 is a number like any other: the tool sends it and the node's output keeps
    it (measured as jsonb writes it, in full). Refused below 1e-20 (``invalid_number``), it failed
    the whole node after every call was made and charged: the loop keeps the parsed arguments in
    the output (``tool_calls[].arguments``), which the strict output rule judged."""
    calls = [("execute_pipeline", RawArguments('{"steps": [{"op": "http_request", "url": "' + remote.base
                                               + '/echo/p", "method": "POST", "payload": {"p": 5e-324}}]}'))]
    fake_llm.reset([{"tool_calls": calls}, TEXT])

    run = finish(start(api, [agent(tools=["execute_pipeline"])]))

    plan = node(run, "plan")
    assert run.status == "completed", (run.error, plan.error)
    assert [r.get("error") for r in tool_messages(fake_llm.requests[1])] == [None]
    assert [json.loads(h["body"]) for h in remote.hits("/echo/p")] == [{"p": 5e-324}]


def test_a_key_given_twice_in_a_tool_call_s_arguments_is_invalid_arguments_naming_it(engine, api, fake_llm, remote):
    """Python's ``json.loads`` keeps the last of a key given twice: a model's first ``url`` (or the
    first of two ``steps``) was dropped without a word and the call made with the other. Which one
    it meant is not known: the model is told, as the API tells a client (rule ``duplicate_key``)."""
    url = f"{remote.base}/echo/d"
    calls = [
        ("execute_pipeline", RawArguments('{"steps": [{"op": "http_request", "url": "https://example.com/a", '
                                          '"url": "' + url + '"}]}')),
        ("execute_pipeline", RawArguments('{"steps": [], "steps": [{"op": "http_request", "url": "' + url + '"}]}')),
    ]
    fake_llm.reset([{"tool_calls": calls}, TEXT])

    run = finish(start(api, [agent(tools=["execute_pipeline"])]))

    plan = node(run, "plan")
    assert run.status == "completed", (run.error, plan.error)
    results = tool_messages(fake_llm.requests[1])
    assert [(r.get("error"), r.get("rule"), r.get("path")) for r in results] == [
        ("invalid_arguments", "duplicate_key", "/steps/0/url"), ("invalid_arguments", "duplicate_key", "/steps")], results
    assert remote.hits("/echo") == []


def test_a_nul_in_the_model_s_answer_is_kept_and_the_agent_goes_on(engine, api, fake_llm):
    """``jsonb`` refuses ``\\u0000``, and the journal keeps the model's answer as it came: a NUL in
    its text, a tool's name or its arguments (a model can be made to emit one) failed the journal's
    write, so the node crashed with a database error, after the call had been made and charged, and
    an attempt after it asked the model again."""
    fake_llm.reset([{"tool_calls": [("search_tools\x00", {"query": "x"}),
                                    ("search_tools", RawArguments('{"query": "a\x00b"}'))],
                     "content": "thinking\x00"},
                    {"content": "Done.\x00"}])

    run = finish(start(api, [agent(tools=["search_tools"])]))

    plan = node(run, "plan")
    assert run.status == "completed", (run.error, plan.error)
    assert len(fake_llm.requests) == 2
    unknown, invalid = tool_messages(fake_llm.requests[1])
    assert unknown["error"] == "unknown_tool" and invalid["error"] == "invalid_arguments"
    assert plan.output["message"] == "Done.\ufffd"


def test_a_select_is_bounded_by_the_rows_it_reads_not_by_fetches_it_threw_away(engine, api, fake_llm, remote):
    """``table_select`` may build at most what the steps were given, so that a few small rows times
    many named fields cannot make a worker build far more than it fetched (160 KB became 56 MB and
    350 MB of worker memory, an audit of 4 December). But "given" added up every ``http_request``
    step's body, the ones a later step replaced included: fetches thrown away (each up to
    ``AOB_HTTP_MAX_RESPONSE_BYTES``, 10 MiB, any public file) raised the bound by their size, so N of
    them let a select over a few kilobytes of ``[{}, …]`` build N × 10 MiB. Here two of 1 MiB let
    30 KB of rows become 1.6 MB; the same select straight after the rows is refused."""
    remote.script("empties", [[{}] * 10_000])
    fields = [f"field_{i:02}" for i in range(10)]  # 16 bytes each a row, counted: 1.6 MB for 10,000 rows
    thrown_away = [{"op": "http_request", "url": f"{remote.base}/big/{1 << 20}"}] * 2
    rows = {"op": "http_request", "url": f"{remote.base}/seq/empties"}
    select = {"op": "table_select", "fields": fields}
    fake_llm.reset([{"tool_calls": [("execute_pipeline", {"steps": [rows, select]}),
                                    ("execute_pipeline", {"steps": [*thrown_away, rows, select]})]}, TEXT])

    run = finish(start(api, [agent(tools=["execute_pipeline"])]))

    assert run.status == "completed", run.error
    straight, padded = (c["result"] for c in node(run, "plan").output["tool_calls"])
    assert straight["status"] == "error" and "table_select would make" in straight["message"]
    assert padded["status"] == "error" and "table_select would make" in padded["message"], padded
    assert len(remote.hits("/big")) == 2


ODD_TOOL_CALLS = {
    "custom": {"id": "call_1", "type": "custom", "custom": {"name": "search_tools", "input": "x"}},
    "no_function": {"id": "call_1", "type": "function"},
}


def _refused(body: dict[str, Any]) -> str | None:
    """What OpenAI's Chat Completions refuses (400) in a history's tool calls, as it words it: each
    call's id and its kind's fields (``function.name``/``arguments``, ``custom.name``/``input``) are
    strings."""
    for i, message in enumerate(body.get("messages", [])):
        for j, call in enumerate(message.get("tool_calls") or []):
            kind = call.get("type")
            fields = {"id": call.get("id")}
            if kind in ("function", "custom"):
                named = call.get(kind) or {}
                fields |= {f"{kind}.{f}": named.get(f) for f in (("name", "arguments") if kind == "function"
                                                                 else ("name", "input"))}
            else:
                return f"Invalid value for 'messages[{i}].tool_calls[{j}].type': {kind!r}."
            for field, value in fields.items():
                if not isinstance(value, str):
                    return (f"Invalid type for 'messages[{i}].tool_calls[{j}].{field}': expected a string, but got "
                            f"{type(value).__name__} instead.")
    return None


@pytest.mark.parametrize("shape", list(ODD_TOOL_CALLS))
def test_a_tool_call_that_is_no_function_call_is_a_tool_error_not_the_agent_s_end(engine, api, fake_llm, monkeypatch,
                                                                                  shape):
    """The openai SDK models a second kind of tool call, ``{"type": "custom", ...}``, and builds an
    answer without validating it, so a call may have no ``function``: ``loop._message`` read
    ``c.function.name`` of each and the node failed with ``AttributeError`` after the call was made,
    its usage unrecorded (its reservation held until the run's settling), the model never told. Then
    it was journaled with a null ``function.name`` and ``arguments``, which the next turn sent back
    and OpenAI refuses (400): the node failed one call later, both calls charged. The stand-in
    validates the history as the provider does."""
    def reply(body: dict[str, Any], item: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        problem = _refused(body)
        if problem:
            return 400, {"error": {"message": problem, "type": "invalid_request_error", "param": "messages",
                                   "code": None}}
        message: dict[str, Any] = {"role": "assistant", "content": item.get("content")}
        if item.get("odd"):
            message["tool_calls"] = [ODD_TOOL_CALLS[shape]]
        return 200, {"id": f"chatcmpl-{uuid.uuid4().hex[:8]}", "object": "chat.completion", "created": int(time.time()),
                     "model": body.get("model"), "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}

    monkeypatch.setattr(fake_llm, "reply", reply)  # the stand-in answers, and refuses, as a provider may
    fake_llm.reset([{"odd": True}, TEXT])

    run = finish(start(api, [agent(tools=["search_tools"])]))

    plan = node(run, "plan")
    assert len(fake_llm.requests) == 2
    assert run.status == "completed", (run.error, plan.error)
    assert [c["prompt_tokens"] for c in plan.usage["calls"]] == [10, 10]  # each call answered charged what it used
    assert [r["error"] for r in tool_messages(fake_llm.requests[1])] == ["unknown_tool"]
    assert not plan.output["tool_calls"][0]["name"], plan.output["tool_calls"]  # search_tools was not run
