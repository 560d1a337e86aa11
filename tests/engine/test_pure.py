"""Pure nodes in the decision (issue 20): a ``transform`` runs inside the coordinator's decision
that reaches it, recorded as its own node run, with the same history as on a worker.

The differential test runs each graph twice through the real stack: every transform with
``dispatch: "queue"`` (a worker runs it, as before), and every transform left to the decision.
Node states, the edges each decision took, inputs, outputs, errors and every node's events
(type and payload) must be the same; only where the work ran differs (``dispatched_at``).
The budget, the opt-out and the plain step's fall-back are checked on the planner in process.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.engine import graphs
from tests.engine.flow import submit, wait_all
from tests.engine.test_planner import Sim, drive, first
from workflows.definition.ir import compile_definition
from workflows.engine import planner, pure
from workflows.engine.planner import Limits, State, Token
from workflows.models import Event, NodeRun, Run

Q = graphs.Q


def node_runs(run: Run) -> dict[tuple[str, int], dict[str, Any]]:
    """What each node run recorded, but where it ran (its input without the ``dispatch`` key)."""
    rows = {}
    for nr in NodeRun.objects.filter(run=run):
        config = {k: v for k, v in (nr.input or {}).items() if k != "dispatch"} if isinstance(nr.input, dict) else nr.input
        rows[(nr.node_id, nr.iteration)] = {"status": nr.status, "taken": nr.taken, "output": nr.output,
                                            "error": nr.error, "input": config, "attempts": nr.attempts,
                                            "output_artifact_id": nr.output_artifact_id,
                                            "log": [e.get("status") for e in nr.attempt_log]}
    return rows


def node_events(run: Run) -> Counter[tuple[str, str, str]]:
    """Each node's events, by type and payload."""
    return Counter((e.node_id, e.type, json.dumps(e.data, sort_keys=True))
                   for e in Event.objects.filter(run=run).exclude(node_id=""))


def run_facts(run: Run) -> tuple[str, Any, Any]:
    return run.status, run.error, (run.usage or {}).get("output_bytes")


def chain_with_references() -> dict[str, Any]:
    """Pure nodes reading the inputs and arbitrary earlier nodes (not only their predecessor),
    by CEL and by template, behind a worker node."""
    return {"nodes": [
        {"id": "w", "type": "transform", "config": {"expression": "{'x': inputs.n}", **Q}},
        {"id": "p1", "type": "transform", "config": {"expression": "{'y': nodes.w.x * 2}"}},
        {"id": "p2", "type": "transform", "config": {"template": {"from_w": "$nodes.w.x", "text": "n=${nodes.p1.y}"}}},
        {"id": "p3", "type": "transform", "config": {"expression": "nodes.w.x + nodes.p1.y"}},
        {"id": "q", "type": "transform", "config": {"expression": "{'x': 1}", **Q}},
        {"id": "p4", "type": "transform", "config": {"expression": "{'sum': nodes.p3 + nodes.q.x}"}}],
        "edges": [{"from": "w", "to": "p1"}, {"from": "p1", "to": "p2"}, {"from": "p2", "to": "p3"},
                  {"from": "w", "to": "q"}, {"from": "p3", "to": "p4"}, {"from": "q", "to": "p4"}]}


def failing_chain() -> dict[str, Any]:
    """A pure node whose expression fails: it fails the run as a worker's would."""
    return {"nodes": [{"id": "w", "type": "transform", "config": {"expression": "{'x': 1}", **Q}},
                      {"id": "ok", "type": "transform", "config": {"expression": "{'x': 2}"}},
                      {"id": "boom", "type": "transform", "config": {"expression": graphs.FAILS}},
                      {"id": "never", "type": "transform", "config": {"expression": "1"}}],
            "edges": [{"from": "w", "to": "ok"}, {"from": "ok", "to": "boom"}, {"from": "boom", "to": "never"}]}


