"""The planner's invariants, on the pure function: generated graphs (``tests.engine.graphs``) run
in a simulation that executes queued node runs and delivers coordinator messages in an order
hypothesis draws (duplicates included), applying each ``Plan`` as the coordinator would.

- every node run's ``(node, iteration)`` is new when the plan inserts it (the nested-loop bug
  of issue 16 was a collision here);
- a join runs once (per iteration), and only after every parent is decided, one of them live;
- every run ends: nothing queued, nothing unconsumed, the run completed or failed;
- no node run is queued once the run has ended;
- without failures the final node states do not depend on the order of events;
- the plain step (``planner.plain_step``) is what ``plan`` does on every state whose premises
  the plain step's SQL checks.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.engine import graphs
from workflows.definition.ir import IR, compile_definition
from workflows.engine import planner, pure
from workflows.engine.planner import Limits, Plan, State, Token
from workflows.models import Event, NodeRun, Run

LIMITS = Limits(max_output_bytes=10**9, max_node_runs=10**6)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Sim:
    """A run held in memory, changed only by the plans it is given."""

    def __init__(self, definition: dict[str, Any]) -> None:
        self.definition = definition
        self.ir: IR = compile_definition(definition)
        self.nodes = {n["id"]: n for n in definition["nodes"]}
        self.tokens: dict[int, Token] = {}
        self.run: dict[str, Any] = {"status": Run.Status.QUEUED}
        self.messages: list[int] = []
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.clock = T0
        self.started: list[tuple[str, int]] = []

    def tick(self) -> datetime:
        self.clock += timedelta(milliseconds=1)
        return self.clock

    def state(self) -> State:
        return State(run_status=self.run["status"], inputs={}, now=self.tick(), limits=LIMITS,
                     tokens=[dataclasses.replace(t) for t in self.tokens.values()],
                     node_runs_stored=len(self.tokens), started_at=T0)

    @property
    def ended(self) -> bool:
        return self.run["status"] in Run.FINISHED

    def apply(self, plan: Plan) -> None:
        ended_before = self.ended
        keys = {(t.node_id, t.iteration) for t in self.tokens.values()}
        continued = {id(t) for t in plan.continued}
        for token in plan.inserts:
            key = (token.node_id, token.iteration)
            assert key not in keys, f"{key} planned twice"  # the unique (run, node, iteration)
            keys.add(key)
            if id(token) in continued:  # the budget was spent: a coordinator message of its own
                assert not token.consumed and token.status in NodeRun.FINISHED
                self.messages.append(len(self.tokens) + 1)
            token = dataclasses.replace(token, pk=len(self.tokens) + 1)
            self.tokens[token.pk] = token
            if ended_before:
                assert token.status != NodeRun.Status.QUEUED, f"{key} queued after the run ended"
        for pk, fields in plan.updates.items():
            for name, value in fields.items():
                if name != "lease_expires_at":
                    setattr(self.tokens[pk], name, value)
        self.run.update(plan.run)
        self.events.extend(plan.events)
        self.messages.extend(t.pk for t in plan.continued if t.pk is not None)  # stored ones, routed later
        if self.ended:
            assert not any(t.status == NodeRun.Status.QUEUED for t in self.tokens.values())
        self.check_joins(plan)

    def latest(self) -> dict[str, Token]:
        latest: dict[str, Token] = {}
        for token in sorted(self.tokens.values(), key=lambda t: t.iteration):
            latest[token.node_id] = token
        return latest

    def check_joins(self, plan: Plan) -> None:
        latest = self.latest()
        by_key = {(t.node_id, t.iteration): t for t in self.tokens.values()}
        for token in plan.inserts:
            parents = {e.source for e in self.ir.in_edges[token.node_id]}
            if len(parents) < 2 or token.status == NodeRun.Status.SKIPPED or token.status == NodeRun.Status.CANCELLED:
                continue
            # a parent's node run of the join's pass where it has one (a loop node's exits: its last)
            decided = [by_key.get((p, token.iteration)) if (p, token.iteration) in by_key and p not in self.ir.loops
                       else latest.get(p) for p in parents]
            assert all(p is not None and p.consumed and p.status in NodeRun.FINISHED for p in decided), \
                f"join {token.node_id} before every parent was decided"
            assert any(token.node_id in (p.taken or []) for p in decided if p is not None), \
                f"join {token.node_id} with no live parent"

    def execute(self, pk: int) -> None:
        """A worker claims and runs a queued node run (claims refuse once the run ended)."""
        token = self.tokens[pk]
        assert token.status == NodeRun.Status.QUEUED
        assert not self.ended, "a node ran after the run ended"
        self.started.append((token.node_id, token.iteration))
        if self.run["status"] == Run.Status.QUEUED:
            self.run["status"] = Run.Status.RUNNING
        status, value = graphs.outcome(self.nodes[token.node_id])
        token.status = status
        token.finished_at = self.tick()
        if status == NodeRun.Status.COMPLETED:
            token.output = value
        else:
            token.error = value
        self.messages.append(pk)

    def coordinate(self, pk: int) -> None:
        self.apply(planner.plan(self.ir, self.state(), pk))

    def start(self) -> None:
        self.apply(planner.plan_start(self.ir, self.state(), {}, "artifact"))

    def finals(self) -> dict[tuple[str, int], str]:
        return {(t.node_id, t.iteration): t.status for t in self.tokens.values()}


def drive(sim: Sim, choose: Any, max_steps: int = 2000, patch_at: int = -1, patch: Any = None) -> Sim:
    """Run to the end, ``choose(n)`` picking the next of n possible events: execute a queued node
    run, deliver a pending coordinator message, or deliver one again (a duplicate). At step
    ``patch_at``, ``patch(sim)`` may change the run's graph (as a run patch does)."""
    sim.start()
    delivered: list[int] = []
    for step in range(max_steps):
        if step == patch_at and patch is not None:
            patch(sim)
        queued = [pk for pk, t in sim.tokens.items() if t.status == NodeRun.Status.QUEUED]
        options = [("execute", pk) for pk in queued] + [("message", pk) for pk in sim.messages]
        if delivered:
            options.append(("duplicate", delivered[-1]))
        if not queued and not sim.messages:
            break
        kind, pk = options[choose(len(options))]
        if kind == "execute":
            sim.execute(pk)
        else:
            if kind == "message":
                sim.messages.remove(pk)
                delivered.append(pk)
            sim.coordinate(pk)
    else:
        raise AssertionError("the run did not end")
    assert sim.ended, f"run stuck {sim.run['status']}: {sim.finals()}"
    assert all(t.status in NodeRun.FINISHED for t in sim.tokens.values())
    # (node runs cancelled when the run failed are left unconsumed: nothing follows them)
    assert all(t.consumed or t.status == NodeRun.Status.CANCELLED for t in sim.tokens.values()), \
        "a finished node run was never consumed"
    return sim


