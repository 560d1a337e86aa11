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

import dataclasses
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.conftest import client_for, wait_for_run
from tests.engine import graphs, test_plain_step
from tests.engine.flow import submit, wait_all
from tests.engine.test_planner import LIMITS, T0, Sim, drive, first
from workflows.definition.ir import compile_definition
from workflows.engine import planner, pure
from workflows.engine.planner import State, Token
from workflows.models import Event, NodeRun, Run
from workflows.services.runs import run_start

Q = graphs.Q
workers_ = test_plain_step.workers_  # the session's workers, a node's execution held until released
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


def fan_of_conditions(k: int) -> dict[str, Any]:
    """``w`` into ``k`` conditionals, each routing to its own worker node through a slow condition."""
    nodes = [{"id": "w", "type": "transform", "config": {"expression": graphs.ok(1), **Q}}]
    edges = []
    for i in range(k):
        nodes += [{"id": f"c{i}", "type": "conditional", "config": {}},
                  {"id": f"e{i}", "type": "transform", "config": {"expression": graphs.ok(2), **Q}}]
        edges += [{"from": "w", "to": f"c{i}"}, {"from": f"c{i}", "to": f"e{i}", "condition": SLOW}]
    return {"nodes": nodes, "edges": edges}


def stored(plan: planner.Plan, before: list[Token]) -> list[Token]:
    """The node runs after ``plan`` is written, as the next decision reads them."""
    tokens = [dataclasses.replace(t, **plan.updates.get(t.pk, {})) for t in before]
    return tokens + [dataclasses.replace(t, pk=len(before) + i) for i, t in enumerate(plan.inserts, start=1)]


def test_a_decision_after_a_cut_leaves_the_other_stored_node_runs_to_their_own_messages():
    """The decision after a budget cut, sent for one of the node runs the cut left: once its
    budget is spent, the others (each a slow branch rule away from a worker node) wait for their
    own messages instead of being routed here; its own is routed whatever the budget says."""
    inputs = {"xs": list(range(300))}
    ir = compile_definition(fan_of_conditions(30))
    w = Token("w", 0, "transform", NodeRun.Status.COMPLETED, pk=1, output={"x": 1}, finished_at=T0)
    state = State(run_status=Run.Status.RUNNING, inputs=inputs, now=T0, limits=LIMITS, node_runs_stored=1, tokens=[w])
    first_cut = planner.plan(ir, state, 1, None, pure.Budget(max_nodes=5, max_ms=10_000))
    assert len(first_cut.continued) > 20  # the budget took on 5 conditionals; the rest wait
    tokens = stored(first_cut, [w])
    left = [t.pk for t in tokens if not t.consumed and t.node_id.startswith("c")]

    def later() -> State:  # a fresh read for each decision (a plan changes the tokens it is given)
        return State(run_status=Run.Status.RUNNING, inputs=inputs, now=T0, limits=LIMITS, node_runs_stored=len(tokens),
                     tokens=[dataclasses.replace(t) for t in tokens])

    bounded = planner.plan(ir, later(), left[0], None, pure.Budget(max_nodes=5, max_ms=1))
    assert bounded.updates[left[0]]["consumed"] is True
    assert len([pk for pk in left if bounded.updates.get(pk, {}).get("consumed")]) < 5
    # each of the others has its message from the first cut: this decision sends none again
    assert not bounded.continued
    # the control: with room in the budget the same decision routes every one of them
    unbounded = planner.plan(ir, later(), left[0], None, pure.Budget(max_nodes=10**6, max_ms=10**9))
    assert not unbounded.continued and all(unbounded.updates[pk]["consumed"] for pk in left)


class Counting(BudgetSim):
    """Counts the coordinator messages the budget's cuts send."""

    sent = 0

    def apply(self, plan: planner.Plan) -> None:
        self.sent += len(plan.continued)
        super().apply(plan)


