"""The run-patch policy: one validator for every patch, from an agent or a person, on every surface.

A patch is judged by what it does, not by how RFC 6902 spells it: the operations are applied to a
copy and the definitions before and after are compared, so ``move``, ``copy``, ``add`` onto an
existing member, ``~0``/``~1`` escapes and ``-`` all come to the same verdict. Only when a rule is
broken are the operations replayed one at a time, to name the first one that broke it.

Who proposes matters. An agent is untrusted (its task and what it reads may be an attacker's
words): human gates, the run's rules (``/metadata``), the spawn budget and its own privileges are
out of its reach, and what it adds must hang off the node proposing it. A person is trusted as far
as the gates allow: a four-eyes gate, or any gate waiting for a decision, cannot be changed by a run
patch, whoever asks. ``docs/SECURITY.md`` has the rules as a table.
"""

from __future__ import annotations

import copy
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NoReturn

import jsonpatch
import jsonpointer
from django.conf import settings

from aob_project.exceptions import ValidationFailed
from workflows import egress, registry
from workflows.definition import gates
from workflows.definition.ir import attempts_of, iterations_of, timeout_ms_of
from workflows.definition.references import referenced_nodes
from workflows.definition.validation import literal_url_problems, new_problems, validate
from workflows.limits import unstorable
from workflows.models import NodeRun

from ..definitions import apply_operations, json_type

MAX_OPERATIONS = 100
# How long a refusal may spend finding the operation it names (``culprit``): past it, the last.
CULPRIT_BUDGET_S = 0.5
AGENT_NODE_ID_MAX_CHARS = 32  # the id of a node an agent adds (ids are shown to later agents whole)


class Rule(StrEnum):
    """The rules the policy refuses a patch by, in the order it judges them, as a refusal names
    them (its details' ``rule``, ``PatchRefusal.rule``); docs/SECURITY.md has them as a table. A
    patched definition that would not save as a workflow is refused by the validator's own rule
    instead (``schema.*``, ``config.*``, ``edge_node_exists``, ``max_bytes``, …), not listed here.
    Each says what it asks (``asks``), as a refusal an agent reads explains it (``agents.view``)."""

    asks: str

    def __new__(cls, value: str, asks: str) -> Rule:
        member = str.__new__(cls, value)
        member._value_ = value
        member.asks = asks
        return member

    RFC6902 = "rfc6902", "the operation cannot be applied to the run's definition as it is now"
    MAX_OPERATIONS = "max_operations", "a patch has too many operations"
    HISTORY_IMMUTABLE = ("history_immutable",
                         "a node that has begun (run, running, or queued for its retry), and its incoming edges, cannot "
                         "change; nor can a step that has not run be put before a gate that has asked")
    NODE_ID_USED = ("node_id_used",
                    "a node a patch adds cannot take the id of a node that has a node run in this run: give it a new id")
    TYPE_IMMUTABLE = "type_immutable", "a node cannot change type"
    METADATA_IMMUTABLE = "metadata_immutable", "an agent may not change /metadata"
    GATE_IMMUTABLE = "gate_immutable", "human gates and their edges are out of an agent's reach"
    UNKNOWN_PROPOSER = "unknown_proposer", "an agent's patch must name its own agent node"
    UNKNOWN_NODE_TYPE = "unknown_node_type", "a node an agent adds must have a registered type"
    NODE_ID_LENGTH = ("node_id_length",
                      f"a node an agent adds has an id of at most {AGENT_NODE_ID_MAX_CHARS} characters")
    UNREACHABLE_NODE = "unreachable_node", "a node an agent adds must be reachable from the proposing node"
    GATE_APPROVERS = "gate_approvers", "a gate an agent adds must keep its approvers"
    GATE_TIMEOUT_APPROVE = "gate_timeout_approve", "a gate an agent adds may not approve itself on timeout"
    GATE_OUTCOME = ("gate_outcome",
                    "an edge out of a gate an agent adds may test only its outcome ($.approved or $.decision)")
    GATE_BYPASS = "gate_bypass", "an edge may not route around a human gate"
    AGENT_PRIVILEGE = "agent_privilege", "an agent may not grant more than it has"
    SECRET_REFERENCE = "secret_reference", "an agent may not name credentials"
    MAX_RUN_NODES = "max_run_nodes", "the run has as many nodes as it may"
    MAX_PATCHES = "max_patches", "the run has as many patches as it may"
    EXCESSIVE_AGENT_NODES = "excessive_agent_nodes", "the run's spawn limit is reached"
    SSRF = "ssrf", "the URL is not allowed by the outbound policy"
    HOST_NOT_ALLOWED = egress.RULE, "a literal URL's host is not on the workflow's metadata.allowed_hosts"
    APPROVED_ACTION_STARTED = "approved_action_started", "an approved action that has started cannot change"
    PATCH_POLICY = "patch_policy", "this workflow's patch_policy is deny"


def effective_tools(config: dict[str, Any]) -> list[str]:
    """What an agent node with this config may do, as the agent type registered it."""
    spec = registry.get("agent")
    return spec.grants(config) if spec is not None and spec.grants is not None else []


def effective_model(config: dict[str, Any]) -> str:
    """The model an agent node with this config calls, as the agent type registered it ("" when no
    agent type is registered: its nodes are skipped, and call none)."""
    spec = registry.get("agent")
    return spec.model(config) if spec is not None and spec.model is not None else ""


def effective_tool_rounds(config: dict[str, Any]) -> int:
    """How many rounds of tool calls an agent node with this config makes, as the agent type
    registered it (0 when none is registered: its nodes are skipped, and call nothing)."""
    spec = registry.get("agent")
    return spec.tool_rounds(config) if spec is not None and spec.tool_rounds is not None else 0


class PatchRejected(ValidationFailed):
    code = "patch_rejected"


class PatchDenied(PatchRejected):
    """An agent's patch of a run whose workflow says ``patch_policy: deny``."""

    code = "patch_denied"
    status = 403


class SpawnLimitExceeded(PatchRejected):
    code = "excessive_agent_nodes"


@dataclass(frozen=True)
class Proposer:
    """``agent`` when the patch comes from an agent node (the tool, or any request naming one)."""

    agent: bool
    node_id: str = ""

    @property
    def kind(self) -> str:
        return "agent" if self.agent else "person"


@dataclass(frozen=True)
class RunState:
    """What the policy needs to know of the run, read under its lock."""

    # node id -> status of its latest node run, or "waiting" while any of its node runs waits (a gate
    # in a loop's body waits once per pass: an earlier pass's may wait beside the newest)
    statuses: dict[str, str] = field(default_factory=dict)
    # nodes with a node run that has begun (``NodeRun.begun``: it ran, or made an attempt; or it goes on
    # with its replay source's unsettled work, ``Run.going_on_nodes``): their past is fixed
    started: frozenset[str] = frozenset()
    approved: frozenset[str] = frozenset()  # gates a completed node run of which approved (any pass of a loop's)
    base: dict[str, Any] = field(default_factory=dict)  # the frozen version the run started from
    owner: str = ""
    spawned: int = 0  # agent nodes patches have added to this run so far (removals give nothing back)
    patches: int = 0  # patches stored for this run so far (applied or held), each a definition kept whole
    bound: bool = False  # a child run started inside an approved action of its parent: all of it is approved
    hosts_above: Any = None  # the allowed_hosts lists of the runs above (``Run.hosts_above``, workflows.egress)
    rules_above: Any = None  # the strictest agent rules of the runs above (``Run.rules_above``, ``rules_handed_down``)
    agents_wrote: frozenset[str] = frozenset()  # nodes of the run's definition an agent wrote (provenance)
    # of those, the ones a person's patch added or changed since the run began: as that person left
    # each (``provenance.Written.persons``)
    persons_set: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    after: dict[str, Any]
    spawned: int = 0  # agent nodes this patch adds
    reopen: tuple[str, ...] = ()  # approved gates whose guarded action this patch changes: asked again
    revote: tuple[str, ...] = ()  # pending gates whose guarded action changes: the votes so far lapse