def first(n: int) -> int:
    return 0


def drawn(data: st.DataObject) -> Any:
    return lambda n: data.draw(st.integers(0, n - 1))


def fails(definition: dict[str, Any]) -> bool:
    return any(n["type"] == "transform" and n["config"]["expression"] == graphs.FAILS
               for n in definition["nodes"])


# --- invariants ------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(graphs.dags(), st.data())
def test_generated_dags_end_with_every_join_after_its_live_parents(definition, data):
    sim = drive(Sim(definition), drawn(data))
    statuses = [t.status for t in sim.tokens.values()]
    if not fails(definition):
        assert sim.run["status"] == Run.Status.COMPLETED
        # a graph without loops decides each node once: it ran or it was skipped
        assert sorted(t.node_id for t in sim.tokens.values()) == sorted(sim.ir.nodes)
        assert set(statuses) <= {NodeRun.Status.COMPLETED, NodeRun.Status.SKIPPED}
    elif sim.run["status"] == Run.Status.FAILED:
        assert sim.run["error"]["node_id"] in {t.node_id for t in sim.tokens.values()
                                               if t.status == NodeRun.Status.FAILED}
    started = [key for key in sim.started]
    assert len(started) == len(set(started)), "a node run executed twice"


@settings(max_examples=100, deadline=None)
@given(graphs.dags(failures=False), st.data())
def test_without_failures_the_outcome_does_not_depend_on_the_order_of_events(definition, data):
    one = drive(Sim(definition), first)
    other = drive(Sim(definition), drawn(data))
    assert one.finals() == other.finals()
    assert one.run["status"] == other.run["status"] == Run.Status.COMPLETED


