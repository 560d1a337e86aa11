"""Validate a workflow definition: JSON Schema first, then the graph rules, then each type's config.

Every problem comes back as ``{path, rule, message}`` with ``path`` a JSON Pointer, so an API
client, the web editor and an agent correcting its own patch can all point at the culprit.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cache
from itertools import chain, islice
from pathlib import Path
from typing import Any

from django.conf import settings
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError as SchemaError

from workflows import egress, registry

from .expressions import CEL_TYPE_NAMES, Compiled, ExpressionError, compile_expression
from .forms import PATTERN_KEYWORDS, one_budget
from .references import TEMPLATE, WHOLE

SCHEMA_PATH = Path(__file__).with_name("workflow.schema.json")

# The workflow schema and each node type's config schema, with ``pattern`` read as JSON Schema means
# it: ``^[a-zA-Z0-9_-]+$`` took ``"fetch\n"`` under Python's ``re`` (a node id shown as ``fetch``
# beside the real one, a type shown as ``hitl`` that ran as no type at all).
SchemaValidator = validators.extend(Draft202012Validator, validators=PATTERN_KEYWORDS)


@cache
def workflow_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


@cache
def _validator() -> Any:
    return SchemaValidator(workflow_schema())


@dataclass
class Problem:
    path: str
    rule: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)  # what a rule adds (the SSRF policy's reason)

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "rule": self.rule, "message": self.message, **self.details}


MAX_PROBLEMS = 100  # a report's errors: the rest are counted, never built (a 1 MB body of 340,000
# empty edges made 680,000: 22 s of a web thread, 2.5 GiB and a 62 MB answer)


@dataclass
class Report:
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    omitted: int = 0  # errors past MAX_PROBLEMS
    cel_sources: set[str] = field(default_factory=set)  # the distinct CEL sources compiled so far
    cel_failed: dict[str, Any] = field(default_factory=dict)  # and why those that failed did (no cache keeps it)
    cel_bytes: int = 0  # and their bytes, within AOB_MAX_DEFINITION_CEL_BYTES
    written: bool = False  # judged as written (``validate(written=True)``): the ``WRITTEN_RULES`` too

    @property
    def valid(self) -> bool:
        return not self.errors

    def error(self, path: str, rule: str, message: str) -> None:
        if len(self.errors) >= MAX_PROBLEMS:
            self.omitted += 1
            return
        self.errors.append(Problem(path, rule, message))

    def close(self) -> Report:
        """The report as answered: past ``MAX_PROBLEMS``, a last problem says how many more there are."""
        if self.omitted:  # a lower bound: a huge list's problems stop being read once the report is full
            self.errors.append(Problem("/", "max_problems", f"{self.omitted} or more problem(s) not listed: correct "
                                                            f"these first (at most {MAX_PROBLEMS} are listed)"))
            self.omitted = 0
        return self

    @property
    def room(self) -> int:
        """How many more errors to read from a validator: one past the report's room, so a full
        report knows it left some out."""
        return max(0, MAX_PROBLEMS - len(self.errors)) + 1

    def errors_under(self, prefix: str) -> bool:
        return any(p.path == prefix or p.path.startswith(prefix + "/") for p in self.errors)

    def warn(self, path: str, rule: str, message: str) -> None:
        self.warnings.append(Problem(path, rule, message))


def _pointer(parts: Any) -> str:
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts) if parts else "/"


def json_depth(value: Any, limit: int) -> int:
    """Depth of nesting, stopping early once past ``limit`` (iterative: no recursion limit). A level
    of containers at a time, its children gathered and told apart by their types in C (``chain``,
    ``map(type)``): taking a value at a time, a 12 MB body of 330,000 small objects cost the web
    process 0.85 s of CPU, four times its parsing."""
    level = [value] if isinstance(value, dict | list) else []
    kinds = {type(value)}
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return depth
        if all(issubclass(kind, dict) for kind in kinds):
            children = list(chain.from_iterable(map(dict.values, level)))
        elif all(issubclass(kind, list) for kind in kinds):
            children = list(chain.from_iterable(level))
        else:
            children = list(chain.from_iterable(item.values() if isinstance(item, dict) else item for item in level))
        types = set(map(type, children))
        kinds = {kind for kind in types if issubclass(kind, dict | list)}
        if kinds != types:  # scalars among them: the containers alone, when there are any
            children = [child for child in children if isinstance(child, dict | list)] if kinds else []
        level = children
    return depth


# Rules a definition is held to as it is written (a save, ``/workflows/validate``, a patch), not when
# a stored version runs: a version saved before a rule was added still runs as it did (a patch of its
# run is refused only for what the patch itself brings, ``new_problems``).
WRITTEN_RULES = frozenset({"reference_node_exists", "condition_variable", "metadata_key"})


def validate(definition: Any, *, literal_urls: bool = False, written: bool = False) -> Report:
    """``literal_urls``: judge literal ``http`` URLs by the SSRF policy too (on save: see
    ``literal_url_problems``). ``written``: the ``WRITTEN_RULES`` too, and the warnings that go with
    them (an unknown ``metadata`` key)."""
    report = Report(written=written)
    if json_depth(definition, settings.AOB_MAX_JSON_DEPTH) > settings.AOB_MAX_JSON_DEPTH:
        report.error("/", "max_depth", f"JSON nesting is deeper than {settings.AOB_MAX_JSON_DEPTH} levels")
        return report
    if not isinstance(definition, dict):
        report.error("/", "type", "a workflow definition is a JSON object with nodes and edges")
        return report
    nodes, edges = definition.get("nodes"), definition.get("edges")
    if isinstance(nodes, list) and len(nodes) > settings.AOB_MAX_NODES:
        report.error("/nodes", "max_nodes", f"{len(nodes)} nodes; at most {settings.AOB_MAX_NODES} are allowed")
        return report
    if isinstance(edges, list) and len(edges) > settings.AOB_MAX_EDGES:
        report.error("/edges", "max_edges", f"{len(edges)} edges; at most {settings.AOB_MAX_EDGES} are allowed")
        return report

    # the first problems in the schema's order, then sorted: never every one of a huge document's
    for err in sorted(islice(_validator().iter_errors(definition), report.room),
                      key=lambda e: list(e.absolute_path)):
        report.error(_pointer(err.absolute_path), f"schema.{err.validator}", _schema_message(err))
    if not report.valid:
        return report.close()

    with one_budget():  # the forms of all hitl nodes together
        _check_graph(definition, report)
    if literal_urls and report.valid:
        for problem in literal_url_problems(definition)[:MAX_PROBLEMS]:
            report.errors.append(problem)
    return report.close()


def literal_url_problems(definition: dict[str, Any], *, node_ids: Collection[str] | None = None,
                         above: Any = None) -> list[Problem]:
    """Each node type's outbound policy on what its config names literally (for ``http``, the SSRF
    policy's static verdict on a URL without ``$``: scheme, userinfo, port, blocked names and
    addresses; no DNS; and the host of a literal origin by the workflow's ``allowed_hosts`` and those
    of the runs ``above``, ``workflows.egress.binding``), for the nodes in ``node_ids`` or all. Refusing at save names the rule
    early; the check at connect time stays the authority (a name may still resolve to a blocked
    address). The web tier must have the workers' ``AOB_HTTP_ALLOWLIST`` for the two to agree."""
    problems = []
    hosts = egress.binding(definition.get("metadata"), above)
    for i, node in enumerate(definition.get("nodes", [])):
        if not isinstance(node, dict) or not isinstance(node.get("type"), str) or (
                node_ids is not None and node.get("id") not in node_ids):
            continue
        spec = registry.get(node["type"])
        config = node.get("config")
        if spec is None or spec.check_outbound is None or not isinstance(config, dict):
            continue
        for where, rule, message, details in spec.check_outbound(config, hosts):
            problems.append(Problem(f"/nodes/{i}/config{where}", rule, f"node {node.get('id')!r}: {message}",
                                    {**details, "node_id": node.get("id")}))
    return problems