def test_cut_decisions_send_one_message_per_node_run_they_leave_not_one_per_decision():
    """A fan of 100 inline branches cut at every second node: each node run a cut leaves gets one
    message; a later cut leaves the stored ones to theirs. Sending one for every stored node run a
    cut passed over was 3,726 messages here, growing with the square of the fan's width."""
    n = 100
    nodes = [{"id": "w", "type": "transform", "config": {"expression": graphs.ok(1), **Q}}]
    edges = []
    for i in range(n):
        nodes += [{"id": f"c{i}", "type": "conditional", "config": {}}, {"id": f"d{i}", "type": "conditional", "config": {}}]
        edges += [{"from": "w", "to": f"c{i}"}, {"from": f"c{i}", "to": f"d{i}"}]
    sim = drive(Counting({"nodes": nodes, "edges": edges}), first, max_steps=10**5)
    assert sim.run["status"] == Run.Status.COMPLETED
    assert sim.sent <= 2 * n  # at most one per inline node run


SLOW_FALSE = SLOW.replace(">= 0", "< 0")


def test_the_conditions_of_one_decision_share_one_cel_timeout(settings):
    """One node's branch rules are routed together (first true wins), so a budget cannot cut
    between them: the conditions of a decision share one ``AOB_CEL_TIMEOUT_MS``, and past it they
    count as false with a ``condition_error`` event naming the timeout."""
    settings.AOB_CEL_TIMEOUT_MS = 100
    inputs = {"xs": list(range(300))}
    nodes = [{"id": "w", "type": "transform", "config": {"expression": graphs.ok(1), **Q}},
             {"id": "c", "type": "conditional", "config": {}}]
    nodes += [{"id": f"e{i}", "type": "transform", "config": {"expression": graphs.ok(2), **Q}} for i in range(30)]
    edges = [{"from": "w", "to": "c"}] + [{"from": "c", "to": f"e{i}", "condition": SLOW_FALSE} for i in range(30)]
    definition = {"nodes": nodes, "edges": edges}

    budget = pure.Budget(max_nodes=50, max_ms=50)
    bounded = after_w(definition, inputs, budget)
    assert budget.condition_seconds * 1000 < 2 * 100  # one shared timeout (and the tick's grain)
    stopped = [e for e in bounded.events if e[0] == Event.Type.CONDITION_ERROR and e[2]["rule"] == "timeout"]
    assert stopped and all(e[1] == "c" for e in stopped)
    # the control: unbounded, each condition has its own timeout (ample here) and all thirty are evaluated
    settings.AOB_CEL_TIMEOUT_MS = 10_000
    unbounded = after_w(definition, inputs)
    assert not [e for e in unbounded.events if e[0] == Event.Type.CONDITION_ERROR]


def branch_rules(k: int, rule: str) -> dict[str, Any]:
    """An entry conditional with ``k`` branch rules, each to its own worker node."""
    nodes = [{"id": "c", "type": "conditional", "config": {}}]
    nodes += [{"id": f"e{i}", "type": "transform", "config": {"expression": graphs.ok(2), **Q}} for i in range(k)]
    return {"nodes": nodes, "edges": [{"from": "c", "to": f"e{i}", "condition": rule} for i in range(k)]}