@settings(max_examples=200, deadline=None)
@example(definition=graphs.nested_loops(), data=None)
@given(definition=graphs.loop_chains(), data=st.data())
def test_nested_loops_run_every_pass_and_end(definition, data):
    sim = drive(Sim(definition), first if data is None else drawn(data))
    assert sim.run["status"] == Run.Status.COMPLETED, sim.finals()
    ran = [t for t in sim.tokens.values() if t.node_id == "end" or t.node_id == "d"]
    assert len(ran) == 1 and ran[0].status == NodeRun.Status.COMPLETED  # the node after every loop ran, once
    # each loop ran as many passes as its own count says, on every entry into it
    for loop_id in sim.ir.loops:
        passes = sorted((t for t in sim.tokens.values() if t.node_id == loop_id), key=lambda t: t.iteration)
        expected = 0
        for token in passes:
            assert token.output["iteration"] == expected
            expected = expected + 1 if token.output["decision"] == "again" else 0
        assert passes[-1].output["decision"] != "again"


def with_a_side_step(definition: dict[str, Any], source: str) -> dict[str, Any]:
    """``definition`` with a worker node ``side`` hanging off ``source``, leading nowhere."""
    side = {"id": "side", "type": "transform", "config": {"expression": graphs.ok(1), **graphs.Q}}
    return {"nodes": [*definition["nodes"], side], "edges": [*definition["edges"], {"from": source, "to": "side"}]}


@settings(max_examples=150, deadline=None)
@example(definition=graphs.nested_loops(), data=None)
@given(definition=graphs.loop_chains(), data=st.data())
def test_what_a_loop_runs_again_is_within_its_loop_reruns(definition, data):
    """The patch policy judges what a loop repeats by ``loop_reruns``: here it is held to what the
    planner does. A node decided more than once is one a loop that went round reaches from its
    jump (``loop_reruns``), and the body (``loop_body``) always is. A step hanging off the body
    may be decided once or on every pass, as the events fall: it counts as repeated."""
    names = [n["id"] for n in definition["nodes"]]
    source = "b" if data is None else data.draw(st.sampled_from(names))
    sim = drive(Sim(with_a_side_step(definition, source)), first if data is None else drawn(data))
    decided = Counter(t.node_id for t in sim.tokens.values())
    repeated = {n for n, count in decided.items() if count > 1}
    went_round = {t.node_id for t in sim.tokens.values() if t.node_id in sim.ir.loops
                  and t.output["decision"] == "again"}
    assert repeated <= set().union(*(planner.loop_reruns(sim.ir, loop_id) for loop_id in went_round))
    assert set().union(*(planner.loop_body(sim.ir, loop_id) for loop_id in went_round)) <= repeated


def test_a_step_hanging_off_a_loop_s_body_runs_on_every_pass():
    """Not in ``loop_body`` (it does not lead back to the loop node), yet run again with each pass:
    the red team's payment hung off a new loop's body this way and ran on every pass."""
    body = {"id": "body", "type": "transform", "config": {"expression": graphs.ok(1), **graphs.Q}}
    again = {"id": "again", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "body"}}
    definition = with_a_side_step({"nodes": [body, again], "edges": []}, "body")
    definition["edges"].append({"from": "body", "to": "again"})  # after the side step: it is decided first
    sim = drive(Sim(definition), first)
    assert sorted(k for k in sim.finals() if k[0] == "side") == [("side", 0), ("side", 1), ("side", 2)]
    assert planner.loop_body(sim.ir, "again") == {"body", "again"}
    assert planner.loop_reruns(sim.ir, "again") == {"body", "side", "again"}


def step(node_id: str) -> dict[str, Any]:
    return {"id": node_id, "type": "transform", "config": {"expression": graphs.ok(1), **graphs.Q}}


