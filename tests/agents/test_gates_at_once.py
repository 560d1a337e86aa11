"""``gates.Around`` answers ``downstream``, ``bypassed`` and ``before`` for every gate of a document from
one pass over its graph, and ``gates.Dominance`` what a walk reaches around any node: each is held
here to the per-gate definition it is derived from, on generated graphs (loops' jumps, cycles, nodes
no entry reaches, edges to nowhere). A patch's judgement asked those definitions of every gate, each
walking the whole graph: a one-operation patch on 999 gates, each wired to the next four, held a web
thread and the run's lock 6.5 s (a red team's repro)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workflows.definition import gates
from workflows.services.patches import policy
from workflows.services.patches.policy import PatchRejected, Proposer, RunState, judge

TYPES = st.sampled_from(["hitl", "hitl", "transform", "http", "loop", "agent"])


@st.composite
def definitions(draw: Any, ids: list[str] | None = None) -> dict[str, Any]:
    """A graph of up to 14 nodes, many of them gates, with loops jumping anywhere, cycles of edges and
    edges to a node that is not there."""
    if ids is None:
        ids = [f"n{i}" for i in range(draw(st.integers(1, 14)))]
    ends = st.sampled_from([*ids, "ghost"])
    nodes = []
    for node_id in ids:
        kind = draw(TYPES)
        node: dict[str, Any] = {"id": node_id, "type": kind}
        if kind == "loop":
            node["config"] = {"loop_back_to": draw(ends), "break_path": draw(st.lists(ends, max_size=2))}
        elif kind == "transform":
            node["config"] = {"expression": " + ".join(f"$nodes.{n}" for n in draw(st.lists(ends, max_size=2))) or "1"}
        nodes.append(node)
    edges = [{"from": a, "to": b} for a, b in draw(st.lists(st.tuples(ends, ends), max_size=40))]
    return {"nodes": nodes, "edges": edges}


@st.composite
def patched(draw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two documents over partly the same nodes, as a patch's before and after."""
    count = draw(st.integers(1, 12))
    before = draw(definitions([f"n{i}" for i in range(count)]))
    kept = draw(st.lists(st.sampled_from([f"n{i}" for i in range(count)]), unique=True))
    after = draw(definitions([*kept, *(f"m{i}" for i in range(draw(st.integers(0, 3))))]))
    return before, after


def numbering(*documents: dict[str, Any]) -> tuple[dict[str, int], list[str]]:
    names = list(dict.fromkeys([n["id"] for d in documents for n in d["nodes"]] + ["ghost"]))
    return {name: i for i, name in enumerate(names)}, names


@settings(max_examples=600, deadline=None)
@given(patched(), st.data())
def test_around_is_downstream_bypassed_and_before_of_every_node(documents, data):
    number, names = numbering(*documents)
    for definition in documents:
        around = gates.Around(definition, number)
        for node in names:
            assert gates.named(around.downstream(node), names) == gates.downstream(definition, node)
            assert gates.named(around.before(node), names) == gates.before(definition, node)
            assert gates.named(around.bypassed(node), names) == gates.bypassed(definition, node)
            after_it = data.draw(st.lists(st.sampled_from(names), unique=True))
            assert gates.named(around.bypassed(node, after_it=gates.bits(number[n] for n in after_it)), names) == \
                gates.bypassed(definition, node, after_it=after_it)
        # as the judgement asks it: after the patch, of what was after the gate before
        was = gates.Around(documents[0], number)
        for node in names:
            was_after = gates.downstream(documents[0], node)
            assert gates.named(around.bypassed(node, after_it=was.downstream(node)), names) == \
                gates.bypassed(definition, node, after_it=was_after)


@settings(max_examples=400, deadline=None)
@given(patched(), st.data())
def test_dominance_is_what_a_walk_reaches_around_each_node(documents, data):
    """And as the patch policy walks from where a patch's influence starts (``policy._reached``:
    along edges, loops' jumps and ``$nodes`` reads)."""
    number, names = numbering(*documents)
    start = set(data.draw(st.lists(st.sampled_from(names))))
    for definition in documents:
        adjacency = gates.successors(definition)
        plain = gates.Dominance({number[n]: [number[t] for t in ts] for n, ts in adjacency.items()},
                                [number[n] for n in start])
        onward = gates.Dominance(policy._onward(definition, number), [number[n] for n in start])
        assert gates.named(plain.reached, names) == gates.reachable(adjacency, start)
        for node in names:
            assert gates.named(plain.without(number[node]), names) == gates.reachable(adjacency, start, avoid=node)
            assert gates.named(onward.without(number[node]), names) == policy._reached(definition, start, node)