def queued(definition: dict[str, Any]) -> dict[str, Any]:
    """Every transform on a worker."""
    nodes = [{**n, "config": {**n["config"], **Q}} if n["type"] == "transform" else n for n in definition["nodes"]]
    return {**definition, "nodes": nodes}


@settings(max_examples=3, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@example(definitions=[chain_with_references(), failing_chain(), graphs.nested_loops()])
@given(definitions=st.tuples(graphs.dags(failures=False), graphs.loop_chains()).map(list))
def test_pure_nodes_in_the_decision_record_what_a_worker_records(engine, api, definitions):
    inputs = {"n": 3}
    on_workers = wait_all([submit(api, queued(d), inputs) for d in definitions], timeout=120)
    in_decision = wait_all([submit(api, graphs.in_decision(d), inputs) for d in definitions], timeout=120)
    by_created = lambda runs: sorted(runs, key=lambda r: (r.created_at, str(r.pk)))  # noqa: E731
    evaluated_here = 0
    for definition, one, other in zip(definitions, by_created(on_workers), by_created(in_decision), strict=True):
        assert run_facts(one) == run_facts(other), definition
        assert node_runs(one) == node_runs(other), definition
        assert node_events(one) == node_events(other), definition
        ran = NodeRun.objects.filter(node_type="transform", dispatched_at__isnull=True, status__in=["completed", "failed"])
        assert not ran.filter(run=one).exists()
        evaluated_here += ran.filter(run=other).count()
    assert evaluated_here > 0  # and some of them did run in the decision


def test_a_failing_pure_node_fails_the_run_with_the_workers_error(engine, api):
    run = wait_all([submit(api, graphs.in_decision(failing_chain()))], timeout=60)[0]
    error = run.error or {}
    assert run.status == Run.Status.FAILED and error["node_id"] == "boom"
    assert error["error_type"] == "ExpressionError"
    boom = NodeRun.objects.get(run=run, node_id="boom")
    assert boom.status == NodeRun.Status.FAILED and boom.dispatched_at is None
    assert not NodeRun.objects.filter(run=run, node_id="never").exists()


def test_dispatch_accepts_queue_or_decision_only(api):
    bad = {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "1", "dispatch": "later"}}], "edges": []}
    response = api.post("/api/v1/runs", {"workflow": bad, "inputs": {}}, format="json")
    assert response.status_code == 400
    assert "dispatch" in json.dumps(response.json())


# --- in process: the planner with an evaluator ---------------------------------------------------

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def chain(n: int, **config: Any) -> dict[str, Any]:
    ids = [f"t{i}" for i in range(n)]
    nodes = [{"id": "w", "type": "transform", "config": {"expression": "{'x': 1}", **Q}}]
    nodes += [{"id": i, "type": "transform", "config": {"expression": "{'x': 1}", **config}} for i in ids]
    edges = [{"from": a, "to": b} for a, b in zip(["w", *ids], ids, strict=False)]
    return {"nodes": nodes, "edges": edges}


def decide(definition: dict[str, Any], evaluator: pure.Evaluator | None) -> planner.Plan:
    ir = compile_definition(definition)
    state = State(run_status=Run.Status.RUNNING, inputs={}, now=NOW,
                  limits=Limits(max_output_bytes=1 << 40, max_node_runs=1 << 40),
                  tokens=[Token("w", 0, "transform", NodeRun.Status.COMPLETED, pk=1, output={"x": 1}, finished_at=NOW)])
    return planner.plan(ir, state, 1, evaluator)


def test_a_chain_of_pure_nodes_runs_in_one_decision_and_ends_the_run():
    result = decide(chain(5), pure.Evaluator(run_id="r", owner_id=1, owner_active=True, inputs={}, max_nodes=50, max_ms=10_000))
    assert [(t.node_id, t.status) for t in result.inserts] == [(f"t{i}", NodeRun.Status.COMPLETED) for i in range(5)]
    assert result.run_finished == Run.Status.COMPLETED
    assert [e[0] for e in result.events[:2]] == [Event.Type.NODE_STARTED, Event.Type.NODE_COMPLETED]