def test_a_step_hanging_off_a_loop_s_body_runs_for_a_pass_that_finishes_after_a_later_one():
    """pay hangs off the body after slow; pass 1's slow finished first and its pay ran, then pass 0's
    slow: its pay was taken for run (a node's iterations read as only growing) and never ran, the run
    completed. Each pass's pay runs once its pass's slow is done."""
    definition = {"nodes": [step("page"), step("slow"), step("pay"),
                            {"id": "again", "type": "loop", "config": {"max_iterations": 2, "loop_back_to": "page"}}],
                  "edges": [{"from": "page", "to": "slow"}, {"from": "page", "to": "again"},
                            {"from": "slow", "to": "pay"}]}
    sim = Sim(definition)

    def newest_pass_first(n: int) -> int:  # every message delivered, then the newest pass's node run
        queued = [t for t in sim.tokens.values() if t.status == NodeRun.Status.QUEUED]
        if sim.messages:
            return len(queued)
        return max(range(len(queued)), key=lambda i: queued[i].iteration)

    drive(sim, newest_pass_first)
    assert sorted(k for k in sim.finals() if k[0] == "pay") == [("pay", 0), ("pay", 1)]


@pytest.mark.parametrize("budget", [None, pure.Budget.none()], ids=["in-the-start", "each-in-a-decision"])
def test_a_replay_after_a_loop_runs_none_of_the_passes_its_source_made(budget):
    """A replay reuses each node's latest node run (``run_replay``): page's last pass, not its first.
    Its start's state held start@0 unconsumed, so pass 0 read as whole, and page@0, absent, was
    queued again: the loop went round and POSTed every page the source had. A replay from ``after``
    runs ``after`` only, whether the start consumes what it reused or (a request's start, no budget)
    each reused node run goes on in a decision of its own."""
    definition = {"nodes": [step("start"), step("page"), step("after"),
                            {"id": "more", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "page"}}],
                  "edges": [{"from": "start", "to": "page"}, {"from": "page", "to": "more"},
                            {"from": "more", "to": "after"}]}
    source = drive(Sim(definition), first)
    assert sorted(k for k in source.finals() if k[0] == "page") == [("page", 0), ("page", 1), ("page", 2)]
    replay = Sim(definition)
    for token in source.latest().values():  # what run_replay copies: each node's latest, but what runs again
        if token.node_id != "after":
            pk = len(replay.tokens) + 1
            replay.tokens[pk] = dataclasses.replace(token, pk=pk, consumed=False, taken=None, reused=True)
    replay.start = lambda: replay.apply(planner.plan_start(replay.ir, replay.state(), {}, "artifact",  # type: ignore[method-assign]
                                                           budget=budget))
    drive(replay, first)
    assert replay.run["status"] == Run.Status.COMPLETED
    assert [node_id for node_id, _ in replay.started] == ["after"], replay.started


@pytest.mark.parametrize("budget", [None, pure.Budget.none()], ids=["in-the-start", "each-in-a-decision"])
def test_a_replay_from_a_loop_node_goes_on_with_the_count_its_source_had_at_that_pass(budget):
    """Replayed from ``more`` (the loop node), the replay reuses page's last pass (2) and decides the
    loop again there. Its count started again at 0 and the loop went round (page ran a fourth time);
    ``run_replay`` copies the loop's node run of the pass before, consumed (``_loop_counts``): the
    count goes on from it, the loop ends where its source's did, and that copy routes nothing."""
    definition = {"nodes": [step("start"), step("page"), step("after"),
                            {"id": "more", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "page"}}],
                  "edges": [{"from": "start", "to": "page"}, {"from": "page", "to": "more"},
                            {"from": "more", "to": "after"}]}
    source = drive(Sim(definition), first)
    replay = Sim(definition)
    copies = [*(t for t in source.latest().values() if t.node_id not in {"more", "after"}),
              source.tokens[next(pk for pk, t in source.tokens.items() if (t.node_id, t.iteration) == ("more", 1))]]
    for token in copies:
        pk = len(replay.tokens) + 1
        replay.tokens[pk] = dataclasses.replace(token, pk=pk, consumed=token.node_id == "more", taken=None, reused=True)
    replay.start = lambda: replay.apply(planner.plan_start(replay.ir, replay.state(), {}, "artifact",  # type: ignore[method-assign]
                                                           budget=budget))
    drive(replay, first)
    assert replay.run["status"] == Run.Status.COMPLETED
    assert [node_id for node_id, _ in replay.started] == ["after"], replay.started
    more = replay.latest()["more"]
    assert (more.iteration, more.output["iteration"], more.output["decision"]) == (2, 2, "timeout")