def _schema_message(err: SchemaError) -> str:
    if err.validator == "additionalProperties":
        return err.message.replace("Additional properties are not allowed", "unknown field(s)")
    if err.validator == "pattern":
        return f"{err.instance!r} must match {err.validator_value}"
    return err.message


LOOP_KEYS = ("loop_back_to", "break_path", "timeout_path")


def _check_graph(definition: dict[str, Any], report: Report) -> None:
    nodes: list[dict[str, Any]] = definition["nodes"]
    edges: list[dict[str, Any]] = definition.get("edges", [])
    index: dict[str, int] = {}
    for i, node in enumerate(nodes):
        if node["id"] in index:
            report.error(f"/nodes/{i}/id", "unique_node_id", f"node id {node['id']!r} is used more than once")
        else:
            index[node["id"]] = i

    seen: set[tuple[str, str]] = set()
    for i, edge in enumerate(edges):
        for end in ("from", "to"):
            if edge[end] not in index:
                report.error(f"/edges/{i}/{end}", "edge_node_exists", f"edge {end} unknown node {edge[end]!r}")
        pair = (edge["from"], edge["to"])
        if pair in seen:  # one edge a pair: a condition that should take either is one condition with ||
            report.error(f"/edges/{i}", "unique_edge", f"edge {pair[0]!r} → {pair[1]!r} is there already; join "
                         "their conditions with || in one edge")
        seen.add(pair)
        if "condition" in edge:
            _check_variables(report, f"/edges/{i}/condition", f"edge {edge['from']!r} → {edge['to']!r}",
                             _check_expression(report, f"/edges/{i}/condition", "condition", edge["condition"]),
                             CONDITION_VARIABLES["edge"])

    for i, node in enumerate(nodes):
        _check_config(i, node, index, report)
    metadata = definition.get("metadata") or {}
    output = metadata.get("output") or {}
    if "expression" in output:
        try:
            compiled = compile_expression(output["expression"])
        except ExpressionError as exc:
            report.error("/metadata/output/expression", "expression_syntax", f"invalid CEL expression: {exc}")
        else:
            _check_node_reads(report, "/metadata/output/expression", "the run's output", compiled, index)
    if report.written:
        if "template" in output:
            _check_references(report, "/metadata/output/template", "the run's output", output["template"], index)
        _check_metadata_keys(metadata, report)
    if not report.valid:
        return

    # Cycles are allowed only as a loop node's jump back, which is config, not an edge; an edge
    # from a loop node to its loop_back_to target is accepted and read as that jump.
    back = {(n["id"], n.get("config", {}).get("loop_back_to")) for n in nodes if n["type"] == "loop"}
    forward = [e for e in edges if (e["from"], e["to"]) not in back]
    incoming = {nid: 0 for nid in index}
    outgoing = {nid: [] for nid in index}
    for e in forward:
        incoming[e["to"]] += 1
        outgoing[e["from"]].append(e["to"])
    for n in nodes:
        if n["type"] == "loop":
            for key in ("break_path", "timeout_path"):
                for target in loop_targets(n.get("config", {}).get(key)):
                    if target not in outgoing[n["id"]]:
                        outgoing[n["id"]].append(target)
                        incoming[target] += 1
    if not any(count == 0 for count in incoming.values()):
        report.error("/edges", "entry_node", "no entry node: every node has an incoming edge")
    if not any(not targets for targets in outgoing.values()):
        report.error("/edges", "terminal_node", "no terminal node: every node has an outgoing edge")
    cycle = _find_cycle(outgoing)
    if cycle:
        report.error("/edges", "acyclic", "cycle " + " -> ".join(cycle) + " does not go through a loop node's "
                     "loop_back_to (cycles are allowed only as loops)")
    for n in nodes:
        if n["type"] == "loop" and not report.errors:
            target = n["config"]["loop_back_to"]
            if target == n["id"] or not _reaches(outgoing, target, n["id"]):  # itself: no body, and an entry
                report.error(f"/nodes/{index[n['id']]}/config/loop_back_to", "loop_reaches_back",
                             f"loop_back_to {target!r} does not lead back to loop node {n['id']!r}")
    if not report.errors:
        _check_loop_exits(nodes, index, outgoing, report)