POLICIES = ("auto", "require_approval", "deny")  # ``metadata.patch_policy``'s values, the strictest last


def agent_limit(definition: dict[str, Any], above: Any = None) -> int:
    """The spawn limit: the operator's ceiling, which a definition may lower and never raise, nor
    raise past the runs above it (``Run.rules_above``)."""
    metadata = definition.get("metadata") if isinstance(definition, dict) else None
    return min([settings.AOB_MAX_AGENT_NODES, *_limits(metadata, above)])


def patch_policy(definition: dict[str, Any], above: Any = None) -> str:
    """What the definition's ``metadata.patch_policy`` says of agents' patches: ``auto`` (judged and
    applied), ``require_approval`` (judged, then held for a person), ``deny``; or a run's above it
    (``Run.rules_above``), when stricter."""
    return _policy(definition.get("metadata") if isinstance(definition, dict) else None, above)


def rules_handed_down(metadata: Any, above: Any) -> dict[str, Any] | None:
    """What a run hands down to the runs its ``workflow`` nodes start (``Run.rules_above``), as it
    hands down its ``allowed_hosts``: the strictest ``patch_policy`` and the smallest
    ``max_agent_nodes`` of its definition's and those handed down to it (each run counts its own
    spawned agents); None when none sets either."""
    policy, limits = _policy(metadata, above), _limits(metadata, above)
    rules = {**({"patch_policy": policy} if policy != "auto" else {}),
             **({"max_agent_nodes": min(limits)} if limits else {})}
    return rules or None


def _policy(metadata: Any, above: Any) -> str:
    own = (metadata.get("patch_policy") if isinstance(metadata, dict) else None) or "auto"
    inherited = _above(above).get("patch_policy") or "auto"
    return max(own, inherited, key=lambda policy: POLICIES.index(policy) if policy in POLICIES else 0)


def _limits(metadata: Any, above: Any) -> list[int]:
    declared = metadata.get("max_agent_nodes") if isinstance(metadata, dict) else None
    return [limit for limit in (declared, _above(above).get("max_agent_nodes")) if isinstance(limit, int)]


STRICTEST = {"patch_policy": "deny", "max_agent_nodes": 0}  # what binds a run whose rules above are unknowable


def _above(above: Any) -> dict[str, Any]:
    """``Run.rules_above`` as stored; what is no object binds most (a bound is never read as none)."""
    if above is None or isinstance(above, dict):
        return above or {}
    return STRICTEST


def judge(*, before: dict[str, Any], operations: Any, proposer: Proposer, state: RunState) -> Verdict:
    """The patched definition and what applying it entails, or PatchRejected naming the operation
    (``op``), its JSON Pointer (``path``) and the ``rule`` it breaks."""
    with gates.memo():  # before and after stay as they are meanwhile: each graph is built once
        return _Judgement(before, operations, proposer, state).run()