def test_a_step_joining_a_gate_in_a_loop_s_body_waits_for_this_pass_s_decision():
    """Each pass of the loop fetches an invoice (``fetch``), checks it, and asks ``review`` (a gate);
    ``pay`` joins the invoice and the decision, and hangs off the body (it leads back to no loop
    node). On pass k (k > 0), fetch finished before review was asked, and pay ran at once: review's
    edge into it, delivered on pass k-1, was read as this pass's. Invoice 2 was paid on invoice 1's
    approval, and a rejection of it came too late. And the first invoice was never paid: review's
    decision ran the loop node, whose jump queued fetch again before pay was considered, and fetch's
    new pass, not yet run, was read for the one pay joins."""
    definition = {"nodes": [step("fetch"), step("check"), step("review"), step("pay"),
                            {"id": "again", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "fetch"}}],
                  "edges": [{"from": "fetch", "to": "check"}, {"from": "check", "to": "review"},
                            {"from": "review", "to": "again"}, {"from": "fetch", "to": "pay"},
                            {"from": "review", "to": "pay"}]}
    sim = drive(Sim(definition), first)
    made = [(t.node_id, t.iteration) for t in sorted(sim.tokens.values(), key=lambda t: t.pk)]
    paid_after_its_review = [("pay", k) in made and made.index(("pay", k)) > made.index(("review", k))
                             for k in range(3)]
    assert paid_after_its_review == [True] * 3, made


def test_an_inner_loop_s_pass_reads_a_step_of_the_outer_pass_as_delivered():
    """``c`` (in both loops' bodies) joins ``b`` (the inner loop's) and ``a`` (the outer loop's only).
    On the inner loop's second pass a does not run: its delivery from this outer pass holds. It was
    read as "not run in this pass yet", c waited for ever, and the run completed with the inner loop
    stopped after one pass and the outer one never gone round."""
    definition = {"nodes": [step("a"), step("b"), step("c"),
                            {"id": "inner", "type": "loop", "config": {"max_iterations": 2, "loop_back_to": "b"}},
                            {"id": "outer", "type": "loop", "config": {"max_iterations": 2, "loop_back_to": "a"}}],
                  "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}, {"from": "c", "to": "inner"},
                            {"from": "inner", "to": "outer"}, {"from": "a", "to": "c"}]}
    sim = drive(Sim(definition), first)
    assert Counter(t.node_id for t in sim.tokens.values()) == {"a": 2, "b": 4, "c": 4, "inner": 4, "outer": 2}


def test_a_conditional_hanging_off_a_loop_s_body_routes_on_its_own_pass():
    """``route`` reads ``fetch``'s output; the loop's jump, decided first in the same decision,
    queued fetch's next pass, and the conditional read that one (no output yet): ``$.x == 1`` failed
    on every pass, and ``pay`` was skipped each time. A pure step reading ``$nodes.fetch`` read it too."""
    route = {"id": "route", "type": "conditional", "config": {}}
    amount = {"id": "amount", "type": "transform", "config": {"expression": "nodes.fetch.x"}}
    definition = {"nodes": [step("fetch"), route, step("pay"), amount,
                            {"id": "again", "type": "loop", "config": {"max_iterations": 2, "loop_back_to": "fetch"}}],
                  "edges": [{"from": "fetch", "to": "again"}, {"from": "fetch", "to": "route"},
                            {"from": "route", "to": "pay", "condition": "$.x == 1"}, {"from": "fetch", "to": "amount"}]}
    sim = Sim(definition)
    evaluate = lambda node, iteration, outputs: pure.Outcome(  # noqa: E731 - the pure type's one function, as read
        output=outputs.get("fetch"), artifact_id="sha256:", started_at=T0, finished_at=T0)
    sim.coordinate = lambda pk: sim.apply(planner.plan(sim.ir, sim.state(), pk, evaluate))  # type: ignore[method-assign]
    drive(sim, first)
    assert {k: v for k, v in sim.finals().items() if k[0] == "pay"} == {("pay", 0): "completed", ("pay", 1): "completed"}
    assert [t.output for t in sorted(sim.tokens.values(), key=lambda t: t.iteration) if t.node_id == "amount"] == [
        {"x": 1}, {"x": 1}]


