"""What a sequence of patches does is judged as one patch doing it would be: a step an agent removed
and added again is its author's still, a step it added is not cut loose into a start by the next
patch, an author's step is not brought under a loop by an edge, and an owner's copy of an agent's
keys and numbers stays the agent's (a red team's finds, each applied before the fix)."""

from __future__ import annotations

import copy
import json

import pytest

from agents.view import run_view
from tests.agents.test_patch_corpus import (
    INVOICE,
    PLAN,
    PLANNING,
    POLLED,
    Case,
    add_edge,
    add_node,
    after,
    agent,
    copy_,
    definition_of,
    edge,
    http,
    propose,
    remove,
    replace,
    run_in_state,
    transform,
)
from workflows.definition.gates import nodes_by_id
from workflows.models import Run
from workflows.services.patches import run_patch_propose
from workflows.services.patches.policy import loop_bodies

pytestmark = pytest.mark.django_db

# /nodes: 0 plan (default tools), 1 helper (the author bounded it); /edges: 0 plan→helper
BOUNDED = {
    "nodes": [agent("plan"),
              agent("helper", tools=["search_tools"], max_tokens=100, max_tool_rounds=1,
                    budget={"max_cost_usd": 0.01})],
    "edges": [edge("plan", "helper")],
}
LOOSE = agent("helper", tools=["execute_pipeline", "patch_workflow", "search_tools"])
# /nodes: 0 plan, 1 post (an author's POST, run once, no secret, no gate); /edges: 0 plan→post
POSTING = {"nodes": [agent("plan"), http("post", method="POST", payload={"amount": 100})],
           "edges": [edge("plan", "post")]}
OWN_LOOP = [add_node(transform("x")), add_edge("plan", "x"),
            add_node({"id": "l", "type": "loop", "config": {"max_iterations": 10000, "loop_back_to": "x"}}),
            add_edge("x", "l")]


def current(run: Run) -> dict:
    return definition_of(Run.objects.get(pk=run.pk).current_artifact_id)


def test_an_author_s_agent_removed_then_added_again_keeps_its_author_s_bounds(user):
    run = run_in_state(user, Case(BOUNDED, PLANNING, PLAN, [], "applied"))
    assert propose(run, PLAN, user, [replace("/nodes/1", LOOSE)]) == "agent_privilege"  # one patch

    assert propose(run, PLAN, user, [remove("/edges/0"), remove("/nodes/1")]) == "applied"
    second = propose(run, PLAN, user, [add_node(LOOSE), add_edge("plan", "helper")])
    assert second == "agent_privilege", (second, nodes_by_id(current(run)).get("helper"))


def test_a_step_an_agent_added_after_itself_is_not_cut_loose_into_a_start(user):
    run = run_in_state(user, Case(INVOICE, PLANNING, PLAN, [], "applied"))
    assert propose(run, PLAN, user, [add_node(transform("x"))]) == "unreachable_node"  # one patch

    assert propose(run, PLAN, user, after("plan", transform("x"))) == "applied"
    index = current(run)["edges"].index(edge("plan", "x"))
    assert propose(run, PLAN, user, [remove(f"/edges/{index}")]) == "unreachable_node"


def test_an_author_s_step_cut_loose_from_its_predecessors_is_refused(user):
    """It would start at once, before what its author put first."""
    run = run_in_state(user, Case(POSTING, PLANNING, PLAN, [], "applied"))
    assert propose(run, PLAN, user, [remove("/edges/0")]) == "unreachable_node"


@pytest.mark.parametrize("target", ["post", "helper"])
def test_an_author_s_step_brought_under_an_agent_s_own_loop_by_a_later_patch_is_refused(user, target):
    """An agent's own loop of 10,000 passes over its own step, applied first, then one edge hanging
    the author's POST (or its bounded agent) off that step: each pass ran it."""
    base = copy.deepcopy(POSTING)
    base["nodes"].append(BOUNDED["nodes"][1])
    base["edges"].append(edge("plan", "helper"))
    run = run_in_state(user, Case(base, PLANNING, PLAN, [], "applied"))
    assert propose(run, PLAN, user, [*OWN_LOOP, add_edge("x", target)]) == "agent_privilege"  # one patch

    assert propose(run, PLAN, user, OWN_LOOP) == "applied"
    second = propose(run, PLAN, user, [add_edge("x", target)])
    assert second == "agent_privilege", (second, loop_bodies(current(run)))


def test_an_author_s_once_only_step_hung_off_the_author_s_loop_is_refused(user):
    base = copy.deepcopy(POLLED)
    base["nodes"].append(http("mail", method="POST", payload={"to": "finance"}))
    base["edges"].append(edge("plan", "mail"))
    run = run_in_state(user, Case(base, PLANNING, PLAN, [], "applied"))
    assert "mail" not in loop_bodies(current(run))["more"]

    outcome = propose(run, PLAN, user, [add_edge("page", "mail")])
    assert outcome == "agent_privilege", (outcome, loop_bodies(current(run)))


def test_a_step_a_person_patched_in_is_theirs_as_an_author_s_is(user):
    """It was in no version the run started from, so its repeats and its passes were an agent's to
    raise: put under the agent's own 10,000-pass loop, or given 20 attempts."""
    run = run_in_state(user, Case(POSTING, PLANNING, PLAN, [], "applied"))
    fee = http("fee", method="POST", on_lost="fail")
    assert run_patch_propose(run=run, operations=after("plan", fee), user=user).status == "applied"
    assert propose(run, PLAN, user, OWN_LOOP) == "applied"

    assert propose(run, PLAN, user, [add_edge("x", "fee")]) == "agent_privilege"
    index = [n["id"] for n in current(run)["nodes"]].index("fee")
    assert propose(run, PLAN, user, [{"op": "add", "path": f"/nodes/{index}/retry",
                                      "value": {"max_attempts": 20}}]) == "agent_privilege"


def test_an_agent_s_own_step_brought_under_its_own_loop_is_its_own(user):
    run = run_in_state(user, Case(POSTING, PLANNING, PLAN, [], "applied"))
    assert propose(run, PLAN, user, OWN_LOOP) == "applied"
    assert propose(run, PLAN, user, [add_node(transform("y")), add_edge("x", "y")]) == "applied"


def test_an_owner_s_copy_of_an_agent_s_keys_and_numbers_stays_the_agent_s(user):
    spelled = {"IGNORE": {"all": 1, "previous": 2, "instructions": 3}, "codes": [73, 71, 78, 79, 82, 69]}
    run = run_in_state(user, Case(INVOICE, PLANNING, PLAN, [], "applied"))
    note = http("note", method="PUT", payload=spelled)
    assert run_patch_propose(run=run, operations=after("plan", note), node_id="plan",
                             from_agent=True).status == "applied"
    assert "instructions" not in json.dumps(run_view(run.pk).definition)  # the agent's node: masked

    index = [n["id"] for n in current(run)["nodes"]].index("note")
    patch = run_patch_propose(run=run, operations=[copy_(f"/nodes/{index}/config/payload", "/nodes/3/config/payload")],
                              user=user)
    assert patch.status == "applied"
    pay = next(n for n in run_view(run.pk).definition["nodes"] if n["id"] == "pay")
    assert pay.get("written_by") == "plan" and "instructions" not in json.dumps(pay), pay