class _Judgement:
    def __init__(self, before: dict[str, Any], operations: Any, proposer: Proposer, state: RunState) -> None:
        self.before, self.operations, self.proposer, self.state = before, operations, proposer, state

    # --- refusing, with the operation to blame ---------------------------------------------------

    def refuse(self, rule: str, message: str, *probes: Callable[[Any], Any], op: int | None = None,
               error: type[PatchRejected] = PatchRejected, code: str | None = None, status: int | None = None,
               **extra: Any) -> NoReturn:
        if op is None and probes:
            op = self.culprit(*probes)
        path = self.operations[op].get("path") if op is not None and isinstance(self.operations[op], dict) else None
        raise error(f"{message} ({self.proposer.kind} patch refused: {rule})", code=code, status=status,
                    extra={"op": op, "path": path, "rule": rule, **extra})

    def culprit(self, *probes: Callable[[Any], Any]) -> int | None:
        """The first operation after which a probe of the document differs from before (the
        first probe that ever differs decides; a probe that fails counts as a difference). The
        document changes in place from one operation to the next: its graphs are never memoized."""
        with gates.unmemoized():
            return self._culprit(*probes)

    def _culprit(self, *probes: Callable[[Any], Any]) -> int | None:
        """Past ``CULPRIT_BUDGET_S`` the last operation is named: a probe may compile the whole
        document after each operation, and an agent's patch of 100 operations on a run it had grown
        to its bounds (164 loops, 5,000 edges) took 24 s of a worker, the run's row locked, to name
        one in a refusal."""
        deadline = time.monotonic() + CULPRIT_BUDGET_S
        for probe in probes:
            target = _safely(probe, self.before)
            doc = copy.deepcopy(self.before)
            for index, operation in enumerate(self.operations):
                try:
                    doc = jsonpatch.JsonPatch([operation]).apply(doc, in_place=True)
                except Exception:  # noqa: BLE001 - any failure here is this operation's
                    return index
                if _safely(probe, doc) != target:
                    return index
                if time.monotonic() > deadline:
                    return len(self.operations) - 1
        return len(self.operations) - 1 if self.operations else None

    # --- the rules, in the order they are judged --------------------------------------------------

    def run(self) -> Verdict:
        if not isinstance(self.operations, list):
            self.refuse(Rule.RFC6902, "operations must be a list of RFC 6902 operations")
        if len(self.operations) > MAX_OPERATIONS:
            self.refuse(Rule.MAX_OPERATIONS, f"{len(self.operations)} operations; a patch has at most {MAX_OPERATIONS}",
                        op=MAX_OPERATIONS, limit=MAX_OPERATIONS)
        if not self.operations:
            return Verdict(after=self.before)
        # when proposed, and when a held one is approved
        if self.proposer.agent and patch_policy(self.before, self.state.rules_above) == "deny":
            self.refuse(Rule.PATCH_POLICY, "this workflow's patch_policy is deny (or a parent run's: a sub-workflow runs "
                        "under its parents'): agents may not patch its runs", error=PatchDenied)
        self.check_storable()
        self.check_patch_count()  # before any work on a patch the run has no room for
        self.after = self.apply()
        self.check_shape()
        self.old, self.new = gates.nodes_by_id(self.before), gates.nodes_by_id(self.after)
        self.check_history()
        if self.proposer.agent:
            self.check_rules_untouched()
        self.check_gates_untouched()
        self.check_valid()
        if self.proposer.agent:
            self.check_new_nodes()
            self.check_reach()
            self.check_new_gates()
        self.check_bypass()
        if self.proposer.agent:
            self.check_new_starts()
            self.check_privileges()
            self.check_repeats()
            self.check_credentials()
            self.check_loop_bounds()
        self.check_growth()
        spawned = self.check_spawn()
        self.check_ssrf()
        reopen, revote = self.check_approved_actions()
        return Verdict(after=self.after, spawned=spawned, reopen=reopen, revote=revote)

    def check_storable(self) -> None:
        """What a person's body cannot carry (``workflows.api.parsers``), no patch carries, whoever
        proposes it: an agent's tool arguments are read without the 64-bit part of that rule, and a
        number past it stored in a definition made the definition, read back, refused when saved as read."""
        for index, operation in enumerate(self.operations):
            problem = unstorable(operation)
            if problem is not None:
                self.refuse(problem.rule, f"operation {index} at {problem.path}: {problem.message}", op=index)

    def apply(self) -> dict[str, Any]:
        try:
            return apply_operations(self.before, self.operations)
        except ValidationFailed as exc:  # it names the operation: no replay of a patch that may be a bomb
            self.refuse(exc.extra.get("rule", Rule.RFC6902), exc.message, op=exc.extra.get("op"), code=exc.code,
                        status=exc.status, **{k: v for k, v in exc.extra.items() if k not in ("rule", "field", "op",
                                                                                           "path")})

    def check_shape(self) -> None:
        after = self.after
        shaped = isinstance(after, dict) and isinstance(after.get("nodes"), list) and all(
            isinstance(n, dict) and isinstance(n.get("id"), str) and isinstance(n.get("type"), str)
            for n in after["nodes"]) and isinstance(after.get("edges", []), list) and all(
            isinstance(e, dict) and isinstance(e.get("from"), str) and isinstance(e.get("to"), str)
            for e in after.get("edges", []))
        if not shaped:
            self.refuse_invalid(validate(after))

    def check_history(self) -> None:
        for node_id in sorted(self.state.started):
            if node_id not in self.old:
                continue
            if node_id not in self.new:
                self.refuse(Rule.HISTORY_IMMUTABLE, f"node {node_id!r} has begun (run, running, queued for its "
                            "retry, or going on with its replay source's unsettled work) and cannot be removed",
                            _node(node_id), node_id=node_id)
            if self.new[node_id] != self.old[node_id]:
                self.refuse(Rule.HISTORY_IMMUTABLE, f"node {node_id!r} has begun (run, running, queued for its "
                            "retry, or going on with its replay source's unsettled work) and cannot be changed",
                            _node(node_id), node_id=node_id)
            if _incoming(self.before, node_id) != _incoming(self.after, node_id):
                self.refuse(Rule.HISTORY_IMMUTABLE, f"the incoming edges of node {node_id!r}, which has begun, "
                            "cannot change", lambda doc, n=node_id: _incoming(doc, n), node_id=node_id)
        # a node run's record is its node's for good (the planner reads a node's latest, a join its
        # parents'): a step added under the id of one removed (a queued one is cancelled, a skipped
        # one dead) would find that row standing for it, and never run; its successors go on without it
        for node_id in sorted(self.new.keys() - self.old.keys()):
            if node_id in self.state.statuses:
                self.refuse(Rule.NODE_ID_USED, f"node {node_id!r} has a node run in this run ({self.state.statuses[node_id]}) "
                            "from before an earlier patch removed it: a node added under its id would never run; give "
                            "it a new id", _node(node_id), node_id=node_id)
        for node_id, node in self.new.items():
            if node_id in self.old and self.old[node_id].get("type") != node.get("type"):
                self.refuse(Rule.TYPE_IMMUTABLE, f"node {node_id!r} cannot change type ({self.old[node_id].get('type')} "
                            f"→ {node.get('type')})", _node(node_id), node_id=node_id)

    def check_rules_untouched(self) -> None:
        if self.before.get("metadata") != self.after.get("metadata"):
            self.refuse(Rule.METADATA_IMMUTABLE, "an agent may not change /metadata: the patch policy, the spawn "
                        "limit and the budgets are the run's rules", lambda doc: _dump(doc.get("metadata")))

    def guards_against_proposer(self, gate: str) -> bool:
        """Every gate is out of an agent's reach; a four-eyes gate, and a gate waiting for its people,
        out of anyone's."""
        config = self.old[gate].get("config") or {}
        four_eyes = isinstance(config, dict) and config.get("allow_self_approval") is False
        return self.proposer.agent or four_eyes or self.state.statuses.get(gate) == "waiting"

    def why_gate_held(self, gate: str) -> str:
        config = self.old[gate].get("config") or {}
        four_eyes = isinstance(config, dict) and config.get("allow_self_approval") is False
        return ("a human gate is out of an agent's reach" if self.proposer.agent else
                f"gate {gate!r} is {'four-eyes' if four_eyes else 'waiting for a decision'}: a new workflow "
                "version is the way to change it")

    @functools.cached_property
    def held_gates(self) -> tuple[str, ...]:
        """The gates of the run's definition out of this proposer's reach (``guards_against_proposer``)."""
        return tuple(gate for gate in gates.gates(self.before) if self.guards_against_proposer(gate))

    def check_gates_untouched(self) -> None:
        for gate in self.held_gates:
            why = self.why_gate_held(gate)
            if self.new.get(gate) != self.old[gate]:
                self.refuse(Rule.GATE_IMMUTABLE, f"node {gate!r}: {why}", _node(gate), node_id=gate)
            if _touching(self.before, gate) != _touching(self.after, gate):
                self.refuse(Rule.GATE_IMMUTABLE, f"the edges into and out of gate {gate!r}: {why}",
                            lambda doc, g=gate: _touching(doc, g), node_id=gate)
        # a step that carries a gate's decision on to a rule (a conditional after it, a transform
        # reading it) routes on that decision as the gate's edges do: loosened, a rejection paid. Its
        # config, the edges into it and its rules are the gate's; a plain edge out is ``crossed``'s
        for carrier, gate in gates.deciders(self.before, self.held_gates).items():
            why = self.why_gate_held(gate)
            if self.new.get(carrier) != self.old[carrier]:
                self.refuse(Rule.GATE_IMMUTABLE, f"node {carrier!r} carries the decision of gate {gate!r} on: "
                            f"{why}", _node(carrier), node_id=carrier)
            if gates.held_edges(self.before, carrier) != gates.held_edges(self.after, carrier):
                self.refuse(Rule.GATE_IMMUTABLE, f"the edges into node {carrier!r} and its branch rules (it carries "
                            f"the decision of gate {gate!r} on): {why}",
                            lambda doc, c=carrier: gates.held_edges(doc, c), node_id=carrier)

    def check_valid(self) -> None:
        report = new_problems(validate(self.after, written=True), self.before)
        if not report.valid:
            self.refuse_invalid(report)
        # what each loop's jump runs again, by the planner's own rule, before and after the patch
        self.bodies_before, self.bodies_after = loop_bodies(self.before), loop_bodies(self.after)

    def refuse_invalid(self, report: Any) -> NoReturn:
        first = report.errors[0]
        parts = [] if first.path == "/" else first.path.split("/")[1:]
        # the value at the error's pointer, then at each parent: a missing key blames what made its parent
        probes = [lambda doc, at="".join("/" + p for p in parts[:depth]): _dump(jsonpointer.resolve_pointer(doc, at, None))
                  for depth in range(len(parts), -1, -1)]
        op = self.culprit(*probes)
        found = _safely(lambda doc: json_type(jsonpointer.resolve_pointer(doc, first.path if parts else "")), self.after)
        self.refuse(first.rule, f"the patched workflow is invalid: {first.path}: {first.message}", op=op,
                    at=first.path, found_type=found if isinstance(found, str) else "missing",
                    errors=[p.as_dict() for p in report.errors[:20]])

    def check_new_nodes(self) -> None:
        """What an agent names, later agents read (``agents.view`` shows an agent's node by its id and
        type): a node it adds has a registered type and a short id, no room for a sentence."""
        types = registry.catalogue()
        for node_id, node in self.new.items():
            if node_id in self.old:
                continue
            if len(node_id) > AGENT_NODE_ID_MAX_CHARS:
                self.refuse(Rule.NODE_ID_LENGTH, f"a node an agent adds has an id of at most {AGENT_NODE_ID_MAX_CHARS} "
                            f"characters (this one has {len(node_id)})", _node(node_id),
                            limit=AGENT_NODE_ID_MAX_CHARS)
            if node.get("type") not in types:
                self.refuse(Rule.UNKNOWN_NODE_TYPE, f"node {node_id!r}: a node an agent adds must have a registered "
                            f"type ({', '.join(sorted(types))})", _node(node_id), node_id=node_id)

    def check_reach(self) -> None:
        added = [n for n in self.new if n not in self.old]
        if added and (self.old.get(self.proposer.node_id) or {}).get("type") != "agent":
            self.refuse(Rule.UNKNOWN_PROPOSER, f"an agent's patch must name its own node (node_id); "
                        f"{self.proposer.node_id!r} is not an agent node of the run", _node(added[0]),
                        node_id=added[0])
        reach = gates.reachable(gates.successors(self.after), [self.proposer.node_id])
        for node_id in added:
            if node_id not in reach:
                self.refuse(Rule.UNREACHABLE_NODE, f"node {node_id!r} must be reachable from the proposing node "
                            f"{self.proposer.node_id!r} (an agent adds steps after itself, never new starts)",
                            _node(node_id), node_id=node_id)

    def check_new_starts(self) -> None:
        """Nor may an agent cut a step loose from what leads to it, to start at once: a step it added
        after itself, by a later patch, or an author's, before its own predecessors (after
        ``check_bypass``: a gated step cut loose is a bypass, and says so)."""
        # a step with a node run already (queued, skipped, or begun) is not started by losing its edge
        loose = sorted(set(gates.entries(self.after)) - set(gates.entries(self.before)) - set(self.state.statuses))
        for node_id in loose:
            self.refuse(Rule.UNREACHABLE_NODE, f"node {node_id!r} would start at once, with no edge leading to it: "
                        "an agent adds steps after itself, never new starts", lambda doc, n=node_id: n in
                        gates.entries(doc), node_id=node_id)

    def check_new_gates(self) -> None:
        named = gates.named_approvers(self.state.base or self.before) | {self.state.owner}
        for gate in gates.gates(self.after):
            if gate in self.old:
                continue
            config = self.new[gate].get("config") or {}
            for key in ("approvers", "escalate_to"):
                people = config.get(key)
                strangers = sorted(set(people or []) - named)
                if strangers:
                    self.refuse(Rule.GATE_APPROVERS, f"gate {gate!r}: {key} may name only people the workflow's author "
                                f"named ({', '.join(strangers)} are not)", _node(gate), node_id=gate)
            if config.get("on_timeout") == "approve":
                self.refuse(Rule.GATE_TIMEOUT_APPROVE, f"gate {gate!r}: an agent's gate may not approve itself on "
                            "timeout", _node(gate), node_id=gate)
            for edge in self.after.get("edges", []):
                if edge["from"] == gate and not gates.is_outcome(edge.get("condition")):
                    self.refuse(Rule.GATE_OUTCOME, f"an edge out of gate {gate!r} may test only its outcome "
                                "($.approved or $.decision)", lambda doc, g=gate: _outcomes(doc, g), node_id=gate)

    @functools.cached_property
    def numbering(self) -> tuple[dict[str, int], list[str]]:
        """One numbering of the nodes of both documents, for the bit sets the gate checks compare."""
        names = list(dict.fromkeys([*self.old, *self.new]))
        return {name: i for i, name in enumerate(names)}, names

    @functools.cached_property
    def around(self) -> tuple[gates.Around, gates.Around]:
        """Every gate's ``downstream``, ``bypassed`` and ``before``, before and after the patch, from
        one pass over each graph (``gates.Around``), not from walks of the whole graph a gate."""
        number, _ = self.numbering
        return gates.Around(self.before, number), gates.Around(self.after, number)

    def check_bypass(self) -> None:
        try:
            self.check_paths_around()
        except gates.RoutesTooMany as exc:
            self.refuse(Rule.GATE_BYPASS, f"the paths around the gates are too many to judge this patch by ({exc}): "
                        "a new workflow version is the way to change this run", op=len(self.operations) - 1)
        self.check_crossings()

    def check_paths_around(self) -> None:
        for gate in gates.gates(self.before):
            if gate not in self.new or not self.guards_against_proposer(gate):
                continue
            was, now = self.around  # (built for the first gate held: none for a patch that holds none)
            # judged on the nodes after the gate before the patch too: an edge moved off the guarded
            # part onto a node before the gate takes a node out of "downstream" as it goes around
            was_after = was.downstream(gate)
            fresh_bits = now.bypassed(gate, after_it=was_after) & ~was.bypassed(gate)
            if fresh_bits:
                fresh, was_after_names = self.named(fresh_bits), self.named(was_after)
                self.refuse(Rule.GATE_BYPASS, f"the patch lets nodes upstream of gate {gate!r} reach "
                            f"{', '.join(sorted(fresh)[:5])} without passing through it",
                            lambda doc, g=gate, w=was_after_names: sorted(gates.bypassed(doc, g, after_it=w)),
                            node_id=gate)
            if self.proposer.agent:
                self.check_authors_path_around(gate)

    def named(self, bits: int) -> set[str]:
        return gates.named(bits, self.numbering[1])

    def check_crossings(self) -> None:
        held = tuple(gate for gate in self.held_gates if gate in self.new)
        try:
            crossed = gates.crossings(self.before, self.after, held)
        except gates.RoutesTooMany as exc:
            self.refuse(Rule.GATE_BYPASS, f"the routes of the gates' decisions are too many to judge this patch by "
                        f"({exc}): a new workflow version is the way to change this run", op=len(self.operations) - 1)
        if crossed:
            by = next(iter(crossed.values()))
            self.refuse(Rule.GATE_BYPASS, f"the patch lets another outcome of gate {by[0]!r} reach "
                        f"{', '.join(list(crossed)[:5])}, which only its own outcome reached: they would run "
                        "whatever the gate's people decide",
                        lambda doc: sorted(gates.crossed(self.before, doc, held)), node_id=by[0])

    def check_authors_path_around(self, gate: str) -> None:
        """A path around the gate its author laid (a small payment's rule beside the gate's for a
        large one): an agent may not change whether a step that acts (``registry.acts``) runs on it,
        or what it reads there (the rule moved first, loosened, or fed another amount), as for
        ``check_owner_s_steps``. What reaches such a step through the gate is the gate's to judge
        (a changed action asks its people again), and a step before the gate is not on the path
        (a loop's jump makes it "after" the gate too)."""
        was, _ = self.around
        around_bits = was.bypassed(gate) & ~was.before(gate) & self.acting
        if not around_bits:
            return
        number = self.numbering[0][gate]
        changed = self.named(around_bits & (self.influence[0].without(number) | self.influence[1].without(number)))
        if changed:
            around = self.named(around_bits)
            self.refuse(Rule.GATE_BYPASS, f"{', '.join(sorted(changed)[:5])} may run without passing through gate "
                        f"{gate!r} on a path its author laid: an agent may not change whether it runs there, or "
                        "what it reads", lambda doc: sorted(around & influenced(self.before, doc, avoid=gate)),
                        node_id=gate)

    @functools.cached_property
    def acting(self) -> int:
        """The steps of the run's definition that act (``registry.acts``), as bits (``numbering``)."""
        number = self.numbering[0]
        return gates.bits(number[n] for n, node in self.old.items() if registry.acts(node.get("type")))

    @functools.cached_property
    def influence(self) -> tuple[gates.Dominance, gates.Dominance]:
        """``_reached`` from where this patch's influence starts, before and after it, around any
        node: one dominator tree of each document, not a walk of it a gate."""
        number = self.numbering[0]
        start = [number[n] for n in self.influence_start if n in number]
        return gates.Dominance(_onward(self.before, number), start), gates.Dominance(_onward(self.after, number), start)

    @functools.cached_property
    def influence_start(self) -> set[str]:
        """Where this patch's influence starts (``influenced``): once a judgement, for every gate."""
        return _influence_start(self.before, self.after)

    def repeated(self) -> set[str]:
        """Existing nodes the patch makes a loop run again: what the jump of a loop it adds, points
        elsewhere or lets go round more often (more iterations, or any change to its condition)
        runs again, and any node it brings under an existing loop's jump (an edge into its body,
        or into what hangs off it). A loop's exits are edges: their targets run once."""
        out: set[str] = set()
        for loop_id, body in self.bodies_after.items():
            widened = loop_id not in self.old or self.widened(loop_id)
            out |= set(body) - ({loop_id} if widened else set(self.bodies_before.get(loop_id, ())) | {loop_id})
        return {n for n in out if n in self.old}

    def widened(self, loop_id: str) -> bool:
        """Whether the patch lets an existing loop go round more often: more iterations, or any change
        to its condition, to where it jumps back, or to what its condition reads (``conditions_fed``)."""
        old, new = self.old[loop_id], self.new[loop_id]
        return any(_loop_config(new, key) != _loop_config(old, key) for key in ("loop_back_to", "condition")) or (
            _iterations(new) > _iterations(old)) or loop_id in self.conditions_fed

    @functools.cached_property
    def conditions_fed(self) -> set[str]:
        """``conditions_fed`` of this patch: once a judgement, for every loop."""
        return conditions_fed(self.before, self.after)

    def check_loop_bounds(self) -> None:
        """How often an existing loop goes round is its author's bound (or the person's who patched it
        in), as an agent's tools and budget are: an agent may lower it, never raise it, whatever the
        loop runs again (plain steps, a POST each pass, the agent itself: the author bounded those
        passes too)."""
        for loop_id in sorted(self.bodies_after):
            if loop_id in self.old and self.old[loop_id].get("type") == "loop" and self.widened(loop_id):
                self.refuse(Rule.AGENT_PRIVILEGE, f"loop {loop_id!r}: an agent may not let a loop go round more "
                            "often (max_iterations raised, condition or loop_back_to changed, or what its "
                            "condition reads: an edge into it, a step before it or one it reads): its bound is "
                            "its author's", _node(loop_id),
                            lambda doc, loop=loop_id: loop in conditions_fed(self.before, doc), node_id=loop_id)
        # the same raise spelled as a new loop over what a loop of the run's, or of its author's, runs
        # again (beside it, inside it, in its place, or after a patch that removed it): that loop, widened
        bounded: dict[str, str] = {}
        for bodies in (self.bodies_before, self.bodies_authored):
            for loop_id, body in sorted(bodies.items()):
                for node_id in body:
                    bounded.setdefault(node_id, loop_id)
        # a step a person set (the author's, or one a person patched in) that no loop runs again is
        # run once a pass of the run: a bound too
        authored = {n for n in self.old if self.persons(n) is not None}
        for loop_id in sorted(set(self.bodies_after) - set(self.old)):
            again = sorted(n for n in self.bodies_after[loop_id] if (n in bounded or n in authored) and n != loop_id)
            if again:
                whose = (f"which loop {bounded[again[0]]!r} bounds" if again[0] in bounded else
                         "which its author runs once")
                self.refuse(Rule.AGENT_PRIVILEGE, f"loop {loop_id!r} runs {again[0]!r} again, {whose}: an agent may "
                            "not loop its author's steps (a loop's max_iterations may be lowered): their bound is "
                            "their author's", _node(loop_id), node_id=loop_id)
        # and an existing loop, the author's or an agent's own, brought over an author's step by an
        # edge into what it runs again: that step, run once by its author, ran each pass (10,000)
        for loop_id in sorted(set(self.bodies_after) & set(self.old)):
            newly = set(self.bodies_after[loop_id]) - set(self.bodies_before.get(loop_id, ())) - {loop_id}
            again = sorted(n for n in newly if n in bounded or n in authored)
            if again:
                self.refuse(Rule.AGENT_PRIVILEGE, f"loop {loop_id!r} would run {again[0]!r} again each pass: an agent "
                            "may not bring its author's steps under a loop (their bound is their author's)",
                            lambda doc, n=again[0], loop=loop_id: n in loop_bodies(doc).get(loop, ()),
                            node_id=again[0])

    @functools.cached_property
    def bodies_authored(self) -> dict[str, frozenset[str]]:
        """What the loops of the version the run started from run again (a loop an earlier patch
        removed still bounds its steps)."""
        return loop_bodies(self.state.base) if self.state.base and self.state.base != self.before else {}

    def touched(self) -> dict[str, dict[str, Any]]:
        """What an agent's patch writes: the nodes it adds or changes, and the existing nodes it
        makes a loop run again (``repeated``), judged as if it had written them itself."""
        out = {n: node for n, node in self.new.items() if self.old.get(n) != node}
        for node_id in sorted(self.repeated()):
            out.setdefault(node_id, self.new[node_id])
        return out

    def fed(self) -> dict[str, dict[str, Any]]:
        """Existing agent nodes whose input, or whether they run, the patch can change
        (``influenced``): an agent's prompt carries its predecessors' outputs and the nodes its
        config refers to, so a new edge into one, or a change to a step before it or one it reads,
        gives it a new task, as rewriting its task would (a weak agent wiring its own text into an
        author's stronger agent, or rewriting the step that feeds it, however many steps lie between)."""
        return {n: node for n, node in self.new.items()
                if n in self.old and node.get("type") == "agent" and n in self.reached}

    @functools.cached_property
    def reached(self) -> set[str]:
        """``influenced`` by this patch: once a judgement, for ``fed`` and ``check_owner_s_steps``."""
        return influenced(self.before, self.after)

    def check_privileges(self) -> None:
        """An agent node an agent adds, changes, makes run again or feeds a new edge has no more
        than its proposer (tools, tool rounds, budget, attempts, time, model), and, if it was there
        before, no more than its author gave it."""
        proposer = self.old.get(self.proposer.node_id) or {}
        mine = proposer.get("config") if isinstance(proposer.get("config"), dict) else {}
        # the proposer's, the operator's default (what an agent naming none calls), or one the
        # workflow's author gave an agent: never one an injected prompt picks
        models = {effective_model(mine), effective_model({}), *self.authors_models()}
        for node_id, node in {**self.fed(), **self.touched()}.items():
            if node.get("type") != "agent":
                continue
            config = node.get("config") or {}
            # as a person last set it (``persons``): removed by one patch and added again by the next,
            # an author's agent came back with the proposer's tools and no budget
            for whose, holder in (("its proposer's", proposer), ("its author's", self.persons(node_id))):
                if holder is None:
                    continue
                bound = holder.get("config") if isinstance(holder.get("config"), dict) else {}
                extra_tools = sorted(set(effective_tools(config)) - set(effective_tools(bound)))
                if extra_tools:
                    self.refuse(Rule.AGENT_PRIVILEGE, f"agent {node_id!r} may not have tools beyond {whose}: "
                                f"{', '.join(extra_tools)}", _written(node_id), node_id=node_id)
                # numbers as the schema's ``integer`` takes them (``100.0`` too): an author's 100.0 held nothing
                tokens, given = (v if isinstance(v, int | float) and not isinstance(v, bool) else None
                                 for v in (bound.get("max_tokens"), config.get("max_tokens")))
                if tokens is not None and not (given is not None and given <= tokens):
                    self.refuse(Rule.AGENT_PRIVILEGE, f"agent {node_id!r}: max_tokens must be at most {whose} "
                                f"({tokens})", _written(node_id), node_id=node_id)
                theirs = config.get("budget") or {}
                for key, limit in (bound.get("budget") or {}).items():
                    if theirs.get(key) is None or theirs[key] > limit:
                        self.refuse(Rule.AGENT_PRIVILEGE, f"agent {node_id!r}: budget.{key} must be at most "
                                    f"{whose} ({limit})", _written(node_id), node_id=node_id)
                # each round, attempt and second is more calls of the model and of the tools; the
                # attempts and time an author set bound every type of step, in ``check_repeats``
                bounds = [("max_tool_rounds", effective_tool_rounds(config), effective_tool_rounds(bound))]
                if holder is proposer:
                    bounds += [("retry.max_attempts", _attempts(node), _attempts(holder)),
                               ("timeout_ms", _timeout_ms(node), _timeout_ms(holder))]
                for what, given, limit in bounds:
                    if given > limit:
                        self.refuse(Rule.AGENT_PRIVILEGE, f"agent {node_id!r}: {what} must be at most {whose} "
                                    f"({limit})", _written(node_id), node_id=node_id)
            model = effective_model(config)
            if model not in models:
                self.refuse(Rule.AGENT_PRIVILEGE, f"agent {node_id!r}: model {model!r} is not its "
                            f"proposer's, the default or one the workflow's author chose ({', '.join(sorted(models))})",
                            _written(node_id), node_id=node_id)

    def persons(self, node_id: str) -> dict[str, Any] | None:
        """The step as a person last set it: as it is, when no agent wrote it (its author's, or a
        step a person patched in or changed since); else as the last person's patch that added or
        changed it left it (an owner's tightening, which an agent's harmless change first and its
        raise next undid when the run's start was the bound); else as the run started, if it was
        there (an author's step an agent changed, or removed and added again); None for an agent's own."""
        if node_id in self.old and node_id not in self.state.agents_wrote:
            return self.old[node_id]
        if node_id in self.state.persons_set:
            return self.state.persons_set[node_id]
        return gates.nodes_by_id(self.state.base or self.before).get(node_id)

    def check_repeats(self) -> None:
        """How often a step a person set acts again is theirs to say, whatever its type: an agent may
        not raise its ``retry.max_attempts`` or ``timeout_ms``, nor a bound its type names
        (``registry.limits``: an http request's deadline and answer size), make it repeat where it did not, nor,
        where it repeats, change what the outside recognises a repeat by (``registry.repeats``: an
        http request's method, key and ``on_lost`` together, ``fail_on_status``, and its key's
        header). An author's POST of one attempt with ``on_lost: fail``, which must never charge
        twice, was an agent's to make 20 attempts, repeated when lost, with no key (agent nodes were
        the only ones bounded). The bound is the step as a person last set it (``persons``): an
        owner who tightened it mid-run, or patched it in, sets it."""
        for node_id, node in self.touched().items():
            bound = self.persons(node_id)
            if bound is None:
                continue
            for what, given, limit in (("retry.max_attempts", _attempts(node), _attempts(bound)),
                                       ("timeout_ms", _timeout_ms(node), _timeout_ms(bound))):
                if given > limit:
                    self.refuse(Rule.AGENT_PRIVILEGE, f"node {node_id!r}: {what} must be at most what a person "
                                f"set ({limit})", _written(node_id), node_id=node_id)
            given_limits = registry.limits(node.get("type"), node.get("config"))
            for what, limit in registry.limits(bound.get("type"), bound.get("config")).items():
                if limit is not None and (given_limits.get(what) is None or given_limits[what] > limit):
                    self.refuse(Rule.AGENT_PRIVILEGE, f"node {node_id!r}: {what} must be at most what a person "
                                f"set ({limit})", _written(node_id), node_id=node_id)
            now = registry.repeats(node.get("type"), node.get("config"))
            was = registry.repeats(bound.get("type"), bound.get("config"))
            more = any(on and not (len(was.flags) > i and was.flags[i]) for i, on in enumerate(now.flags))
            if more or (any(now.flags) and now.known_by != was.known_by):
                self.refuse(Rule.AGENT_PRIVILEGE, f"node {node_id!r}: an agent may not make a step a person set "
                            "send its action again where it did not, nor change what a repeat is recognised by "
                            "(its method, idempotency key header, on_lost or fail_on_status)", _written(node_id),
                            node_id=node_id)

    def authors_models(self) -> set[str]:
        """The models the workflow's author gave its agent nodes (the version the run started from)."""
        base = self.state.base or self.before
        return {effective_model(n.get("config") or {}) for n in gates.nodes_by_id(base).values()
                if n.get("type") == "agent"}

    def check_credentials(self) -> None:
        """An agent may not add, change or make run again a node that sends the owner's secrets
        ($secrets.NAME) or runs another of the owner's workflows: either would let an injected prompt
        aim the owner's credentials, or workflows, at a target of its choosing (or at the same one,
        as many times as a loop allows). Nor may it do so by the back door (``acting_for_the_owner``)."""
        for node_id, node in self.touched().items():
            if _secrets_named(node.get("config")):
                self.refuse(Rule.SECRET_REFERENCE, f"node {node_id!r}: an agent may not add, change or loop back to "
                            "a node that refers to $secrets", _written(node_id), node_id=node_id)
            if registry.acts_for_owner(node.get("type")):
                self.refuse(Rule.AGENT_PRIVILEGE, f"node {node_id!r}: an agent may not add, change or loop back to "
                            f"a {node.get('type')} node (it acts with the owner's authority)", _written(node_id),
                            node_id=node_id)
        self.check_owner_s_steps()

    def acting_for_the_owner(self) -> dict[str, tuple[Rule, str]]:
        """The author's nodes that act with the owner's authority beyond the proposer's, each with the
        rule an agent's patch that reaches it breaks: a ``workflow`` node (it runs another of the
        owner's workflows), and any node that sends $secrets where the proposer does not send them
        itself (``_held``). A node that has run is judged too: a loop, or a replay of the run from
        the patched definition, runs it again."""
        proposer = self.old.get(self.proposer.node_id) or {}
        config = proposer.get("config") if isinstance(proposer.get("config"), dict) else {}
        mine = _sent_per_api(config)
        out: dict[str, tuple[Rule, str]] = {}
        for node_id, node in self.old.items():
            if node_id not in self.new:
                continue
            lacking = sorted(_secrets_named(node.get("config")) - _held(mine, node))
            if lacking:
                out[node_id] = (Rule.SECRET_REFERENCE, f"sends $secrets where its proposer does not send them "
                                f"({', '.join(lacking)})")
            elif registry.acts_for_owner(node.get("type")):
                out[node_id] = (Rule.AGENT_PRIVILEGE, f"acts with the owner's authority (a {node.get('type')} node)")
        return out

    def check_owner_s_steps(self) -> None:
        """Whether such a node runs, and what it sends, is its author's, as the node itself is: an
        agent may not route to it (an edge into it or into a step before it, a branch rule on the
        way loosened) nor rewrite a step whose output it reads, however many steps lie between
        (``influenced``). Otherwise an agent beside an author's branch wires itself into the step
        the branch held back, and the owner's API key goes out on a path the author ruled out, with
        the agent's words in the body; an agent feeding an author's agent that holds the key gives it
        a new task on those words."""
        for node_id, (rule, why) in self.acting_for_the_owner().items():
            if node_id in self.reached:
                self.refuse(rule, f"node {node_id!r} {why}: an agent may not change whether it runs or what it "
                            "reads (an edge into it or into a step before it, a branch rule on the way, a step "
                            "whose output it reads)", lambda doc, n=node_id: n in influenced(self.before, doc),
                            node_id=node_id)

    def check_patch_count(self) -> None:
        """Each stored patch keeps the whole patched definition (up to AOB_MAX_DEFINITION_BYTES): an
        agent proposing in a loop stored one a tool call, without end."""
        cap = settings.AOB_RUN_MAX_PATCHES
        if self.state.patches >= cap:
            self.refuse(Rule.MAX_PATCHES, f"the run has {self.state.patches} patches; a run may have {cap}",
                        op=0, limit=cap)

    def check_growth(self) -> None:
        cap, count = settings.AOB_RUN_MAX_NODES, len(self.after["nodes"])
        if count > cap and count > len(self.before["nodes"]):
            self.refuse(Rule.MAX_RUN_NODES, f"the patch would grow the run to {count} nodes; a run may grow to {cap}",
                        lambda doc: len(doc.get("nodes", [])), limit=cap, count=count)

    def check_spawn(self) -> int:
        added = [n for n, node in self.new.items() if node.get("type") == "agent" and n not in self.old]
        limit = agent_limit(self.before, self.state.rules_above)
        total = self.state.spawned + len(added)
        if added and total > limit:
            self.refuse(Rule.EXCESSIVE_AGENT_NODES, f"the patch would make {total} agent nodes added to this run; the "
                        f"limit per run is {limit}", _node(added[-1]), error=SpawnLimitExceeded,
                        reason=Rule.EXCESSIVE_AGENT_NODES, limit=limit, count=total)
        return len(added)

    def check_ssrf(self) -> None:
        """Literal URLs of the nodes this patch adds or changes, by the save-time verdict: the SSRF
        policy's, and the workflow's ``allowed_hosts`` (``workflows.egress``; the send checks again)."""
        changed = {n for n, node in self.new.items() if self.old.get(n) != node}
        for problem in literal_url_problems(self.after, node_ids=changed, above=self.state.hosts_above)[:1]:
            node_id, url = problem.details["node_id"], problem.details.get("url")
            self.refuse(problem.rule, problem.message, lambda doc, n=node_id, u=url: _url(n)(doc) == _dump(u),
                        _node(node_id), **problem.details)

    def check_ran_before(self, gate: str) -> None:
        """What is before a gate (``gates.before``) has settled when it asks, and the action's digest
        leaves it out (``gates.feeders``: its output is fixed): a gate with a node run keeps it so. An
        agent's edge from a step yet to run into a skipped step before the gate (a skipped step's
        edges in are no history) put the step the approved payment read "before" the gate: out of the
        digest, rewritten after the approval, and the payment sent what nobody approved."""
        was, now = self.around
        unsettled = sorted(n for n in self.named(now.before(gate) & ~was.before(gate))
                           if self.state.statuses.get(n) in (None, *NodeRun.ACTIVE))
        if unsettled:
            self.refuse(Rule.HISTORY_IMMUTABLE, f"node {unsettled[0]!r} has not run: it cannot be put before gate "
                        f"{gate!r}, which has asked (what is before a gate has run when it asks)",
                        lambda doc, g=gate, n=unsettled[0]: n in gates.before(doc, g), node_id=unsettled[0], gate=gate)

    def check_approved_actions(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """An approval is bound to the action it approved: a patch that changes it voids the decision.
        A gate in a loop's body decides once per pass, each on the one action: every pass counts (a
        pass waiting, a pass that approved: ``RunState``), and ``void_approvals`` takes every one."""
        reopen, revote = [], []
        added = [n for n in self.new if n not in self.old]
        around = set(gates.guarding(self.before, self.proposer.node_id)) if self.proposer.agent else set()
        for gate in gates.gates(self.before):
            if gate in self.state.statuses:
                self.check_ran_before(gate)
            pending = self.state.statuses.get(gate) == "waiting"
            if not (pending or gate in self.state.approved):
                continue
            leave_out = added if gate in around else ()
            if gates.action_digest(self.before, gate, bodies=self.bodies_before) == gates.action_digest(
                    self.after, gate, leave_out=leave_out, bodies=self.bodies_after):
                continue
            if pending:  # (a gate in a loop's body waits once per pass: its other passes may have approved)
                revote.append(gate)
            if gate not in self.state.approved:
                continue
            below = gates.reachable(gates.successors(self.before), gates.successors(self.before)[gate])
            begun = sorted(below & self.state.started)
            if begun:
                self.refuse(Rule.APPROVED_ACTION_STARTED, f"gate {gate!r} approved an action that has begun "
                            f"({', '.join(begun[:5])}); it cannot change under the approval",
                            lambda doc, g=gate, skip=leave_out: gates.action_digest(doc, g, leave_out=skip,
                                                                                    bodies=_bodies_of(doc)),
                            node_id=gate)
            reopen.append(gate)
        if self.state.bound:  # a child run its parent's approvers let run: all of it is their approved action
            leave_out = added if self.proposer.agent else ()
            if gates.action_digest(self.before, None, bodies=self.bodies_before) != gates.action_digest(
                    self.after, None, leave_out=leave_out, bodies=self.bodies_after):
                self.refuse(Rule.APPROVED_ACTION_STARTED, "this run was started by an approved step of its parent "
                            "run, and all of it is what the approvers let run: it cannot change under the approval",
                            lambda doc, skip=leave_out: gates.action_digest(doc, None, leave_out=skip,
                                                                            bodies=_bodies_of(doc)))
        return tuple(reopen), tuple(revote)


def loop_bodies(definition: dict[str, Any]) -> dict[str, frozenset[str]]:
    """What each loop's jump runs again in a valid definition: the planner's ``loop_reruns`` on its
    compiled graph (the body, and what hangs off it: that runs on every pass too)."""
    from workflows.definition.ir import compile_definition
    from workflows.engine.planner import loop_reruns

    if not any(isinstance(n, dict) and n.get("type") == "loop" for n in definition.get("nodes", [])):
        return {}  # (no graph to compile: a decision's digest asks this of every gate's run)
    ir = compile_definition(definition, validated=True)
    return {loop_id: loop_reruns(ir, loop_id) for loop_id in ir.loops}


def influenced(before: dict[str, Any], after: dict[str, Any], *, avoid: str | None = None) -> set[str]:
    """The nodes whose running, or what they read, the change from ``before`` to ``after`` may alter:
    each node it writes (adds, removes or changes); each node whose edges in change, in their order
    too (a ``conditional`` passes on, and a loop judges, the output of its first parent in that order
    that delivered, ``planner``); every target of a node whose branch rules change (a rule that holds
    routes instead of the unconditional edges, ``planner.route``), unless rules are only appended
    to a node without unconditional edges (they are asked only where none held, and it went
    nowhere); and, from those, every node reached
    along edges and loop jumps or reading one of them (``$nodes``), in either document (not through
    ``avoid``, where given). A plain edge added out of a node leaves its other edges as they were:
    it is taken beside them, never instead."""
    start = _influence_start(before, after)
    return _reached(before, start, avoid) | _reached(after, start, avoid)


def conditions_fed(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    """The loops of ``before`` whose condition may read otherwise in ``after`` (``influenced``, as if
    each loop's own node were left as it was: its own config is the policy's ``widened``, and a
    bound may be lowered): those whose edges in change, and those whose condition reads the output
    of the loop's first parent that delivered (``output``) or a step's (``$nodes``) that the change
    may alter: a rewritten step before the loop, or one it reads, says what the condition says. An
    author's transform feeding its paging loop ``{'more': false}``, rewritten to ``{'more': true}``,
    made a POST of one pass run on every one of the loop's passes. A condition on the loop's count
    alone (``iteration < 3``) reads nothing a patch writes. What may alter is walked along what reads
    what (``gates.read_by``: edges and ``$nodes``, as an approval's ``feeders``), not along loop
    jumps: a jump runs its body again with nothing of what ran after it (a report an agent rewrites
    after an inner paging loop, in an outer loop's body, is no input of the inner loop's condition;
    the outer loop's own condition is its own entry here)."""
    old, new = gates.nodes_by_id(before), gates.nodes_by_id(after)
    loops = {n for n, node in old.items() if node.get("type") == "loop" and n in new}
    if not loops:
        return set()
    kept = {**after, "nodes": [old[n["id"]] if n.get("id") in loops else n for n in after["nodes"]]}
    start = _influence_start(before, kept)
    reached = gates.reachable(gates.read_by(before), start) | gates.reachable(gates.read_by(after), start)
    return {n for n in loops & reached if n in start or _condition_reads(old[n], reached)}


def _condition_reads(loop: dict[str, Any], reached: set[str]) -> bool:
    """Whether a loop's condition reads its upstream's output, or a step of ``reached`` by name."""
    condition = _loop_config(loop, "condition")
    if not condition:
        return False  # (none: the loop goes round until its bound)
    return not isinstance(condition, str) or gates.reads_output(condition) or bool(
        referenced_nodes(loop.get("config")) & reached)


def _influence_start(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    """What ``influenced`` starts from: the nodes the change writes, whose edges in change, or whose
    sources' branch rules change."""
    old, new = gates.nodes_by_id(before), gates.nodes_by_id(after)
    start = {n for n in old.keys() | new.keys() if old.get(n) != new.get(n)}
    (rules_was, into_was, out_was), (rules_now, into_now, out_now) = _routing(before), _routing(after)
    start |= {t for t in into_was.keys() | into_now.keys() if into_was.get(t) != into_now.get(t)}
    defaults = {s for into in (into_was, into_now) for edges in into.values() for s, condition in edges
                if condition is None}
    for source in rules_was.keys() | rules_now.keys():
        was, now = rules_was.get(source, []), rules_now.get(source, [])
        if was != now and not (source not in defaults and now[:len(was)] == was):
            start |= out_was.get(source, set()) | out_now.get(source, set())
    return start


def _routing(definition: dict[str, Any]) -> tuple[dict[str, list[tuple[str, str]]], dict[str, list[tuple[str, Any]]],
                                                  dict[str, set[str]]]:
    """Each node's branch rules (target and condition, in authoring order), each node's edges in
    (source and condition, in the order the engine compiles them: ``gates.edges``), and each node's
    targets: one pass over the edges."""
    rules: dict[str, list[tuple[str, str]]] = {}
    into: dict[str, list[tuple[str, Any]]] = {}
    out: dict[str, set[str]] = {}
    for source, target, condition in gates.edges(definition):
        if condition:
            rules.setdefault(source, []).append((target, condition))
        into.setdefault(target, []).append((source, condition or None))
        out.setdefault(source, set()).add(target)
    return rules, into, out


def _reached(definition: dict[str, Any], start: set[str], avoid: str | None = None) -> set[str]:
    """``start`` and what is reached from it along edges and loop jumps, or by reading (``$nodes``),
    not through ``avoid``."""
    adjacency = gates.successors(definition)
    readers = _readers(definition)
    seen: set[str] = set()
    todo = [n for n in start if n in adjacency and n != avoid]
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        todo.extend(t for t in (*adjacency[node], *readers.get(node, ())) if t not in seen and t != avoid)
    return seen



def _onward(definition: dict[str, Any], number: dict[str, int]) -> dict[int, list[int]]:
    """What ``_reached`` walks along, numbered: each node's successors and readers."""
    adjacency, readers = gates.successors(definition), _readers(definition)
    return {number[node]: [number[t] for t in (*targets, *readers.get(node, ()))] for node, targets in adjacency.items()}


def _readers(definition: dict[str, Any]) -> dict[str, list[str]]:
    """Each node's readers (``$nodes`` in their configs), built once a document (``gates``' memo)."""
    def build() -> dict[str, list[str]]:
        readers: dict[str, list[str]] = {}
        for node_id, node in gates.nodes_by_id(definition).items():
            for source in referenced_nodes(node.get("config")):
                readers.setdefault(source, []).append(node_id)
        return readers

    return gates.memoized("readers", definition, build)


def _secrets_named(config: Any) -> set[str]:
    """The $secrets a node's config sends (``vault.references``; imported here, as before: the vault
    app builds on this one)."""
    from vault.references import referenced_names

    return referenced_names(config)


def _sent_per_api(config: Any) -> dict[str, set[str]]:
    """The $secrets an agent's ``auth`` sends, per registered API."""
    auth = config.get("auth") if isinstance(config, dict) else None
    return {api: _secrets_named(sent) for api, sent in auth.items()} if isinstance(auth, dict) else {}


def _held(proposer: dict[str, set[str]], node: dict[str, Any]) -> set[str]:
    """The secrets ``node`` sends that its proposer sends to the same place: an agent node's, sent to
    a registered API the proposer sends each of them to too. An ``http`` node's (any other node's)
    never: its URL is not an API's, and the proposer holding a token for one API let it word what an
    author's step sent with that token to another host."""
    config = node.get("config") if isinstance(node.get("config"), dict) else {}
    if node.get("type") != "agent":
        return set()
    theirs = _sent_per_api(config)
    named = _secrets_named(config)
    elsewhere = named - set().union(*theirs.values())  # named outside ``auth``: sent nowhere the proposer sends
    return {name for name in named - elsewhere
            if all(name in proposer.get(api, set()) for api, sent in theirs.items() if name in sent)}


def _bodies_of(doc: Any) -> dict[str, frozenset[str]]:
    """``loop_bodies`` of a document met while naming the operation to blame (it may not be valid)."""
    try:
        return loop_bodies(doc)
    except Exception:  # noqa: BLE001 - a document that does not compile has no loops to count
        return {}


def _loop_config(node: dict[str, Any] | None, key: str) -> Any:
    config = (node or {}).get("config")
    return config.get(key) if isinstance(config, dict) else None


def _attempts(node: dict[str, Any]) -> int:
    return attempts_of(node.get("retry"))


def _timeout_ms(node: dict[str, Any]) -> int:
    return timeout_ms_of(node.get("timeout_ms"))


def _iterations(node: dict[str, Any] | None) -> int:
    return iterations_of(_loop_config(node, "max_iterations"))


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _safely(probe: Callable[[Any], Any], doc: Any) -> Any:
    try:
        return probe(doc)
    except Exception as exc:  # noqa: BLE001 - a document a probe cannot read differs from one it can
        return ("unreadable", type(exc).__name__)


def _node(node_id: str) -> Callable[[Any], str]:
    return lambda doc: _dump(gates.nodes_by_id(doc).get(node_id)) if isinstance(doc, dict) else ""


def _written(node_id: str) -> Callable[[Any], Any]:
    """A node as an agent's patch writes it: its definition, and the loop jumps that run it again."""
    return lambda doc: (_node(node_id)(doc), _incoming(doc, node_id))


def _url(node_id: str) -> Callable[[Any], str]:
    return lambda doc: _dump(((gates.nodes_by_id(doc).get(node_id) or {}).get("config") or {}).get("url"))


def _outcomes(definition: Any, gate: str) -> list[Any]:
    return [e.get("condition") for e in definition.get("edges", []) if isinstance(e, dict) and e.get("from") == gate]


def _incoming(definition: Any, node_id: str) -> list[str]:
    """Every way into a node: its edges (with their conditions) and loop jumps to it."""
    if not isinstance(definition, dict):
        return []
    edges = [_dump([e.get("from"), e.get("condition")]) for e in definition.get("edges", [])
             if isinstance(e, dict) and e.get("to") == node_id]
    jumps = [_dump([source, "loop"]) for source, targets in gates.successors(definition).items()
             if node_id in targets and gates.nodes_by_id(definition)[source].get("type") == "loop"]
    return sorted(edges + jumps)


def _touching(definition: Any, node_id: str) -> list[Any]:
    """The edges into and out of a node, in authoring order (which routes)."""
    return gates.touching(definition, node_id)
