"""How often an author's loop goes round is the author's bound (``check_loop_bounds``), and its
condition is CEL over the output of the loop's first parent that delivered: an agent that rewrites
that step, or splices a step of its own in front of the loop, says what the condition says as surely
as rewriting it (``policy.conditions_fed``). The author's loop POSTs once (its condition is false
after the first pass); the agent's patch made it POST on every one of its ``max_iterations`` passes.
A step the agent adds after itself, away from the loop, is applied as before."""

from __future__ import annotations

import pytest

from tests.agents.flows import agent, edge, finish, http, node, start, tool_messages
from workflows.models import PatchRefusal

ALWAYS = "{'more': true}"

# /nodes: 0 plan, 1 page, 2 post, 3 check, 4 more; /edges: 0 plan→page, 1 page→post, 2 post→check, 3 check→more
REFUSED = {
    "the loop's own condition": [
        {"op": "replace", "path": "/nodes/4/config/condition", "value": "true"}],
    "the step the condition reads": [
        {"op": "replace", "path": "/nodes/3/config/expression", "value": ALWAYS}],
    "its own step spliced in front of the loop": [
        {"op": "add", "path": "/nodes/-", "value": {"id": "mine", "type": "transform",
                                                    "config": {"expression": ALWAYS}}},
        {"op": "replace", "path": "/edges/3", "value": edge("check", "mine")},
        {"op": "add", "path": "/edges/-", "value": edge("mine", "more")}],
}
BESIDE = [{"op": "add", "path": "/nodes/-", "value": {"id": "note", "type": "transform", "config": {"expression": ALWAYS}}},
          {"op": "add", "path": "/edges/-", "value": edge("plan", "note")}]


def run_patching(api, fake_llm, remote, operations):
    fake_llm.reset([
        {"tool_calls": [("patch_workflow", {"operations": operations, "description": "keep polling"})]},
        {"content": "done"},
    ])
    run_id = start(api, [
        agent(tools=["patch_workflow"]),
        {"id": "page", "type": "transform", "config": {"expression": "1"}},
        http("post", f"{remote.base}/echo", method="POST", payload={"charge": 100}),
        {"id": "check", "type": "transform", "config": {"expression": "{'more': false}"}},
        {"id": "more", "type": "loop", "config": {"max_iterations": 5, "loop_back_to": "page",
                                                   "condition": "output.more"}},
    ], [edge("plan", "page"), edge("page", "post"), edge("post", "check"), edge("check", "more")])
    run = finish(run_id, timeout=60)
    assert run.status == "completed", run.error
    return run_id, tool_messages(fake_llm.requests[1])


@pytest.mark.parametrize("changed", list(REFUSED))
def test_an_agent_may_not_make_its_author_s_loop_go_round_by_changing_what_its_condition_reads(
        engine, api, user, fake_llm, remote, changed):
    run_id, fed_back = run_patching(api, fake_llm, remote, REFUSED[changed])

    # refused as the same raise spelled on the loop's own condition is, naming the loop
    assert [(r["status"], r["details"]["rule"], r["details"]["node_id"]) for r in fed_back] == [
        ("error", "agent_privilege", "more")], fed_back
    assert len(remote.hits("/echo")) == 1
    assert PatchRefusal.objects.filter(run_id=run_id).count() == 1


def test_a_step_an_agent_adds_after_itself_away_from_the_loop_is_applied(engine, api, user, fake_llm, remote):
    run_id, fed_back = run_patching(api, fake_llm, remote, BESIDE)

    assert [r["status"] for r in fed_back] == ["applied"], fed_back
    assert len(remote.hits("/echo")) == 1
    assert not PatchRefusal.objects.filter(run_id=run_id).exists()


# /nodes: 0 a, 1 page, 2 check, 3 inner, 4 plan, 5 report, 6 outer
REPORT = [{"op": "replace", "path": "/nodes/5/config/expression", "value": "{'summary': 'by the agent'}"}]


@pytest.mark.parametrize("condition", ["iteration < 1", "output.more"])
def test_a_step_an_agent_rewrites_after_itself_after_an_inner_loop_is_applied(engine, api, user, fake_llm, condition):
    """The outer loop's jump runs the inner paging loop again but carries no output into it, and
    nothing reads ``report`` by name: what the inner loop's condition reads cannot change, whether
    it counts passes or reads ``output.more``."""
    fake_llm.reset([
        {"tool_calls": [("patch_workflow", {"operations": REPORT, "description": "better report"})]},
        {"content": "done"},
    ])
    run_id = start(api, [
        {"id": "a", "type": "transform", "config": {"expression": "1"}},
        {"id": "page", "type": "transform", "config": {"expression": "2"}},
        {"id": "check", "type": "transform", "config": {"expression": "{'more': false}"}},
        {"id": "inner", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "page",
                                                    "condition": condition}},
        agent(tools=["patch_workflow"]),
        {"id": "report", "type": "transform", "config": {"expression": "{'summary': 'plain'}"}},
        {"id": "outer", "type": "loop", "config": {"max_iterations": 2, "loop_back_to": "a",
                                                    "condition": "iteration < 0"}},
    ], [edge("a", "page"), edge("page", "check"), edge("check", "inner"), edge("inner", "plan"),
        edge("plan", "report"), edge("report", "outer")])
    run = finish(run_id, timeout=60)

    assert run.status == "completed", run.error
    assert [r["status"] for r in tool_messages(fake_llm.requests[1])] == ["applied"]
    assert node(run, "report").output == {"summary": "by the agent"}
    assert not PatchRefusal.objects.filter(run_id=run_id).exists()
