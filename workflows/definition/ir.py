"""The compiled form of a definition the coordinator decides from.

Compiling is pure and keyed by the artifact's content hash, so each process compiles a
version once (an LRU of IRs), whichever run or patch brought it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from threading import Lock
from typing import Any

from django.conf import settings

from workflows import registry

from .expressions import compile_expression
from .validation import control_edges, loop_targets, validate


class InvalidDefinition(ValueError):
    def __init__(self, report: Any) -> None:
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in report.errors))
        self.report = report


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    condition: str | None


def attempts_of(retry: Any) -> int:
    """How many attempts a node's ``retry`` gives it (1 without one), read as a number: the
    schema's ``integer`` takes ``20.0`` too. The engine's reading (``execution.fail``) and the patch
    policy's, which bounds what an agent may give a node."""
    value = retry.get("max_attempts", 1) if isinstance(retry, dict) else 1
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 1


def iterations_of(value: Any) -> int:
    """A loop's ``max_iterations`` read as a number (the schema's ``integer`` takes ``10000.0``
    too; anything else: 0). The engine's reading (``compile``) and the patch policy's, which may
    not let an agent raise it: read as 0 there, ``10000.0`` passed for a lowering."""
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


MAX_BACKOFF_MS = 3_600_000  # the schema's maximum ``backoff_ms``: no wait between attempts is longer


def backoff_ms_of(retry: Any, attempt: int) -> int:
    """The wait after failed attempt ``attempt`` (from 1): ``backoff_ms`` (1 s without one) times
    ``backoff_multiplier`` (2) to the power ``attempt - 1``, at most ``MAX_BACKOFF_MS``, as
    Celery's ``retry_backoff_max`` and Temporal's maximum interval cap it (uncapped, 20 attempts
    at ×10 overflowed a date)."""
    retry = retry if isinstance(retry, dict) else {}
    wait = float(retry.get("backoff_ms", 1000)) * float(retry.get("backoff_multiplier", 2.0)) ** (attempt - 1)
    return int(min(wait, MAX_BACKOFF_MS))


def retry_after_ms(error: Any) -> int:
    """The wait a failure asks for itself (``retry_after_seconds``: a remote's ``Retry-After``, a
    rate limit's), at most ``MAX_BACKOFF_MS``; 0 when it asks none. The engine waits the longer of
    it and the node's backoff (``execution.fail``)."""
    value = error.get("retry_after_seconds") if isinstance(error, dict) else None
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        return 0  # NaN and negatives too
    return int(min(value * 1000, MAX_BACKOFF_MS))


def timeout_ms_of(value: Any) -> int:
    """A node's time limit: its ``timeout_ms``, else ``AOB_DEFAULT_NODE_TIMEOUT_MS``. The engine's
    reading (``dispatch``) and the patch policy's."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return int(value)
    return settings.AOB_DEFAULT_NODE_TIMEOUT_MS


@dataclass(frozen=True)
class Node:
    id: str
    type: str
    config: dict[str, Any]
    timeout_ms: int | None
    retry: dict[str, Any] | None
    queue: str


@dataclass(frozen=True)
class Loop:
    max_iterations: int
    loop_back_to: str
    condition: str | None
    break_path: tuple[str, ...]  # all followed when the condition stops the loop
    timeout_path: tuple[str, ...]  # all followed when max_iterations is reached


@dataclass
class IR:
    nodes: dict[str, Node]
    # Outgoing edges in authoring order (loop jumps excluded); incoming edges for joins.
    out_edges: dict[str, list[Edge]]
    in_edges: dict[str, list[Edge]]
    entries: list[str]
    loops: dict[str, Loop] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def output_spec(self) -> dict[str, Any] | None:
        """``metadata.output`` (an ``expression`` or a ``template``), when the definition sets one."""
        spec = (self.metadata or {}).get("output")
        return spec if isinstance(spec, dict) and ("expression" in spec or "template" in spec) else None

    @property
    def ends(self) -> list[str]:
        """The nodes with no out-edge, by id: whose outputs are a run's own when it names none
        (``results``) and a child run's outputs to its parent (``subflows``)."""
        return sorted(node_id for node_id, edges in self.out_edges.items() if not edges)

    def predecessors(self, node_id: str) -> list[str]:
        return [e.source for e in self.in_edges[node_id]]

    def ancestors(self, node_id: str) -> set[str]:
        seen: set[str] = set()
        todo = self.predecessors(node_id)
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(self.predecessors(current))
        return seen

    def descendants(self, node_id: str) -> set[str]:
        seen: set[str] = set()
        todo = [e.target for e in self.out_edges[node_id]]
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(e.target for e in self.out_edges[current])
        return seen

    def topological(self) -> list[str]:
        order, indeg = [], {n: len(self.in_edges[n]) for n in self.nodes}
        ready = [n for n in self.nodes if indeg[n] == 0]
        while ready:
            current = ready.pop(0)
            order.append(current)
            for e in self.out_edges[current]:
                indeg[e.target] -= 1
                if indeg[e.target] == 0:
                    ready.append(e.target)
        return order