def _check_loop_exits(nodes: list[dict[str, Any]], index: dict[str, int], outgoing: dict[str, list[str]],
                      report: Report) -> None:
    """Nothing after a loop's exit is run by its passes: a node after the loop that each pass reaches too
    (from its ``loop_back_to``, not through the loop node; through the exits of a loop inside its
    body, which go on within the pass) would run once for an early pass, reading that pass's
    outputs, and again after the loop. Reached only through another loop's exit (two loops jumping
    back to one step, a shared way out), it runs after that loop: not a pass of this one."""
    incoming: dict[str, list[str]] = {nid: [] for nid in outgoing}
    for source, targets in outgoing.items():
        for target in targets:
            incoming[target].append(source)
    loops = {n["id"]: n["config"]["loop_back_to"] for n in nodes if n["type"] == "loop"}
    for loop_id, start in loops.items():
        before, todo = set(), [loop_id]  # what leads to the loop: a loop there is inside its body
        while todo:
            node_id = todo.pop()
            if node_id not in before:
                before.add(node_id)
                todo.extend(incoming[node_id])
        each_pass, todo = set(), [start]
        while todo:
            node_id = todo.pop()
            if node_id in each_pass or node_id == loop_id:
                continue
            each_pass.add(node_id)
            if node_id not in loops or node_id in before:
                todo.extend(outgoing[node_id])
        after, todo = set(), list(outgoing[loop_id])
        while todo:
            node_id = todo.pop()
            if node_id not in after:
                after.add(node_id)
                todo.extend(outgoing[node_id])
        both = sorted(after & each_pass, key=index.__getitem__)
        if both:
            report.error(f"/nodes/{index[loop_id]}", "loop_exit_in_pass",
                         f"{both[0]!r} follows loop {loop_id!r}'s exit and is also reached in each of its passes "
                         f"(from {start!r}): it would run for an early pass and again after the loop; join "
                         "the loop's exit only, and read the last pass's outputs there ($nodes.<id>)")