def test_cheap_rules_over_large_inputs_are_bounded_by_the_shared_time(settings):
    """A rule that never loops still pays for converting what it reads to CEL values, before any
    tick (about 0.1 s here for 30,000 small objects of inputs, a body under 1 MB; weighed at
    0.19 s, within one rule's deadline): once the decision's shared time is spent the rest do not
    start, so twelve of them cost about three, in the web's start as in a coordinator. A rule that
    does not read the inputs does not pay for them."""
    settings.AOB_CEL_TIMEOUT_MS = 400
    inputs = {"b": [{"k": i} for i in range(30_000)]}
    start = State(run_status=Run.Status.QUEUED, inputs=inputs, now=T0, limits=LIMITS, tokens=[])

    def timeouts(rule: str, budget: pure.Budget | None) -> int:
        plan = planner.plan_start(compile_definition(branch_rules(12, rule)), dataclasses.replace(start), inputs,
                                  "artifact", budget=budget)
        said = [e[2] for e in plan.events if e[0] == Event.Type.CONDITION_ERROR]
        # the first few each say timeout; one event counts the rest (planner.CONDITION_ERRORS_SHOWN),
        # each a timeout too here: nothing else fails these rules
        return len([d for d in said if d["rule"] == "timeout"]) + sum(d.get("omitted", 0) for d in said)

    assert timeouts("inputs.b.size() == 1", pure.Budget(max_nodes=50, max_ms=50)) >= 6  # at most half converted
    assert timeouts("1 == 2", pure.Budget(max_nodes=50, max_ms=50)) == 0  # nothing to convert: all twelve evaluated
    assert timeouts("inputs.b.size() == 1", None) == 0  # the control: without the shared time, all twelve run


def test_a_queued_run_is_running_once_a_decision_moves_it_on():
    """Nothing a worker claimed yet (an inline loop from the start), but a decision took it on."""
    ir = compile_definition(inline_loop(300, worker_first=False))
    start = planner.plan_start(ir, State(run_status=Run.Status.QUEUED, inputs={}, now=T0, limits=LIMITS, tokens=[]),
                               {}, "artifact", budget=pure.Budget(max_nodes=5, max_ms=10_000))
    assert not start.run and len(start.continued) == 1  # the web's start stays queued
    tokens = stored(start, [])
    state = State(run_status=Run.Status.QUEUED, inputs={}, now=T0, limits=LIMITS, tokens=tokens,
                  node_runs_stored=len(tokens))
    later = planner.plan(ir, state, start.inserts.index(start.continued[0]) + 1, None,
                         pure.Budget(max_nodes=5, max_ms=10_000))
    assert later.run == {"status": Run.Status.RUNNING, "started_at": T0}


def test_a_patch_refresh_and_a_replay_start_are_bounded_too(settings):
    settings.AOB_CEL_TIMEOUT_MS = 100
    inputs = {"xs": list(range(300))}
    n = 30
    nodes = [{"id": f"{x}{i}", "type": "transform", "config": {"expression": graphs.ok(1), **Q}}
             for i in range(n) for x in "ab"]
    edges = [{"from": f"a{i}", "to": f"b{i}", "condition": SLOW} for i in range(n)]
    ir = compile_definition({"nodes": nodes, "edges": edges})
    # a refresh re-routes every finished node whose edges could have grown
    routed = [Token(f"a{i}", 0, "transform", NodeRun.Status.COMPLETED, pk=i + 1, consumed=True, taken=[f"b{i}"],
                    output={"x": 1}, finished_at=T0) for i in range(n)]
    budget = pure.Budget(max_nodes=50, max_ms=50)
    planner.plan_refresh(ir, State(run_status=Run.Status.RUNNING, inputs=inputs, now=T0, limits=LIMITS,
                                   tokens=routed), budget=budget)
    assert budget.condition_seconds * 1000 < 2 * 100
    # a replay consumes the node runs it reused: past the budget, each in a decision of its own
    reused = [Token(f"a{i}", 0, "transform", NodeRun.Status.COMPLETED, pk=i + 1, output={"x": 1}, finished_at=T0,
                    reused=True) for i in range(n)]
    budget = pure.Budget(max_nodes=50, max_ms=50)
    replay = planner.plan_start(ir, State(run_status=Run.Status.QUEUED, inputs=inputs, now=T0, limits=LIMITS,
                                          tokens=reused), inputs, "artifact", budget=budget)
    assert replay.continued and budget.condition_seconds * 1000 < 2 * 100