def test_the_budget_hands_the_rest_to_the_queue():
    result = decide(chain(5), pure.Evaluator(run_id="r", owner_id=1, owner_active=True, inputs={}, max_nodes=2, max_ms=10_000))
    assert [(t.node_id, t.status) for t in result.inserts] == [
        ("t0", NodeRun.Status.COMPLETED), ("t1", NodeRun.Status.COMPLETED), ("t2", NodeRun.Status.QUEUED)]
    spent = decide(chain(5), pure.Evaluator(run_id="r", owner_id=1, owner_active=True, inputs={}, max_nodes=50, max_ms=0))
    assert [(t.node_id, t.status) for t in spent.inserts] == [("t0", NodeRun.Status.QUEUED)]


def test_dispatch_queue_and_no_evaluator_queue_the_node():
    evaluator = pure.Evaluator(run_id="r", owner_id=1, owner_active=True, inputs={}, max_nodes=50, max_ms=10_000)
    assert [t.status for t in decide(chain(3, dispatch="queue"), evaluator).inserts] == [NodeRun.Status.QUEUED]
    assert [t.status for t in decide(chain(3), None).inserts] == [NodeRun.Status.QUEUED]


@pytest.mark.parametrize(("config", "plain"), [({}, False), ({"dispatch": "queue"}, True)])
def test_the_plain_step_falls_back_where_a_successor_is_pure(config, plain):
    ir = compile_definition(chain(2, **config))
    assert (planner.plain_step(ir, "w") is not None) is plain


# --- the planner's properties with an evaluator (in process, many graphs) ------------------------

class PureSim(Sim):
    """The planner's simulated run, its decisions evaluating pure nodes (the real evaluator)."""

    def check_joins(self, plan: planner.Plan) -> None:
        """As ``Sim``'s, with each parent read at the join's pass: one decision may now evaluate a
        loop's body and go round into the next pass, so a parent's latest run can be newer."""
        for token in plan.inserts:
            parents = {e.source for e in self.ir.in_edges[token.node_id]}
            if len(parents) < 2 or token.status in (NodeRun.Status.SKIPPED, NodeRun.Status.CANCELLED):
                continue
            decided = [max((t for t in self.tokens.values() if t.node_id == p and t.iteration <= token.iteration),
                           key=lambda t: t.iteration, default=None) for p in parents]
            assert all(p is not None and p.consumed and p.status in NodeRun.FINISHED for p in decided), \
                f"join {token.node_id} before every parent was decided"
            assert any(token.node_id in (p.taken or []) for p in decided if p is not None), \
                f"join {token.node_id} with no live parent"

    def coordinate(self, pk: int) -> None:
        evaluator = pure.Evaluator(run_id="r", owner_id=1, owner_active=True, inputs={}, max_nodes=3, max_ms=10_000)
        self.apply(planner.plan(self.ir, self.state(), pk, evaluator, evaluator.budget))


def finals_and_taken(sim: Sim) -> dict[tuple[str, int], tuple[str, Any]]:
    return {(t.node_id, t.iteration): (t.status, t.taken) for t in sim.tokens.values()}


@settings(max_examples=60, deadline=None, derandomize=True)
@example(definition=graphs.nested_loops())
@given(definition=graphs.dags(failures=False) | graphs.loop_chains())
def test_the_planner_with_pure_nodes_reaches_the_same_final_states(definition):
    """Every invariant ``drive`` checks (a join runs once, every run ends, every finished node run
    consumed) holds with pure nodes evaluated in the decisions (a budget of 3 per decision, so
    the rest go through the queue), and the final states and edges taken are the worker path's."""
    on_workers = drive(Sim(definition), first)
    in_decision = drive(PureSim(graphs.in_decision(definition)), first)
    assert finals_and_taken(in_decision) == finals_and_taken(on_workers)
    assert in_decision.run["status"] == on_workers.run["status"] == Run.Status.COMPLETED