@cache
def _config_validator(node_type: str) -> Any:
    return SchemaValidator(registry.get(node_type).config_schema)


SIZE_RULES = frozenset({"maxLength", "maxItems", "maxProperties"})


def resolved_config_problem(node_type: str, config: Any) -> tuple[str, str, str] | None:
    """The first size bound of its type's schema a config passes once its references are resolved
    (its save judged the references, not what they hold: a hitl ``message`` of ``$inputs.text`` is
    any size until then): (pointer under the config, rule, message), or None. Only the bounds: what
    a reference brings may be of another type than the reference (a number for ``payload``), which
    each executor judges with its own error. The message names the limit, never the value."""
    if registry.get(node_type) is None:
        return None
    read = 0
    for err in _config_validator(node_type).iter_errors(config):
        if err.validator in SIZE_RULES:
            where = _pointer(list(err.absolute_path))
            return where, f"config.{err.validator}", (f"{node_type} config at {where}, with its references "
                                                      f"resolved, passes its bound {err.validator} {err.validator_value}")
        read += 1
        if read >= MAX_PROBLEMS:  # a list a reference brought, wrong in every element: never all read
            return "", "config.max_problems", (f"{node_type} config, with its references resolved, has "
                                               f"{MAX_PROBLEMS} or more problems")
    return None


