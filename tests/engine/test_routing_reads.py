"""A decision reads of an output only what routing reads (``planner.output_reads``): of a node read
only by its branch rules, the paths those rules read (``expressions.read_tree``), cut in the
database as the evaluation cuts it (``expressions.prune``), so each rule holds, fails or errs over
that read exactly as over the whole output; the whole output where a rule reads it whole, or an
inline or pure node reads it."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import stored_run
from tests.engine.flow import edge, event_counts, node_runs, statuses, submit, transform, wait_all
from workflows.definition.expressions import ExpressionError, evaluate_condition, prune
from workflows.engine import coordinator, planner
from workflows.models import NodeRun, Run

KEYS = ["a", "b", "0", "x y"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["", "s", "a"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)),
                      max_leaves=12)


def _step(step: str | int) -> str:
    if isinstance(step, int):
        return f"[{step}]"
    return f".{step}" if step.isidentifier() else f'["{step}"]'


@st.composite
def rules(draw: Any) -> str:
    """A branch rule over ``output``: a path of fields and indexes, and what it does with its end."""
    path = draw(st.lists(st.one_of(st.sampled_from(KEYS), st.integers(0, 2)), max_size=3))
    at = "output" + "".join(_step(s) for s in path)
    forms = [f"{at} == {{}}", f"{at} == 1", f"{at} == 's'", f"type({at}) == list", f"size({at}) > 1",
             f"{at} != null", f"'a' in {at}"]
    if path and isinstance(path[-1], str) and path[-1].isidentifier():
        forms.append(f"has({at})")
    return draw(st.sampled_from(forms))


def outcome(rule: str, output: Any) -> Any:
    """What a rule gives, as the planner routes (``_Planner.route``): its value, or its error."""
    try:
        return evaluate_condition(rule, {"output": output, "inputs": {}})
    except ExpressionError as exc:
        return ("error", exc.rule, str(exc))


def read_by_decision(user: Any, output: Any, conditions: list[str]) -> tuple[Any, Any]:
    """A node ``n`` routed by ``conditions``, finished with ``output``: what a decision reads of its
    output (``coordinator._tokens``), and what of it ``planner.output_reads`` says routing reads."""
    nodes = [{"id": "n", "type": "transform", "config": {"expression": "1"}}]
    nodes += [{"id": f"t{i}", "type": "transform", "config": {"expression": "1"}} for i in range(len(conditions))]
    run = stored_run(user, {"nodes": nodes, "edges": [edge("n", f"t{i}", c) for i, c in enumerate(conditions)]})
    row = NodeRun.objects.create(run=run, node_id="n", node_type="transform", status="completed", attempts=1,
                                 output=output)
    ir = coordinator.load_ir(run)
    [token] = coordinator._tokens(NodeRun.objects.filter(pk=row.pk), ir)
    return token.output, planner.output_reads(ir)["n"]


@pytest.mark.django_db
@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(output=values, conditions=st.lists(rules(), min_size=1, max_size=3))
@example(output={"status_code": 200, "body": "x" * 1000}, conditions=["$.status_code == 200"])
@example(output={"a": [1, {"b": 2}]}, conditions=["output.a[1].b == 2", "has(output.a.b)"])
@example(output={"a": "s"}, conditions=["output.a.b == 1"])  # a field of a string: the same error
@example(output={"a": {"0": 1}}, conditions=["output.a[0] == 1"])  # an index into a map: whole, the same error
@example(output=[None, 1], conditions=["output[3] == 1", "output[1] == 1"])
@example(output={"a": None}, conditions=["output.a == null", "has(output.a)", "output.b == null"])
@example(output=None, conditions=["output.a == 1"])
def test_a_rule_gives_over_what_a_decision_reads_what_it_gives_over_the_whole_output(user, output, conditions):
    read, tree = read_by_decision(user, output, conditions)
    for rule in conditions:
        assert outcome(rule, read) == outcome(rule, output), (rule, read, output)
    if tree is not None:  # the database's cut is the evaluation's
        assert read == (prune({"output": output}, {"output": tree}).get("output") if tree else None)


@pytest.mark.django_db
def test_a_rule_reading_the_output_whole_reads_it_whole(user):
    output = {"status_code": 200, "body": {"items": [1, 2]}}
    read, tree = read_by_decision(user, output, ["$.status_code == 200", "size(output) > 1"])
    assert tree is None and read == output
    read, tree = read_by_decision(user, output, ["inputs.go == true"])  # reads no output at all
    assert tree == {} and read is None


def fan_out(n: int) -> dict:
    nodes = [{"id": "s", "type": "transform", "config": {"expression": "1"}}]
    nodes += [{"id": f"h{i}", "type": "http", "config": {"url": "https://example.org/x"}} for i in range(n)]
    nodes.append({"id": "j", "type": "transform", "config": {"expression": "1"}})
    edges = [edge("s", f"h{i}") for i in range(n)]
    edges += [edge(f"h{i}", "j", "$.status_code == 200") for i in range(n)]
    return {"nodes": nodes, "edges": edges}


@pytest.mark.django_db
def test_a_decision_over_pending_siblings_reads_the_field_their_rules_read_not_their_outputs(user):
    n = 6
    run = stored_run(user, fan_out(n))
    Run.objects.filter(pk=run.pk).update(status="running")
    NodeRun.objects.create(run=run, node_id="s", node_type="transform", status="completed", attempts=1,
                           output=1, consumed=True, taken=[f"h{i}" for i in range(n)])
    output = {"status_code": 200, "body": {"items": [{"i": k} for k in range(1000)]}}
    rows = NodeRun.objects.bulk_create([NodeRun(run=run, node_id=f"h{i}", node_type="http", status="completed",
                                                attempts=1, output=output) for i in range(n)])
    with CaptureQueriesContext(connection) as queries:
        coordinator.coordinate(rows[0].pk)
    reads = [q["sql"] for q in queries.captured_queries
             if q["sql"].startswith("SELECT") and 'FROM "workflows_noderun"' in q["sql"] and "#>" in q["sql"]]
    assert reads, "the decision reads the status codes in the database"
    for sql in reads:
        # the column whole for skipped node runs only (their pass-through marker); of the http
        # nodes' outputs, their status codes (and the whole only of one that is not a map)
        assert ('CASE WHEN "workflows_noderun"."status" = \'skipped\' THEN "workflows_noderun"."output" '
                'ELSE NULL END AS "routing_output"') in sql
        assert "#> '{status_code}'" in sql
    got = {nr.node_id: nr for nr in NodeRun.objects.filter(run=run)}
    assert all(got[f"h{i}"].consumed and got[f"h{i}"].taken == ["j"] for i in range(n))
    assert got["j"].status == "completed"


def test_a_run_routes_on_the_field_its_rules_read(engine, api):
    """Through the workers: a large output routed on one field, a missing key an error counted false."""
    body = [{"k": "v" * 20, "i": i} for i in range(2000)]
    definition = {
        "nodes": [transform("src", "{'score': inputs.score, 'body': inputs.body}"),
                  transform("hi", "'hi'"), transform("lo", "'lo'"), transform("never", "'never'")],
        "edges": [edge("src", "never", "$.missing > 1"), edge("src", "hi", "$.score > 50"),
                  edge("src", "lo", "$.score <= 50")],
    }
    ids = {score: submit(api, definition, {"score": score, "body": body}) for score in (80, 20)}
    wait_all(list(ids.values()))
    for score, winner in ((80, "hi"), (20, "lo")):
        run = Run.objects.get(pk=ids[score])
        assert run.status == "completed", run.error
        got = statuses(run)
        assert {t: got[t] for t in ("hi", "lo", "never")} == {
            t: "completed" if t == winner else "skipped" for t in ("hi", "lo", "never")}
        assert node_runs(run)[winner].output == winner
        assert event_counts(run)[("condition_error", "src")] == 1


def _definition(conditions: list[str]) -> dict:
    nodes = [{"id": "n", "type": "transform", "config": {"expression": "1"}}]
    nodes += [{"id": f"t{i}", "type": "transform", "config": {"expression": "1"}} for i in range(len(conditions))]
    return {"nodes": nodes, "edges": [edge("n", f"t{i}", c) for i, c in enumerate(conditions)]}


@pytest.mark.django_db
@pytest.mark.parametrize("conditions", [
    ["output.k0" + ".a" * 1990 + " == 1"],  # one rule of 4,000 bytes: its read tree 1,991 deep
    ["output" + ".a" * 1200 + " == 1", "output" + ".a" * 1200 + ".b == 1"],  # a long shared prefix
    [f"output.k{i}" + ".a" * 48 + " == 1" for i in range(450)],  # 22,500 parts: 65,900 parameters
], ids=["deep", "deep shared prefix", "many parts"])
def test_rules_past_the_read_bounds_read_the_output_whole_and_route(user, conditions):
    """Valid rules whose paths are too deep (``RecursionError`` in every decision of the run) or too
    many (a statement past PostgreSQL's 65,535 parameters: an ``OperationalError`` the sweeper asked
    again for ever, the run stuck) to read in parts (a red team's finds): past
    ``READS_DEPTH_MAX`` or ``READS_PARTS_MAX`` the output is read whole, as before any cut."""
    from workflows.definition.validation import validate

    assert validate(_definition(conditions)).valid
    output = {"k0": 1}
    read, tree = read_by_decision(user, output, conditions)
    assert tree is None and read == output
    for rule in conditions[:3]:
        assert outcome(rule, read) == outcome(rule, output)
