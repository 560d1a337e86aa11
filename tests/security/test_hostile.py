"""Hostile workflows on real workers (the engine's half of issue 15): each is answered within a few
seconds, by a 4xx naming the path and the rule (and nothing stored) or by a failed node or run
with a clear reason; and a canary run of another user, started at the same moment, completes.
"""

from __future__ import annotations

import time
import uuid
from itertools import pairwise
from typing import Any

import pytest
import redis
from django.conf import settings

from tests.agents.flows import agent, tool_messages
from tests.conftest import client_for
from tests.engine.flow import edge, events, statuses, submit, transform, unique, wait_all
from workflows.models import Artifact, NodeRun, Run, Workflow

CANARY = {"nodes": [transform("one", "{'n': 1}"), transform("two", "{'n': nodes.one.n + 1}")],
          "edges": [edge("one", "two")]}
QUICK = 8.0  # seconds: "within a few seconds", with room for a loaded two-core machine


@pytest.fixture
def bob(make_user: Any) -> Any:
    return client_for(make_user("bob"))


def race(api: Any, bob: Any, definition: dict[str, Any], inputs: dict[str, Any] | None = None,
         timeout: float = QUICK) -> Run:
    """Start the hostile run and bob's canary together; both must end within ``timeout``."""
    started = time.monotonic()
    hostile = submit(api, definition, inputs)
    canary = submit(bob, CANARY)
    runs = {str(r.pk): r for r in wait_all([hostile, canary], timeout=timeout)}
    assert runs[canary].status == "completed", runs[canary].error
    assert time.monotonic() - started < timeout
    return runs[hostile]


def refused(api: Any, bob: Any, definition: dict[str, Any]) -> dict[str, Any]:
    """Save and run are both refused with a 400 naming path and rule, and nothing of the request is
    stored; bob's canary, started at the same moment, completes."""
    runs, workflows = set(Run.objects.values_list("pk", flat=True)), Workflow.objects.count()
    artifacts = set(Artifact.objects.values_list("pk", flat=True))
    canary = submit(bob, CANARY)
    saved = api.post("/api/v1/workflows", {"tag_name": unique("hostile"), "workflow": definition}, format="json")
    ran = api.post("/api/v1/runs", {"workflow": definition, "inputs": {}}, format="json")
    assert saved.status_code == ran.status_code == 400, (saved.json(), ran.json())
    assert wait_all([canary], timeout=QUICK)[0].status == "completed"
    assert set(Run.objects.values_list("pk", flat=True)) - runs == {uuid.UUID(canary)}
    assert Workflow.objects.count() == workflows
    canary_run = Run.objects.get(pk=canary)
    canary_artifacts = {canary_run.base_artifact_id, *NodeRun.objects.filter(run=canary_run).values_list(
        "output_artifact_id", flat=True)}
    assert set(Artifact.objects.values_list("pk", flat=True)) - artifacts <= canary_artifacts
    return saved.json()


def problems(body: dict[str, Any]) -> list[dict[str, str]]:
    return body["details"]["errors"]


# --- expressions ---------------------------------------------------------------------------------

BIG_LIST = list(range(3000))  # 9 million steps for two nested comprehensions


def test_a_nested_comprehension_bomb_in_a_condition_counts_false_and_takes_the_default_edge(engine, api, bob):
    bomb = "inputs.xs.exists(a, inputs.xs.exists(b, a + b < 0))"
    definition = {"nodes": [transform("start", "1"), transform("bombed", "'taken'"), transform("default", "'ok'")],
                  "edges": [edge("start", "bombed", bomb), edge("start", "default")]}

    run = race(api, bob, definition, {"xs": BIG_LIST})

    assert run.status == "completed", run.error
    assert statuses(run) == {"start": "completed", "bombed": "skipped", "default": "completed"}
    error = next(e for e in events(run) if e.type == "condition_error")
    assert (error.node_id, error.data["from"], error.data["to"], error.data["rule"]) == (
        "start", "start", "bombed", "timeout")
    assert "AOB_CEL_TIMEOUT_MS" in error.data["error"]


def test_a_nested_comprehension_bomb_in_a_transform_fails_the_node_with_the_budget(engine, api, bob):
    definition = {"nodes": [transform("bomb", "inputs.xs.map(a, inputs.xs.filter(b, b > a).size()).size()")],
                  "edges": []}

    run = race(api, bob, definition, {"xs": BIG_LIST})

    assert run.status == "failed"
    assert run.error["node_id"] == "bomb" and run.error["error_type"] == "ExpressionError"
    assert "stopped after" in run.error["message"]


