"""How deep a stored output may nest (``outputs.OUTPUT_MAX_DEPTH``): as deep as every reader can read.

A worker parses a remote's body near the bottom of its stack; the web tier reads the stored output
back with Python's parser from much further up (Django, DRF, the serializer), where each level of
nesting costs a frame of the same 1,000. A body of 950 levels parsed in the worker, was stored, and
every ``GET /runs/{id}`` and details of the run was a 500 (``RecursionError``), for as long as the
run was kept."""

from __future__ import annotations

import pytest

from tests.engine.flow import http, node_runs, run_to_end
from workflows.engine.outputs import OUTPUT_MAX_DEPTH, NonJSONOutput, strict_json


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_a_body_nested_past_the_bound_is_kept_as_text_and_the_run_answers(engine, api, remote):
    run = run_to_end(api, {"nodes": [http("deep", f"{remote.base}/nested/950"),
                                     http("fits", f"{remote.base}/nested/{OUTPUT_MAX_DEPTH - 1}")], "edges": []})

    assert run.status == "completed", run.error
    for path in (f"/api/v1/runs/{run.pk}", f"/api/v1/runs/{run.pk}/details", f"/api/v1/runs/{run.pk}/output"):
        assert api.get(path).status_code == 200, path
    nrs = node_runs(run)
    assert nrs["deep"].output["body"] == "[" * 950 + "]" * 950  # as past the parser: the body is text
    assert isinstance(nrs["fits"].output["body"], list)  # the output's depth is the body's and one


def test_an_output_nested_past_the_bound_fails_its_node_naming_the_rule():
    with pytest.raises(NonJSONOutput) as err:
        strict_json({"a": _nested(OUTPUT_MAX_DEPTH)})
    assert err.value.extra["rule"] == "max_depth" and err.value.extra["limit"] == OUTPUT_MAX_DEPTH
    assert err.value.extra["path"].startswith("/a/0/0/") and err.value.extra["transient"] is False

    with pytest.raises(NonJSONOutput):
        strict_json(_nested(990))  # past what json.dumps reaches here: the rule, not a RecursionError

    assert strict_json(_nested(OUTPUT_MAX_DEPTH)) == _nested(OUTPUT_MAX_DEPTH)  # at the bound: kept


def test_an_error_payload_nested_past_the_bound_is_recorded_with_a_marker():
    error = strict_json({"error_type": "HTTPStatusError", "body": _nested(990)}, non_finite="null")

    assert error["error_type"] == "HTTPStatusError"
    text = str(error)
    assert "'truncated': True" in text and "'rule': 'max_depth'" in text
