"""A step after a loop's exit is never also run by its passes (``loop_exit_in_pass``): joining a
body node and the loop's exit it would run for an early pass, reading that pass's outputs, and
again after the loop. Refused wherever a definition is judged: a saved workflow, a run's own, a
patch of a running run. Joined to the exit alone, it runs once and reads the last pass."""

from __future__ import annotations

import pytest

from tests.api.factories import assert_error, post_workflow, problems
from tests.conftest import stored_run
from tests.engine.flow import edge, submit, transform, wait_all
from workflows.models import NodeRun
from workflows.services.patches import PatchRejected, run_patch_propose


def pages(*, body_joins: bool) -> dict:
    """start → page → more (loop back to page, at most 3) → summary; with ``body_joins``, page → summary too."""
    return {
        "nodes": [transform("start", "'go'"), transform("page", "{'n': iteration}"),
                  {"id": "more", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "page"}},
                  transform("summary", "nodes.page.n")],
        "edges": [edge("start", "page"), edge("page", "more"), edge("more", "page"), edge("more", "summary"),
                  *([edge("page", "summary")] if body_joins else [])],
    }


def test_a_step_joining_a_body_node_and_the_loop_exit_is_refused(api):
    body = assert_error(post_workflow(api, "pages", pages(body_joins=True)), 400, "invalid_workflow")
    assert ("/nodes/2", "loop_exit_in_pass") in problems(body)
    response = api.post("/api/v1/runs", {"workflow": pages(body_joins=True), "inputs": {}}, format="json")
    assert ("/nodes/2", "loop_exit_in_pass") in problems(assert_error(response, 400))


def test_a_step_after_the_exit_reached_from_the_body_further_down_is_refused(api):
    definition = pages(body_joins=False)
    definition["nodes"].append(transform("tidy", "1"))
    definition["edges"] += [edge("page", "tidy"), edge("tidy", "summary")]
    body = assert_error(post_workflow(api, "pages", definition), 400, "invalid_workflow")
    assert ("/nodes/2", "loop_exit_in_pass") in problems(body)


def test_two_loops_jumping_back_to_one_step_may_share_a_way_out(api):
    definition = {
        "nodes": [transform("start", "'go'"), transform("poll", "{'state': 'done'}"),
                  {"id": "wait", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "poll"}},
                  {"id": "backoff", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "poll"}},
                  transform("done", "1")],
        "edges": [edge("start", "poll"), edge("poll", "wait", "$.state == 'pending'"),
                  edge("poll", "backoff", "$.state == 'busy'"), edge("wait", "done"), edge("backoff", "done")],
    }
    assert post_workflow(api, "polling", definition).status_code == 201


@pytest.mark.django_db
def test_an_agent_s_patch_joining_the_body_to_the_exit_s_step_is_refused(user):
    definition = pages(body_joins=False)
    definition["nodes"].insert(0, {"id": "plan", "type": "agent", "config": {"task": "read the pages"}})
    definition["edges"].insert(0, edge("plan", "start"))
    run = stored_run(user, definition)
    with pytest.raises(PatchRejected) as refused:
        run_patch_propose(run=run, node_id="plan", from_agent=True,
                          operations=[{"op": "add", "path": "/edges/-", "value": edge("page", "summary")}])
    assert refused.value.extra["rule"] == "loop_exit_in_pass"


def test_a_step_after_the_loop_runs_once_reading_the_last_pass(engine, api):
    run = wait_all([submit(api, pages(body_joins=False))])[0]
    assert run.status == "completed", run.error
    summaries = list(NodeRun.objects.filter(run=run, node_id="summary").values_list("status", "output"))
    assert summaries == [("completed", 2)]
