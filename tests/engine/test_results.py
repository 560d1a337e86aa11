"""A run's result on real workers: its output (the terminal nodes' outputs, or ``metadata.output``
as CEL or a template), its duration, and its timeline (queue wait and run time of every node run,
each attempt of a retried node, each iteration of a loop)."""

from __future__ import annotations

from tests.engine.flow import edge, http, submit, transform, unique, wait_all

RETRY = {"max_attempts": 3, "backoff_ms": 100, "backoff_multiplier": 1}


def branches() -> dict:
    return {"nodes": [transform("a", "{'x': inputs.n + 1}"), transform("left", "nodes.a.x * 2"),
                      transform("right", "{'half': nodes.a.x / 2}")],
            "edges": [edge("a", "left"), edge("a", "right")]}


def test_without_metadata_output_the_output_is_the_terminal_nodes_outputs(engine, api):
    (run,) = wait_all([submit(api, branches(), {"n": 3})])

    body = api.get(f"/api/v1/runs/{run.pk}").json()

    assert body["status"] == "completed"
    assert body["output"] == {"left": 8, "right": {"half": 2}}
    assert body["output_error"] is None
    assert body["duration_ms"] == int((run.finished_at - run.created_at).total_seconds() * 1000)
    assert body["duration_ms"] >= 0
    assert api.get(f"/api/v1/runs/{run.pk}/details").json()["run"]["output"] == body["output"]


def test_metadata_output_as_cel_and_as_a_template(engine, api):
    as_cel = {**branches(), "metadata": {"output": {"expression": "{'total': nodes.left + nodes.right.half, "
                                                                  "'who': inputs.name}"}}}
    as_template = {**branches(), "metadata": {"output": {"template": {"sum": "$nodes.left",
                                                                      "text": "${$inputs.name} got ${$nodes.left}"}}}}
    broken = {**branches(), "metadata": {"output": {"expression": "nodes.nowhere.x"}}}
    misspelt = {**branches(), "metadata": {"output": {"template": {"half": "$nodes.right.hlf"}}}}
    runs = [submit(api, d, {"n": 3, "name": "Ada"}) for d in (as_cel, as_template, broken, misspelt)]
    wait_all(runs)

    cel, template, failed, missing = (api.get(f"/api/v1/runs/{r}").json() for r in runs)

    assert cel["output"] == {"total": 10, "who": "Ada"}
    assert template["output"] == {"sum": 8, "text": "Ada got 8"}
    assert failed["status"] == "completed" and failed["output"] is None
    assert failed["output_error"]["error_type"] == "OutputExpressionError"
    assert failed["output_error"]["message"].startswith("metadata.output:")
    # a template's reference naming what a node that ran did not give is an error, as CEL's is, not null
    assert missing["status"] == "completed" and missing["output"] is None
    assert missing["output_error"]["error_type"] == "ReferenceMissing"
    assert missing["output_error"]["rule"] == "reference_missing"
    assert "/half: $nodes.right.hlf names nothing" in missing["output_error"]["message"]


def test_an_invalid_output_expression_is_refused_at_save(api):
    bad = {**branches(), "metadata": {"output": {"expression": "nodes.a.x +"}}}
    unknown = {**branches(), "metadata": {"output": {"expression": "1", "template": {}}}}

    for definition in (bad, unknown):
        response = api.post("/api/v1/workflows/validate", {"workflow": definition}, format="json")
        assert response.status_code == 200 and response.json()["valid"] is False
    problems = api.post("/api/v1/workflows/validate", {"workflow": bad}, format="json").json()["errors"]
    assert problems[0]["path"] == "/metadata/output/expression" and problems[0]["rule"] == "expression_syntax"


def test_a_running_or_failed_run_has_no_output_and_its_error_once(engine, api):
    (run,) = wait_all([submit(api, {"nodes": [transform("a", "1/0")], "edges": []})])

    body = api.get(f"/api/v1/runs/{run.pk}").json()

    assert body["status"] == "failed" and body["output"] is None and body["duration_ms"] is not None
    assert body["error"]["node_id"] == "a"


def test_the_timeline_shows_queue_wait_run_time_retries_and_iterations(engine, api, remote):
    key = unique("flaky")
    loop = {"id": "again", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "count",
                                                      "condition": "true", "timeout_path": "done"}}
    definition = {"nodes": [http("call", f"{remote.base}/flaky/{key}/1", retry=RETRY),
                            transform("count", "iteration"), loop, transform("done", "nodes.count")],
                  "edges": [edge("call", "count"), edge("count", "again")]}
    (run,) = wait_all([submit(api, definition)])
    assert run.status == "completed", run.error

    timeline = api.get(f"/api/v1/runs/{run.pk}/timeline").json()

    assert timeline["duration_ms"] is not None and timeline["span_ms"] >= timeline["duration_ms"] - 1
    items = timeline["items"]
    call = next(i for i in items if i["node_id"] == "call")
    assert [a["status"] for a in call["attempt_log"]] == ["failed", "completed"]
    assert all(a["started_at"] and a["duration_ms"] is not None for a in call["attempt_log"])
    assert call["attempt_log"][0]["start_ms"] <= call["attempt_log"][1]["start_ms"]
    assert call["attempt_log"][0]["error"]
    counts = sorted(i["iteration"] for i in items if i["node_id"] == "count")
    assert counts == [0, 1, 2]
    for item in items:
        if item["status"] == "completed" and item["type"] != "loop":
            assert item["queue_wait_ms"] is not None and item["run_ms"] is not None
            assert item["queued_ms"] <= item["started_ms"] <= item["finished_ms"]
    assert timeline["truncated"] is False


def test_the_whole_output_carries_terminal_outputs_within_one_nodes_ceiling_and_links_the_rest(
        engine, api, settings):
    """``GET /runs/{id}/output`` answers at most ``AOB_MAX_NODE_OUTPUT_BYTES`` of terminal outputs
    (read where the answer is made: this process), smallest first; the rest are the markers
    ``GET /runs/{id}`` shows, each leading to its artifact whole."""
    small, large = {"pad": "s" * 30_000}, {"pad": "l" * 40_000}
    ends = {"nodes": [{"id": "small", "type": "transform", "config": {"template": {"pad": "$inputs.s"}}},
                      {"id": "large", "type": "transform", "config": {"template": {"pad": "$inputs.l"}}}],
            "edges": []}
    (run,) = wait_all([submit(api, ends, {"s": small["pad"], "l": large["pad"]})])
    assert run.status == "completed", run.error

    settings.AOB_MAX_NODE_OUTPUT_BYTES = 50_000  # each fits alone, not both
    response = api.get(f"/api/v1/runs/{run.pk}/output")
    assert response.status_code == 200 and len(response.content) < 50_000 + 1_000
    output = response.json()["output"]
    assert output["small"] == small
    # sizes as the database's text of them (a space after each ':' and ','), as GET /runs/{id} measures
    assert output["large"]["truncated"] is True and output["large"]["bytes"] == 40_011
    assert output["large"]["href"].startswith("/api/v1/artifacts/sha256:")
    assert api.get(output["large"]["href"]).json()["content"] == large

    settings.AOB_MAX_NODE_OUTPUT_BYTES = 20_000  # neither fits
    output = api.get(f"/api/v1/runs/{run.pk}/output").json()["output"]
    assert {node_id: marker["bytes"] for node_id, marker in output.items()} == {"small": 30_011, "large": 40_011}
    for node_id, whole in (("small", small), ("large", large)):
        assert api.get(output[node_id]["href"]).json()["content"] == whole