def _check_config(i: int, node: dict[str, Any], index: dict[str, int], report: Report) -> None:
    config = node.get("config", {})
    spec = registry.get(node["type"])
    if spec is None:
        report.warn(f"/nodes/{i}/type", "unknown_type",
                    f"no executor for node type {node['type']!r}: it will be skipped at run time")
        return
    for err in islice(_config_validator(node["type"]).iter_errors(config), report.room):
        report.error(_pointer(["nodes", i, "config", *err.absolute_path]), f"config.{err.validator}",
                     f"{node['type']} config: {_schema_message(err)}")
    if spec.check is not None and isinstance(config, dict) and not report.errors_under(f"/nodes/{i}/config"):
        for where, rule, message in spec.check(config):
            report.error(f"/nodes/{i}/config{where}", rule, f"{node['type']} config: {message}")
    if node["type"] == "loop" and isinstance(config, dict):
        for key in LOOP_KEYS:
            value = config.get(key)
            targets = [(f"/nodes/{i}/config/{key}", value)] if not isinstance(value, list) else [
                (f"/nodes/{i}/config/{key}/{j}", v) for j, v in enumerate(value)]
            for path, target in targets:
                if isinstance(target, str) and target not in index:
                    report.error(path, "loop_target_exists", f"{key} names unknown node {target!r}")
    for key in ("condition", "expression"):
        source = config.get(key) if isinstance(config, dict) else None
        if isinstance(source, str) and (node["type"] == "loop" or key == "expression"):
            compiled = _check_expression(report, f"/nodes/{i}/config/{key}", key, source)
            if node["type"] == "loop":
                _check_variables(report, f"/nodes/{i}/config/{key}", f"loop {node['id']!r}", compiled,
                                 CONDITION_VARIABLES["loop"])
            elif node["type"] == "transform":
                _check_node_reads(report, f"/nodes/{i}/config/{key}", f"node {node['id']!r}", compiled, index)
    if report.written and spec.resolve_config and isinstance(config, dict):
        for key, value in config.items():  # those the type reads as written are text (``raw_keys``)
            if key not in spec.raw_keys:
                _check_references(report, _pointer(["nodes", i, "config", key]), f"node {node['id']!r}", value, index)


# The variables a condition is evaluated over (``planner.Planner.route``, ``_loop_output``): any other
# name fails every evaluation ("Undefined variable"), and the condition is never true.
CONDITION_VARIABLES = {"edge": frozenset({"output", "inputs"}), "loop": frozenset({"output", "inputs", "iteration"})}


def _check_variables(report: Report, path: str, what: str, compiled: Compiled | None,
                     available: frozenset[str]) -> None:
    """``condition_variable``: a condition that names a variable its evaluation is not given."""
    if not report.written or compiled is None:
        return
    # CEL lists among the names read a comprehension's own variable (``output.items.exists(i, i > 1)``)
    # and a type name (``type(output.x) == int``): neither is given, and neither fails
    unknown = compiled.variables - available - compiled.shape.bound - CEL_TYPE_NAMES
    if unknown:
        report.error(path, "condition_variable",
                     f"{what}: the condition reads {', '.join(map(repr, sorted(unknown)))}, which it is never given "
                     f"(it is evaluated over {', '.join(sorted(available))} only): it would fail at every "
                     "evaluation and never hold")


def _check_node_reads(report: Report, path: str, what: str, compiled: Compiled | None, index: dict[str, int]) -> None:
    """``reference_node_exists`` for a CEL expression over ``nodes``: the nodes it names by field
    (``nodes.a``, ``nodes["a-1"]``; one it reads whole, ``nodes[k]``, names none)."""
    if not report.written or compiled is None:
        return
    fields = compiled.reads.get("nodes")
    for name in sorted(n for n in (fields or {}) if isinstance(n, str) and n not in index):
        report.error(path, "reference_node_exists", f"{what}: the expression reads nodes.{name}, and the "
                     f"definition has no node {name!r}")