def test_comprehensions_nested_past_the_bound_are_refused_at_save(engine, api, bob):
    deep = "inputs.xs.map(a, inputs.xs.map(b, inputs.xs.map(c, a + b + c)))"
    body = refused(api, bob, {"nodes": [transform("t", deep)], "edges": []})

    assert {"path": "/nodes/0/config/expression", "rule": "cel.max_comprehension_depth"} in [
        {k: p[k] for k in ("path", "rule")} for p in problems(body)]


def test_an_expression_past_the_size_cap_is_refused_at_save(engine, api, bob):
    long = " || ".join(["inputs.a == 1"] * 400)  # ~6.8 kB, past AOB_CEL_MAX_SOURCE_BYTES
    body = refused(api, bob, {"nodes": [transform("t", long)], "edges": []})

    assert ("/nodes/0/config/expression", "cel.max_source_bytes") in [(p["path"], p["rule"]) for p in problems(body)]


def test_a_condition_that_raises_is_a_condition_error_and_the_default_edge(engine, api, bob):
    definition = {"nodes": [transform("start", "{'items': [1, 2]}"), transform("third", "'x'"),
                            transform("fallback", "'y'")],
                  "edges": [edge("start", "third", "$.items[5] > 0"), edge("start", "fallback")]}

    run = race(api, bob, definition)

    assert run.status == "completed", run.error
    assert statuses(run) == {"start": "completed", "third": "skipped", "fallback": "completed"}
    [error] = [e for e in events(run) if e.type == "condition_error"]
    assert (error.data["from"], error.data["to"], error.data["condition"]) == ("start", "third", "$.items[5] > 0")
    assert "index" in error.data["error"].lower()


def test_a_condition_that_raises_with_no_default_edge_ends_the_branch(engine, api, bob):
    definition = {"nodes": [transform("start", "{}"), transform("never", "1")],
                  "edges": [edge("start", "never", "$.missing.deeper == 1")]}

    run = race(api, bob, definition)

    assert run.status == "completed" and statuses(run)["never"] == "skipped"
    assert [e.type for e in events(run)].count("condition_error") == 1


# --- graph walks ---------------------------------------------------------------------------------


def test_a_chain_of_a_thousand_conditionals_completes(engine, api, bob):
    ids = [f"c{i}" for i in range(999)]
    definition = {"nodes": [transform("seed", "{'go': true}"), *({"id": i, "type": "conditional"} for i in ids)],
                  "edges": [edge("seed", ids[0]), *(edge(a, b, "$.go == true") for a, b in pairwise(ids))]}

    run = race(api, bob, definition, timeout=30)

    assert run.status == "completed", run.error
    assert set(statuses(run).values()) == {"completed"} and len(statuses(run)) == 1000


def test_a_long_dead_branch_is_skipped_to_its_end(engine, api, bob):
    dead = [f"d{i}" for i in range(997)]
    definition = {"nodes": [transform("start", "1"), transform("live", "1"), *(transform(d, "1") for d in dead),
                            transform("end", "1")],
                  "edges": [edge("start", dead[0], "false"), edge("start", "live"),
                            *(edge(a, b) for a, b in pairwise(dead)), edge(dead[-1], "end"), edge("live", "end")]}

    run = race(api, bob, definition, timeout=30)

    assert run.status == "completed", run.error
    seen = statuses(run)
    assert all(seen[d] == "skipped" for d in dead) and seen["end"] == "completed"


# --- poison decisions ----------------------------------------------------------------------------


def test_a_decision_that_keeps_failing_fails_the_run_with_decision_failed(engine, api, bob):
    poisoned = unique("poisoned")
    redis.Redis.from_url(settings.REDIS_URL).set(f"aob:test:poison_decision:{poisoned}", 1, ex=120)
    definition = {"nodes": [transform(poisoned, "1"), transform("after", "2")], "edges": [edge(poisoned, "after")]}

    run = race(api, bob, definition, timeout=15)

    assert run.status == "failed"
    assert run.error["error_type"] == "DecisionFailed" and run.error["node_id"] == poisoned
    assert run.error["failures"] == settings.AOB_MAX_DECISION_FAILURES
    assert "poisoned decision" in run.error["message"]
    failed = [e for e in events(run) if e.type == "workflow_failed"]
    assert failed and failed[-1].data["error"]["error_type"] == "DecisionFailed"
    details = api.get(f"/api/v1/runs/{run.pk}/details").json()
    assert details["run"]["error"]["error_type"] == "DecisionFailed"
    assert "after" not in statuses(run)  # nothing followed the poisoned node
    log = next(n for n in details["nodes"] if n["node_id"] == poisoned)["attempt_log"]
    assert [e["status"] for e in log].count("decision_failed") == settings.AOB_MAX_DECISION_FAILURES


