"""The engine's one decision, as a pure function: ``plan(graph, state, finished) -> Plan``.

No database, no broker, no clock of its own: the coordinator reads the ``State`` (the run and the
node runs a decision needs, under the run lock), calls ``plan`` and applies the ``Plan`` (rows to
insert and update, events, what to dispatch). The plain step (``steps``) is derived from this
module too (``plain_step``), so there is one place that decides.

Consuming a finished node run routes its outgoing edges (branch rules in authoring order, first
true wins, else the unconditional edges), then considers each target: a node runs once every
incoming edge has either delivered or is known dead; when all are dead it is skipped and the skip
propagates (dead-path elimination). ``conditional`` and ``loop`` nodes are evaluated here, with
no worker hop; so are pure nodes (``transform``) when the coordinator hands the planner an
evaluator (``pure.Evaluator``: the type's one function, within the decision's budget), each
recorded as a node run of its own; a type with no executor is skipped with a warning and its
edges carry on. A decision's ``Budget`` bounds what it evaluates in place, and the time it takes
judging nodes' edges in and skipping dead paths: once it is spent, a node finished (or skipped)
here is left unconsumed for a decision of its own (``Plan.continued``).

Iterations. ``(node, iteration)`` names one node run. A loop going round again starts its body at
a fresh iteration (one past the highest its body has used), so an inner loop's passes never
collide with an outer loop's; a loop counts its own passes in its output (``iteration``), and
when it ends its successors continue at the iteration of the pass that entered it (0 for a loop
that is inside no other loop).
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from workflows import registry
from workflows.definition.expressions import (
    ExpressionError,
    compile_expression,
    evaluate_condition,
    reads_union,
)
from workflows.definition.ir import IR, Edge
from workflows.definition.references import referenced_nodes
from workflows.limits import clipped
from workflows.models import Event, NodeRun, Run, canonical_json, size_of

from .pure import READ_MAX_BYTES, Budget, Outcome, in_decision

# Evaluates a pure node over the outputs it references, or None: it goes through the queue.
Evaluate = Callable[[Any, int, dict[str, Any]], Outcome | None]

DELIVERED, DEAD, PENDING = "delivered", "dead", "pending"
ACTIVE = frozenset(NodeRun.ACTIVE)
FINISHED = frozenset(NodeRun.FINISHED)
RUN_FINISHED = frozenset(Run.FINISHED)
# A node's branch rules that fail to evaluate in one decision: each of the first few writes its own
# condition_error event, the rest one between them (18,000 failing rules wrote 18,000 events a pass).
CONDITION_ERRORS_SHOWN = 3


@dataclass
class Token:
    """A node run as the planner sees it. ``pk`` is None for one this plan creates. ``output`` is
    what routing reads: None for a null output, and where nothing routing reads reads it (left out)."""

    node_id: str
    iteration: int
    node_type: str
    status: str
    pk: int | None = None
    consumed: bool = False
    taken: list[str] | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    finished_at: datetime | None = None
    reused: bool = False
    # the output's stored size (``NodeRun.output_bytes``; what this plan measured of one it made),
    # None where unknown: what a pure node evaluated in the decision would read (``pure.READ_MAX_BYTES``)
    output_bytes: int | None = None
    # set on tokens this plan creates
    input: Any = None
    started_at: datetime | None = None
    queued_at: datetime | None = None
    attempts: int = 0
    output_artifact_id: str | None = None
    attempt_log: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Limits:
    max_output_bytes: int  # AOB_MAX_RUN_OUTPUT_BYTES
    max_node_runs: int  # AOB_MAX_NODE_RUNS_PER_RUN

    @classmethod
    def from_settings(cls) -> Limits:
        from django.conf import settings

        return cls(settings.AOB_MAX_RUN_OUTPUT_BYTES, settings.AOB_MAX_NODE_RUNS_PER_RUN)


def over_output_limit(stored: int, limits: Limits) -> bool:
    """Whether what a run's outputs have stored is past its cap (the run then fails)."""
    return stored > limits.max_output_bytes


@dataclass
class State:
    """What a decision reads: the run (locked) and its node runs: the latest iteration of each
    node, any node run still active or unconsumed, and a replay's reused ones; in a run with loops,
    every node run of each pass a finished, unconsumed one belongs to
    (``coordinator._needed_tokens``; ``known`` trusts it)."""

    run_status: str
    inputs: dict[str, Any]
    tokens: list[Token]
    now: datetime
    limits: Limits
    output_bytes: int = 0  # what the run's outputs have stored so far
    node_runs_stored: int = 0  # how many node runs the run has (read where a loop can go round)
    patch_pending: bool = False  # a patch awaits approval: the run may still grow
    started_at: datetime | None = None


@dataclass
class Plan:
    """What to write. ``inserts`` are new node runs (queued ones are dispatched after commit);
    ``updates`` maps a stored node run's pk to the fields to set; ``run`` the run's fields;
    ``events`` are ``(type, node_id, data)`` in order."""

    inserts: list[Token] = field(default_factory=list)
    updates: dict[int, dict[str, Any]] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    output_bytes: int = 0  # stored by the pure nodes this plan evaluated (added to the run's usage)
    # finished node runs this plan left unconsumed, its budget spent, that no message was sent for
    # (new ones it finished in place, a replay's reused ones): each is routed by a decision of its
    # own (a coordinator message after commit; the sweeper if it is lost). Other stored ones it would
    # have routed are left to the message each has.
    continued: list[Token] = field(default_factory=list)

    @property
    def inserts_only(self) -> bool:
        """Nothing but new node runs (none with a stored output) and events: a new run's start
        writes such a plan with the run in one statement (``coordinator.start_new``); every other
        field is something ``coordinator.apply`` writes."""
        return not (self.updates or self.run or self.output_bytes or self.continued
                    or any(t.output_artifact_id for t in self.inserts))

    @property
    def run_finished(self) -> str | None:
        status = self.run.get("status")
        return status if status in RUN_FINISHED else None


# --- facts derived from a graph, once per compiled graph ------------------------------------------


def derived(ir: IR, name: str, compute: Callable[[IR], Any]) -> Any:
    """What ``compute`` derives from one version's graph, computed once per ``ir`` (kept on it)."""
    cache = ir.__dict__.setdefault("_planner", {})
    if name not in cache:
        cache[name] = compute(ir)
    return cache[name]