def test_a_pure_node_failing_in_place_fails_the_run_at_once_and_nothing_starts_after():
    """Budget or not, a failure is settled where it happens: the run fails in this plan and its
    other branch (a worker node) is not queued into a failed run."""
    definition = {"nodes": [{"id": "w", "type": "transform", "config": {"expression": graphs.ok(1), **Q}},
                            {"id": "p", "type": "transform", "config": {"expression": graphs.FAILS}},
                            {"id": "q", "type": "transform", "config": {"expression": graphs.ok(2), **Q}}],
                  "edges": [{"from": "w", "to": "p"}, {"from": "w", "to": "q"}]}
    for max_nodes in (1, 50):
        budget = pure.Budget(max_nodes=max_nodes, max_ms=10_000)
        evaluator = pure.Evaluator(run_id="r", owner_id=1, owner_active=True, inputs={}, budget=budget)
        state = State(run_status=Run.Status.RUNNING, inputs={}, now=T0, limits=LIMITS, node_runs_stored=1,
                      tokens=[Token("w", 0, "transform", NodeRun.Status.COMPLETED, pk=1, output={"x": 1},
                                    finished_at=T0)])
        result = planner.plan(compile_definition(definition), state, 1, evaluator, budget)
        assert result.run_finished == Run.Status.FAILED and not result.continued, max_nodes
        assert [t.node_id for t in result.inserts if t.status == NodeRun.Status.QUEUED] == [], max_nodes


def with_side_branch(definition: dict[str, Any]) -> dict[str, Any]:
    """``w`` gains a second branch to a worker node, planned after the first."""
    nodes = [*definition["nodes"], {"id": "side", "type": "transform", "config": {"expression": graphs.ok(3), **Q}}]
    return {"nodes": nodes, "edges": [*definition["edges"], {"from": "w", "to": "side"}]}


def test_a_cap_passed_where_the_budget_runs_out_fails_the_run_at_once_and_nothing_starts_after():
    """A budget cut leaves the node it stopped at for a later decision, but never one that passed
    the run's output cap or, a loop going round, its node-run cap: the run fails in this plan and
    the sibling branch's worker node (an outside request, in real life) is not queued."""
    inputs = {"big": "x" * 5000}
    big = with_side_branch({"nodes": [{"id": "w", "type": "transform", "config": {"expression": graphs.ok(1), **Q}},
                                      {"id": "p", "type": "transform", "config": {"expression": "inputs.big"}}],
                            "edges": [{"from": "w", "to": "p"}]})
    # the budget runs out at the node that passes the cap (p; the loop L after c), or has room (50)
    caps = {"output_bytes": (big, planner.Limits(max_output_bytes=1000, max_node_runs=10**6), (1, 50)),
            "node_runs": (with_side_branch(inline_loop(300)), planner.Limits(max_output_bytes=1 << 40, max_node_runs=3),
                          (2, 50))}
    for limit, (definition, limits, cuts) in caps.items():
        for max_nodes in cuts:
            budget = pure.Budget(max_nodes=max_nodes, max_ms=10_000)
            evaluator = pure.Evaluator(run_id="r", owner_id=1, owner_active=True, inputs=inputs, budget=budget)
            state = State(run_status=Run.Status.RUNNING, inputs=inputs, now=T0, limits=limits, node_runs_stored=1,
                          tokens=[Token("w", 0, "transform", NodeRun.Status.COMPLETED, pk=1, output={"x": 1},
                                        finished_at=T0)])
            result = planner.plan(compile_definition(definition), state, 1, evaluator, budget)
            assert result.run_finished == Run.Status.FAILED, (limit, max_nodes)
            assert result.run["error"]["limit"] == limit and not result.continued, (limit, max_nodes)
            assert [t.node_id for t in result.inserts if t.status == NodeRun.Status.QUEUED] == [], (limit, max_nodes)


# --- a pure node's one evaluation, capped ----------------------------------------------------------


