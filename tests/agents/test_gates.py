"""The gates' graph rules (``workflows.definition.gates``): ``guarding``, one walk back from a node,
gives the answer of asking ``guarded`` of every gate, on generated graphs (loops' jumps, gates in a
row, cycles, edges to unknown nodes); and on a large definition it builds the graph once."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from workflows.definition import gates

TYPES = st.sampled_from(["hitl", "transform", "http", "loop", "agent"])


@st.composite
def definitions(draw: Any) -> dict[str, Any]:
    count = draw(st.integers(1, 12))
    ids = [f"n{i}" for i in range(count)]
    types = draw(st.lists(TYPES, min_size=count, max_size=count))
    ends = st.sampled_from([*ids, "ghost"])
    nodes = []
    for node_id, kind in zip(ids, types, strict=True):
        node: dict[str, Any] = {"id": node_id, "type": kind}
        if kind == "loop":
            node["config"] = {"loop_back_to": draw(ends), "break_path": draw(st.lists(ends, max_size=2)),
                              "timeout_path": draw(ends)}
        nodes.append(node)
    edges = [{"from": a, "to": b} for a, b in draw(st.lists(st.tuples(ends, ends), max_size=30))]
    return {"nodes": nodes, "edges": edges}


@settings(max_examples=400, deadline=None)
@given(definitions())
def test_guarding_is_the_gates_whose_action_holds_the_node(definition):
    every = gates.gates(definition)
    for node in [n["id"] for n in definition["nodes"]] + ["ghost"]:
        assert gates.guarding(definition, node) == sorted(g for g in every if node in gates.guarded(definition, g))


@settings(max_examples=300, deadline=None)
@given(definitions())
def test_binding_holds_every_gate_whose_action_holds_or_reads_the_node(definition):
    """``binding`` (what approving binds: a child run a gate's action reads is part of it) answers at
    least the gates ``guarding`` and ``feeders`` name for the node, each asked of every gate."""
    every = gates.gates(definition)
    for node in [n["id"] for n in definition["nodes"]] + ["ghost"]:
        bound = set(gates.binding(definition, node))
        assert set(gates.guarding(definition, node)) <= bound
        assert {g for g in every if node in gates.feeders(definition, g, gates.guarded(definition, g))} <= bound


def test_a_step_an_approved_action_reads_is_bound_by_its_gate_and_one_it_does_not_is_not():
    definition = _paying_a_quote()
    assert gates.guarding(definition, "quote") == []  # beside the gate, not after it
    assert gates.binding(definition, "quote") == gates.binding(definition, "rate") == ["review"]
    assert gates.binding(definition, "elsewhere") == []


def test_guarding_walks_a_large_definition_once(monkeypatch):
    """A workflow node's start asks which gates guard it: asking ``guarded`` of 800 gates over 5,000
    edges took 7 s of a worker (a red-team helper's measurement). ``guarding`` builds the graph once
    and walks it once, whatever the number of gates."""
    count, chain = 800, 190
    nodes = [{"id": f"g{i}", "type": "hitl"} for i in range(count)]
    nodes += [{"id": f"t{i}", "type": "transform"} for i in range(chain)]
    edges = [{"from": f"g{i}", "to": f"t{i % chain}"} for i in range(count)]
    edges += [{"from": f"t{i}", "to": f"t{i + 1}"} for i in range(chain - 1)]
    definition = {"nodes": nodes, "edges": edges}
    built, asked = [], []
    successors, guarded = gates._successors, gates.guarded
    monkeypatch.setattr(gates, "_successors", lambda d: built.append(1) or successors(d))
    monkeypatch.setattr(gates, "guarded", lambda d, g: asked.append(g) or guarded(d, g))

    assert gates.guarding(definition, f"t{chain - 1}") == sorted(f"g{i}" for i in range(count))
    assert (len(built), asked) == (1, [])


def _paying_a_quote() -> dict[str, Any]:
    """start → review (a gate) → pay, and start → slow → quote → pay: pay sends what quote computes,
    and quote may run after the gate was approved. ``memo`` reads ``quote`` by reference only."""
    return {"nodes": [
        {"id": "start", "type": "transform", "config": {"expression": "{'n': 1}"}},
        {"id": "review", "type": "hitl", "config": {"message": "Pay the quote?"}},
        {"id": "slow", "type": "http", "config": {"url": "https://example.com/slow"}},
        {"id": "quote", "type": "transform", "config": {"expression": "{'amount': 5}"}},
        {"id": "rate", "type": "transform", "config": {"expression": "{'fx': 1}"}},
        {"id": "pay", "type": "http", "config": {"url": "https://example.com/pay", "method": "POST",
                                                 "payload": {"amount": "$nodes.quote.amount", "fx": "$nodes.rate.fx"}}},
        {"id": "elsewhere", "type": "transform", "config": {"expression": "1"}},
    ], "edges": [{"from": "start", "to": "review"}, {"from": "start", "to": "slow"}, {"from": "slow", "to": "quote"},
                 {"from": "quote", "to": "pay"}, {"from": "review", "to": "pay", "condition": "$.approved == true"},
                 {"from": "start", "to": "elsewhere"}]}


def _digest(definition: dict[str, Any]) -> str:
    return gates.action_digest(definition, "review", bodies={})


def test_what_an_approved_action_reads_that_may_still_run_is_part_of_what_was_approved():
    """A red team's agent rewrote ``quote`` after ``review`` was approved and before it ran: the
    approval stood, and ``pay`` sent the agent's amount. What the action reads (joined, or named by
    reference: ``rate`` has no edge) and may still run is part of the digest; what ran before the
    gate asked (``start``) and what the action never reads (``elsewhere``) are not."""
    definition = _paying_a_quote()
    assert gates.feeders(definition, "review", gates.guarded(definition, "review")) == {"slow", "quote", "rate"}
    digest = _digest(definition)

    def changed(node_id: str, expression: str) -> dict[str, Any]:
        other = _paying_a_quote()
        next(n for n in other["nodes"] if n["id"] == node_id)["config"]["expression"] = expression
        return other

    assert _digest(changed("quote", "{'amount': 5000}")) != digest
    assert _digest(changed("rate", "{'fx': 1000}")) != digest
    assert _digest(changed("start", "{'n': 2}")) == digest
    assert _digest(changed("elsewhere", "2")) == digest
    fed_anew = _paying_a_quote()
    fed_anew["edges"].append({"from": "elsewhere", "to": "quote"})  # quote now joins another step's output
    assert _digest(fed_anew) != digest
    # a rule out of a step the action reads is taken alone when it holds: slow no longer reaches
    # quote, and pay reads nothing (a red-team helper's find); a plain edge beside its others is not read
    starved, beside = _paying_a_quote(), _paying_a_quote()
    starved["edges"].append({"from": "slow", "to": "elsewhere", "condition": "true"})
    beside["edges"].append({"from": "slow", "to": "elsewhere"})
    assert _digest(starved) != digest and _digest(beside) == digest


def _in_a_loop() -> dict[str, Any]:
    """head → review → pay; head → quote → again, a loop jumping back to head: on each pass quote
    runs beside the gate, and pay sends what it computed."""
    return {"nodes": [
        {"id": "head", "type": "transform", "config": {"expression": "{'n': 1}"}},
        {"id": "review", "type": "hitl", "config": {"message": "Pay?"}},
        {"id": "quote", "type": "transform", "config": {"expression": "{'amount': 5}"}},
        {"id": "pay", "type": "http", "config": {"url": "https://example.com/pay", "method": "POST",
                                                 "payload": {"amount": "$nodes.quote.amount"}}},
        {"id": "again", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "head",
                                                   "condition": "iteration < 1"}},
    ], "edges": [{"from": "head", "to": "review"}, {"from": "head", "to": "quote"},
                 {"from": "review", "to": "pay", "condition": "$.approved == true"},
                 {"from": "quote", "to": "again"}]}


def test_a_loop_s_jump_back_does_not_hide_what_runs_beside_the_gate():
    """Through the loop's jump quote looked upstream of the gate (run before it asked), and was
    left out: a reviewer's agent rewrote it after the approval and pay sent 5000. Upstream of the
    gate is judged along edges alone."""
    definition = _in_a_loop()
    assert gates.feeders(definition, "review", gates.guarded(definition, "review")) == {"quote"}
    rewritten = _in_a_loop()
    rewritten["nodes"][2]["config"]["expression"] = "{'amount': 5000}"
    assert _digest(rewritten) != _digest(definition)


def test_what_an_agent_adds_after_itself_and_edges_out_of_what_the_action_reads_leave_the_digest():
    """What the approval binds is what the action reads: a step the agent adds after itself (left
    out of the digest, ``leave_out``) may read anything without voiding it, and a step hung after
    one the action reads changes nothing the action reads."""
    before = _paying_a_quote()
    own = _paying_a_quote()
    own["nodes"].append({"id": "note", "type": "transform", "config": {"expression": "nodes.elsewhere"}})
    own["edges"].append({"from": "pay", "to": "note"})
    assert gates.action_digest(own, "review", bodies={}, leave_out=["note"]) == _digest(before)
    hung = _paying_a_quote()
    hung["nodes"].append({"id": "log", "type": "transform", "config": {"expression": "1"}})
    hung["edges"].append({"from": "quote", "to": "log"})
    assert _digest(hung) == _digest(before)


def test_a_left_out_step_the_action_reads_and_a_loop_over_what_it_reads_are_part_of_what_was_approved():
    """A red team's finds. A step an agent the gate approved adds (``leave_out``) that the action
    reads (``quote`` reads an optional ``adjust``) is part of the action, in a child run's whole
    definition too (``gate`` None); and a loop over a step the action reads (``pages`` over
    ``rate``, the payment reads its last pass) is part of it, however the loop's bound changes."""
    from workflows.services.patches.policy import loop_bodies

    def digest(definition: dict[str, Any], gate: str | None = "review", **kwargs: Any) -> str:
        return gates.action_digest(definition, gate, bodies=loop_bodies(definition), **kwargs)

    optional = _paying_a_quote()
    optional["nodes"][3]["config"]["expression"] = "has(nodes.adjust) ? nodes.adjust : {'amount': 5}"
    adjusted = _paying_a_quote()
    adjusted["nodes"][3]["config"]["expression"] = optional["nodes"][3]["config"]["expression"]
    adjusted["nodes"].append({"id": "adjust", "type": "transform", "config": {"expression": "{'amount': 5000}"}})
    adjusted["edges"].append({"from": "pay", "to": "adjust"})
    assert digest(adjusted, leave_out=["adjust"]) != digest(optional)
    assert digest(adjusted, None, leave_out=["adjust"]) != digest(optional, None)

    paged, fewer = _paying_a_quote(), _paying_a_quote()
    for definition, passes in ((paged, 5), (fewer, 1)):
        definition["nodes"].append({"id": "pages", "type": "loop",
                                    "config": {"max_iterations": passes, "loop_back_to": "rate"}})
        definition["edges"].append({"from": "rate", "to": "pages"})
    assert digest(paged) != digest(_paying_a_quote())
    assert digest(fewer) != digest(paged)