def loop_body(ir: IR, loop_id: str) -> frozenset[str]:
    """The nodes one pass of a loop runs: from its ``loop_back_to`` to the loop node."""
    def compute(ir: IR) -> dict[str, frozenset[str]]:
        bodies = {}
        for lid, loop in ir.loops.items():
            start = loop.loop_back_to
            if start not in ir.nodes:
                bodies[lid] = frozenset({lid})
                continue
            bodies[lid] = frozenset(({start} | ir.descendants(start)) & ({lid} | ir.ancestors(lid)) | {lid})
        return bodies
    return derived(ir, "bodies", compute)[loop_id]


def loop_reruns(ir: IR, loop_id: str) -> frozenset[str]:
    """The nodes a loop's jump back runs again: ``consume`` emits its ``loop_back_to`` at a fresh
    iteration and routes on from there, so everything reached from it without passing through the
    loop node (whose exits run once) comes round again: the body (``loop_body``), what hangs off
    the body, and whatever an inner loop's own jump reaches. What a patch makes a loop repeat is
    judged on this (workflows/services/patches/policy.py)."""
    def compute(ir: IR) -> dict[str, frozenset[str]]:
        reruns = {}
        for lid, loop in ir.loops.items():
            seen: set[str] = set()
            todo = [loop.loop_back_to] if loop.loop_back_to in ir.nodes else []
            while todo:
                node_id = todo.pop()
                if node_id in seen or node_id == lid:
                    continue
                seen.add(node_id)
                todo.extend(e.target for e in ir.out_edges[node_id])
                if node_id in ir.loops and ir.loops[node_id].loop_back_to in ir.nodes:
                    todo.append(ir.loops[node_id].loop_back_to)
            reruns[lid] = frozenset(seen | {lid})
        return reruns
    return derived(ir, "reruns", compute)[loop_id]


@dataclass(frozen=True)
class Routes:
    """A node's edges out as routing reads them (``_Planner.route``): its branch rules (edges with a
    condition), tried in authoring order, the first that holds taken alone; else its other edges,
    all taken together."""

    rules: tuple[Edge, ...]
    default: tuple[Edge, ...]

    def reading(self) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
        """What of the routes decides where a finished node goes: the rules in their order, the
        default edges' targets in none (they are taken together). Two graphs whose nodes read the
        same here route alike; a patch's commute check compares definitions by it."""
        return (tuple((e.condition or "", e.target) for e in self.rules),
                tuple(sorted(e.target for e in self.default)))


def routes(ir: IR, node_id: str) -> Routes:
    """How a finished ``node_id`` routes its edges out (a loop's exits are its own: ``consume``);
    split once per compiled graph."""
    def compute(ir: IR) -> dict[str, Routes]:
        return {n: Routes(tuple(e for e in edges if e.condition), tuple(e for e in edges if not e.condition))
                for n, edges in ir.out_edges.items()}
    return derived(ir, "routes", compute)[node_id]


def inline(node_type: str) -> bool:
    """Whether the planner evaluates a type itself, with no worker hop (the registry's ``inline``
    fact: ``conditional`` and ``loop``)."""
    spec = registry.get(node_type)
    return bool(spec is not None and getattr(spec, "inline", False))


def pass_starts(ir: IR, node_id: str, other: str) -> frozenset[str]:
    """Where the loops whose jump runs both nodes again start their passes (each one's
    ``loop_back_to``): a pass of such a loop runs both at the pass's iteration. What ``node_id``'s
    node run at iteration k reads of ``other`` (an edge in, ``$nodes.other``) is then ``other``'s of
    that pass: its latest node run below the next pass after k (``read_bound``), never a later
    pass's (a payment reading the invoice of the pass its approval was for). Derived once per pair
    of a compiled graph (one such pair is asked for each in-edge a decision judges, each reference
    a pure node reads: the loops of one, intersected on every visit, cost a dead path inside 300
    loops 47 s: a red team's find)."""
    cache = derived(ir, "pass_starts", lambda ir: {})
    found = cache.get((node_id, other))
    if found is None:
        mine = rerun_by(ir, node_id)
        found = cache[(node_id, other)] = (frozenset(ir.loops[lid].loop_back_to for lid in mine & rerun_by(ir, other))
                                           if mine else _NONE)
    return found


_NONE: frozenset[str] = frozenset()


def read_bound(ir: IR, node_id: str, other: str, next_pass: Callable[[str], int | None]) -> int | None:
    """The iteration below which ``node_id``'s node run at iteration k reads ``other``
    (``pass_starts``): the first next pass after k of a loop that runs both again, where one has
    begun (``next_pass``: a start's first iteration above k, or None); None where none has: it reads
    ``other``'s latest. One rule, read by the planner from the decision's node runs
    (``_Planner.read``) and by the executors from the database (``execution.claim``)."""
    return min((found for start in pass_starts(ir, node_id, other) if (found := next_pass(start)) is not None),
               default=None)


def rerun_by(ir: IR, node_id: str) -> frozenset[str]:
    """The loops whose jump runs ``node_id`` again (``loop_reruns``: each such pass runs it at the
    pass's iteration, a step hanging off the body included)."""
    def compute(ir: IR) -> dict[str, frozenset[str]]:
        found: dict[str, set[str]] = {}
        for lid in ir.loops:
            for n in loop_reruns(ir, lid):
                found.setdefault(n, set()).add(lid)
        return {n: frozenset(lids) for n, lids in found.items()}
    return derived(ir, "rerun_by", compute).get(node_id, _NONE)


def enclosing(ir: IR, loop_id: str) -> tuple[str, ...]:
    """The loops around a loop, each of whose passes enters it anew: those whose body it lies
    inside, and those whose jump reruns it (``loop_reruns``) from further up than its own
    ``loop_back_to`` (a retry whose way out is a branch skipping it is in no body, yet each page
    polls afresh). A loop jumping back to the same step, or to one after it, is beside it or inside."""
    def compute(ir: IR) -> dict[str, tuple[str, ...]]:
        found = {}
        for lid, loop in ir.loops.items():
            start = loop.loop_back_to
            inside = {start} | ir.descendants(start) if start in ir.nodes else {start}
            found[lid] = tuple(other for other in ir.loops if other != lid and (
                lid in loop_body(ir, other)
                or (lid in loop_reruns(ir, other) and ir.loops[other].loop_back_to not in inside)))
        return found
    return derived(ir, "enclosing", compute)[loop_id]


def nested(ir: IR, loop_id: str) -> bool:
    """Whether a loop lies inside another loop (``enclosing``)."""
    return bool(enclosing(ir, loop_id))


