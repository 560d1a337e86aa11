"""Invalid definitions are refused with a 400 naming each culprit's JSON Pointer and rule;
``/workflows/validate`` reports the same problems without saving anything."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.factories import API, assert_error, fetch_then_store, loop_workflow, post_workflow, problems
from workflows.models import Artifact, Workflow


def _two(edges: list[dict[str, Any]], **second: Any) -> dict[str, Any]:
    definition = fetch_then_store()
    definition["nodes"][1].update(second)
    definition["edges"] = edges
    return definition


def _with(change: Any) -> dict[str, Any]:
    definition = fetch_then_store()
    change(definition)
    return definition


def _loop(**config: Any) -> dict[str, Any]:
    definition = loop_workflow()
    definition["nodes"][2]["config"].update(config)
    return definition


def _three_in_a_ring() -> dict[str, Any]:
    nodes = [{"id": i, "type": "transform", "config": {"expression": "1"}} for i in ("a", "b", "c", "d")]
    edges = [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}, {"from": "c", "to": "b"}, {"from": "c", "to": "d"}]
    return {"nodes": nodes, "edges": edges}


INVALID = [
    # (case, definition, JSON Pointer, rule)
    ("duplicate ids", _two([], id="fetch"), "/nodes/1/id", "unique_node_id"),
    ("bad id pattern", _two([], id="has space"), "/nodes/1/id", "schema.pattern"),
    ("empty id", _two([], id=""), "/nodes/1/id", "schema.minLength"),
    ("edge from unknown node", _two([{"from": "ghost", "to": "store"}]), "/edges/0/from", "edge_node_exists"),
    ("edge to unknown node", _two([{"from": "fetch", "to": "ghost"}]), "/edges/0/to", "edge_node_exists"),
    ("no entry node", _two([{"from": "fetch", "to": "store"}, {"from": "store", "to": "fetch"}]),
     "/edges", "entry_node"),
    ("no terminal node", _two([{"from": "fetch", "to": "store"}, {"from": "store", "to": "fetch"}]),
     "/edges", "terminal_node"),
    ("cycle not through a loop node", _three_in_a_ring(), "/edges", "acyclic"),
    ("self loop", _with(lambda d: d["edges"].append({"from": "store", "to": "store"})), "/edges", "acyclic"),
    ("loop_back_to unknown", _loop(loop_back_to="ghost"), "/nodes/2/config/loop_back_to", "loop_target_exists"),
    ("break_path unknown", _loop(break_path="ghost"), "/nodes/2/config/break_path", "loop_target_exists"),
    ("loop without max_iterations", _with(lambda d: d["nodes"].append(
        {"id": "l", "type": "loop", "config": {"loop_back_to": "fetch"}})), "/nodes/2/config", "config.required"),
    ("loop max_iterations 0", _loop(max_iterations=0), "/nodes/2/config/max_iterations", "config.minimum"),
    ("bad loop condition", _loop(condition="$.value <"), "/nodes/2/config/condition", "condition_syntax"),
    ("bad CEL edge condition", _with(lambda d: d["edges"][0].update(condition="$.status ==")),
     "/edges/0/condition", "condition_syntax"),
    ("Python, not CEL", _with(lambda d: d["edges"][0].update(condition="$.ok and not $.failed")),
     "/edges/0/condition", "condition_syntax"),
    ("bad CEL transform", _with(lambda d: d["nodes"][1]["config"].update(expression="1 +")),
     "/nodes/1/config/expression", "expression_syntax"),
    ("http without url", _with(lambda d: d["nodes"][0]["config"].pop("url")), "/nodes/0/config", "config.required"),
    ("http method not a verb", _with(lambda d: d["nodes"][0]["config"].update(method="BREW")),
     "/nodes/0/config/method", "config.enum"),
    ("config not an object", _with(lambda d: d["nodes"][0].update(config=["url"])), "/nodes/0/config",
     "schema.type"),
    ("unknown top-level field", _with(lambda d: d.update(nodez=[])), "/", "schema.additionalProperties"),
    ("unknown node field", _with(lambda d: d["nodes"][0].update(timeout=5)), "/nodes/0",
     "schema.additionalProperties"),
    ("missing nodes", {"edges": []}, "/", "schema.required"),
    ("empty nodes", {"nodes": [], "edges": []}, "/nodes", "schema.minItems"),
    ("node without type", _with(lambda d: d["nodes"][1].pop("type")), "/nodes/1", "schema.required"),
    ("edge without to", _with(lambda d: d["edges"][0].pop("to")), "/edges/0", "schema.required"),
    ("timeout_ms zero", _with(lambda d: d["nodes"][0].update(timeout_ms=0)), "/nodes/0/timeout_ms",
     "schema.minimum"),
    ("nodes not a list", {"nodes": {"fetch": {}}}, "/nodes", "schema.type"),
    # a second edge of a pair: 20,000 of them into a join made every decision of the run quadratic
    ("the same edge twice", _with(lambda d: d["edges"].append({"from": "fetch", "to": "store", "condition": "true"})),
     "/edges/1", "unique_edge"),
    ("more edges than AOB_MAX_EDGES", _with(lambda d: d["edges"].extend([{}] * 5000)), "/edges", "max_edges"),
    # judged as written (a save, /validate, a patch), not when a stored version runs (WRITTEN_RULES):
    # a reference to a node the definition does not have resolves to null at every run
    ("$nodes reference to no node", _with(lambda d: d["nodes"][0]["config"].update(payload={"n": "$nodes.fetc.x"})),
     "/nodes/0/config/payload/n", "reference_node_exists"),
    ("${nodes} template to no node", _with(lambda d: d["nodes"][0]["config"].update(payload="id ${nodes.ghost.id}")),
     "/nodes/0/config/payload", "reference_node_exists"),
    ("transform template to no node", _with(lambda d: d["nodes"][1].update(config={"template": ["$nodes.fetc"]})),
     "/nodes/1/config/template/0", "reference_node_exists"),
    ("CEL read of no node", _with(lambda d: d["nodes"][1]["config"].update(expression="nodes.fetc.status_code")),
     "/nodes/1/config/expression", "reference_node_exists"),
    ("run output of no node", _with(lambda d: d.update(metadata={"output": {"expression": "nodes['stor']"}})),
     "/metadata/output/expression", "reference_node_exists"),
    # an edge condition is evaluated over output and inputs, a loop's also over iteration
    ("edge condition reads nodes", _with(lambda d: d["edges"][0].update(condition="nodes.fetch.status_code == 1")),
     "/edges/0/condition", "condition_variable"),
    ("edge condition misspells output", _with(lambda d: d["edges"][0].update(condition="outptu.x == 1")),
     "/edges/0/condition", "condition_variable"),
    ("loop condition reads nodes", _loop(condition="nodes.work.value < 3"), "/nodes/2/config/condition",
     "condition_variable"),
    # a typo of a bound in metadata bounded nothing
    ("misspelled allowed_hosts", _with(lambda d: d.update(metadata={"alowed_hosts": ["example.com"]})),
     "/metadata/alowed_hosts", "metadata_key"),
    ("misspelled patch_policy", _with(lambda d: d.update(metadata={"patch_polcy": "deny"})),
     "/metadata/patch_polcy", "metadata_key"),
    ("patch_policy with two letters swapped", _with(lambda d: d.update(metadata={"pacth_policy": "deny"})),
     "/metadata/pacth_policy", "metadata_key"),
    ("allowed_hosts with a letter changed", _with(lambda d: d.update(metadata={"Allowed-Hosta": ["example.com"]})),
     "/metadata/Allowed-Hosta", "metadata_key"),
]


@pytest.mark.parametrize(("definition", "path", "rule"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_an_invalid_definition_is_a_400_naming_path_and_rule(api, definition, path, rule):
    response = post_workflow(api, "bad", definition)

    body = assert_error(response, 400, "invalid_workflow")
    assert (path, rule) in problems(body)
    assert path in body["message"]
    assert not Workflow.objects.exists()
    assert not Artifact.objects.exists()


@pytest.mark.parametrize(("definition", "path", "rule"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_validate_reports_the_same_problem_without_saving(api, definition, path, rule):
    response = api.post(f"{API}/workflows/validate", {"workflow": definition}, format="json")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert set(body) == {"valid", "errors", "warnings"}
    assert body["valid"] is False
    assert (path, rule) in {(e["path"], e["rule"]) for e in body["errors"]}
    assert all(e["message"] for e in body["errors"])
    assert not Workflow.objects.exists()


def test_every_problem_is_reported_not_only_the_first(api):
    definition = fetch_then_store()
    definition["nodes"].append({"id": "fetch", "type": "transform", "config": {"expression": "1"}})
    definition["edges"] += [{"from": "store", "to": "ghost"}, {"from": "fetch", "to": "store", "condition": "(("}]

    body = assert_error(post_workflow(api, "bad", definition), 400, "invalid_workflow")

    assert {("/nodes/2/id", "unique_node_id"), ("/edges/1/to", "edge_node_exists"),
            ("/edges/2/condition", "condition_syntax")} <= problems(body)


def test_a_cycle_through_a_loop_node_is_accepted(api):
    response = post_workflow(api, "looping", loop_workflow())

    assert response.status_code == 201, response.json()
    assert response.json()["warnings"] == []


def test_a_loop_whose_target_does_not_lead_back_is_refused(api):
    definition = loop_workflow()
    definition["edges"].remove({"from": "again", "to": "work"})
    definition["nodes"][2]["config"]["loop_back_to"] = "done"

    body = assert_error(post_workflow(api, "bad", definition), 400, "invalid_workflow")

    assert ("/nodes/2/config/loop_back_to", "loop_reaches_back") in problems(body)


@pytest.mark.parametrize("condition", ["$.status_code == 200", "output.status_code >= 500 || $.body.retry == true",
                                       "'$.' + $.name == '$.x'", "size($.items) > 0"])
def test_cel_conditions_compile_with_the_dollar_shorthand(api, condition):
    definition = fetch_then_store()
    definition["edges"][0]["condition"] = condition

    assert post_workflow(api, "routed", definition).status_code == 201


def test_an_unknown_node_type_is_accepted_with_a_warning(api):
    definition = fetch_then_store()
    definition["nodes"].append({"id": "later", "type": "quantum_oracle", "config": {"anything": ["goes"]}})
    definition["edges"].append({"from": "store", "to": "later"})

    response = post_workflow(api, "future", definition)

    assert response.status_code == 201, response.json()
    warnings = response.json()["warnings"]
    assert [(w["path"], w["rule"]) for w in warnings] == [("/nodes/2/type", "unknown_type")]
    assert "quantum_oracle" in warnings[0]["message"]
    assert Workflow.objects.filter(tag="future").exists()


def test_validate_answers_valid_with_warnings_and_saves_nothing(api):
    definition = fetch_then_store()
    definition["nodes"][1]["type"] = "quantum_oracle"

    response = api.post(f"{API}/workflows/validate", {"workflow": definition}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["valid"] is True
    assert body["errors"] == []
    assert [(w["path"], w["rule"]) for w in body["warnings"]] == [("/nodes/1/type", "unknown_type")]
    assert not Workflow.objects.exists()
    assert not Artifact.objects.exists()


def test_validate_of_a_clean_definition_has_no_problems(api):
    response = api.post(f"{API}/workflows/validate", {"workflow": fetch_then_store()}, format="json")

    assert response.json() == {"valid": True, "errors": [], "warnings": []}


@pytest.mark.parametrize("workflow", [[], "nodes", 42])
def test_validate_of_something_that_is_not_an_object_is_invalid(api, workflow):
    response = api.post(f"{API}/workflows/validate", {"workflow": workflow}, format="json")

    assert response.status_code == 200
    assert response.json()["valid"] is False
    assert [(e["path"], e["rule"]) for e in response.json()["errors"]] == [("/", "type")]


def test_validate_of_null_reports_it_is_not_a_workflow(api):
    """Any JSON may be validated, null too (as the OpenAPI document says): the report says why not."""
    response = api.post(f"{API}/workflows/validate", {"workflow": None}, format="json")

    assert response.status_code == 200
    assert response.json()["valid"] is False
    assert [(e["path"], e["rule"]) for e in response.json()["errors"]] == [("/", "type")]


@pytest.mark.parametrize("workflow", [[], "nodes", 42, None])
def test_create_with_a_workflow_that_is_not_an_object_is_a_400(api, workflow):
    body = assert_error(post_workflow(api, "bad", workflow), 400, "validation_error")

    assert body["details"]["field"] == "workflow"


def test_validate_requires_the_workflow_field(api):
    body = assert_error(api.post(f"{API}/workflows/validate", {}, format="json"), 400, "validation_error")

    assert body["details"]["field"] == "workflow"


def test_a_huge_invalid_definition_gets_a_bounded_report(api):
    """Every schema error was built and answered: a 1 MB body of 340,000 empty edges made 680,000
    problems, 22 s of a web thread, 2.5 GiB and a 62 MB answer (a red-team helper's finding)."""
    from workflows.definition.validation import MAX_PROBLEMS

    definition = _with(lambda d: d["edges"].extend([{}] * 4000))  # under AOB_MAX_EDGES: 8,000 problems
    body = api.post(f"{API}/workflows/validate", {"workflow": definition}, format="json").json()
    assert len(body["errors"]) == MAX_PROBLEMS + 1 and body["valid"] is False
    assert body["errors"][0]["path"] == "/edges/1" and body["errors"][0]["rule"] == "schema.required"
    assert body["errors"][-1]["rule"] == "max_problems" and "or more problem(s) not listed" in body["errors"][-1]["message"]
    refused = assert_error(post_workflow(api, "bad", definition), 400, "invalid_workflow")
    assert len(refused["details"]["errors"]) == MAX_PROBLEMS + 1


@pytest.mark.parametrize("change", [
    # what the rules above leave alone: text that mentions $nodes without being a reference, a
    # comprehension's own variable, the variables each condition is given, a reference to itself
    lambda d: d["nodes"].append({"id": "ask", "type": "agent", "config": {
        "task": "Summarise; do not write $nodes.anything or nodes.ghost yourself", "tools": []}}),
    lambda d: d["edges"][0].update(condition="$.items.exists(i, i.ok) && inputs.mode == 'x'"),
    lambda d: d["nodes"][1]["config"].update(expression="size(nodes) + nodes['fetch'].status_code"),
    lambda d: d["nodes"][0]["config"].update(payload={"v": "$inputs.v", "t": "${nodes.store.x} and $nodes.x"}),
    # CEL's type names are not variables: the binding resolves them without being given them
    lambda d: d["edges"][0].update(condition="type($.body) == map && type($.status_code) == int && "
                                   "type(inputs.mode) == string && type($.body.items) == list"),
    lambda d: d["edges"][0].update(condition="type($.a) in [uint, double, bool, bytes, null_type] || type(int) == type"),
    # a comprehension's own variable with a comment after it (a comment is a blank to CEL)
    lambda d: d["edges"][0].update(condition="$.items.exists(i // the item\n, i > 1)"),
    # a transform's CEL expression is evaluated as written: a ${nodes.x} in its string is text
    lambda d: d["nodes"][1].update(config={"expression": "'Dear ${nodes.customer.name}, ' + inputs.body"}),
], ids=["agent task text", "comprehension variable", "nodes read whole", "inputs and templates", "CEL type names",
        "every CEL type name", "comprehension variable and a comment", "dollar brace in a transform's CEL string"])
def test_what_the_written_rules_still_accept(api, change):
    response = api.post(f"{API}/workflows/validate", {"workflow": _with(change)}, format="json")

    assert response.json()["valid"] is True, response.json()


def test_a_loop_condition_checks_a_cel_type(api):
    response = api.post(f"{API}/workflows/validate", {"workflow": _loop(condition="type($.value) == int && $.value < 3")},
                        format="json")

    assert response.json()["valid"] is True, response.json()


def test_a_loop_condition_reads_iteration(api):
    response = api.post(f"{API}/workflows/validate", {"workflow": _loop(condition="iteration < 2 && $.value < 3")},
                        format="json")

    assert response.json()["valid"] is True, response.json()


def test_an_unknown_metadata_key_is_saved_with_a_warning(api):
    definition = _with(lambda d: d.update(metadata={"bench": {"n": 3}, "name": "x"}))
    response = post_workflow(api, "kept", definition)

    assert response.status_code == 201, response.json()
    assert [(w["path"], w["rule"]) for w in response.json()["warnings"]] == [("/metadata/bench", "unknown_metadata_key")]


@pytest.mark.parametrize("key", ["patch_policy_note", "allowed_ports", "allowed_hooks", "match_policy",
                                 "allowed_hosts_v2"])
def test_a_key_of_its_own_near_a_bound_is_saved_with_a_warning(api, key):
    # another word (ports, hooks, match) or a key going on past the bound's name is no slip of it
    response = post_workflow(api, "kept", _with(lambda d: d.update(metadata={key: "ours"})))

    assert response.status_code == 201, response.json()
    assert [(w["path"], w["rule"]) for w in response.json()["warnings"]] == [(f"/metadata/{key}",
                                                                             "unknown_metadata_key")]
