"""The decision's budget (``workflows/engine/pure.py``, ``Budget``): what one decision evaluates in
place, pure nodes and the planner's own (``conditional`` and ``loop`` nodes, edge and loop
conditions), is bounded in nodes and milliseconds. Past it, a node finished in place is left
unconsumed and routed by a decision of its own (``Plan.continued``), so an inline-only loop or a
run of expensive conditions holds no coordinator, web request or run lock for long; a pure node's
one evaluation is capped at what the budget has left and at its own ``timeout_ms``, and handed to
a worker when the cap stops it.

The planner and the evaluator are checked in process (they are pure functions); the whole path
(the web's start, coordinator messages, the sweeper's index) with real workers.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.engine import graphs
from tests.engine.flow import submit, wait_all
from tests.engine.test_planner import LIMITS, T0, Sim, drive, first
from workflows.definition.ir import compile_definition
from workflows.engine import planner, pure
from workflows.engine.planner import State, Token
from workflows.models import Event, NodeRun, Run

Q = graphs.Q
# a map over an exists: several milliseconds per evaluation here for 200 inputs, 20–40 ms for 300
SLOW = "inputs.xs.map(x, inputs.xs.exists(y, y == -1)).size() >= 0"


def inline_loop(iterations: int, condition: str = "true", worker_first: bool = True) -> dict[str, Any]:
    """A loop whose body is only inline nodes (a conditional, then the loop): without a budget one
    decision would go round ``iterations`` times."""
    nodes = [{"id": "c", "type": "conditional", "config": {}},
             {"id": "L", "type": "loop", "config": {"max_iterations": iterations, "loop_back_to": "c",
                                                    "condition": condition}},
             {"id": "end", "type": "transform", "config": {"expression": graphs.ok(2), **Q}}]
    edges = [{"from": "c", "to": "L"}, {"from": "L", "to": "end"}]
    if worker_first:
        nodes.insert(0, {"id": "w", "type": "transform", "config": {"expression": graphs.ok(1), **Q}})
        edges.insert(0, {"from": "w", "to": "c"})
    return {"nodes": nodes, "edges": edges}


def after_w(definition: dict[str, Any], inputs: dict[str, Any] | None = None,
            budget: pure.Budget | None = None) -> planner.Plan:
    """The decision after ``w`` completed."""
    state = State(run_status=Run.Status.RUNNING, inputs=inputs or {}, now=T0, limits=LIMITS, node_runs_stored=1,
                  tokens=[Token("w", 0, "transform", NodeRun.Status.COMPLETED, pk=1, output=1, finished_at=T0)])
    return planner.plan(compile_definition(definition), state, 1, None, budget)


# --- the planner, in process ---------------------------------------------------------------------


def test_an_inline_loop_is_cut_into_decisions_of_at_most_the_budgets_nodes():
    unbounded = after_w(inline_loop(300))  # the control: no budget, one decision goes all the way round
    assert len(unbounded.inserts) == 2 * 300 + 1 and not unbounded.continued

    budget = pure.Budget(max_nodes=50, max_ms=10_000)
    bounded = after_w(inline_loop(300), budget=budget)
    assert len(bounded.inserts) == 50 and budget.nodes == 50
    [left] = bounded.continued  # the last node evaluated, finished here and not consumed
    assert left is bounded.inserts[-1] and not left.consumed and left.taken is None
    assert left.status == NodeRun.Status.COMPLETED
    assert not bounded.run  # the run goes on: nothing settled it
    assert bounded.updates[1]["consumed"] is True  # the message's own node run is consumed as always


def test_the_time_conditions_take_counts():
    inputs = {"xs": list(range(200))}  # each condition a few milliseconds
    budget = pure.Budget(max_nodes=10_000, max_ms=1)
    bounded = after_w(inline_loop(300, SLOW), inputs, budget)
    assert budget.seconds * 1000 >= 1 and len(bounded.continued) == 1
    assert len(bounded.inserts) < 10  # a few milliseconds' worth, not 300 iterations
    assert len(after_w(inline_loop(30, SLOW), inputs).inserts) == 2 * 30 + 1  # the control


class BudgetSim(Sim):
    """The simulation with every decision (the start too) under a budget of ``max_nodes``: each
    continued node run is a coordinator message, delivered in the order ``drive`` draws."""

    max_nodes = 2

    def coordinate(self, pk: int) -> None:
        budget = pure.Budget(max_nodes=self.max_nodes, max_ms=10_000)
        self.apply(planner.plan(self.ir, self.state(), pk, None, budget))

    def start(self) -> None:
        budget = pure.Budget(max_nodes=self.max_nodes, max_ms=10_000)
        self.apply(planner.plan_start(self.ir, self.state(), {}, "artifact", budget=budget))


def finals_and_taken(sim: Sim) -> dict[tuple[str, int], tuple[str, Any]]:
    return {(t.node_id, t.iteration): (t.status, t.taken) for t in sim.tokens.values()}


@settings(max_examples=80, deadline=None, derandomize=True)
@example(definition=graphs.nested_loops(), data=None)
@example(definition=inline_loop(12), data=None)
@example(definition=inline_loop(12, worker_first=False), data=None)
@given(definition=graphs.dags(failures=False) | graphs.loop_chains(), data=st.none() | st.data())
def test_decisions_cut_by_the_budget_reach_the_same_final_states(definition, data):
    """Every invariant ``drive`` checks holds when decisions stop at the budget and continue in
    messages of their own, delivered in any order, and the final states and edges taken are
    those of unbounded decisions."""
    bounded = drive(BudgetSim(definition), first if data is None else lambda n: data.draw(st.integers(0, n - 1)))
    unbounded = drive(Sim(definition), first)
    assert finals_and_taken(bounded) == finals_and_taken(unbounded)
    assert bounded.run["status"] == unbounded.run["status"] == Run.Status.COMPLETED
    assert sorted(e[:2] for e in bounded.events) == sorted(e[:2] for e in unbounded.events)


# --- a pure node's one evaluation, capped ----------------------------------------------------------


def slow_node(timeout_ms: int | None = None) -> Any:
    node = {"id": "t", "type": "transform", "config": {"expression": SLOW}}
    if timeout_ms:
        node["timeout_ms"] = timeout_ms
    return compile_definition({"nodes": [node], "edges": []}).nodes["t"]


@pytest.mark.parametrize(("max_ms", "timeout_ms"), [(10, None), (10_000, 10)], ids=["budget", "timeout_ms"])
def test_a_pure_evaluation_stopped_by_its_cap_goes_to_a_worker(max_ms, timeout_ms):
    inputs = {"xs": list(range(300))}
    capped = pure.Evaluator(run_id="r", owner_id=1, inputs=inputs, max_nodes=50, max_ms=max_ms)
    assert capped(slow_node(timeout_ms), 0, {}) is None  # the queue's: a worker applies the node's limits
    # the control: with room in the budget and no timeout of its own, the decision evaluates it
    room = pure.Evaluator(run_id="r", owner_id=1, inputs=inputs, max_nodes=50, max_ms=10_000)
    outcome = room(slow_node(), 0, {})
    assert outcome is not None and outcome.error is None and outcome.output is True


# --- the whole path, with real workers ------------------------------------------------------------


@pytest.mark.parametrize("worker_first", [True, False], ids=["after-a-worker-node", "from-the-start"])
def test_an_inline_loop_runs_to_its_end_in_many_decisions(engine, api, worker_first):
    """From the start (the web's request plans the entry nodes) or after a worker node (the
    coordinator), 200 passes of an inline-only loop finish the run, spread over decisions of at
    most 50 nodes each (their clock: one ``finished_at`` per decision)."""
    [run] = wait_all([submit(api, inline_loop(200, worker_first=worker_first))], timeout=120)
    assert run.status == Run.Status.COMPLETED, run.error
    loops = NodeRun.objects.filter(run=run, node_id="L")
    assert loops.count() == 200 and loops.filter(output__decision="timeout").count() == 1
    assert NodeRun.objects.get(run=run, node_id="end").output == {"x": 2}
    assert not NodeRun.objects.filter(run=run, consumed=False).exclude(node_id="end").exists()
    decisions = set(NodeRun.objects.filter(run=run, node_type__in=["conditional", "loop"])
                    .values_list("finished_at", flat=True))
    assert len(decisions) >= 2 * 200 // 50
    assert Event.objects.filter(run=run, type=Event.Type.NODE_COMPLETED, node_id="L").count() == 200
