"""A held patch commutes with the patches applied since it was held when the definitions it would
make and its approver approved read alike to the engine (``workflows.services.patches._as_read``).
That reading is the planner's (``planner.Routes.reading``), not a copy of its routing rule: here it
is pinned against what ``planner.plan`` does with a finished node, so if routing changed, the
commute check would have to follow."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from workflows.definition.ir import compile_definition
from workflows.engine import planner
from workflows.engine.planner import Limits, State, Token
from workflows.models import NodeRun, Run
from workflows.services.patches import _as_read

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OUTPUTS = [{"x": 0}, {"x": 1}, {"x": 2}]  # what the routing node may finish with


def step(node_id: str) -> dict[str, Any]:
    return {"id": node_id, "type": "transform", "config": {"expression": "{'x': 1}", "dispatch": "queue"}}


def edge(source: str, target: str, condition: str | None = None) -> dict[str, str]:
    return {"from": source, "to": target, **({"condition": condition} if condition else {})}


NODES = [step(n) for n in ("a", "b", "c", "d", "e")]
# a's edges out: two branch rules that both hold for x == 1, and two plain edges
EDGES = [edge("a", "b", "output.x == 1"), edge("a", "c", "output.x >= 1"), edge("a", "d"), edge("a", "e")]


def routed(definition: dict[str, Any]) -> list[tuple[list[str], set[tuple[str, str]]]]:
    """What the planner does once ``a`` finishes with each of ``OUTPUTS``: the edges it takes (as
    a set) and the node runs it writes (its successors queued, or skipped as a dead path)."""
    ir = compile_definition(definition)
    out = []
    for output in OUTPUTS:
        finished = Token("a", 0, "transform", NodeRun.Status.COMPLETED, pk=1, output=output, finished_at=T0)
        state = State(run_status=Run.Status.RUNNING, inputs={}, tokens=[finished], now=T0,
                      limits=Limits(max_output_bytes=10**9, max_node_runs=10**6))
        plan = planner.plan(ir, state, 1)
        out.append((sorted(plan.updates[1]["taken"]), {(t.node_id, t.status) for t in plan.inserts}))
    return out


def test_definitions_the_planner_routes_alike_read_alike() -> None:
    """The order of the nodes and of a node's plain edges decides nothing."""
    base = {"nodes": NODES, "edges": EDGES}
    shuffled = {"nodes": NODES[::-1], "edges": [EDGES[3], EDGES[0], EDGES[2], EDGES[1]]}

    assert routed(base) == routed(shuffled)
    assert _as_read(base) == _as_read(shuffled)


def test_definitions_the_planner_routes_differently_read_differently() -> None:
    base = {"nodes": NODES, "edges": EDGES}
    rules_swapped = {"nodes": NODES, "edges": [EDGES[1], EDGES[0], *EDGES[2:]]}  # x == 1 now goes to c
    rule_dropped = {"nodes": NODES, "edges": [edge("a", "b"), *EDGES[1:]]}  # b is a plain edge now

    for other in (rules_swapped, rule_dropped):
        assert routed(base) != routed(other)
        assert _as_read(base) != _as_read(other)


def test_a_loop_s_jump_back_is_read_as_the_jump_the_planner_takes() -> None:
    """An edge from a loop node to its loop_back_to is the jump: its condition routes nothing, so
    moving it among the loop's edges changes nothing; its presence is still compared, as written."""
    loop = {"id": "again", "type": "loop", "config": {"max_iterations": 2, "loop_back_to": "a"}}
    nodes = [step("a"), loop, step("z")]
    jump, out = edge("again", "a", "output.x == 1"), edge("again", "z", "output.x == 2")

    assert _as_read({"nodes": nodes, "edges": [edge("a", "again"), jump, out]}) == \
        _as_read({"nodes": nodes, "edges": [edge("a", "again"), out, jump]})
    assert _as_read({"nodes": nodes, "edges": [edge("a", "again"), jump, out]}) != \
        _as_read({"nodes": nodes, "edges": [edge("a", "again"), out]})


@hypothesis_settings(max_examples=60, deadline=None)
@given(st.permutations(EDGES), st.permutations(EDGES), st.permutations(NODES))
def test_in_any_order_two_definitions_read_alike_exactly_when_the_planner_routes_them_alike(first, second,
                                                                                           nodes) -> None:
    """Both of a's rules hold for x == 1, so their order is all that can tell two orders apart."""
    one, other = {"nodes": NODES, "edges": first}, {"nodes": nodes, "edges": second}

    assert (_as_read(one) == _as_read(other)) == (routed(one) == routed(other))