def test_a_loop_s_edges_route_by_their_conditions_on_its_output():
    """Conditions on the edges out of a loop node were never evaluated: when the loop gave up
    (``timeout``: the payment's status never confirmed), the edge meant for a loop that ended well
    (``break``) was taken too, and the payment went out beside the alert."""
    definition = {"nodes": [step("poll"), step("pay"), step("alert"),
                            {"id": "again", "type": "loop", "config": {"max_iterations": 2, "loop_back_to": "poll"}}],
                  "edges": [{"from": "poll", "to": "again"},
                            {"from": "again", "to": "pay", "condition": "$.decision == 'break'"},
                            {"from": "again", "to": "alert", "condition": "$.decision == 'timeout'"}]}
    sim = drive(Sim(definition), first)
    assert {k: v for k, v in sim.finals().items() if k[0] in ("pay", "alert")} == {
        ("pay", 0): NodeRun.Status.SKIPPED, ("alert", 0): NodeRun.Status.COMPLETED}


def add_node_after(source: str) -> Any:
    """A patch adding ``patched`` (a worker node) after ``source``, applied as ``refresh`` does."""
    def patch(sim: Sim) -> None:
        if sim.ended:
            return
        definition = {"nodes": [*sim.definition["nodes"],
                                {"id": "patched", "type": "transform", "config": {"expression": "{'x': 1}"}}],
                      "edges": [*sim.definition["edges"], {"from": source, "to": "patched"}]}
        sim.definition, sim.ir = definition, compile_definition(definition)
        sim.nodes = {n["id"]: n for n in definition["nodes"]}
        sim.apply(planner.plan_refresh(sim.ir, sim.state()))
    return patch


@settings(max_examples=100, deadline=None)
@given(graphs.dags(failures=False), st.integers(0, 12), st.data())
def test_a_patch_mid_run_adds_a_node_that_runs_once_its_parent_delivered(definition, when, data):
    source = data.draw(st.sampled_from([n["id"] for n in definition["nodes"]]))
    sim = drive(Sim(definition), drawn(data), patch_at=when, patch=add_node_after(source))
    assert sim.run["status"] == Run.Status.COMPLETED
    if "patched" in sim.ir.nodes:
        parent = sim.latest()[source]
        patched = [t for t in sim.tokens.values() if t.node_id == "patched"]
        # the new node is decided once: it ran if its parent ran and routes to it, else it was skipped
        assert len(patched) == 1
        if parent.status == NodeRun.Status.COMPLETED and "patched" in (parent.taken or []):
            assert patched[0].status == NodeRun.Status.COMPLETED


def test_the_named_nested_loop_example_runs_both_loops_fully():
    sim = drive(Sim(graphs.nested_loops()), first)
    counts: dict[str, int] = {}
    for token in sim.tokens.values():
        counts[token.node_id] = counts.get(token.node_id, 0) + 1
    assert counts == {"a": 2, "b": 4, "inner": 4, "c": 2, "outer": 2, "d": 1}
    assert {t.node_id: t.iteration for t in sim.tokens.values() if t.node_id in ("d",)} == {"d": 0}


def test_a_single_loop_keeps_its_iterations_and_its_exit_at_zero():
    definition = {"nodes": [{"id": "body", "type": "transform", "config": {"expression": "{'x': 1}"}},
                            {"id": "again", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "body"}},
                            {"id": "done", "type": "transform", "config": {"expression": "{'x': 1}"}}],
                  "edges": [{"from": "body", "to": "again"}, {"from": "again", "to": "done"}]}
    sim = drive(Sim(definition), first)
    assert sorted(k for k in sim.finals() if k[0] == "body") == [("body", 0), ("body", 1), ("body", 2)]
    assert ("done", 0) in sim.finals()
    loops = sorted((t for t in sim.tokens.values() if t.node_id == "again"), key=lambda t: t.iteration)
    assert [t.output for t in loops] == [
        {"iteration": i, "iterations": i + 1, "condition": True, "decision": d}
        for i, d in enumerate(["again", "again", "timeout"])]


