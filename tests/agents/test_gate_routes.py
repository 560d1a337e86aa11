"""Patches that get around a human gate through a loop's exits or the gate's other outcome, judged by
the real service against a stored run (policy level), as the corpus does. Each was accepted before
(a red-team helper's findings): the gates' rules read the definition's edges alone, where the
engine follows a loop's exits and drops a loop's edge to its own jump target
(``validation.control_edges`` is now the one list), and nothing refused the declined branch wired
into the approved action (``gates.crossed``)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.agents.test_patch_corpus import (
    APPROVED,
    INVOICE,
    PLAN,
    PLANNING,
    Case,
    add_edge,
    agent,
    edge,
    hitl,
    http,
    proposal,
    remove,
    replace,
    run_in_state,
    snapshot,
    transform,
)
from workflows.services.patches import PatchDenied, PatchRejected, run_patch_propose

pytestmark = pytest.mark.django_db

API = "https://api.example.com"

# A gate guarding a step and an author's retry loop round it; the loop's exit (break_path/timeout_path,
# no explicit edge: the IR adds the loop → pay edge itself) leads to the payment.
# /nodes: 0 plan, 1 review, 2 prep, 3 again (loop), 4 pay; /edges: 0 plan→review, 1 review→prep, 2 prep→again
LOOP_EXIT = {
    "nodes": [agent("plan"), hitl("review", approvers=["bob"]), transform("prep"),
              {"id": "again", "type": "loop", "config": {"max_iterations": 2, "loop_back_to": "prep",
                                                         "condition": "false", "break_path": "pay",
                                                         "timeout_path": "pay"}},
              http("pay", method="POST")],
    "edges": [edge("plan", "review"), edge("review", "prep", APPROVED), edge("prep", "again")],
}


def refused_rule(user: Any, base: dict[str, Any], state: dict[str, str], proposer: str,
                 operations: list[dict[str, Any]]) -> str:
    run = run_in_state(user, Case(copy.deepcopy(base), state, proposer, operations, "?"))
    before = snapshot(run)
    try:
        patch = run_patch_propose(run=run, operations=copy.deepcopy(operations), description="rt",
                                  **proposal(proposer, user))
    except (PatchRejected, PatchDenied) as refused:
        assert snapshot(run) == before
        return refused.extra["rule"]
    return f"accepted ({patch.status})"


def test_an_edge_from_before_the_gate_into_a_loop_exit_target_is_a_bypass(user):
    """``gates.entries`` counts only edges: a node reached only through a loop's ``break_path`` looks
    like a run's start, so it and everything after it count as "bypassed already" before the patch,
    and a new edge plan → pay is no fresh bypass. The engine (IR) reaches pay only through the loop:
    with the edge, pay is a join of plan (delivered) and the loop (dead when the gate rejects), and
    the payment goes out whatever bob decides."""
    assert refused_rule(user, LOOP_EXIT, PLANNING, PLAN, [add_edge("plan", "pay")]) == "gate_bypass"


def test_removing_an_unreached_loop_cuts_its_exit_target_loose_of_the_gate(user):
    """Cutting a guarded node loose is a bypass (corpus ``bypass-guarded-node-cut-loose``), but a
    loop exit's target is taken for an entry before the patch already, so removing the (unreached)
    loop node that alone led to pay is accepted: pay is then a real entry of the run's definition
    (a replay of the run starts it at once, before the gate)."""
    assert refused_rule(user, LOOP_EXIT, PLANNING, PLAN, [remove("/edges/2"), remove("/nodes/3")]) == "gate_bypass"


def test_wiring_the_declined_branch_into_the_approved_action_is_refused(user):
    """The edges out of a gate are immutable (corpus ``gate-outgoing-condition-replaced``: making the
    declined outcome reach ``pay`` is refused). Adding notify → pay does the same without touching the
    gate: on a rejection review → pay is dead, review → notify delivers, notify completes and pay (a
    join of the two) runs. The payment goes out whether bob approves or declines."""
    rule = refused_rule(user, INVOICE, PLANNING, PLAN, [add_edge("notify", "pay")])
    assert rule in ("gate_bypass", "gate_immutable"), rule


# A gate guarding a step, then an author's loop round ``work``, then the payment.
# /nodes: 0 plan, 1 review, 2 prep, 3 work, 4 again (loop), 5 pay
# /edges: 0 plan→review, 1 review→prep, 2 prep→work, 3 work→again, 4 again→pay
LOOPED_ACTION = {
    "nodes": [agent("plan"), hitl("review", approvers=["bob"]), transform("prep"), transform("work"),
              {"id": "again", "type": "loop", "config": {"max_iterations": 2, "loop_back_to": "work",
                                                         "condition": "false"}},
              http("pay", method="POST")],
    "edges": [edge("plan", "review"), edge("review", "prep", APPROVED), edge("prep", "work"), edge("work", "again"),
              edge("again", "pay")],
}


def test_cutting_a_loop_body_loose_behind_the_loop_s_own_jump_edge_is_a_bypass(user):
    """An edge from a loop to its ``loop_back_to`` is the jump, and the IR drops it
    (``ir.compile_definition``): with prep → work removed and again → work added, ``work`` has no
    way in and is an entry of the run's definition (a replay starts it, and the payment after it,
    at once). ``gates.entries`` counts the dropped edge, so for the policy work has a way in and
    nothing is cut loose."""
    import jsonpatch

    from workflows.definition.ir import compile_definition

    operations = [remove("/edges/2"), add_edge("again", "work")]
    patched = jsonpatch.apply_patch(copy.deepcopy(LOOPED_ACTION), operations)
    assert "work" in compile_definition(patched).entries  # what the engine starts on its own
    assert refused_rule(user, LOOPED_ACTION, PLANNING, PLAN, operations) == "gate_bypass"


def test_the_owner_cannot_wire_a_four_eyes_gate_s_declined_branch_into_its_action(user):
    """A four-eyes gate changes only with a new workflow version, so its owner cannot decide alone;
    with notify → pay the owner's payment goes out whatever the second person decides."""
    from tests.agents.test_patch_corpus import FOUR_EYES, PERSON

    rule = refused_rule(user, FOUR_EYES, PLANNING, PERSON, [add_edge("notify", "pay")])
    assert rule in ("gate_bypass", "gate_immutable"), rule