# --- the decision ---------------------------------------------------------------------------------


class _Planner:
    def __init__(self, ir: IR, state: State, evaluate: Evaluate | None = None, budget: Budget | None = None) -> None:
        self.ir = ir
        self.state = state
        self.evaluate = evaluate
        self.budget = budget  # None: no bound (the plain step's hypothetical plans, tests)
        self.now = state.now
        self.run_status = state.run_status
        self.by_key: dict[tuple[str, int], Token] = {}
        self.latest: dict[str, Token] = {}
        self.reused: dict[str, int] = {}  # a replay's: the pass each node was reused at (``known``)
        self._passes: dict[str, list[int]] | None = None  # each node's iterations, once read (``_passes_of``)
        for token in sorted(state.tokens, key=lambda t: t.iteration):
            self._index(token)
        self.whole = ({t.iteration for t in state.tokens if not t.consumed and t.status in NodeRun.FINISHED}
                      if ir.loops else set())  # passes the state holds every node run of (``State``)
        self.plan = Plan()
        self.condition_errors = 0  # conditions that failed to evaluate in this plan
        self.unsent: set[int] = set()  # stored node runs no message was sent for (a replay's reused)
        self._todo: list[tuple[str, int]] = []  # (node, iteration) to consider: a stack, not recursion
        self._draining = False
        # the stored size of each output conditionals pass on, by the output's identity (kept alive
        # with it): serialised once however many conditionals copy it
        self._sizes: dict[int, tuple[Any, int]] = {}

    # --- bookkeeping ------------------------------------------------------------------------------

    def _index(self, token: Token) -> None:
        if self._passes is not None and (token.node_id, token.iteration) not in self.by_key:
            bisect.insort(self._passes.setdefault(token.node_id, []), token.iteration)
        self.by_key[(token.node_id, token.iteration)] = token
        current = self.latest.get(token.node_id)
        if current is None or token.iteration >= current.iteration:
            self.latest[token.node_id] = token
        if token.reused:
            self.reused[token.node_id] = max(token.iteration, self.reused.get(token.node_id, 0))

    def _touch(self, token: Token, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(token, name, value)
        if token.pk is not None:
            self.plan.updates.setdefault(token.pk, {}).update(fields)

    def known(self, node_id: str, iteration: int) -> bool:
        """Whether ``(node_id, iteration)`` exists. Of a pass read whole (``State``: the pass of a
        finished, unconsumed node run) the state holds every node run; of another only the latest
        iteration of each node is read, and a node's iterations only grow, so anything at or below
        it exists already. Not so within a pass: a step hanging off a loop's body runs once a pass,
        and its later pass may have run first (pay's pass 1 before pass 0's slow finished: pay's
        pass 0 was taken for run, and never ran). A replay's node reused at a pass (``run_replay``
        copies each node's latest only; ``State`` holds it) ran in its source at every pass up to
        it: none of those runs again (a replay after a loop POSTed its earlier pages again)."""
        if (node_id, iteration) in self.by_key or iteration <= self.reused.get(node_id, -1):
            return True
        if iteration in self.whole:
            return False
        latest = self.latest.get(node_id)
        return latest is not None and latest.iteration >= iteration

    def _add(self, token: Token) -> Token:
        self._index(token)
        self.plan.inserts.append(token)
        return token

    def event(self, type_: str, node_id: str = "", **data: Any) -> None:
        self.plan.events.append((type_, node_id, data))

    def _set_run(self, **fields: Any) -> None:
        if "status" in fields:
            self.run_status = fields["status"]
        self.plan.run.update(fields)

    # --- routing ----------------------------------------------------------------------------------

    def _predecessor_output(self, node_id: str, iteration: int) -> Any:
        for edge in self.ir.in_edges[node_id]:
            source = self.at(edge.source, iteration)
            if source is not None and source.taken is not None and node_id in source.taken:
                return source.output
        return None

    def at(self, source_id: str, iteration: int) -> Token | None:
        """A predecessor's node run as a node of pass ``iteration`` reads it: its own of that pass
        where it has one (a jump may have queued its next pass meanwhile, in this very decision),
        else its latest. A loop node's exits are its last pass's, whatever the iteration its
        successors continue at."""
        if source_id not in self.ir.loops and (source_id, iteration) in self.by_key:
            return self.by_key[(source_id, iteration)]
        return self.latest.get(source_id)

    def route(self, token: Token) -> list[str]:
        """Targets of the edges a finished node takes (``Routes``): the first branch rule that
        holds, in authoring order, else every unconditional edge."""
        found = routes(self.ir, token.node_id)
        if found.rules:
            context = {"output": token.output, "inputs": self.state.inputs}  # null as null: `output.x` errs
            failed_before, chosen = self.condition_errors, None
            for edge in found.rules:
                where = {"from": edge.source, "to": edge.target}
                quiet = self.condition_errors - failed_before >= CONDITION_ERRORS_SHOWN
                if self._holds(edge.condition or "", context, token.node_id, where, quiet=quiet):
                    chosen = edge.target
                    break
            hidden = self.condition_errors - failed_before - CONDITION_ERRORS_SHOWN
            if hidden > 0:  # one event for the rest: a node's many failing rules wrote one each, each pass
                self.event(Event.Type.CONDITION_ERROR, token.node_id, **{"from": token.node_id, "to": "…"},
                           rule="omitted", omitted=hidden, error=f"{hidden} more branch rule(s) failed to evaluate",
                           warning=f"{hidden} more branch rule(s) of {token.node_id!r} failed to evaluate; counted "
                                   "as false")
            if chosen is not None:
                return [chosen]
        return [e.target for e in found.default]

    def _holds(self, condition: str, context: dict[str, Any], node_id: str, where: dict[str, Any], *,
               quiet: bool = False) -> bool:
        """A condition that fails to evaluate (a missing key, an index past the end, its budget
        spent) counts as false, and a ``condition_error`` event says which and why (``quiet``:
        counted in ``condition_errors`` only)."""
        try:
            with self.budget.conditions() if self.budget is not None else contextlib.nullcontext():
                return evaluate_condition(condition, context)
        except ExpressionError as exc:
            self.condition_errors += 1
            if quiet:
                return False
            # the message can name a value the condition read (a missing key: up to 16 MiB of inputs)
            self.event(Event.Type.CONDITION_ERROR, node_id, **where, condition=condition, rule=exc.rule,
                       error=clipped(str(exc)),
                       warning=f"condition {condition!r} failed to evaluate ({clipped(str(exc))}); counted as false")
            return False

    def edge_state(self, source_id: str, target_id: str, iteration: int) -> str:
        """What the edge ``source_id`` → ``target_id`` says for the target's node run at ``iteration``:
        the source's node run as the pass reads it (``at``), unless this pass runs the source again
        and it has not yet: what it did then is an earlier pass's (a gate's decision on the last
        invoice is not this one's)."""
        source = self.at(source_id, iteration)
        if source is None:
            return PENDING
        if source.iteration < iteration and self.runs_again(source_id, target_id, iteration):
            return PENDING  # it has not run in this pass yet: what it did is from an earlier one
        if not source.consumed or source.taken is None:
            return PENDING
        return DELIVERED if target_id in source.taken else DEAD

    def runs_again(self, source_id: str, target_id: str, iteration: int) -> bool:
        """Whether ``iteration`` is a pass of a loop that runs both nodes again: one whose jump reruns
        both (``pass_starts``) and has made that pass (its ``loop_back_to`` has a node run there). A
        pass of an inner loop leaves the outer loop's steps as they are: their delivery holds."""
        return any(self.known(start, iteration) for start in pass_starts(self.ir, source_id, target_id))

    def read(self, node_id: str, ref: str, iteration: int) -> Token | None:
        """The node run of ``ref`` whose output ``node_id``'s node run at ``iteration`` reads
        (``read_bound``): the latest below the next pass of a loop that runs both again, where one
        has begun (a jump in this very decision included), else the latest."""
        bound = read_bound(self.ir, node_id, ref, lambda start: self._next_pass(start, iteration))
        if bound is None:
            return self.latest.get(ref)
        passes = self._passes_of(ref)
        below = bisect.bisect_left(passes, bound)
        return self.by_key[(ref, passes[below - 1])] if below else None

    def _passes_of(self, node_id: str) -> list[int]:
        """The iterations ``node_id`` has a node run at, in order: an index of ``by_key`` built at the
        first read and kept by ``_index`` (each read scanned every node run once per loop: a pure
        node inside 500 loops reading 500 nodes took 10^8 steps, a red team's find)."""
        if self._passes is None:
            self._passes = {}
            for n, i in sorted(self.by_key):
                self._passes.setdefault(n, []).append(i)
        return self._passes.get(node_id, [])

    def _next_pass(self, node_id: str, iteration: int) -> int | None:
        """The first iteration above ``iteration`` where ``node_id`` has a node run, or None."""
        passes = self._passes_of(node_id)
        after = bisect.bisect_right(passes, iteration)
        return passes[after] if after < len(passes) else None

    # --- consuming and emitting -------------------------------------------------------------------

    def consume(self, token: Token, *, due: bool = False) -> None:
        """Route a finished node run and consider its targets. Once the budget is spent, one that
        would be routed (not ``due``: the node run this decision was sent for) is left for a
        decision of its own: one this plan finished, or no message was sent for, goes in
        ``Plan.continued`` (a message each); any other is left to the message it has. A failure, a
        passed cap and a finished run cost nothing more and are settled here: nothing else starts
        meanwhile."""
        if (not due and self.budget is not None and self.budget.spent and self.run_status not in RUN_FINISHED
                and token.status != NodeRun.Status.FAILED and self._limit_passed(token) is None):
            if token.pk is None or token.pk in self.unsent:
                self.plan.continued.append(token)
            return
        self._touch(token, consumed=True)
        if self.run_status in RUN_FINISHED:
            self._touch(token, taken=token.taken)
            return
        if token.node_id not in self.ir.nodes:
            self._touch(token, taken=[])  # a patch removed this node while it ran
            return
        if token.status == NodeRun.Status.FAILED:
            self._touch(token, taken=token.taken)
            self.fail_run({"node_id": token.node_id, **(token.error or {})}, token.node_id)
            return
        if token.status == NodeRun.Status.CANCELLED:
            self._touch(token, taken=token.taken)
            return
        if self._over_limits(token):
            self._touch(token, taken=token.taken)
            return
        if token.status == NodeRun.Status.SKIPPED and not (token.output or {}).get("_passthrough"):
            self._touch(token, taken=[])  # a dead path's (a loop's too): it delivers to none of its targets
            self.consider_all([(edge.target, token.iteration) for edge in self.ir.out_edges[token.node_id]])
            return
        is_loop = token.node_id in self.ir.loops
        decision = (token.output or {}).get("decision") if is_loop else None
        if decision == "again":
            self._touch(token, taken=None)
            body = loop_body(self.ir, token.node_id)
            fresh = max((self.latest[n].iteration for n in body if n in self.latest), default=token.iteration) + 1
            self.emit(self.ir.loops[token.node_id].loop_back_to, fresh)
            return
        iteration = token.iteration
        if is_loop:
            loop = self.ir.loops[token.node_id]
            chosen, other = ((loop.timeout_path, loop.break_path) if decision == "timeout"
                             else (loop.break_path, loop.timeout_path))
            if chosen:
                taken = list(chosen)
            else:  # its edges, routed on its output as any node's are (branch rules over `decision`, ...),
                # but never the other exit's: a loop that gave up does not take its break_path
                taken = [target for target in self.route(token) if target not in other]
            self._touch(token, taken=taken)
            iteration = (token.output or {}).get("entered_at", 0) if nested(self.ir, token.node_id) else 0
        else:
            self._touch(token, taken=self.route(token))
        self.consider_all([(edge.target, iteration) for edge in self.ir.out_edges[token.node_id]])

    def consider_all(self, items: list[tuple[str, int]]) -> None:
        """Consider nodes depth-first, in order, with an explicit stack: a chain of a thousand
        inline nodes or a long dead branch is a loop here, not a thousand nested calls."""
        self._todo.extend(reversed(items))
        if self._draining:
            return  # the outer call's loop takes them next
        self._draining = True
        try:
            while self._todo:
                self._consider_one(*self._todo.pop())
        finally:
            self._draining = False

    def _consider_one(self, node_id: str, iteration: int) -> None:
        """A node runs once every edge in has delivered or is dead (judged up to the first still
        pending), and is skipped when all are dead. The judging and the skip are the decision's
        time (``Budget``): once it is spent, the skip is left unconsumed for a decision of its own
        (``consume``), so a long dead path goes on in decisions of bounded size, as inline nodes do."""
        if self.known(node_id, iteration) or self.run_status in RUN_FINISHED:
            return  # nothing starts once the run ended (a node failed, a limit passed) in this plan
        skipped = None
        with self.budget.timing() if self.budget is not None else contextlib.nullcontext():
            delivered = False
            for edge in self.ir.in_edges[node_id]:
                state = self.edge_state(edge.source, node_id, iteration)
                if state == PENDING:
                    return
                delivered = delivered or state == DELIVERED
            if not delivered:
                skipped = self._add(Token(node_id, iteration, self.ir.nodes[node_id].type, NodeRun.Status.SKIPPED,
                                          finished_at=self.now))
                self.event(Event.Type.NODE_SKIPPED, node_id, reason="dead_path", iteration=iteration)
        if skipped is not None:
            self.consume(skipped)  # routes nothing on, and considers its targets
            return
        self.emit(node_id, iteration)

    def emit(self, node_id: str, iteration: int) -> None:
        if self.known(node_id, iteration):
            return
        node = self.ir.nodes[node_id]
        if inline(node.type):
            with self.budget.timing() if self.budget is not None else contextlib.nullcontext():
                token, shown = self._inline(node_id, iteration, node.type)
            self.event(Event.Type.NODE_STARTED, node_id, iteration=iteration, inline=True)
            self.event(Event.Type.NODE_COMPLETED, node_id, iteration=iteration, inline=True, **shown)
            self.consume(token)
        elif self.evaluate is not None and in_decision(node) and self._evaluated(self.evaluate, node, iteration):
            return
        elif registry.get(node.type) is None:
            token = self._add(Token(node_id, iteration, node.type, NodeRun.Status.SKIPPED,
                                    output=dict(PASSTHROUGH), finished_at=self.now))
            self.plan.output_bytes += size_of(canonical_json(PASSTHROUGH))
            self.event(Event.Type.NODE_SKIPPED, node_id, iteration=iteration, reason="no_executor",
                       warning=f"no executor for node type {node.type!r}; skipped")
            self.consume(token)
        else:
            self._add(Token(node_id, iteration, node.type, NodeRun.Status.QUEUED, queued_at=self.now))

    def _inline(self, node_id: str, iteration: int, node_type: str) -> tuple[Token, dict[str, Any]]:
        """An inline node done in place, its time the decision's (``Budget``): a loop's counters,
        or a conditional, which passes its input on (its edges' rules route it). A conditional
        stores that copy once, as its output (its input is the same: not stored again), counted
        against the run's output bytes as any output is and left out of its event; its size is
        measured once per output however many conditionals copy it (twenty after one 13 MB output
        serialised it twenty times: 17 s of a coordinator, a red team's find)."""
        if self.budget is not None:
            self.budget.nodes += 1
        upstream = self._predecessor_output(node_id, iteration)
        shown: dict[str, Any] = {}
        if node_id in self.ir.loops:
            output = self._loop_output(node_id, iteration, upstream)
            shown["output"] = _public(output)  # its own few counters
            self.plan.output_bytes += size_of(canonical_json(output))  # stored, as any output is counted
            stored_input = upstream
        else:
            output, stored_input = upstream, None
            if upstream is not None:  # nothing upstream: nothing stored
                known = self._sizes.get(id(upstream))
                if known is None:
                    known = self._sizes[id(upstream)] = (upstream, size_of(canonical_json(upstream)))
                self.plan.output_bytes += known[1]
        token = self._add(Token(node_id, iteration, node_type, NodeRun.Status.COMPLETED, input=stored_input,
                                output=output, started_at=self.now, finished_at=self.now, attempts=1,
                                output_bytes=self._sizes[id(output)][1] if id(output) in self._sizes else None))
        return token, shown

    def _evaluated(self, evaluate: Evaluate, node: Any, iteration: int) -> bool:
        """A pure node run here, as a worker would have run it: its own node run (attempt 1), its
        ``node_started`` and ``node_completed`` (or ``node_failed``) with a worker's payloads, then
        consumed like any finished node. False when the evaluator hands it to the queue."""
        budget = self.budget
        if budget is not None and budget.spent:
            return False  # as the evaluator would answer, before its reads cost the decision more
        with budget.timing() if budget is not None else contextlib.nullcontext():  # the reads are the decision's time
            read = {ref: token for ref in pure_refs(self.ir, node.id)
                    if (token := self.read(node.id, ref, iteration)) is not None}
        if sum(token.output_bytes or 0 for token in read.values()) > READ_MAX_BYTES:
            return False  # its references alone would take the decision's time: a worker's
        outcome = evaluate(node, iteration, {ref: token.output for ref, token in read.items()})
        if outcome is None:
            return False
        failed = outcome.error is not None
        entry: dict[str, Any] = {"attempt": 1, "status": "failed" if failed else "completed",
                                 "duration_ms": outcome.duration_ms}
        if failed:
            entry["error"] = outcome.error
        token = self._add(Token(node.id, iteration, node.type, NodeRun.Status.FAILED if failed else NodeRun.Status.COMPLETED,
                                input=outcome.input, output=outcome.output, error=outcome.error,
                                output_artifact_id=outcome.artifact_id, attempt_log=[entry],
                                started_at=outcome.started_at, finished_at=outcome.finished_at, attempts=1,
                                output_bytes=outcome.size))
        self.event(Event.Type.NODE_STARTED, node.id, iteration=iteration, attempt=1)
        if failed:
            self.event(Event.Type.NODE_FAILED, node.id, iteration=iteration, attempt=1, error=outcome.error)
        else:
            self.plan.output_bytes += outcome.size
            self.event(Event.Type.NODE_COMPLETED, node.id, iteration=iteration, attempt=1,
                       output_artifact_id=outcome.artifact_id)
        self.consume(token)
        return True

    def _loop_output(self, node_id: str, iteration: int, upstream: Any) -> dict[str, Any]:
        """A loop counts its own passes: this pass continues the last one if that went round
        again, else it is the first of a new entry into the loop (``_counted``)."""
        loop = self.ir.loops[node_id]
        previous = self._counted(node_id)
        last = previous.output if previous is not None and isinstance(previous.output, dict) else {}
        if last.get("decision") == "again":
            index, entered_at = int(last.get("iteration", 0)) + 1, last.get("entered_at", 0)
        else:
            index, entered_at = 0, iteration
        wants_more = True
        if loop.condition:
            wants_more = self._holds(loop.condition, {"output": upstream, "inputs": self.state.inputs,
                                                      "iteration": index}, node_id, {"loop": node_id})
        if not wants_more:
            decision = "break"
        elif index + 1 < loop.max_iterations:
            decision = "again"
        else:
            decision = "timeout"
        output = {"iteration": index, "iterations": index + 1, "condition": wants_more, "decision": decision}
        if nested(self.ir, node_id):
            output["entered_at"] = entered_at  # where its successors continue when it ends
        return output

    def _counted(self, node_id: str) -> Token | None:
        """The node run of a loop its next pass counts on: its latest, or past its own dead-path
        skips its latest that ran, while no loop around it has begun a pass since. A pass another
        loop jumping back to the same step took the other way skips this one without ending it:
        two such loops restarted each other's count, for ever (a red team's find)."""
        latest = self.latest.get(node_id)
        if latest is None or latest.status != NodeRun.Status.SKIPPED:
            return latest
        ran = max((t for (n, _), t in self.by_key.items() if n == node_id and t.status != NodeRun.Status.SKIPPED),
                  key=lambda t: t.iteration, default=None)  # read for it (coordinator._needed_tokens)
        if ran is None or any(self.latest[lb].iteration > ran.iteration for lid in enclosing(self.ir, node_id)
                              if (lb := self.ir.loops[lid].loop_back_to) in self.latest):
            return latest
        return ran

    # --- run-level transitions --------------------------------------------------------------------

    def fail_run(self, error: dict[str, Any], node_id: str = "") -> None:
        self._set_run(status=Run.Status.FAILED, error=error, finished_at=self.now)
        self._cancel_active()
        self.event(Event.Type.WORKFLOW_FAILED, node_id, error=error)

    def _over_limits(self, token: Token) -> bool:
        """Past either of the run's caps (``_limit_passed``) the run fails."""
        error = self._limit_passed(token)
        if error is not None:
            self.fail_run(error, token.node_id)
        return error is not None

    def _limit_passed(self, token: Token) -> dict[str, Any] | None:
        """The run's own size: what its outputs have stored (counted by each completion), and,
        where a loop goes round, how many node runs it has. The error it fails with, or None."""
        limits = self.state.limits
        stored = self.state.output_bytes + self.plan.output_bytes
        if over_output_limit(stored, limits):
            return {"node_id": token.node_id, "error_type": "RunLimitExceeded", "limit": "output_bytes",
                    "message": f"the run's outputs passed {limits.max_output_bytes} bytes "
                               f"({stored} stored; AOB_MAX_RUN_OUTPUT_BYTES)"}
        if token.node_id in self.ir.loops and token.output and token.output.get("decision") == "again":
            count = self.state.node_runs_stored + len(self.plan.inserts)
            if count >= limits.max_node_runs:
                return {"node_id": token.node_id, "error_type": "RunLimitExceeded", "limit": "node_runs",
                        "message": f"the run has {count} node runs; at most {limits.max_node_runs} are allowed "
                                   f"(AOB_MAX_NODE_RUNS_PER_RUN)"}
        return None

    def _cancel_active(self) -> None:
        for other in list(self.by_key.values()):
            if other.status in ACTIVE:
                if other.pk is None:
                    other.status, other.finished_at = NodeRun.Status.CANCELLED, self.now
                else:
                    self._touch(other, status=NodeRun.Status.CANCELLED, finished_at=self.now,
                                lease_expires_at=None)

    def settle(self) -> None:
        """Move the run's status to what its node runs say."""
        if self.run_status in RUN_FINISHED:
            return
        unfinished = [t for t in self.by_key.values()
                      if t.status in ACTIVE or (t.status in FINISHED and not t.consumed)]
        # an agent's patch held for approval may still grow the run: wait for the decision
        if not unfinished and not self.state.patch_pending:
            # a metadata.output is computed after the commit, by a worker (services.runs.run_output_store)
            self._set_run(status=Run.Status.COMPLETED, finished_at=self.now,
                          **({"output_asked_at": self.now} if self.ir.output_spec else {}))
            start = self.state.started_at
            duration = int((self.now - start).total_seconds() * 1000) if start else None
            self.event(Event.Type.WORKFLOW_COMPLETED, "", duration_ms=duration)
            return
        busy = any(t.status in (NodeRun.Status.QUEUED, NodeRun.Status.RUNNING)
                   or (not t.consumed and t.status in FINISHED) for t in unfinished)
        status = Run.Status.RUNNING if busy else Run.Status.WAITING_FOR_APPROVAL
        if self.run_status != status and not (self.run_status == Run.Status.QUEUED and busy):
            # said in the run's events, as every move of its status is (a claim's is its node_started):
            # a list watching them showed a run paused on its budget, or at a gate, as running
            self.event(Event.Type.RUN_MOVED, "", status=status, was=self.run_status)
            self._set_run(status=status)


def _public(loop_output: dict[str, Any]) -> dict[str, Any]:
    """A loop's output as its ``node_completed`` event shows it (where a nested loop's successors
    continue is bookkeeping)."""
    return {k: v for k, v in loop_output.items() if k != "entered_at"}


def _order(tokens: Iterable[Token]) -> list[Token]:
    return sorted(tokens, key=lambda t: (t.finished_at is None, t.finished_at or datetime.min.replace(tzinfo=UTC), t.pk or 0))


def plan(ir: IR, state: State, finished: int, evaluate: Evaluate | None = None, budget: Budget | None = None) -> Plan:
    """Consume the finished node run ``finished`` (a pk in ``state``) and every other finished,
    unconsumed one (at a join the other parents' messages then find nothing left to do), emit
    what follows, and settle the run's status. A node run not finished yet (a retry is queued, a
    person decides) only settles the run's status when it waits, and clears its park's mark
    (``undecided_since``: the decision the sweeper would ask for again has run). ``budget`` bounds
    what it evaluates in place (``pure.Budget``)."""
    planner = _Planner(ir, state, evaluate, budget)
    token = next((t for t in planner.by_key.values() if t.pk == finished), None)
    if token is None or token.consumed:
        return planner.plan  # a duplicate message
    if token.status not in FINISHED:
        if token.status == NodeRun.Status.WAITING:
            planner.settle()  # the run may now be waiting_for_approval
            planner._touch(token, undecided_since=None)
        return planner.plan
    planner.consume(token, due=True)
    for other in _order(list(planner.by_key.values())):
        if other.pk is not None and not other.consumed and other.status in FINISHED:
            planner.consume(other)
    if planner.run_status == Run.Status.QUEUED and (planner.plan.inserts or planner.plan.continued):
        # no worker has claimed a node yet, but this decision moves the run on (inline and pure
        # nodes continued after the start): it is running
        planner._set_run(status=Run.Status.RUNNING, started_at=planner.now)
    planner.settle()
    return planner.plan


def plan_start(ir: IR, state: State, inputs: dict[str, Any], artifact_id: str,
               evaluate: Evaluate | None = None, budget: Budget | None = None) -> Plan:
    """A new run: consume the node runs a replay reused (in graph order; those it copied consumed are
    read only for a loop's count, ``_counted``), emit the entry nodes.
    ``inputs``: the run's inputs as its ``workflow_started`` event shows them (``events.shown_inputs``)."""
    planner = _Planner(ir, state, evaluate, budget)
    planner.unsent = {t.pk for t in state.tokens if t.reused and t.pk is not None}
    planner.event(Event.Type.WORKFLOW_STARTED, "", inputs=inputs, artifact_id=artifact_id)
    order = {node_id: i for i, node_id in enumerate(ir.topological())}
    # (one copied consumed is a loop's count only, ``run_replay``: consumed, it would go round again)
    for token in sorted((t for t in planner.by_key.values() if t.reused and not t.consumed),
                        key=lambda t: order[t.node_id]):
        planner.consume(token)
    for node_id in ir.entries:
        planner.emit(node_id, 0)
    planner.settle()
    return planner.plan


def plan_refresh(ir: IR, state: State, evaluate: Evaluate | None = None, budget: Budget | None = None) -> Plan:
    """Re-decide after a patch changed the run's graph. Node runs of nodes the patch removed are
    cancelled if they had not started; a finished node that gained edges routes them now; and
    nodes whose predecessors all finished before the patch added them are considered. Nothing new
    starts in a run whose outputs passed their cap: the decision still due for the completion that
    passed it fails the run."""
    planner = _Planner(ir, state, evaluate, budget)
    for token in list(planner.by_key.values()):
        if token.node_id not in ir.nodes and token.status == NodeRun.Status.QUEUED:
            planner._touch(token, status=NodeRun.Status.CANCELLED, consumed=True, taken=[], finished_at=planner.now)
    if over_output_limit(state.output_bytes, state.limits):
        planner.settle()
        return planner.plan
    for node_id in ir.topological():
        latest = planner.latest.get(node_id)
        if latest is None or not latest.consumed or latest.taken is None or latest.status != NodeRun.Status.COMPLETED:
            continue
        if latest.node_id in ir.loops:
            continue
        routed = set(latest.taken)  # (a list: a node of 5,000 edges out checked each against all)
        fresh = [t for t in planner.route(latest) if t not in routed and t not in planner.latest]
        if fresh:
            planner._touch(latest, taken=[*latest.taken, *fresh])
            planner.consider_all([(target, latest.iteration) for target in fresh])
    for node_id in ir.topological():
        if node_id not in planner.latest:
            iterations = [planner.latest[p].iteration for p in ir.predecessors(node_id) if p in planner.latest]
            planner.consider_all([(node_id, max(iterations, default=0))])
    planner.settle()
    return planner.plan


def pure_refs(ir: IR, node_id: str) -> frozenset[str]:
    """The nodes whose outputs a pure node reads (what its config references, its predecessors
    where its type reads upstream), as a worker would load them."""
    def compute(ir: IR) -> dict[str, frozenset[str]]:
        refs = {}
        for nid, node in ir.nodes.items():
            if in_decision(node):
                spec = registry.get(node.type)
                found = referenced_nodes(node.config)
                if spec is not None and spec.reads_upstream:
                    found |= set(ir.predecessors(nid))
                refs[nid] = frozenset(found)
        return refs
    return derived(ir, "pure_refs", compute).get(node_id, frozenset())


def reads_output(ir: IR, node_id: str) -> bool:
    """Whether a decision reads this node's output: it has branch rules, it feeds (or is) an
    inline node, or a pure node the decision may evaluate references it."""
    def compute(ir: IR) -> frozenset[str]:
        return _whole_readers(ir) | {nid for nid in ir.nodes if routes(ir, nid).rules}
    return node_id in derived(ir, "readers", compute)


def _whole_readers(ir: IR) -> frozenset[str]:
    """The nodes whose output a decision reads other than by their branch rules, whole: a pure
    node's references, an inline node's own (a loop's counters) and its predecessors' (its upstream)."""
    def compute(ir: IR) -> frozenset[str]:
        readers: set[str] = set()
        for nid, node in ir.nodes.items():
            readers.update(pure_refs(ir, nid))
            if inline(node.type):
                readers.add(nid)
                readers.update(ir.predecessors(nid))
        return frozenset(readers)
    return derived(ir, "whole_readers", compute)


def output_readers(ir: IR) -> frozenset[str]:
    """Every node whose output routing reads (``reads_output``)."""
    reads_output(ir, "")
    return derived(ir, "readers", lambda _ir: frozenset())


def output_reads(ir: IR) -> dict[str, dict[Any, Any] | None]:
    """What of each reader's output (``output_readers``) a decision reads: for a node read only by
    its own branch rules, what of ``output`` they read (each rule's ``read_tree``, as its
    evaluation cuts the output it is handed, ``reads_union``), an empty tree when none reads it;
    None, the output whole, for one an inline or a pure node reads (a loop's own counters, a
    conditional's or loop's upstream, ``$nodes.<id>``) or one a rule reads whole or does not
    compile for. Evaluated over that much of the output, each rule sees what it sees over all of it."""
    def compute(ir: IR) -> dict[str, dict[Any, Any] | None]:
        whole = _whole_readers(ir)
        found: dict[str, dict[Any, Any] | None] = {}
        left = READS_PARTS_MAX
        for nid in output_readers(ir):
            tree: dict[Any, Any] | None = {}
            if nid in whole:
                tree = None
            for edge in routes(ir, nid).rules if tree is not None else ():
                try:
                    reads = compile_expression(edge.condition or "").reads
                except ExpressionError:
                    tree = None
                    break
                if "output" in reads:
                    # past the bounds the output is read whole, as before any cut: a rule of 2,000
                    # steps deep, or 450 rules of 49, made the read itself the cost (a red team's find)
                    tree = (reads_union(tree, reads["output"]) if _within(reads["output"], READS_DEPTH_MAX, left)
                            else None)
                if tree is None:
                    break
            if tree:
                size = _within(tree, READS_DEPTH_MAX, left)
                tree = tree if size else None
                left -= size
            found[nid] = tree
        return found
    return derived(ir, "output_reads", compute)


# What a decision reads of outputs in parts (``output_reads``), at most: this deep, this many parts
# of all its nodes' together; past either, an output is read whole (a statement's parameters, and its
# cost in the database, grow with them).
READS_DEPTH_MAX = 32
READS_PARTS_MAX = 1024


def _within(tree: Any, depth: int, parts: int) -> int:
    """The parts of ``tree`` (a ``read_tree``: nested dicts, None for whole), counted iteratively;
    0 when it is deeper than ``depth`` or has more than ``parts``."""
    count, todo = 0, [(tree, 0)]
    while todo:
        below, level = todo.pop()
        count += 1
        if level > depth or count > parts:
            return 0
        if isinstance(below, dict):
            todo.extend((sub, level + 1) for sub in below.values())
    return count


# --- the plain step, derived from the plan ----------------------------------------------------------


@dataclass(frozen=True)
class Successor:
    node_id: str
    node_type: str
    others: tuple[str, ...] = ()  # its other parents, when it is a join: each must be consumed first
    absorbable: tuple[str, ...] = ()  # those of them that may still be finished and unconsumed


@dataclass(frozen=True)
class PlainStep:
    """What the plan does with a completed node run, in the cases one statement can check
    (``steps``): consume it with ``taken`` and queue ``successors`` at its iteration, a join once
    its other parents are consumed, those in ``absorbable`` consumed here with ``absorbed``'s
    taken if they are still finished and unconsumed. With no successors (``ends``) it ends a
    branch, and the run when nothing else is open. The statement checks the state is the one this
    was planned from (run running on that graph and patch, node run unconsumed, no successor row
    yet, the join's parents) and writes it, or writes nothing and the full decision plans."""

    taken: tuple[str, ...]
    successors: tuple[Successor, ...] = ()
    absorbed: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (parent, its taken)
    ends: bool = False


# What a node of a type without an executor stores, skipped: its successors run on.
PASSTHROUGH = {"_passthrough": True}
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # the hypothetical states' clock (never stored)
_LIMITS = Limits(max_output_bytes=1 << 62, max_node_runs=1 << 62)


def _hypothesis(ir: IR, node_id: str, others: dict[str, str], busy: bool = False) -> State:
    """A running run where ``node_id`` (pk 1) just completed, each parent in ``others`` consumed
    (``"consumed"``, delivering to its own targets) or finished and unconsumed (``"finished"``),
    and with ``busy`` one more node run queued elsewhere."""
    tokens = [Token(node_id, 0, ir.nodes[node_id].type, NodeRun.Status.COMPLETED, pk=1, finished_at=_EPOCH)]
    for i, (parent, how) in enumerate(sorted(others.items()), start=2):
        taken = [e.target for e in ir.out_edges[parent]] if how == "consumed" else None
        tokens.append(Token(parent, 0, ir.nodes[parent].type, NodeRun.Status.COMPLETED, pk=i, finished_at=_EPOCH,
                            consumed=how == "consumed", taken=taken))
    if busy:
        tokens.append(Token("\x00elsewhere", 0, "", NodeRun.Status.QUEUED, pk=len(tokens) + 1))
    return State(run_status=Run.Status.RUNNING, inputs={}, tokens=tokens, now=_EPOCH, limits=_LIMITS)


def plain_step(ir: IR, node_id: str) -> PlainStep | None:
    """The plan for a completed ``node_id`` when one statement can check its premises: no branch
    rules and no loop on it, every successor a worker node (no inline node, no unknown type), a
    join only in a graph without loops. None otherwise: the full decision reads and plans.
    Derived from ``plan`` on the hypothetical state the statement checks, once per graph."""
    cache = derived(ir, "plain", lambda ir: {})
    if node_id not in cache:
        cache[node_id] = _plain_step(ir, node_id)
    return cache[node_id]


def _evaluates(node: Any, iteration: int, outputs: dict[str, Any]) -> Outcome:
    """The hypothetical evaluator: a pure successor is evaluated in the decision (whether the
    budget allows is known only then), so a step that reaches one is never plain."""
    return Outcome(output={}, artifact_id="sha256:", started_at=_EPOCH, finished_at=_EPOCH)


def _only_consumes(result: Plan) -> bool:
    return not (result.events or result.run or result.inserts) and list(result.updates) == [1]


def _plain_step(ir: IR, node_id: str) -> PlainStep | None:
    node = ir.nodes.get(node_id)
    if node is None or inline(node.type) or routes(ir, node_id).rules:
        return None
    if not ir.out_edges[node_id]:
        alone = plan(ir, _hypothesis(ir, node_id, {}), 1)
        others_busy = plan(ir, _hypothesis(ir, node_id, {}, busy=True), 1)
        if (alone.inserts or alone.run.get("status") != Run.Status.COMPLETED or alone.run.get("output_asked_at")
                or not _only_consumes(others_busy)):
            return None  # (an output to compute: the full decision ends the run and asks for it)
        return PlainStep(taken=tuple(alone.updates[1]["taken"]), ends=True)
    targets = list(dict.fromkeys(e.target for e in ir.out_edges[node_id]))
    others: dict[str, str] = {}
    shape: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
    for target in targets:
        parents = sorted({e.source for e in ir.in_edges[target]} - {node_id})
        if parents and ir.loops:
            return None  # a join's parents at other iterations: the full decision reads them
        # a parent whose only out-edge is the plain edge into the join may still be unconsumed
        absorbable = [p for p in parents if not routes(ir, p).rules
                      and [e.target for e in routes(ir, p).default] == [target]]
        others.update({p: "finished" if p in absorbable else "consumed" for p in parents})
        shape.append((target, tuple(parents), tuple(absorbable)))
    result = plan(ir, _hypothesis(ir, node_id, others, busy=True), 1, _evaluates)
    if result.events or result.run or any(t.status != NodeRun.Status.QUEUED or t.iteration != 0
                                          for t in result.inserts):
        return None  # an inline node, a skip, an unknown type, a run-level move: not a plain step
    kinds = {t.node_id: t.node_type for t in result.inserts}
    if sorted(kinds) != sorted(targets):
        return None
    names = {i: name for i, name in enumerate(sorted(others), start=2)}
    absorbed = tuple((names[pk], tuple(fields["taken"])) for pk, fields in result.updates.items() if pk != 1)
    return PlainStep(taken=tuple(result.updates[1]["taken"]),
                     successors=tuple(Successor(t, kinds[t], parents, absorbable) for t, parents, absorbable in shape),
                     absorbed=absorbed)