def slow_node(timeout_ms: int | None = None) -> Any:
    node = {"id": "t", "type": "transform", "config": {"expression": SLOW}}
    if timeout_ms:
        node["timeout_ms"] = timeout_ms
    return compile_definition({"nodes": [node], "edges": []}).nodes["t"]


@pytest.mark.parametrize(("max_ms", "timeout_ms"), [(10, None), (10_000, 10)], ids=["budget", "timeout_ms"])
def test_a_pure_evaluation_stopped_by_its_cap_goes_to_a_worker(max_ms, timeout_ms):
    inputs = {"xs": list(range(300))}
    capped = pure.Evaluator(run_id="r", owner_id=1, owner_active=True, inputs=inputs, max_nodes=50, max_ms=max_ms)
    assert capped(slow_node(timeout_ms), 0, {}) is None  # the queue's: a worker applies the node's limits
    # the control: with room in the budget and no timeout of its own, the decision evaluates it
    room = pure.Evaluator(run_id="r", owner_id=1, owner_active=True, inputs=inputs, max_nodes=50, max_ms=10_000)
    outcome = room(slow_node(), 0, {})
    assert outcome is not None and outcome.error is None and outcome.output is True


def test_a_pure_node_whose_reads_cannot_be_converted_within_its_cap_goes_to_a_worker():
    """What a node's expression reads is weighed before the binding converts it, and refused at
    once when that could not end within the cap: before the cap's time has run out, yet the cap's
    doing, not the node's failure, so a worker evaluates it under the node's own limits."""
    inputs = {"b": [{"k": i} for i in range(30_000)]}  # weighed at about 0.19 s: past 50 ms, within 1 s
    node = compile_definition({"nodes": [{"id": "t", "type": "transform", "config": {"expression": "size(inputs.b)"}}],
                               "edges": []}).nodes["t"]
    capped = pure.Evaluator(run_id="r", owner_id=1, owner_active=True, inputs=inputs, max_nodes=50, max_ms=50)
    assert capped(node, 0, {}) is None
    room = pure.Evaluator(run_id="r", owner_id=1, owner_active=True, inputs=inputs, max_nodes=50, max_ms=10_000)
    outcome = room(node, 0, {})
    assert outcome is not None and outcome.error is None and outcome.output == 30_000


def dead_path(k: int) -> dict[str, Any]:
    """``s`` into ``z`` and, by a rule that never holds, ``b``; ``b`` fans out to ``k`` steps that
    join at ``J``, then ``e``: all of ``b``'s branch is a dead path."""
    nodes = [{"id": n, "type": "transform", "config": {"expression": graphs.ok(1), **Q}} for n in ("s", "z", "b", "J", "e")]
    nodes += [{"id": f"a{i}", "type": "transform", "config": {"expression": graphs.ok(1), **Q}} for i in range(k)]
    edges = [{"from": "s", "to": "b", "condition": "false"}, {"from": "s", "to": "z"}, {"from": "J", "to": "e"}]
    edges += [{"from": "b", "to": f"a{i}"} for i in range(k)] + [{"from": f"a{i}", "to": "J"} for i in range(k)]
    return {"nodes": nodes, "edges": edges}