def test_a_failed_node_fails_the_run_and_cancels_what_was_queued():
    definition = {"nodes": [{"id": "a", "type": "transform", "config": {"expression": graphs.FAILS}},
                            {"id": "b", "type": "transform", "config": {"expression": "{'x': 1}"}},
                            {"id": "c", "type": "transform", "config": {"expression": "{'x': 1}"}}],
                  "edges": [{"from": "b", "to": "c"}]}
    sim = Sim(definition)
    sim.start()
    a, b = (pk for pk, t in sim.tokens.items() if t.node_id in ("a", "b"))
    sim.execute(a)
    sim.coordinate(a)
    assert sim.run["status"] == Run.Status.FAILED and sim.run["error"]["node_id"] == "a"
    assert sim.tokens[b].status == NodeRun.Status.CANCELLED
    assert [e[0] for e in sim.events][-1] == "workflow_failed"


def test_a_pending_patch_holds_the_run_open_until_decided():
    definition = {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "{'x': 1}"}}], "edges": []}
    sim = Sim(definition)
    sim.start()
    sim.execute(1)
    state = sim.state()
    state.patch_pending = True
    held = planner.plan(sim.ir, state, 1)
    assert held.run == {"status": Run.Status.WAITING_FOR_APPROVAL}
    sim.coordinate(1)
    assert sim.run["status"] == Run.Status.COMPLETED


def test_a_park_is_decided_once_asking_again_changes_nothing_and_its_resume_is_routed_once():
    """A node run parked ``waiting`` (``execution.park``): its decision settles the run and clears
    the park's mark (``undecided_since``, what the sweeper looks for); the same decision asked
    again, as the sweeper does when the first message was lost, writes nothing new; the resumed
    node run is routed by one decision, and a second message for it finds it consumed."""
    definition = {"nodes": [{"id": "gate", "type": "hitl", "config": {}},
                            {"id": "after", "type": "transform", "config": {"expression": "{'x': 1}"}}],
                  "edges": [{"from": "gate", "to": "after"}]}
    sim = Sim(definition)
    sim.start()
    ((pk, gate),) = sim.tokens.items()
    sim.run["status"], gate.status = Run.Status.RUNNING, NodeRun.Status.WAITING  # claimed, then parked

    decided = planner.plan(sim.ir, sim.state(), pk)
    assert decided.run == {"status": Run.Status.WAITING_FOR_APPROVAL}
    assert decided.updates == {pk: {"undecided_since": None}} and not decided.inserts
    assert decided.events == [(Event.Type.RUN_MOVED, "", {"status": Run.Status.WAITING_FOR_APPROVAL,
                                                          "was": Run.Status.RUNNING})]  # said, once
    sim.apply(decided)
    again = planner.plan(sim.ir, sim.state(), pk)
    assert (again.run, again.inserts, again.events) == ({}, [], [])

    gate.status, gate.output, gate.finished_at = NodeRun.Status.COMPLETED, {"approved": True}, sim.tick()  # resume
    sim.coordinate(pk)
    assert [(t.node_id, t.status) for t in sim.tokens.values()] == [("gate", "completed"), ("after", "queued")]
    assert sim.run["status"] == Run.Status.RUNNING
    duplicate = planner.plan(sim.ir, sim.state(), pk)
    assert (duplicate.run, duplicate.inserts, duplicate.updates, duplicate.events) == ({}, [], {}, [])


def test_a_loop_past_the_node_run_cap_fails_the_run():
    definition = {"nodes": [{"id": "body", "type": "transform", "config": {"expression": "{'x': 1}"}},
                            {"id": "again", "type": "loop", "config": {"max_iterations": 50, "loop_back_to": "body"}}],
                  "edges": [{"from": "body", "to": "again"}]}
    sim = Sim(definition)
    sim.start()
    sim.execute(1)
    state = sim.state()
    state.limits = Limits(max_output_bytes=10**9, max_node_runs=2)
    result = planner.plan(sim.ir, state, 1)
    assert result.run["status"] == Run.Status.FAILED and result.run["error"]["limit"] == "node_runs"


