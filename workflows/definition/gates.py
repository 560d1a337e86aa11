"""Human gates in a definition's graph: what a gate guards, and which nodes can be reached around it.

Pure functions of a definition (the JSON document, not the compiled IR, so a patch can be judged
before it is stored). The patch policy uses them to keep gates out of an agent's reach, and an
approval records the digest of the action its gate guards, so a later change to that action
voids the decision instead of riding on it.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import heapq
import json
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from .validation import LOOP_KEYS, control_edges, loop_targets

GATE = "hitl"

# What an edge out of a gate may test: the gate's own outcome, nothing else (normalized spelling).
_OUTCOMES = {"output.approved", "!output.approved", "output.approved==true", "output.approved==false",
             "output.approved!=true", "output.approved!=false", "true==output.approved",
             "false==output.approved"}
# A settled gate's ``output.decision``: the approval's status (``approvals``, which this module
# cannot import; tests/approvals/test_decisions.py compares them).
DECISIONS = ("approved", "rejected", "expired")
_OUTCOMES |= {f'output.decision{op}"{value}"' for op in ("==", "!=") for value in DECISIONS}


_MEMO: contextvars.ContextVar[dict[tuple[str, int], tuple[Any, Any]] | None] = contextvars.ContextVar(
    "gates_memo", default=None)
T = TypeVar("T")


@contextlib.contextmanager
def memo() -> Iterator[None]:
    """Within: each definition's graph (nodes, successors, predecessors, entries) is built once, not
    once a gate. For a caller that changes no definition meanwhile (a patch's judgement: a
    one-operation patch on a run of 480 gates and 30,000 edges rebuilt the adjacency 2,402 times,
    26 s of a web thread with the run locked). What these return is then shared: read it only."""
    token = _MEMO.set({})
    try:
        yield
    finally:
        _MEMO.reset(token)


@contextlib.contextmanager
def unmemoized() -> Iterator[None]:
    """Within ``memo()``: for a caller that changes a definition in place (a probe applying a patch's
    operations one at a time to one document), every graph built anew."""
    token = _MEMO.set(None)
    try:
        yield
    finally:
        _MEMO.reset(token)


def _memoized(kind: str, of: Any, build: Callable[[], T]) -> T:
    kept = _MEMO.get()
    if kept is None:
        return build()
    hit = kept.get((kind, id(of)))
    if hit is None or hit[0] is not of:  # the object itself is kept with it: its id is not reused meanwhile
        hit = kept[(kind, id(of))] = (of, build())
    return hit[1]


def memoized(kind: str, of: Any, build: Callable[[], T]) -> T:
    """``build()`` once per document while a judgement memoizes (the patch policy's own maps too)."""
    return _memoized(kind, of, build)


def nodes_by_id(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return _memoized("nodes", definition, lambda: {
        n["id"]: n for n in definition.get("nodes", []) if isinstance(n, dict) and isinstance(n.get("id"), str)})


def gates(definition: dict[str, Any]) -> list[str]:
    return [n["id"] for n in definition.get("nodes", []) if isinstance(n, dict) and n.get("type") == GATE]


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def jumps(node: dict[str, Any]) -> list[str]:
    """Where a loop node sends control besides its edges: its jump back and its exits."""
    config = node.get("config")
    if node.get("type") != "loop" or not isinstance(config, dict):
        return []
    return [target for key in LOOP_KEYS for target in loop_targets(config.get(key))]


def edges(definition: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """The edges control runs along, as the engine compiles them (``validation.control_edges``: a
    loop's exits are edges, its edge to its own jump target is not)."""
    return _memoized("edges", definition, lambda: control_edges(definition))


def successors(definition: dict[str, Any]) -> dict[str, list[str]]:
    """Every way control can move from a node: its edges (``edges``), and a loop node's jump back."""
    return _memoized("successors", definition, lambda: _successors(definition))


def _successors(definition: dict[str, Any]) -> dict[str, list[str]]:
    nodes = nodes_by_id(definition)
    adjacency: dict[str, list[str]] = {node_id: [] for node_id in nodes}
    for source, target, _ in edges(definition):
        adjacency[source].append(target)
    for node_id, node in nodes.items():
        back = _jump_back(node)
        if back in adjacency:
            adjacency[node_id].append(back)
    return adjacency


def _jump_back(node: dict[str, Any]) -> str | None:
    """Where a loop node sends control back to (``loop_back_to``), if it names a node."""
    config = node.get("config")
    back = config.get("loop_back_to") if node.get("type") == "loop" and isinstance(config, dict) else None
    return back if isinstance(back, str) else None


def reachable(adjacency: dict[str, list[str]], starts: Iterable[str], avoid: str | None = None) -> set[str]:
    """Nodes reachable from ``starts`` (included) without passing through ``avoid``."""
    seen: set[str] = set()
    todo = [s for s in starts if s in adjacency and s != avoid]
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        todo.extend(t for t in adjacency[node] if t != avoid and t not in seen)
    return seen


def predecessors(adjacency: dict[str, list[str]]) -> dict[str, list[str]]:
    return _memoized("predecessors", adjacency, lambda: _predecessors(adjacency))


def _predecessors(adjacency: dict[str, list[str]]) -> dict[str, list[str]]:
    reverse: dict[str, list[str]] = {node: [] for node in adjacency}
    for source, targets in adjacency.items():
        for target in targets:
            reverse[target].append(source)
    return reverse


def entries(definition: dict[str, Any]) -> list[str]:
    """Nodes no edge leads to (``edges``): where a run starts, as the engine's ``IR.entries``."""
    def build() -> list[str]:
        targets = {target for _, target, _ in edges(definition)}
        return [n for n in nodes_by_id(definition) if n not in targets]

    return _memoized("entries", definition, build)


def downstream(definition: dict[str, Any], gate: str) -> set[str]:
    """Nodes after ``gate``: reachable from it (not through it again)."""
    adjacency = successors(definition)
    return reachable(adjacency, adjacency.get(gate, []), avoid=gate) if gate in adjacency else set()


def bypassed(definition: dict[str, Any], gate: str, *, after_it: Iterable[str] = ()) -> set[str]:
    """Nodes downstream of ``gate`` (or named in ``after_it``: the nodes that were downstream of it
    before a patch, which a patch may have cut loose of it) that can be reached without passing
    through it: from where the run starts, or from a node upstream of the gate. A node runs once
    each incoming edge has delivered or is dead, so one such path lets it run whatever the gate's
    people decide."""
    adjacency = successors(definition)
    if gate not in adjacency:
        return set()
    reverse = predecessors(adjacency)
    upstream = reachable(reverse, reverse[gate], avoid=gate)
    guarded_nodes = downstream(definition, gate) | (set(after_it) & set(adjacency))
    return reachable(adjacency, [*entries(definition), *upstream], avoid=gate) & guarded_nodes


def guarded(definition: dict[str, Any], gate: str) -> list[str]:
    """The action a gate guards: the nodes after it, up to the next gate or the end."""
    return sorted(_guarded_from(definition, gate, successors(definition).get(gate, [])))


def _guarded_from(definition: dict[str, Any], gate: str, starts: Iterable[str]) -> set[str]:
    """The nodes reached from ``starts`` up to the next gate or the end, not through ``gate``."""
    adjacency = successors(definition)
    nodes = nodes_by_id(definition)
    seen: set[str] = set()
    todo = list(starts)
    while todo:
        node = todo.pop()
        if node in seen or node == gate or nodes[node].get("type") == GATE:
            continue
        seen.add(node)
        todo.extend(adjacency[node])
    return seen


Route = tuple[str, "str | None"]  # a decision edge: its source (a gate, or a step carrying one's decision), its rule

# How many edge steps following the gates' decisions may take, for each document, before the patch
# is refused as one that cannot be judged in time (``RoutesTooMany``). Nodes are taken in the order
# control reaches them (``_control_order``), so a definition without loops steps along each edge
# once (the operator's bounds: 5,000 edges); each pass of a loop's jump back steps along its body again.
ROUTE_STEPS_MAX = 500_000


class RoutesTooMany(Exception):
    """The routes of the gates' decisions in a definition are too many to follow in time."""


# How many steps ``Around`` may walk, for each document, past what its one pass over the graph
# answers (a gate on a cycle, from a loop's jump back, that ancestors of its own follow it on),
# before the patch is refused as one that cannot be judged in time (``RoutesTooMany``).
AROUND_STEPS_MAX = 500_000


class Around:
    """``downstream``, ``bypassed`` and ``before`` of every gate of one document, from one pass over
    its graph, as bit sets over ``number`` (node id → bit, shared by the documents a patch
    compares). Asking ``bypassed`` of each gate walked the whole graph several times a gate: a
    one-operation patch on a chain of 999 gates, each wired to the next four, took 9.9 s to judge
    (6.5 s of a web request in a red team's repro), the run locked; now 0.5 s, most of it the
    schema's validation. Derived from those definitions, never
    instead of them (``tests/agents/test_gates_at_once.py`` holds each to them): what is after a
    node, and what is before it, is one closure of the graph's strongly connected parts; what is
    reached from where the run starts without passing a gate is what the gate does not dominate
    (a dominator tree from a root over the entries). Only the ancestors of a gate that this leaves
    out (on a cycle through it, or cut off from every entry) are walked, a gate at a time, within
    ``AROUND_STEPS_MAX`` steps."""

    def __init__(self, definition: dict[str, Any], number: Mapping[str, int]) -> None:
        adjacency = successors(definition)
        self._number = number
        self._successors = {number[n]: [number[t] for t in targets] for n, targets in adjacency.items()}
        self._nodes = bits(self._successors)
        self._after = _closure(self._successors)
        reverse = predecessors(adjacency)
        self._upstream = _closure({number[n]: [number[s] for s in sources] for n, sources in reverse.items()})
        settled = _control_predecessors(definition)
        self._settled = _closure({number[n]: [number[s] for s in sources] for n, sources in settled.items()})
        self._free = Dominance(self._successors, [number[n] for n in entries(definition)])
        self._bypassed: dict[str, int] = {}
        self.steps = 0

    def downstream(self, gate: str) -> int:
        """``downstream(definition, gate)``."""
        at = self._number.get(gate)
        return self._after.get(at, 0) & ~(1 << at) if at is not None else 0

    def before(self, gate: str) -> int:
        """``before(definition, gate)``."""
        at = self._number.get(gate)
        return self._settled.get(at, 0) & ~(1 << at) if at is not None else 0

    def bypassed(self, gate: str, *, after_it: int = 0) -> int:
        """``bypassed(definition, gate, after_it=...)``, ``after_it`` as bits."""
        reached = self._reached_around(gate)
        return reached & (self.downstream(gate) | (after_it & self._nodes)) if reached else 0

    def _reached_around(self, gate: str) -> int:
        """What ``bypassed`` walks to: reached without passing ``gate`` from where the run starts (what
        it does not dominate) or from a node upstream of it (the ancestors so left out, walked)."""
        if gate not in self._bypassed:
            at = self._number.get(gate)
            if at is None or at not in self._successors:
                return 0
            reached = self._free.without(at)
            left = self._upstream[at] & ~(1 << at) & ~reached
            self._bypassed[gate] = reached | self._walk(left, at, reached) if left else reached
        return self._bypassed[gate]

    def _walk(self, starts: int, avoid: int, known: int) -> int:
        """The nodes reached from ``starts`` not through ``avoid``, past those in ``known`` (everything
        after one of them is in it already)."""
        seen = 0
        todo = list(_members(starts))
        while todo:
            node = todo.pop()
            if seen >> node & 1:
                continue
            seen |= 1 << node
            self.steps += 1 + len(self._successors[node])
            if self.steps > AROUND_STEPS_MAX:
                raise RoutesTooMany(f"more than {AROUND_STEPS_MAX} steps around the gates")
            todo.extend(t for t in self._successors[node] if t != avoid and not (seen | known) >> t & 1)
        return seen


class Dominance:
    """What is reached from ``starts`` along ``adjacency`` (numbered: node → its targets), and, for
    any node, what is still reached without passing through it: ``reachable(adjacency, starts,
    avoid=node)`` for every node at once. A node is reached around another unless the other
    dominates it (every way to it from the starts passes through the other: Cooper, Harvey and
    Kennedy's iterative dominator tree, from a root over the starts)."""

    _ROOT = -1

    def __init__(self, adjacency: Mapping[int, list[int]], starts: Iterable[int]) -> None:
        roots = [s for s in dict.fromkeys(starts) if s in adjacency]
        order: list[int] = []  # depth first, each node after all it leads on to (post order)
        seen = {self._ROOT}
        walk = [(self._ROOT, iter(roots))]
        while walk:
            node, onward = walk[-1]
            for target in onward:
                if target not in seen:
                    seen.add(target)
                    walk.append((target, iter(adjacency[target])))
                    break
            else:
                walk.pop()
                order.append(node)
        place = {node: i for i, node in enumerate(order)}
        sources: dict[int, list[int]] = {node: [] for node in order}
        for root in roots:
            sources[root].append(self._ROOT)
        for node in order[:-1]:
            for target in adjacency[node]:
                sources[target].append(node)
        idom = {self._ROOT: self._ROOT}

        def meet(a: int, b: int) -> int:
            while a != b:
                while place[a] < place[b]:
                    a = idom[a]
                while place[b] < place[a]:
                    b = idom[b]
            return a

        changed = True
        while changed:
            changed = False
            for node in reversed(order[:-1]):
                new = None
                for source in sources[node]:
                    if source in idom:
                        new = source if new is None else meet(source, new)
                if idom.get(node) != new:
                    idom[node] = new
                    changed = True
        self._under = {node: 1 << node for node in order[:-1]}
        for node in order[:-1]:  # a node's dominator comes after it in post order
            if idom[node] != self._ROOT:
                self._under[idom[node]] |= self._under[node]
        self.reached = bits(self._under)

    def without(self, node: int) -> int:
        """``reachable(adjacency, starts, avoid=node)``."""
        return self.reached & ~self._under.get(node, 1 << node)


def bits(nodes: Iterable[int]) -> int:
    """A bit set of numbered nodes."""
    found = 0
    for node in nodes:
        found |= 1 << node
    return found


def _members(bits: int) -> Iterator[int]:
    while bits:
        low = bits & -bits
        yield low.bit_length() - 1
        bits ^= low


def named(bits: int, names: list[str]) -> set[str]:
    """The ids of a bit set over a numbering (``names[i]`` is bit ``i``'s)."""
    return {names[i] for i in _members(bits)}


def _closure(adjacency: Mapping[int, list[int]]) -> dict[int, int]:
    """Each node's bits of what it reaches in one step or more (itself only on a cycle): Tarjan's
    strongly connected parts, each after those it leads to, so a part's is its members' targets' own."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    closure: dict[int, int] = {}
    for root in adjacency:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        walk = [(root, iter(adjacency[root]))]
        while walk:
            node, onward = walk[-1]
            for target in onward:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    walk.append((target, iter(adjacency[target])))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                walk.pop()
                if walk:
                    low[walk[-1][0]] = min(low[walk[-1][0]], low[node])
                if low[node] == index[node]:
                    part = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        part.append(member)
                        if member == node:
                            break
                    members = bits(part)
                    reached = members if len(part) > 1 else 0
                    for member in part:
                        for target in adjacency[member]:
                            reached |= members if members >> target & 1 else closure[target] | 1 << target
                    for member in part:
                        closure[member] = reached
    return closure


def deciders(definition: dict[str, Any], gates_of: str | Iterable[str]) -> dict[str, str]:
    """The steps that carry the decision of one of ``gates_of`` on to a rule that routes on it, each
    with one such gate (for what is said): a step whose output is computed from what it reads
    (``registry.answers_outside`` is false: a transform, a conditional, a loop, an agent, a child
    run) and reads the gate or another such step (in its config or an edge into it, or, for a
    type that reads its predecessors' outputs or passes them on, by an edge), and from which such
    a step with a branch rule is reached that way (a step that only reports the decision routes
    nothing). ``review → decide → pay [$.approved == true]``: loosened, a rejection paid."""
    wanted = _gates_named(gates_of)

    def build() -> dict[str, str]:
        from workflows import registry

        nodes = nodes_by_id(definition)
        readers = _readers(definition)
        after = successors(definition)
        rules = _edges_at(definition)
        fed_by: dict[str, set[str]] = {}
        found = {gate: gate for gate in wanted if gate in nodes}
        todo = list(found)
        while todo:
            carrier = todo.pop()
            onward = [n for n in after.get(carrier, []) if registry.takes_input(nodes[n].get("type"))]
            for node_id in [*readers.get(carrier, ()), *onward]:
                if node_id == carrier or registry.answers_outside(nodes[node_id].get("type")):
                    continue
                fed_by.setdefault(node_id, set()).add(carrier)
                if node_id not in found:
                    found[node_id] = found[carrier]
                    todo.append(node_id)
        routing = [n for n in found if n not in wanted and rules.get(n, ([], [], []))[2]]
        kept = set(routing)
        while routing:  # back from each step with rules to the steps that carry the decision to it
            node = routing.pop()
            for carrier in fed_by.get(node, ()):
                if carrier not in kept and carrier not in wanted:
                    kept.add(carrier)
                    routing.append(carrier)
        return {n: found[n] for n in sorted(kept)}

    return _memoized(f"deciders:{','.join(wanted)}", definition, build)


def _gates_named(gates_of: str | Iterable[str]) -> tuple[str, ...]:
    """One gate's id, or several: sorted, each once."""
    return (gates_of,) if isinstance(gates_of, str) else tuple(sorted(set(gates_of)))


def held_edges(definition: dict[str, Any], node_id: str) -> tuple[list[Any], list[Any]]:
    """The edges into ``node_id`` and its branch rules out, in authoring order: what a step that
    carries a decision on routes by (its plain edges out are judged by ``crossed``)."""
    _, into, rules = _edges_at(definition).get(node_id, ([], [], []))
    return into, rules


def touching(definition: Any, node_id: str) -> list[Any]:
    """The edges into and out of a node, as written (``[from, to, condition]``), in authoring order
    (which routes); from one index of the document's edges."""
    if not isinstance(definition, dict):
        return []
    return _edges_at(definition).get(node_id, ([], [], []))[0]


def _edges_at(definition: dict[str, Any]) -> dict[str, tuple[list[Any], list[Any], list[Any]]]:
    """Each node's edges (in or out), edges in, and branch rules out, as written, once a document:
    a scan of every edge for each gate and each step carrying a decision took seconds with a hundred
    gates (a red-team helper's measurement)."""
    def build() -> dict[str, tuple[list[Any], list[Any], list[Any]]]:
        found: dict[Any, tuple[list[Any], list[Any], list[Any]]] = {}
        edges_written = definition.get("edges", [])
        for e in edges_written if isinstance(edges_written, list) else []:
            if not isinstance(e, dict):
                continue
            written = [e.get("from"), e.get("to"), e.get("condition")]
            source, target = e.get("from"), e.get("to")
            for end in dict.fromkeys((source, target)):
                if isinstance(end, str):
                    found.setdefault(end, ([], [], []))[0].append(written)
            if isinstance(target, str):
                found.setdefault(target, ([], [], []))[1].append(written)
            if isinstance(source, str) and e.get("condition"):
                found.setdefault(source, ([], [], []))[2].append(written)
        return found

    return _memoized("edges_at", definition, build)


def _route_masks(definition: dict[str, Any], gates_of: tuple[str, ...], index: dict[Route, int]) -> dict[str, int]:
    """For each node reached from the gates' edges, the decision edges it is reached by, as a bit
    set over ``index`` (shared by the documents compared): the last such edge on each path, one of a
    gate's own or a branch rule that reads the output of a step carrying a decision on
    (``deciders``). Later gates are walked through: one narrows what an earlier decision reaches,
    it does not reset it (an owner's own gate on the declined branch, wired to the payment, paid
    what four eyes rejected). Deterministic: edges in authoring order, first reached first."""
    carriers = deciders(definition, gates_of)
    out = _routes_out(definition)
    order = _control_order(definition)
    masks: dict[str, int] = {}
    todo: list[tuple[int, str]] = []  # a heap: the node control reaches first is taken first
    queued: set[str] = set()

    def bit(route: Route) -> int:
        return 1 << index.setdefault(route, len(index))

    def reach(target: str, mask: int) -> None:
        if mask & ~masks.get(target, 0):
            masks[target] = masks.get(target, 0) | mask
            if target not in queued:
                queued.add(target)
                heapq.heappush(todo, (order.get(target, len(order)), target))

    for gate in gates_of:
        for target, condition in out.get(gate, ()):
            reach(target, bit((gate, _normal(condition))))
    steps = 0
    while todo:
        _, node = heapq.heappop(todo)
        queued.discard(node)
        if node in gates_of:
            continue  # a gate's own decision routes on from it (its edges above), not what reached it
        mask = masks[node]
        for target, condition in out.get(node, ()):
            steps += 1
            if steps > ROUTE_STEPS_MAX:
                raise RoutesTooMany(f"more than {ROUTE_STEPS_MAX} steps following the gates' decisions")
            decisive = condition and node in carriers and reads_output(condition)
            reach(target, bit((node, _normal(condition))) if decisive else mask)
    return masks


def _control_order(definition: dict[str, Any]) -> dict[str, int]:
    """Each node's place in the order control reaches it along the edges (``edges``: no loop's jump
    back), a topological order (Kahn's); nodes on a cycle of edges, which validation refuses, after
    the rest. Walked in it, a node's routes have all arrived before it passes them on."""
    def build() -> dict[str, int]:
        nodes = list(nodes_by_id(definition))
        incoming = {n: 0 for n in nodes}
        after: dict[str, list[str]] = {n: [] for n in nodes}
        for source, target, _ in edges(definition):
            if source in after and target in incoming:
                after[source].append(target)
                incoming[target] += 1
        ready = deque(n for n in nodes if not incoming[n])
        placed: dict[str, int] = {}
        while ready:
            node = ready.popleft()
            placed[node] = len(placed)
            for target in after[node]:
                incoming[target] -= 1
                if not incoming[target]:
                    ready.append(target)
        for node in nodes:
            placed.setdefault(node, len(placed))
        return placed

    return _memoized("control_order", definition, build)


def _routes_out(definition: dict[str, Any]) -> dict[str, list[tuple[str, str | None]]]:
    """Each node's ways on: its edges (``edges``: with their rules) and a loop's jump back (no rule)."""
    def build() -> dict[str, list[tuple[str, str | None]]]:
        found: dict[str, list[tuple[str, str | None]]] = {n: [] for n in nodes_by_id(definition)}
        for source, target, condition in edges(definition):
            if source in found:
                found[source].append((target, condition))
        for node_id, node in nodes_by_id(definition).items():
            back = _jump_back(node)
            if back in found:
                found[node_id].append((back, None))
        return found

    return _memoized("routes_out", definition, build)


@functools.lru_cache(maxsize=4096)
def reads_output(condition: str) -> bool:
    """Whether a branch rule reads the output it routes, or a loop's condition the output it judges
    (``$.x``, ``output.x``); one that reads only the run's inputs (or a loop's count) routes the
    same whatever a decision, or its upstream, was. One that does not compile is taken to."""
    from .expressions import ExpressionError, expand_shorthand, fields_read

    try:
        return fields_read(expand_shorthand(condition), "output") != frozenset()
    except ExpressionError:
        return True


def outcomes(definition: dict[str, Any], gate: str) -> dict[str, set[Route]]:
    """Each node reached from ``gate``'s edges, with the decision edges it is reached by
    (``_route_masks``)."""
    index: dict[Route, int] = {}
    masks = _route_masks(definition, (gate,), index)
    routes = sorted(index, key=index.__getitem__)
    return {node: {routes[i] for i in range(len(routes)) if mask >> i & 1} for node, mask in masks.items()}


def _normal(condition: str | None) -> str | None:
    if not condition:
        return None
    from .expressions import expand_shorthand

    return "".join(expand_shorthand(condition).split()).replace("'", '"')


def crossed(before: dict[str, Any], after: dict[str, Any], gates_of: str | Iterable[str]) -> set[str]:
    """Nodes reached before from ``gates_of``' decisions that ``after`` reaches by a decision edge
    that did not reach them before: the declined branch wired into the approved one (an edge
    notify → pay: on a rejection notify runs, and pay, a join of the gate's dead edge and notify's,
    runs too), past a step that carries the decision on, or through a gate of the proposer's own:
    the payment goes out whatever the gate's people decide. One walk of each document for every
    gate together; ``RoutesTooMany`` past ``ROUTE_STEPS_MAX`` steps."""
    return set(crossings(before, after, gates_of))


def crossings(before: dict[str, Any], after: dict[str, Any], gates_of: str | Iterable[str]) -> dict[str, list[str]]:
    """``crossed``'s nodes, each with the gates whose decision reaches it anew (a route's source is
    the gate, or a step carrying its decision on: ``deciders``)."""
    wanted = _gates_named(gates_of)
    index: dict[Route, int] = {}
    was = _route_masks(before, wanted, index)
    now = _route_masks(after, wanted, index)
    fresh = {node: mask & ~was[node] for node, mask in now.items() if node in was and mask & ~was[node]}
    if not fresh:
        return {}
    routes = sorted(index, key=index.__getitem__)
    carried = {**deciders(before, wanted), **deciders(after, wanted)}
    return {node: sorted({source if source in wanted else carried.get(source, source)
                          for i, (source, _) in enumerate(routes) if mask >> i & 1})
            for node, mask in sorted(fresh.items())}


def guarding(definition: dict[str, Any], node_id: str) -> list[str]:
    """The gates whose action (``guarded``) holds ``node_id``: those from which it is reached with
    no other gate between. One walk back from the node, where asking ``guarded`` of every gate
    walked the graph once a gate (a workflow node's start with 800 gates and 5,000 edges: 7 s of a
    worker). ``tests/agents/test_gates.py`` holds the two to one answer."""
    adjacency = successors(definition)
    nodes = nodes_by_id(definition)
    if node_id not in adjacency or nodes[node_id].get("type") == GATE:
        return []
    reverse = predecessors(adjacency)
    found: set[str] = set()
    seen = {node_id}
    todo = list(reverse[node_id])
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        if nodes[node].get("type") == GATE:
            found.add(node)  # the walk stops at a gate: a gate before it guards its own action
            continue
        todo.extend(reverse[node])
    return sorted(found)


def binding(definition: dict[str, Any], node_id: str) -> list[str]:
    """The gates whose approval binds what ``node_id`` does: those whose action holds it
    (``guarding``), and those whose action reads what it makes, through the steps after it and the
    steps that read it (``feeders``' edges, walked forward): a child run that supplies an approved
    payment's amount is part of what was approved, as the step that computes it is (rewritten by its
    own agent after the approval, the payment sent what nobody approved: a red team's find). Two walks,
    whatever the number of gates."""
    adjacency = successors(definition)
    if node_id not in adjacency:
        return []
    nodes = nodes_by_id(definition)
    readers = _readers(definition)
    onward = {n: [*adjacency[n], *readers.get(n, ())] for n in adjacency}
    fed = reachable(onward, [node_id]) | {node_id}
    reverse = predecessors(adjacency)
    found: set[str] = set()
    seen: set[str] = set()
    todo = [p for n in fed if nodes[n].get("type") != GATE for p in reverse[n]]
    while todo:  # back from each, up to the first gate on the way (``guarding``'s walk, from them all)
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        if nodes[node].get("type") == GATE:
            found.add(node)
            continue
        todo.extend(reverse[node])
    return sorted(found)


def feeders(definition: dict[str, Any], gate: str, action: Iterable[str]) -> set[str]:
    """The nodes whose outputs ``gate``'s action reads (and theirs in turn) that need not have run
    when the gate asks: upstream of a node of the action along an edge (what it joins), or named by
    one's config or by the condition of an edge into one (``$nodes.quote``), neither the gate nor
    upstream of it (those have all run once the gate asks). An approved payment reads its amount
    from such a step: rewritten after the approval, the payment sent what nobody approved."""
    return _bound(definition, gate, action, bodies={}) - set(action)


def _bound(definition: dict[str, Any], gate: str | None, action: Iterable[str], *,
           bodies: Mapping[str, Collection[str]], leave_out: Iterable[str] = ()) -> set[str]:
    """What approving ``gate`` binds besides the gate: its ``action`` (less what ``leave_out``
    names), what that reads that may still run after the gate asks (``feeders``), and every loop
    whose jump runs again any of those without running the gate again (``bodies``; one in the
    action, the gate's too), each taking in what it reads in turn, until nothing more is found. A
    loop over a step the action reads decides which pass's output the action reads (an author's
    paging loop lowered after the approval, the payment sent its first page's amount), and a node
    ``leave_out`` names that the action reads, or a loop of its that runs a bound node again, is
    part of it after all (an agent inside the approved action added the step that the author's
    ``has(nodes.adjust)`` read: the payment sent its amount, the gate not asked again). ``gate``
    None: ``action`` is the whole definition, and nothing is before it. One walk: each node and
    each loop's body once."""
    nodes = nodes_by_id(definition)
    reverse = reads_from(definition)
    if gate is not None and gate not in reverse:
        return set()
    asked_after = before(definition, gate) | {gate} if gate is not None else set()
    in_action, left_out = set(action), set(leave_out)
    rerun_by: dict[str, list[str]] = {}
    for loop, reruns in bodies.items():
        if loop in nodes and (loop in in_action or gate not in reruns):  # (a loop that runs the gate again asks)
            for node in reruns:
                rerun_by.setdefault(node, []).append(loop)
    found = {n for n in in_action if n in nodes and n not in left_out}
    todo = [*found, *([gate] if gate is not None else [])]
    while todo:
        node = todo.pop()
        onward = [*(s for s in reverse[node] if s not in asked_after), *rerun_by.get(node, ())] if node != gate else (
            rerun_by.get(node, []))
        for source in onward:
            if source not in found and source != gate:
                found.add(source)
                todo.append(source)
    return found


def reads_from(definition: dict[str, Any]) -> dict[str, list[str]]:
    """What each node reads: its sources along the edges control runs on (``_control_predecessors``:
    a loop's jump back carries no output into what it runs again) and the nodes it names, in its
    config or in the condition of an edge into it (``_reads``). The one notion of a read that
    ``feeders`` walks back and the patch policy's ``conditions_fed`` forward (``read_by``)."""
    def build() -> dict[str, list[str]]:
        reverse, reads = _control_predecessors(definition), _reads(definition)
        return {node: [*sources, *sorted(s for s in reads.get(node, ()) if s in reverse)]
                for node, sources in reverse.items()}

    return _memoized("reads_from", definition, build)


def read_by(definition: dict[str, Any]) -> dict[str, list[str]]:
    """``reads_from`` turned round: each node, with the nodes that read its output."""
    return _memoized("read_by", definition, lambda: _predecessors(reads_from(definition)))


def before(definition: dict[str, Any], node_id: str) -> set[str]:
    """The nodes that have settled before ``node_id`` runs: upstream of it along the edges control
    runs on, no loop's jump back (a jump makes what runs beside it on a pass look upstream of it),
    and no edge a loop's jump is spelled as."""
    reverse = _control_predecessors(definition)
    return reachable(reverse, reverse.get(node_id, ()), avoid=node_id)


def _control_predecessors(definition: dict[str, Any]) -> dict[str, list[str]]:
    """Each node's sources along the edges control runs on (``edges``), no loop's jump back: every
    one of them has settled before the node runs."""
    def build() -> dict[str, list[str]]:
        reverse: dict[str, list[str]] = {node_id: [] for node_id in nodes_by_id(definition)}
        for source, target, _ in edges(definition):
            if target in reverse and source in reverse:
                reverse[target].append(source)
        return reverse

    return _memoized("control_predecessors", definition, build)


def _readers(definition: dict[str, Any]) -> dict[str, list[str]]:
    """``_reads`` turned round: each node, with the nodes that read its output."""
    def build() -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for reader, read in _reads(definition).items():
            for source in sorted(read):
                found.setdefault(source, []).append(reader)
        return found

    return _memoized("readers", definition, build)


def _reads(definition: dict[str, Any]) -> dict[str, set[str]]:
    """Each node's references to other nodes' outputs: in its config, and in its incoming edges'
    conditions (the executor's loading rule, ``referenced_nodes``)."""
    from .references import referenced_nodes

    def build() -> dict[str, set[str]]:
        found = {node_id: referenced_nodes(node.get("config")) for node_id, node in nodes_by_id(definition).items()}
        for _, target, condition in edges(definition):
            if condition and target in found:
                found[target] |= referenced_nodes(condition)
        return found

    return _memoized("reads", definition, build)


def action_digest(definition: dict[str, Any], gate: str | None, *, bodies: Mapping[str, Collection[str]],
                  leave_out: Iterable[str] = ()) -> str:
    """A digest of what approving ``gate`` lets run: the gate's own definition, the definitions of
    the nodes it guards and every edge into or out of them (in authoring order, which routes: an
    edge in decides when a node runs, an edge out where it goes), and every loop whose jump runs a
    node of it again without passing through the gate (``bodies``: loop id → what its jump runs
    again, the planner's ``loop_reruns``): such a loop's bound, condition and jump decide how many
    times the approved action runs on the one approval (a payment joined with a step of a paging
    loop pays on every page), though the loop may lie outside what ``guarded`` walks (before
    another gate, or beside the action). A loop that runs the gate again is not: the gate asks on
    every pass. And what the action, and such a loop's condition, read that may still run after the
    approval (``feeders``), with every edge into those and every branch rule out of them: the amount
    a payment sends is part of what was approved, and so is the step whose output says whether the
    paging loop goes round again (rewritten, one approved payment was paid on every pass); and every
    loop that runs one of those again, and what it reads, in turn (``_bound``: a loop over the step
    the payment reads decides which pass's amount it sends).

    Nodes named in ``leave_out`` (added by an agent the gate already approved) are not part of it,
    and neither are the edges among them nor the plain edges from the approved action to them (an
    edge without a condition is taken beside a node's others, never instead of them): so the agent
    may add steps after itself, or after the action, without asking again. Any other edge between
    them and the action is part of it (an edge into an approved node makes it run, a branch rule
    out of one routes it anew), and so is such a node that the approved action reads, or a loop whose
    jump runs a node of it, or one it reads, again. ``gate`` None: the whole definition is the approved action (a child run
    started inside an approved action of its parent)."""
    nodes = nodes_by_id(definition)
    action = sorted(nodes) if gate is None else guarded(definition, gate)
    left_out = set(leave_out)
    bound = _bound(definition, gate, action, bodies=bodies, leave_out=left_out)
    skip = {n for n in left_out if n not in bound and not set(bodies.get(n, ())) & {gate, *bound}}
    region = [n for n in action if n in bound]
    inside = {gate, *region}
    loops = sorted(n for n in bound - inside if n in bodies and gate not in bodies[n] and (set(bodies[n]) - {n}) & bound)
    fed = sorted(bound - inside - set(loops))
    read, looped = inside | set(fed), set(loops)
    # every edge into or out of the action; into those loops; into what they read, and the branch
    # rules out of that (a rule that holds is taken alone: one added elsewhere starves the step the
    # action reads); a plain edge out of it, elsewhere, is not read
    routes = [[source, target, condition] for source, target, condition in edges(definition)
              if (source in inside or target in read or target in looped or (condition and source in read))
              and not (target in skip and not condition)]
    digested = {"gate": nodes.get(gate) if gate else None, "nodes": [nodes[n] for n in region], "edges": routes,
                "loops": [nodes[n] for n in loops]}
    if fed:  # a key of its own: an action that reads nothing still has the digest it had
        digested["feeders"] = [nodes[n] for n in fed]
    text = json.dumps(digested, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def is_outcome(condition: str | None) -> bool:
    """Whether an edge condition out of a gate tests only the gate's outcome."""
    if condition is None:
        return True
    return _normal(condition) in _OUTCOMES


def named_approvers(definition: dict[str, Any]) -> set[str]:
    """Every approver and escalation target the definition's author named on a gate."""
    names: set[str] = set()
    for node in definition.get("nodes", []):
        config = node.get("config") if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get("type") == GATE and isinstance(config, dict):
            for key in ("approvers", "escalate_to"):
                names.update(_names(config.get(key)))
    return names