def _check_references(report: Report, path: str, what: str, value: Any, index: dict[str, int]) -> None:
    """``reference_node_exists``: a ``$nodes.<id>…`` or ``${nodes.<id>…}`` the config's resolution
    takes (``references.resolve``: a whole string, or a template in one) naming no node of the
    definition; it would resolve to null at every run. Text that merely mentions ``$nodes`` is
    not a reference and is not judged."""
    todo: list[tuple[str, Any]] = [(path, value)]
    while todo:
        where, item = todo.pop()
        if isinstance(item, dict):
            todo.extend((f"{where}/{_pointer([k])[1:]}", v) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            todo.extend((f"{where}/{j}", v) for j, v in reversed(list(enumerate(item))))
        elif isinstance(item, str) and "$" in item:
            whole = WHOLE.match(item)
            found = [whole.group(1)] if whole else [m.group(1) for m in TEMPLATE.finditer(item)] if "${" in item else []
            for reference in found:
                head, *rest = reference.split(".")
                if head == "nodes" and rest and rest[0] not in index:
                    report.error(where, "reference_node_exists", f"{what}: ${reference} names no node of the "
                                 f"definition ({rest[0]!r}): it would resolve to null at every run")


# ``metadata`` keys that bound what a run may do: a key one slip away from one of them is refused
# (``alowed_hosts`` bound nothing, silently); any other unknown key is a warning (tools and tests
# keep their own keys there: ``patch_policy_note``, ``allowed_ports``, ``match_policy``).
BOUND_METADATA_KEYS = ("allowed_hosts", "patch_policy", "max_agent_nodes")


def misspells(key: str, name: str) -> bool:
    """``key`` is ``name`` written with one slip: in another case or with ``-`` or a blank for a
    ``_``, a letter left out or added, a letter changed, or two neighbouring letters swapped. A
    changed first letter of a word makes another word (``match_policy``), and a key that goes on
    past ``name`` with ``_`` (``allowed_hosts_v2``) is another key: neither is a slip."""
    if key.startswith(name + "_"):
        return False
    typed = key.lower().replace("-", "_").replace(" ", "_")
    if len(typed) == len(name):
        differ = [i for i in range(len(name)) if typed[i] != name[i]]
        if len(differ) == 1:
            return differ[0] > 0 and name[differ[0] - 1] != "_"
        return len(differ) in (0, 2) and (not differ or differ[1] == differ[0] + 1 and (
            typed[differ[0]], typed[differ[1]]) == (name[differ[1]], name[differ[0]]))
    short, long = sorted((typed, name), key=len)
    return len(long) - len(short) == 1 and any(long[:i] + long[i + 1:] == short for i in range(len(long)))


def _check_metadata_keys(metadata: dict[str, Any], report: Report) -> None:
    known = workflow_schema()["properties"]["metadata"].get("properties", {})
    for key in metadata:
        if key in known:
            continue
        close = next((name for name in BOUND_METADATA_KEYS if misspells(key, name)), None)
        where = _pointer(["metadata", key])
        if close:
            report.error(where, "metadata_key", f"metadata key {key!r} is not one the platform reads; did you mean "
                         f"{close!r}? (as written it bounds nothing)")
        else:
            report.warn(where, "unknown_metadata_key", f"metadata key {key!r} is not one the platform reads "
                        f"({', '.join(sorted(known))}); it is kept and has no effect")


def new_problems(report: Report, before: Any) -> Report:
    """``report`` (of a patched definition, ``written``) without the ``WRITTEN_RULES`` errors that the
    definition ``before`` the patch had already: a run of a version saved before a rule was added
    may still be patched, for what the patch brings."""
    if any(p.rule in WRITTEN_RULES for p in report.errors):
        had = {(p.rule, p.message) for p in validate(before, written=True).errors if p.rule in WRITTEN_RULES}
        report.errors = [p for p in report.errors if (p.rule, p.message) not in had]
    return report


def _check_expression(report: Report, path: str, key: str, source: str) -> Compiled | None:
    """Compile a CEL source: a syntax error is ``<key>_syntax``; a bound it breaks (size,
    comprehension macros, their nesting) is ``cel.<bound>``, with the limit in the message. A
    definition's distinct sources together are at most ``AOB_MAX_DEFINITION_CEL_BYTES``: each is
    bounded alone, and 245 of 3.9 KiB in one body took 5 s of a web thread to compile, the
    interpreter's lock held (a red-team helper's measurement); past it, ``cel.total_bytes``, and
    nothing more is compiled."""
    if source not in report.cel_sources:
        limit = settings.AOB_MAX_DEFINITION_CEL_BYTES
        if report.cel_bytes > limit:
            return None  # refused already: compiling the rest would spend what the bound saves
        report.cel_sources.add(source)
        report.cel_bytes += len(source.encode())
        if report.cel_bytes > limit:
            report.error(path, "cel.total_bytes", f"the definition's CEL expressions come to more than {limit} "
                         "bytes together (AOB_MAX_DEFINITION_CEL_BYTES); move the logic into fewer, shorter ones")
            return None
    try:
        failed = report.cel_failed.get(source)
        if failed is not None:
            raise failed  # a repeat of a source that failed: judged once (a failure is not cached)
        return compile_expression(source)
    except ExpressionError as exc:
        report.cel_failed[source] = exc
        report.error(path, exc.named(key), f"invalid CEL {key}: {exc}" if exc.rule == "syntax" else
                     f"CEL {key} too costly: {exc}")
        return None


def loop_targets(value: Any) -> list[str]:
    """A loop's ``loop_back_to``, ``break_path`` or ``timeout_path`` (``LOOP_KEYS``): one node id,
    or (the original system's shape, the exits') a list of them, all followed. The one reading of
    them, here and in the gates' rules (``gates.jumps``)."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v]
    return []


def control_edges(definition: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """The edges control runs along, ``(from, to, condition)``, as the engine compiles them
    (``ir.compile_definition``) and the gates' rules read them (``gates``): the definition's edges
    in authoring order, but a loop's edge to its own ``loop_back_to`` (its jump runs that node, not
    the edge), then an edge from each loop to each ``break_path`` / ``timeout_path`` target it has
    none to. One list for both: the gates once read the edges alone, so a node reached only by a
    loop's exit looked like a run's start to them, and a bypass into it went unseen. Tolerant of a
    document not yet validated (a patch judged before it is stored): what is not an edge between
    two nodes is left out."""
    nodes = {n["id"]: n for n in definition.get("nodes", []) if isinstance(n, dict) and isinstance(n.get("id"), str)}
    loops = {node_id: node.get("config") if isinstance(node.get("config"), dict) else {}
             for node_id, node in nodes.items() if node.get("type") == "loop"}
    edges: list[tuple[str, str, str | None]] = []
    for raw in definition.get("edges", []):
        if not isinstance(raw, dict) or raw.get("from") not in nodes or raw.get("to") not in nodes:
            continue
        source, target = raw["from"], raw["to"]
        if source in loops and target == loops[source].get("loop_back_to"):
            continue
        condition = raw.get("condition")
        edges.append((source, target, condition if isinstance(condition, str) else None))
    have_of: dict[str, set[str]] = {loop_id: set() for loop_id in loops}  # one pass: not a scan per loop
    for source, target, _ in edges:
        if source in have_of:
            have_of[source].add(target)
    for loop_id, config in loops.items():
        have = have_of[loop_id]
        for target in (*loop_targets(config.get("break_path")), *loop_targets(config.get("timeout_path"))):
            if target in nodes and target not in have:
                edges.append((loop_id, target, None))
                have.add(target)
    return edges


def _find_cycle(outgoing: dict[str, list[str]]) -> list[str] | None:
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(outgoing, white)
    for start in outgoing:
        if color[start] != white:
            continue
        stack = [(start, iter(outgoing[start]))]
        path = [start]
        color[start] = grey
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                color[node] = black
                stack.pop()
                path.pop()
            elif color[child] == grey:
                return path[path.index(child):] + [child]
            elif color[child] == white:
                color[child] = grey
                stack.append((child, iter(outgoing[child])))
                path.append(child)
    return None


def _reaches(outgoing: dict[str, list[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(outgoing[node])
    return False