def test_an_approved_agent_s_new_loop_exiting_into_the_approved_action_changes_it(user):
    """Corpus ``approved-new-step-leads-into-the-action``: an edge from an inside agent's new step into
    ``pay`` (gold customers only) is a change to the approved action, refused once it has begun. The
    same edge spelled as a new loop's ``break_path`` is no edge of ``definition["edges"]``, so
    ``gates.action_digest`` does not see it (and ``loop_reruns`` stops at the loop): the patch is
    accepted, and pay, a join of route (dead for a silver customer) and the loop (delivered), pays
    every customer on an approval given for gold ones."""
    from tests.agents.test_patch_corpus import ACT, ACTING, BRANCHED, add_node

    operations = [add_node(transform("x")),
                  add_node({"id": "l", "type": "loop", "config": {"max_iterations": 2, "loop_back_to": "x",
                                                                   "condition": "false", "break_path": "pay",
                                                                   "timeout_path": "pay"}}),
                  add_edge("act", "x"), add_edge("x", "l")]
    assert refused_rule(user, BRANCHED, ACTING, ACT, operations) == "approved_action_started"


# A payment the gate guards that joins a step of the author's paging loop: pay hangs off the loop's
# body (it does not lead back to the loop node), so it runs again on every pass (``planner.loop_reruns``),
# each time on the gate's one approval (the gate's edge into it delivered once, outside the loop).
# /nodes: 0 plan, 1 review, 2 page, 3 step, 4 check, 5 again (loop, 3 pages), 6 pay
# /edges: 0 review→pay, 1 page→step, 2 step→check, 3 check→again, 4 step→pay
PAGED = {
    "nodes": [agent("plan"), hitl("review", approvers=["bob"]), transform("page"), http("step"), http("check"),
              {"id": "again", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "page"}},
              http("pay", method="POST")],
    "edges": [edge("review", "pay", APPROVED), edge("page", "step"), edge("step", "check"), edge("check", "again"),
              edge("step", "pay")],
}
MORE_PAGES = [replace("/nodes/5/config/max_iterations", 10000)]


def test_a_loop_that_runs_an_approved_payment_again_is_part_of_what_was_approved(user):
    """bob approved a payment that the paging loop runs up to 3 times; raising the loop's bound
    (before the loop node first ran: it is no history yet) made it run 10,000 times on that one
    approval: the loop node lies outside what ``gates.guarded`` walks from the gate, so its bound was
    no part of the action's digest. An agent did it (agents may raise no loop's bound now:
    corpus ``loop-bound-raised``); the owner may not either, under bob's approval."""
    from tests.agents.test_patch_corpus import PERSON

    paid = {"plan": "running", "review": "approved", "page": "completed", "step": "completed", "check": "running",
            "pay": "completed"}
    assert refused_rule(user, PAGED, paid, PERSON, MORE_PAGES) == "approved_action_started"


def test_raising_such_a_loop_s_bound_while_the_gate_waits_asks_its_approvers_again():
    from workflows.services.patches.policy import Proposer, RunState, judge

    state = RunState(statuses={"plan": "running", "review": "waiting", "page": "completed", "step": "running"},
                     started=frozenset({"plan", "review", "page", "step"}), base=PAGED, owner="alice")
    verdict = judge(before=copy.deepcopy(PAGED), operations=copy.deepcopy(MORE_PAGES),
                    proposer=Proposer(agent=False), state=state)
    assert verdict.revote == ("review",)