def compile_definition(definition: dict[str, Any], *, validated: bool = False) -> IR:
    if not validated:
        report = validate(definition)
        if not report.valid:
            raise InvalidDefinition(report)
    nodes: dict[str, Node] = {}
    loops: dict[str, Loop] = {}
    for raw in definition["nodes"]:
        config = raw.get("config", {})
        nodes[raw["id"]] = Node(raw["id"], raw["type"], config, raw.get("timeout_ms"), raw.get("retry"),
                                registry.queue_for(raw["type"]))
        if raw["type"] == "loop":
            loops[raw["id"]] = Loop(iterations_of(config["max_iterations"]), config["loop_back_to"],
                                    config.get("condition"),
                                    tuple(loop_targets(config.get("break_path"))),
                                    tuple(loop_targets(config.get("timeout_path"))))
    out_edges: dict[str, list[Edge]] = {n: [] for n in nodes}
    in_edges: dict[str, list[Edge]] = {n: [] for n in nodes}
    for source, target, condition in control_edges(definition):  # the gates' rules read the same list
        edge = Edge(source, target, condition)
        # A stored version (``validated``) was judged at its save, its conditions under the CEL bounds
        # as they were then; they are compiled where they are evaluated (``planner._holds``), where
        # one a bound lowered since refuses counts false with a condition_error. Compiled here, such a
        # condition made the version's graph unreadable: its node claimed and left running, each
        # decision a poison, and the sweeper, which reads the graph to re-send work, stopped there
        # for every owner.
        if edge.condition and not validated:
            compile_expression(edge.condition)
        out_edges[edge.source].append(edge)
        in_edges[edge.target].append(edge)
    entries = [n for n in nodes if not in_edges[n]]
    return IR(nodes, out_edges, in_edges, entries, loops, definition.get("metadata", {}))


# Graphs this process compiled, most recently used last. A graph keeps its nodes' configs parsed,
# several times its definition's stored size in the heap (a 1 MiB definition of small objects took
# ~25 MB), so they are bounded by their definitions' stored bytes together
# (``AOB_COMPILED_GRAPHS_BYTES``) as well as by count: 512 of any size let one user's distinct
# definitions keep ~12.8 GB in a web process. A hit reads neither bound: each decision reads its
# run's graph here.
_CACHE: OrderedDict[str, IR] = OrderedDict()
_WEIGHTS: dict[str, int] = {}  # each kept graph's definition's stored bytes
_weight = 0  # their sum
_CACHE_LOCK = Lock()
_CACHE_SIZE = 512


def ir_for(artifact_id: str, definition_loader: Any) -> IR:
    """The IR of a stored version; ``definition_loader()`` is called only on a cache miss, and
    answers the definition and its stored size (``Artifact.size_bytes``), what keeping it weighs."""
    with _CACHE_LOCK:
        ir = _CACHE.get(artifact_id)
        if ir is not None:
            _CACHE.move_to_end(artifact_id)
            return ir
    definition, stored_bytes = definition_loader()
    return keep(artifact_id, compile_definition(definition, validated=True), stored_bytes)


def cached(artifact_id: str) -> IR | None:
    """The IR of ``artifact_id`` if this process keeps it, without keeping anything."""
    with _CACHE_LOCK:
        return _CACHE.get(artifact_id)


def keep(artifact_id: str, ir: IR, stored_bytes: int) -> IR:
    """Keep ``ir`` (of a definition of ``stored_bytes``), the least recently used dropped until the
    kept fit both bounds; one heavier than ``AOB_COMPILED_GRAPHS_BYTES`` alone is not kept (it is
    compiled again where it is needed). Answers the graph kept (another thread's, if it kept one first)."""
    global _weight
    bound = settings.AOB_COMPILED_GRAPHS_BYTES
    with _CACHE_LOCK:
        found = _CACHE.get(artifact_id)
        if found is not None:
            _CACHE.move_to_end(artifact_id)
            return found
        if stored_bytes > bound:
            return ir
        _CACHE[artifact_id] = ir
        _WEIGHTS[artifact_id] = stored_bytes
        _weight += stored_bytes
        while len(_CACHE) > _CACHE_SIZE or _weight > bound:
            dropped, _ = _CACHE.popitem(last=False)
            _weight -= _WEIGHTS.pop(dropped)
    return ir


def kept_bytes() -> int:
    """What the kept graphs weigh: their definitions' stored bytes together."""
    return _weight