# --- the plain step is the plan ---------------------------------------------------------------------


def premises_hold(step: planner.PlainStep, tokens: list[Token], me: Token) -> bool:
    """What the plain step's SQL checks (``steps``): its node run unconsumed and completed, the
    run running, no successor row yet; at the end of a branch, nothing else open. Stronger here,
    so that the comparison is exact: no other finished node run waits for its own message (the
    full decision would consume it in the same plan), completed absorbable parents aside."""
    others = [t for t in tokens if t.pk != me.pk]
    absorbable = {p for s in step.successors for p in s.absorbable}
    if any(t.status in planner.FINISHED and not t.consumed
           and not (t.node_id in absorbable and t.status == NodeRun.Status.COMPLETED) for t in others):
        return False
    if step.ends:
        return not any(t.status in planner.ACTIVE for t in others)
    return not any(t.node_id in {s.node_id for s in step.successors} for t in others)


def checking_plain_steps(sim: Sim) -> list[str]:
    """Make ``sim`` compare, before each decision, the plain step of the completed node (where
    its premises hold) with ``plan`` on the real state; returns the nodes compared so far."""
    checked: list[str] = []
    original = sim.coordinate

    def coordinate(pk: int) -> None:
        me = sim.tokens[pk]
        step = planner.plain_step(sim.ir, me.node_id)
        if (step is not None and not me.consumed and me.status == NodeRun.Status.COMPLETED and not sim.ended
                and premises_hold(step, list(sim.tokens.values()), me)):
            result = planner.plan(sim.ir, sim.state(), pk)
            assert tuple(result.updates[pk]["taken"]) == step.taken
            latest = sim.latest()
            expected = [(s.node_id, s.node_type) for s in step.successors
                        if all(o in latest and (latest[o].consumed or (o in s.absorbable
                                                                       and latest[o].status == "completed"))
                               for o in s.others)]
            queued = [(t.node_id, t.node_type) for t in result.inserts if t.status == NodeRun.Status.QUEUED]
            assert sorted(queued) == sorted(expected), (sim.definition, me.node_id, sim.finals())
            absorbed = {sim.tokens[p].node_id: tuple(f["taken"]) for p, f in result.updates.items() if p != pk}
            assert absorbed.items() <= dict(step.absorbed).items()
            assert (result.run.get("status") == Run.Status.COMPLETED) == step.ends
            checked.append(me.node_id)
        original(pk)

    sim.coordinate = coordinate  # type: ignore[method-assign]
    return checked


@settings(max_examples=200, deadline=None)
@given(graphs.dags(), st.data())
def test_the_plain_step_is_what_the_plan_does_wherever_its_premises_hold(definition, data):
    """Drive a run; at every completed node with a plain step whose premises hold, ``plan`` on
    the real state consumes it with the plain step's ``taken``, queues exactly the successors
    the plain step's statement would queue (a join only once its other parents are consumed),
    absorbs the same parents, and completes the run exactly when the plain step ends it."""
    sim = Sim(definition)
    checking_plain_steps(sim)
    drive(sim, drawn(data))


def test_the_comparison_of_plain_steps_runs():
    definition = {"nodes": [{"id": n, "type": "transform", "config": {"expression": "{'x': 1}", **graphs.Q}} for n in "abcj"],
                  "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "j"}, {"from": "c", "to": "j"}]}
    sim = Sim(definition)
    checked = checking_plain_steps(sim)
    drive(sim, first)
    assert {"b", "j"} <= set(checked)  # into a join (c absorbable), and the end of the run


@pytest.mark.parametrize("definition", [graphs.nested_loops()])
def test_no_plain_step_queues_into_a_row_that_exists(definition):
    """With loops, a successor at this iteration may exist already (the plain step then falls
    back): the plain step plans for nodes whose successors follow at the same iteration."""
    ir = compile_definition(definition)
    step = planner.plain_step(ir, "a")
    assert step is not None and [s.node_id for s in step.successors] == ["b"] and not step.ends
    assert planner.plain_step(ir, "b") is None  # into a loop node: evaluated inline, the full decision