def _copying(w_output_bytes: int) -> planner.Plan:
    definition = {"nodes": [{"id": "w", "type": "transform", "config": {"expression": "{'x': 1}", **Q}},
                            {"id": "t", "type": "transform", "config": {"template": {"copy": "$nodes.w"}}}],
                  "edges": [{"from": "w", "to": "t"}]}
    state = State(run_status=Run.Status.RUNNING, inputs={}, now=NOW,
                  limits=Limits(max_output_bytes=1 << 40, max_node_runs=1 << 40),
                  tokens=[Token("w", 0, "transform", NodeRun.Status.COMPLETED, pk=1, output={"x": 1}, finished_at=NOW,
                                output_bytes=w_output_bytes)])
    evaluator = pure.Evaluator(run_id="r", owner_id=1, owner_active=True, inputs={}, max_nodes=50, max_ms=10_000)
    return planner.plan(compile_definition(definition), state, 1, evaluator)


def test_a_pure_node_reading_more_than_the_decision_may_goes_to_its_queue():
    """A template copying a 13 MB output was evaluated in the decision: its references resolved and
    its output serialised before the time cap could stop it (3.4 s against 50 ms), then thrown away
    as over the cap and done again on a worker (a red team's find). Past ``READ_MAX_BYTES`` of the
    outputs it reads (as stored), it goes to its queue at once."""
    assert [(t.node_id, t.status) for t in _copying(pure.READ_MAX_BYTES).inserts] == [("t", NodeRun.Status.COMPLETED)]
    assert [(t.node_id, t.status) for t in _copying(pure.READ_MAX_BYTES + 1).inserts] == [("t", NodeRun.Status.QUEUED)]


def test_a_pure_node_after_a_large_output_runs_on_a_worker_and_completes(engine, api):
    items = ["x" * 100] * 3_000  # a 300 KB output to copy
    run = wait_all([submit(api, {"nodes": [{"id": "w", "type": "transform", "config": {"template": "$inputs.items", **Q}},
                                           {"id": "t", "type": "transform", "config": {"template": {"copy": "$nodes.w"}}}],
                                 "edges": [{"from": "w", "to": "t"}]}, {"items": items})], timeout=60)[0]
    t = NodeRun.objects.get(run=run, node_id="t")
    assert run.status == Run.Status.COMPLETED and t.output == {"copy": items}
    assert t.dispatched_at is not None  # a worker's, not the decision's


def test_a_loop_condition_s_time_counts_once_in_the_decision_s_budget():
    """An inline node's time is the decision's (``Budget.timing``), and a loop's condition inside it
    is timed by ``Budget.conditions`` too: it was counted twice, and a decision whose time went on
    loop conditions stopped taking nodes at half its ``max_ms`` (a review's find)."""
    definition = {"nodes": [{"id": "w", "type": "transform", "config": {"expression": "1", **Q}},
                            {"id": "l", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "w",
                                                                   "condition": "inputs.items.all(x, size(x) > 0)"}},
                            {"id": "end", "type": "transform", "config": {"expression": "1", **Q}}],
                  "edges": [{"from": "w", "to": "l"}, {"from": "l", "to": "w"}, {"from": "l", "to": "end"}]}
    inputs = {"items": ["x"] * 20_000}
    state = State(run_status=Run.Status.RUNNING, inputs=inputs, now=NOW,
                  limits=Limits(max_output_bytes=1 << 40, max_node_runs=1 << 40),
                  tokens=[Token("w", 0, "transform", NodeRun.Status.COMPLETED, pk=1, output=1, finished_at=NOW)])
    evaluator = pure.Evaluator(run_id="r", owner_id=1, owner_active=True, inputs=inputs, max_nodes=50, max_ms=10_000)

    planner.plan(compile_definition(definition), state, 1, evaluator, budget=evaluator.budget)

    budget = evaluator.budget
    assert budget.condition_seconds > 0  # the loop did nothing but its condition: the decision spent that
    assert budget.seconds < 1.5 * budget.condition_seconds, (budget.seconds, budget.condition_seconds)