def test_a_dead_path_s_skips_are_the_decision_s_time_and_go_on_in_decisions_of_their_own():
    """Judging a node's edges in, and skipping it, is time the decision spends (``Budget``): past
    it, a skip is stored unconsumed and goes on in a decision of its own (``Plan.continued``), as an
    inline node does. Uncounted, a dead path in front of a join of 300 inside 300 loops held one
    decision 47 s (each skip judged every edge in again, each asking which loops run both again:
    a red team's find). Here the decision sent for ``b``'s stored skip has almost no time: the
    first judgement spends it."""
    ir = compile_definition(dead_path(5))
    tokens = [Token("s", 0, "transform", NodeRun.Status.COMPLETED, pk=2, output={"x": 1}, finished_at=T0,
                    consumed=True, taken=["z"]),
              Token("b", 0, "transform", NodeRun.Status.SKIPPED, pk=1, finished_at=T0)]

    def decided(budget: pure.Budget) -> planner.Plan:
        state = State(run_status=Run.Status.RUNNING, inputs={}, now=T0, limits=LIMITS, node_runs_stored=2,
                      tokens=[dataclasses.replace(t) for t in tokens])
        return planner.plan(ir, state, 1, None, budget)

    unbounded = decided(pure.Budget(max_nodes=50, max_ms=10**9))  # the control: the whole path in one
    assert sorted(t.node_id for t in unbounded.inserts) == ["J", "a0", "a1", "a2", "a3", "a4", "e"]
    assert not unbounded.continued and all(t.consumed and t.taken == [] for t in unbounded.inserts)

    bounded = decided(pure.Budget(max_nodes=50, max_ms=1e-6))
    assert bounded.updates[1] == {"consumed": True, "taken": []}  # its own is routed whatever the budget says
    assert [t.node_id for t in bounded.continued] == ["a0", "a1", "a2", "a3", "a4"] == [t.node_id for t in bounded.inserts]
    assert all(t.status == NodeRun.Status.SKIPPED and not t.consumed and t.taken is None for t in bounded.continued)


class SpentSim(Sim):
    """Every decision (the start too) with its budget spent from the first: each node run the due
    one leads to (an inline node, a dead path's skip) goes on in a coordinator message of its own."""

    def coordinate(self, pk: int) -> None:
        budget = pure.Budget(max_nodes=10**6, max_ms=0)
        self.apply(planner.plan(self.ir, self.state(), pk, None, budget))

    def start(self) -> None:
        self.apply(planner.plan_start(self.ir, self.state(), {}, "artifact", budget=pure.Budget(max_nodes=10**6, max_ms=0)))


@settings(max_examples=30, deadline=None, derandomize=True)
@example(definition=dead_path(3), data=None)
@example(definition=graphs.nested_loops(), data=None)
@given(definition=graphs.dags(failures=False) | graphs.loop_chains(), data=st.none() | st.data())
def test_dead_paths_handed_on_skip_by_skip_reach_the_same_final_states(definition, data):
    """A dead path handed on at every skip, its messages delivered in any order, ends where one
    decision skipping all of it does: the same final states, edges taken and events."""
    bounded = drive(SpentSim(definition), first if data is None else lambda n: data.draw(st.integers(0, n - 1)),
                    max_steps=10**4)
    unbounded = drive(Sim(definition), first)
    assert finals_and_taken(bounded) == finals_and_taken(unbounded)
    assert bounded.run["status"] == unbounded.run["status"] == Run.Status.COMPLETED
    assert sorted(e[:2] for e in bounded.events) == sorted(e[:2] for e in unbounded.events)


