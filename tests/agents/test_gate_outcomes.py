"""``gates.crossed`` refuses wiring *another outcome* of a gate into what only its own outcome
reached, and only that: an outcome is the condition of the gate's edges that take it, however many
(it compared (target, condition) pairs, so a node reached by the same outcome through another edge
counted as crossed), walked once an outcome (it walked once an edge: a review's findings)."""

from __future__ import annotations

import copy

import pytest

from tests.agents.test_gate_routes import refused_rule
from tests.agents.test_patch_corpus import DECLINED, PERSON, PLANNING, add_edge, agent, edge, hitl, http
from workflows.definition import gates

pytestmark = pytest.mark.django_db

API = "https://api.example.com"

# A four-eyes gate whose approval fans out through its unconditional edges (taken together when no
# rule holds: on an approval), its rejection through a rule. /edges: 0 plan→review,
# 1 review→notify (declined), 2 review→pay, 3 review→receipt
FANNED = {
    "nodes": [agent("plan"), hitl("review", approvers=["bob", "carol"], allow_self_approval=False),
              http("pay", method="POST"), http("receipt", f"{API}/receipt", method="POST"),
              http("notify", f"{API}/declined", method="POST")],
    "edges": [edge("plan", "review"), edge("review", "notify", DECLINED), edge("review", "pay"),
              edge("review", "receipt")],
}


def test_ordering_two_steps_of_the_same_outcome_is_not_a_crossed_outcome(user):
    """The owner sends the receipt after the payment (pay → receipt): both still run on an approval
    only, and neither on a rejection. No other outcome of the gate reaches either; before
    ``crossed`` the patch was accepted."""
    rule = refused_rule(user, FANNED, PLANNING, PERSON, [add_edge("pay", "receipt")])
    assert rule.startswith("accepted"), rule


def test_the_declined_outcome_wired_into_the_fanned_action_is_still_refused(user):
    """Control: notify → receipt lets the rejection reach the receipt."""
    assert refused_rule(user, FANNED, PLANNING, PERSON, [add_edge("notify", "receipt")]) == "gate_bypass"


def test_crossed_follows_every_gate_s_decision_in_one_walk_of_each_document(monkeypatch):
    """A definition within the operator's bounds (1,000 nodes, 5,000 edges): four gates each with an
    edge to every step of a 995-step chain. Judging one patch asked ``crossed`` of each gate, which
    walked the chain once per edge out of it, before and after: ~8,000 walks of up to 1,000 nodes
    (2.2 s of a worker or web thread with the run locked). Every gate's decisions are followed
    together, one walk of each document, each node taken again only when a decision reaches it
    anew: well within ``ROUTE_STEPS_MAX`` set to a tenth of its value."""
    count, chain = 4, 995
    nodes = [agent("plan"), *[hitl(f"g{j}") for j in range(count)],
             *[{"id": f"n{i}", "type": "transform", "config": {"expression": "1"}} for i in range(chain)]]
    edges = [edge("plan", f"g{j}") for j in range(count)]
    edges += [edge(f"g{j}", f"n{i}") for j in range(count) for i in range(chain)]
    edges += [edge(f"n{i}", f"n{i + 1}") for i in range(chain - 1)]
    before = {"nodes": nodes, "edges": edges}
    after = copy.deepcopy(before)
    after["edges"].append(edge("plan", "n0"))
    monkeypatch.setattr(gates, "ROUTE_STEPS_MAX", 20_000)
    with gates.memo():
        assert gates.crossed(before, after, [f"g{j}" for j in range(count)]) == set()


def test_the_routes_a_decision_is_carried_on_are_followed_within_bounds_and_past_them_refused(monkeypatch):
    """Each rule out of a step that carries a gate's decision on (``gates.deciders``) is a route of
    its own: a chain of 400 conditionals after a gate, each with a rule onward, is followed in a
    few thousand steps; past ``ROUTE_STEPS_MAX`` the judgement says it cannot (the policy refuses
    the patch), never answers "nothing crossed" as the cap once did (a red-team helper's find)."""
    chain = 400
    nodes = [agent("plan"), hitl("review"),
             *[{"id": f"c{i}", "type": "conditional", "config": {}} for i in range(chain)],
             *[http(f"x{i}") for i in range(chain)]]
    edges = [edge("plan", "review"), edge("review", "c0")]
    edges += [edge(f"c{i}", f"c{i + 1}", "$.approved == true") for i in range(chain - 1)]
    edges += [edge(f"c{i}", f"x{i}") for i in range(chain)]
    before = {"nodes": nodes, "edges": edges}
    after = copy.deepcopy(before)
    after["edges"].append(edge("x0", "x1"))
    with gates.memo():
        assert len(gates.deciders(before, ["review"])) == chain - 1  # the last has no rule onward
        assert gates.crossed(before, after, ["review"]) == {"x1"}  # x0's route reaches x1 now
    monkeypatch.setattr(gates, "ROUTE_STEPS_MAX", 100)
    with gates.memo(), pytest.raises(gates.RoutesTooMany):
        gates.crossed(before, after, ["review"])


def test_a_crossing_names_the_gate_whose_decision_it_crosses_and_walks_through_a_gate_of_the_proposer_s_own():
    """Two gates; the declined branch of the second wired through a new gate of the proposer's own
    into what only its approval reached: named by the second (the refusal named the first gate of
    the definition), and found though a gate lies on the way (the walk stopped at any gate)."""
    before = {"nodes": [agent("plan"), hitl("budget_ok"), http("spend"), hitl("review"), http("pay", method="POST"),
                        http("notify", f"{API}/declined", method="POST")],
              "edges": [edge("plan", "budget_ok"), edge("budget_ok", "spend", "$.approved == true"),
                        edge("plan", "review"), edge("review", "pay", "$.approved == true"),
                        edge("review", "notify", DECLINED)]}
    after = copy.deepcopy(before)
    after["nodes"].append(hitl("mine", approvers=["alice"]))
    after["edges"] += [edge("notify", "mine"), edge("mine", "pay", "$.approved == true")]
    with gates.memo():
        assert gates.crossings(before, after, ["budget_ok", "review"]) == {"pay": ["review"]}