# --- bounded documents ---------------------------------------------------------------------------


def test_a_template_multiplying_a_big_input_fails_the_node_before_building_it(engine, api, bob):
    big = "x" * 200_000
    template = {"copies": "${inputs.big}" * 100, "again": ["$inputs.big"] * 100}
    definition = {"nodes": [{"id": "grow", "type": "transform", "config": {"template": template}}], "edges": []}

    run = race(api, bob, definition, {"big": big})

    assert run.status == "failed"
    assert run.error["error_type"] == "ConfigTooLarge"
    assert "AOB_MAX_RESOLVED_CONFIG_BYTES" in run.error["message"]


# --- loops in the original system's shape --------------------------------------------------------


def original_loop(condition: str, max_iterations: int) -> dict[str, Any]:
    """body → check (loop) back to body; break_path and timeout_path as arrays of node ids."""
    return {"nodes": [transform("body", "iteration"),
                      {"id": "check", "type": "loop", "config": {
                          "max_iterations": max_iterations, "loop_back_to": "body", "condition": condition,
                          "break_path": ["done_a", "done_b"], "timeout_path": ["late_a", "late_b"]}},
                      transform("done_a", "'a'"), transform("done_b", "'b'"),
                      transform("late_a", "'a'"), transform("late_b", "'b'")],
            "edges": [edge("body", "check")]}


def test_a_loop_with_array_paths_saves_and_breaks_to_every_break_node(engine, api, bob):
    definition = original_loop("iteration < 1", 5)
    saved = api.post("/api/v1/workflows", {"tag_name": unique("loop"), "workflow": definition}, format="json")
    assert saved.status_code == 201, saved.json()

    run = race(api, bob, definition)

    assert run.status == "completed", run.error
    seen = statuses(run)
    assert (seen["done_a"], seen["done_b"], seen["late_a"], seen["late_b"]) == (
        "completed", "completed", "skipped", "skipped")


def test_a_loop_with_array_paths_times_out_to_every_timeout_node(engine, api, bob):
    run = race(api, bob, original_loop("true", 3))

    assert run.status == "completed", run.error
    seen = statuses(run)
    assert (seen["done_a"], seen["done_b"], seen["late_a"], seen["late_b"]) == (
        "skipped", "skipped", "completed", "completed")


@pytest.mark.parametrize("config, path, rule", [
    ({"break_path": [1, 2]}, "/nodes/1/config/break_path/0", "config.type"),
    ({"break_path": {"a": 1}}, "/nodes/1/config/break_path", "config.type"),
    ({"timeout_path": ["nowhere"]}, "/nodes/1/config/timeout_path/0", "loop_target_exists"),
    ({"loop_back_to": ["body"]}, "/nodes/1/config/loop_back_to", "config.type"),
    ({"max_iterations": "3"}, "/nodes/1/config/max_iterations", "config.type"),
    ({"condition": 7}, "/nodes/1/config/condition", "config.type"),
])
def test_wrong_types_in_a_loop_config_are_400s_with_path_and_rule(engine, api, bob, config, path, rule):
    definition = original_loop("true", 3)
    definition["nodes"][1]["config"].update(config)

    body = refused(api, bob, definition)

    assert (path, rule) in [(p["path"], p["rule"]) for p in problems(body)]


# --- the execute_pipeline tool -------------------------------------------------------------------

SCORES = [{"name": "ada", "score": 71}, {"name": "bob", "score": 93}, {"name": "cy", "score": 55}]


def test_a_pipeline_takes_the_original_field_names_and_refuses_unknown_ones(engine, api, bob, fake_llm):
    original = {"data": SCORES, "steps": [{"op": "table_sort", "field": "score", "order": "desc"},
                                          {"op": "top_k", "k": 2}]}
    unknown = {"data": SCORES, "steps": [{"op": "table_sort", "by": "score", "k": 2}]}
    stranger = {"data": SCORES, "steps": [{"op": "top_k", "k": 1, "column": "score"}]}
    fake_llm.reset([{"tool_calls": [("execute_pipeline", original), ("execute_pipeline", unknown),
                                    ("execute_pipeline", stranger)]}, {"content": "Done."}])

    run = race(api, bob, {"nodes": [agent(task="top two")], "edges": []}, timeout=20)

    assert run.status == "completed", run.error
    sorted_, wrong, strange = tool_messages(fake_llm.requests[1])
    assert sorted_["status"] == "success"
    assert sorted_["data"] == [{"name": "bob", "score": 93}, {"name": "ada", "score": 71}]
    assert wrong["status"] == "error" and "unknown field(s) k;" in wrong["message"]
    assert strange["status"] == "error" and "column" in strange["message"]