def test_a_pure_node_s_reads_are_the_decision_s_time():
    """What a pure node reads of other nodes' outputs (``_Planner.read``: for each reference, the
    pass it reads) is looked up inside the decision's budget, before the node is evaluated: read
    outside it, a node inside 500 loops referencing 500 nodes cost one decision 10^8 steps against
    its 50 ms (a red team's find). Here the loop's jump back to ``p`` is the decision's first work,
    and the reads spend the little time it has: the evaluator takes nothing on, ``p`` goes to a
    worker (read outside it, the evaluator took ``p`` on, for its cap to stop it at once)."""
    definition = {"nodes": [{"id": "x", "type": "transform", "config": {"expression": graphs.ok(1), **Q}},
                            {"id": "p", "type": "transform", "config": {"template": {"v": "$nodes.x"}}},
                            {"id": "L", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "p"}}],
                  "edges": [{"from": "x", "to": "p"}, {"from": "p", "to": "L"}]}
    ir = compile_definition(definition)

    def decided(budget: pure.Budget) -> Token:
        evaluator = pure.Evaluator(run_id="r", owner_id=1, owner_active=True, inputs={}, budget=budget)
        tokens = [Token("x", 0, "transform", NodeRun.Status.COMPLETED, pk=2, output={"x": 1}, finished_at=T0,
                        consumed=True, taken=["p"]),
                  Token("p", 0, "transform", NodeRun.Status.COMPLETED, pk=3, output={"v": {"x": 1}}, finished_at=T0,
                        consumed=True, taken=["L"]),
                  Token("L", 0, "loop", NodeRun.Status.COMPLETED, pk=1, finished_at=T0,
                        output={"iteration": 0, "iterations": 1, "condition": True, "decision": "again"})]
        state = State(run_status=Run.Status.RUNNING, inputs={}, now=T0, limits=LIMITS, node_runs_stored=3, tokens=tokens)
        return next(t for t in planner.plan(ir, state, 1, evaluator, budget).inserts if t.node_id == "p")

    room = pure.Budget(max_nodes=50, max_ms=10_000)
    again = decided(room)  # the control: evaluated in place, reading x
    assert again.status == NodeRun.Status.COMPLETED and again.output == {"v": {"x": 1}} and room.nodes >= 1
    little = pure.Budget(max_nodes=50, max_ms=1e-6)
    assert decided(little).status == NodeRun.Status.QUEUED
    assert little.nodes == 0 and little.spent


# --- the whole path, with real workers ------------------------------------------------------------


@pytest.mark.parametrize("worker_first", [True, False], ids=["after-a-worker-node", "from-the-start"])
def test_an_inline_loop_runs_to_its_end_in_many_decisions(engine, api, worker_first):
    """From the start (the web's request plans the entry nodes) or after a worker node (the
    coordinator), 200 passes of an inline-only loop finish the run, spread over decisions of at
    most 50 nodes each (their clock: one ``finished_at`` per decision)."""
    [run] = wait_all([submit(api, inline_loop(200, worker_first=worker_first))], timeout=120)
    assert run.status == Run.Status.COMPLETED, run.error
    assert run.started_at is not None  # running from the first decision that moved it on
    loops = NodeRun.objects.filter(run=run, node_id="L")
    assert loops.count() == 200 and loops.filter(output__decision="timeout").count() == 1
    assert NodeRun.objects.get(run=run, node_id="end").output == {"x": 2}
    assert not NodeRun.objects.filter(run=run, consumed=False).exclude(node_id="end").exists()
    decisions = set(NodeRun.objects.filter(run=run, node_type__in=["conditional", "loop"])
                    .values_list("finished_at", flat=True))
    assert len(decisions) >= 2 * 200 // 50
    assert Event.objects.filter(run=run, type=Event.Type.NODE_COMPLETED, node_id="L").count() == 200


def test_a_dead_path_a_patch_adds_goes_on_in_a_coordinator_s_decision(workers_, user):
    """A patch's refresh runs in the web request (``Budget.none``): of a dead path it adds, it skips
    the first node and leaves the skip unconsumed, with a coordinator message; that decision skips
    the rest and the run ends. (The request skipped all of it: a path inside many loops, each skip
    judging every edge in again, held the request and the run's lock for as long.)"""
    step = {"type": "transform", "config": {"expression": graphs.ok(1), **Q}}
    workers_.hold_execution("c")  # the run goes on meanwhile
    run = run_start(owner=user, definition={"nodes": [{"id": "a", **step}, {"id": "c", **step}], "edges": []})
    test_plain_step.consumed(run, "a")
    added = [{"op": "add", "path": "/nodes/-", "value": {"id": f"d{i}", **step}} for i in range(3)]
    added += [{"op": "add", "path": "/edges/-", "value": {"from": "a", "to": "d0", "condition": "false"}},
              {"op": "add", "path": "/edges/-", "value": {"from": "d0", "to": "d1"}},
              {"op": "add", "path": "/edges/-", "value": {"from": "d1", "to": "d2"}}]
    response = client_for(user).post(f"/api/v1/runs/{run.pk}/patches", {"operations": added}, format="json")
    assert response.status_code == 201, response.json()
    workers_.release_execution("c")
    run = wait_for_run(run.pk)
    assert run.status == Run.Status.COMPLETED, run.error
    rows = test_plain_step.node_runs(run)
    assert all(rows[f"d{i}"].status == NodeRun.Status.SKIPPED and rows[f"d{i}"].consumed for i in range(3))
    assert rows["d0"].finished_at < rows["d1"].finished_at == rows["d2"].finished_at  # the request's, then one decision's