def many_gates(count: int = 999, skips: int = 6, **config: Any) -> dict[str, Any]:
    """The red team's definition: a chain of gates, each also wired to the next four, then a step."""
    nodes = [{"id": f"g{g}", "type": "hitl", "config": {"message": "ok?", **config}} for g in range(count)]
    edges = [{"from": f"g{g}", "to": f"g{g + k}"} for g in range(count) for k in range(1, skips) if g + k < count]
    nodes.append({"id": "t", "type": "transform", "config": {"expression": "1"}})
    edges.append({"from": f"g{count - 1}", "to": "t"})
    return {"nodes": nodes, "edges": edges}


@pytest.mark.parametrize(("proposer", "config"), [
    (Proposer(agent=True, node_id="x"), {}),  # any request naming a node is judged as an agent's
    (Proposer(agent=False), {"allow_self_approval": False}),  # a person's, every gate four-eyes
])
def test_a_patch_on_999_gates_walks_each_graph_as_often_as_on_9(monkeypatch, proposer, config):
    """Each gate's ``bypassed`` (and, for an agent, ``before`` and two walks from the patch's influence
    around it) walked the whole graph: 4.2 to 6.5 s of a web request, the run locked. Now none is asked
    of any gate: the graphs are walked as many times (a few: the agent's own reach, the waiting gate's
    action) whatever the number of gates."""
    walks: list[str] = []
    for module, name in [(gates, "reachable"), (gates, "bypassed"), (gates, "downstream"), (policy, "_reached"),
                         (gates.Around, "_walk")]:
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _o=original, _n=name, **k: walks.append(_n) or _o(*a, **k))

    def walked(count: int) -> list[str]:
        walks.clear()
        operations = [{"op": "replace", "path": f"/nodes/{count}/config/expression", "value": "2"}]
        verdict = judge(before=many_gates(count, **config), operations=operations, proposer=proposer,
                        state=RunState(statuses={"g0": "waiting"}))
        assert verdict.after["nodes"][count]["config"]["expression"] == "2"
        return sorted(walks)

    few = walked(9)
    assert walked(999) == few
    assert set(few) == {"reachable"} and len(few) <= 6, few


def test_a_new_way_around_the_last_of_999_gates_is_still_refused():
    """The one gate of 999 nothing led around before: a person's edge from the first to the step
    after it, while it waits for its people."""
    operations = [{"op": "add", "path": "/edges/-", "value": {"from": "g0", "to": "t"}}]
    with pytest.raises(PatchRejected) as refused:
        judge(before=many_gates(), operations=operations, proposer=Proposer(agent=False),
              state=RunState(statuses={"g998": "waiting"}))
    assert (refused.value.extra["rule"], refused.value.extra["node_id"]) == ("gate_bypass", "g998")
    assert "reach t without passing through it" in str(refused.value)


def gates_in_a_loop(count: int) -> dict[str, Any]:
    """A chain of gates a loop jumps back to the start of: each gate dominates the rest, and every
    one of them is upstream of it again, so each is walked around on its own (``Around._walk``)."""
    nodes = [{"id": f"g{g}", "type": "hitl", "config": {"message": "ok?"}} for g in range(count)]
    nodes += [{"id": "s", "type": "transform", "config": {"expression": "1"}},
              {"id": "again", "type": "loop", "config": {"loop_back_to": "g0", "max_iterations": 3,
                                                         "condition": "true", "break_path": "done"}},
              {"id": "done", "type": "transform", "config": {"expression": "1"}}]
    edges = [{"from": "s", "to": "g0"}, *({"from": f"g{g}", "to": f"g{g + 1}"} for g in range(count - 1)),
             {"from": f"g{count - 1}", "to": "again"}]
    return {"nodes": nodes, "edges": edges}


def test_past_its_step_budget_a_walk_around_the_gates_is_refused_not_run_on(monkeypatch):
    """What one pass does not answer (gates on a cycle, from a loop's jump) is walked a gate at a time,
    within ``AROUND_STEPS_MAX`` steps: past them the patch is refused as too many paths to judge."""
    before = gates_in_a_loop(40)
    operations = [{"op": "replace", "path": "/nodes/40/config/expression", "value": "2"}]
    verdict = judge(before=before, operations=operations, proposer=Proposer(agent=True, node_id="x"),
                    state=RunState())
    assert verdict.after["nodes"][40]["config"]["expression"] == "2"

    monkeypatch.setattr(gates, "AROUND_STEPS_MAX", 200)
    with pytest.raises(PatchRejected) as refused:
        judge(before=before, operations=operations, proposer=Proposer(agent=True, node_id="x"), state=RunState())
    assert refused.value.extra["rule"] == "gate_bypass"
    assert "too many to judge" in str(refused.value)
