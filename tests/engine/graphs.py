"""Generated workflow definitions for the planner's property tests and the differential test.

Two families, each a valid definition the API accepts:

- ``dags``: fan-outs and joins, branch rules on edges (some true, some false, some failing to
  evaluate), ``conditional`` nodes, types with no executor, and nodes that fail.
- ``loop_chains``: chains with loops, nested to any depth the strategy draws, with and without
  a condition (``iteration < k``) and ``max_iterations`` from 1 to 3, and fork-joins (one branch
  maybe behind a branch rule) inside and between them.

Every worker node is a ``transform`` with ``dispatch: "queue"`` whose output is ``{'x': k}``
(``OK``), or whose expression fails at run time (``FAILS``); ``outcome`` gives what a node
returns, for the pure simulation. ``in_decision`` turns them into pure nodes the decision
evaluates (``test_pure``).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

UNKNOWN = "mystery_type"  # a type with no executor: skipped with a warning, its edges carry on
FAILS = "inputs.no_such_input"  # a CEL expression that raises at run time: the node fails
CONDITIONS = ["output.x == 1", "output.x == 0", "output.nothing.deeper == 1"]  # the last raises: false


def ok(k: int) -> str:
    return f"{{'x': {k}}}"


def outcome(node: dict[str, Any]) -> tuple[str, Any]:
    """What a node's executor does in the pure simulation: ``("completed", output)`` or
    ``("failed", error)``, as the real transform executor would."""
    expression = node["config"]["expression"]
    if expression == FAILS:
        return "failed", {"error_type": "ExpressionError", "message": "no such key: no_such_input"}
    return "completed", {"x": int(expression.split(":")[1].strip(" }"))}


Q = {"dispatch": "queue"}


def in_decision(definition: dict[str, Any]) -> dict[str, Any]:
    """The same graph with every transform left to the decision (no ``dispatch: "queue"``)."""
    nodes = [{**n, "config": {k: v for k, v in n["config"].items() if k != "dispatch"}} for n in definition["nodes"]]
    return {**definition, "nodes": nodes}


@st.composite
def dags(draw: st.DrawFn, failures: bool = True) -> dict[str, Any]:
    n = draw(st.integers(2, 7))
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    for i in range(n):
        kind = draw(st.sampled_from(["transform"] * 5 + ["conditional", UNKNOWN]))
        node_id = f"n{i}"
        if kind == "transform":
            fails = failures and draw(st.integers(0, 9)) == 0
            nodes.append({"id": node_id, "type": kind,
                          "config": {"expression": FAILS if fails else ok(draw(st.integers(0, 1))), **Q}})
        else:
            nodes.append({"id": node_id, "type": kind, "config": {}})
        if i == 0:
            continue
        parents = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3, min_size=0 if i > 1 else 1))
        for p in sorted(parents):
            condition = draw(st.none() | st.sampled_from(CONDITIONS))
            edges.append({"from": f"n{p}", "to": node_id, **({"condition": condition} if condition else {})})
    return {"nodes": nodes, "edges": edges}


# A block is a list of items; an item is a node (its output's x) or a loop around a block.
# A fork is a node, two branches (one maybe behind a branch rule) and a join.
forks = st.tuples(st.just("fork"), st.integers(0, 1), st.none() | st.sampled_from(CONDITIONS[:2]))
blocks = st.recursive(
    st.lists(st.integers(0, 1).map(lambda x: ("node", x)) | forks, min_size=1, max_size=2),
    lambda inner: st.lists(
        st.integers(0, 1).map(lambda x: ("node", x)) | forks
        | st.tuples(st.just("loop"), inner, st.integers(1, 3), st.none() | st.integers(0, 3)),
        min_size=1, max_size=3),
    max_leaves=6,
)


@st.composite
def loop_chains(draw: st.DrawFn) -> dict[str, Any]:
    """A chain whose items are nodes and loops (a loop wraps a block, which may hold loops)."""
    top = draw(blocks)
    if not any(item[0] == "loop" for item in top):
        top = [("loop", top, draw(st.integers(1, 3)), None)]
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    counter = iter(range(10_000))

    def render(block: list[Any]) -> tuple[str, str]:
        first = last = ""
        for item in block:
            if item[0] == "node":
                node_id = f"t{next(counter)}"
                nodes.append({"id": node_id, "type": "transform", "config": {"expression": ok(item[1]), **Q}})
                head = tail = node_id
            elif item[0] == "fork":
                _, x, condition = item
                n = next(counter)
                head, left, right, tail = f"f{n}", f"l{n}", f"r{n}", f"j{n}"
                for node_id in (head, left, right, tail):
                    nodes.append({"id": node_id, "type": "transform", "config": {"expression": ok(x), **Q}})
                edges.extend([{"from": head, "to": left, **({"condition": condition} if condition else {})},
                              {"from": head, "to": right}, {"from": left, "to": tail}, {"from": right, "to": tail}])
            else:
                _, body, max_iterations, below = item
                head, body_tail = render(body)
                tail = f"loop{next(counter)}"
                config: dict[str, Any] = {"max_iterations": max_iterations, "loop_back_to": head}
                if below is not None:
                    config["condition"] = f"iteration < {below}"
                nodes.append({"id": tail, "type": "loop", "config": config})
                edges.append({"from": body_tail, "to": tail})
                edges.append({"from": tail, "to": head})
            if last:
                edges.append({"from": last, "to": head})
            first = first or head
            last = tail
        return first, last

    _, last = render(top)
    nodes.append({"id": "end", "type": "transform", "config": {"expression": ok(1), **Q}})
    edges.append({"from": last, "to": "end"})
    return {"nodes": nodes, "edges": edges}


def nested_loops() -> dict[str, Any]:
    """The named example of issue 16: a → b → inner? (back to b, twice) → c → outer? (back to a,
    twice) → d. Each outer pass runs the inner loop twice; the run ends with d."""
    t = {"type": "transform"}
    return {
        "nodes": [{"id": "a", **t, "config": {"expression": ok(0), **Q}}, {"id": "b", **t, "config": {"expression": ok(0), **Q}},
                  {"id": "inner", "type": "loop", "config": {"max_iterations": 2, "loop_back_to": "b"}},
                  {"id": "c", **t, "config": {"expression": ok(0), **Q}},
                  {"id": "outer", "type": "loop", "config": {"max_iterations": 2, "loop_back_to": "a"}},
                  {"id": "d", **t, "config": {"expression": ok(1), **Q}}],
        "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "inner"}, {"from": "inner", "to": "b"},
                  {"from": "inner", "to": "c"}, {"from": "c", "to": "outer"}, {"from": "outer", "to": "a"},
                  {"from": "outer", "to": "d"}],
    }