@pytest.mark.parametrize("stored_bytes", [10, 10**6], ids=["under-the-cap", "over-the-cap"])
def test_a_patch_starts_nothing_in_a_run_past_its_output_cap(stored_bytes):
    """A patch gives a finished node a new edge while a completion that passed the run's output cap
    waits for its decision (which fails the run): the refresh must not queue the new node first."""
    ir = compile_definition({"nodes": [{"id": n, "type": "transform", "config": {"expression": graphs.ok(1), **Q}}
                                       for n in ("a", "b", "new")],
                             "edges": [{"from": "a", "to": "b"}, {"from": "a", "to": "new"}]})
    tokens = [Token("a", 0, "transform", NodeRun.Status.COMPLETED, pk=1, consumed=True, taken=["b"], output={"x": 1},
                    finished_at=T0),
              Token("b", 0, "transform", NodeRun.Status.COMPLETED, pk=2, output={"x": 1}, finished_at=T0)]
    state = State(run_status=Run.Status.RUNNING, inputs={}, now=T0, tokens=tokens, output_bytes=stored_bytes,
                  limits=planner.Limits(max_output_bytes=1000, max_node_runs=10**6))
    refreshed = planner.plan_refresh(ir, state, budget=pure.Budget())
    assert [t.node_id for t in refreshed.inserts] == (["new"] if stored_bytes < 1000 else [])


def test_a_patch_s_refresh_leaves_a_conditional_it_adds_to_a_coordinator_s_decision():
    """A patch's refresh runs in the patch's request (``Budget.none``): a conditional it adds after
    a finished node is stored, unconsumed, for a coordinator's decision, which evaluates its rules."""
    ir = compile_definition({"nodes": [{"id": "a", "type": "transform", "config": {"expression": graphs.ok(1), **Q}},
                                       {"id": "gate", "type": "conditional", "config": {}},
                                       {"id": "c", "type": "transform", "config": {"expression": graphs.ok(1), **Q}}],
                             "edges": [{"from": "a", "to": "gate"},
                                       {"from": "gate", "to": "c", "condition": "inputs.missing.x"}]})
    tokens = [Token("a", 0, "transform", NodeRun.Status.COMPLETED, pk=1, consumed=True, taken=[], output={"x": 1},
                    finished_at=T0)]
    state = State(run_status=Run.Status.RUNNING, inputs={}, now=T0, tokens=tokens,
                  limits=planner.Limits(max_output_bytes=10**9, max_node_runs=10**6))

    deferred = planner.plan_refresh(ir, state, budget=pure.Budget.none())
    decided = planner.plan_refresh(ir, state, budget=pure.Budget())

    assert [(t.node_id, t.status, t.consumed) for t in deferred.inserts] == [("gate", NodeRun.Status.COMPLETED, False)]
    assert [t.node_id for t in deferred.continued] == ["gate"]
    assert Event.Type.CONDITION_ERROR not in [kind for kind, _, _ in deferred.events]
    assert Event.Type.CONDITION_ERROR in [kind for kind, _, _ in decided.events]  # the rules, evaluated in place
