"""The node-type registry: one record per type holds every fact the platform keeps about it.

A type is registered once, by the app that owns it, in that app's ``nodetypes`` module (the
loader imports ``<app>.nodetypes`` for every installed app, as the admin finds ``admin`` modules):

    register(NodeType("http", run=run_http, config_schema=CONFIG_SCHEMA, description="..."))

or, for a function, ``@executor("http", config_schema=..., description=...)``. A second
registration of a name is an error. From the records come the queue a type runs on
(``wf.tasks.<type>``), the queues a worker consumes (``queues``), the catalogue the API and the
agents show, the config checks at save, and the hooks the engine calls when a run ends, so the
engine never imports the apps that own the types. Types the coordinator evaluates itself
(``conditional``, ``loop``) are ``inline``: no function, no queue. A type that is not registered
is accepted with a warning at save and skipped at run time.

With the records live the executor interface (``NodeContext`` in, an output or ``NodeFailed``
out). This module imports nothing of the project but the error tree: every layer may read it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aob_project.exceptions import AobError

QUEUE_PREFIX = "wf.tasks."
COORDINATOR_QUEUE = "wf.coordinator"
MAINTENANCE_QUEUE = "wf.maintenance"
# Approval notifications (email, webhooks): a queue of their own, so a run that asks many people
# cannot hold up the sweeper's crash recovery on the maintenance queue for every tenant.
NOTIFY_QUEUE = "wf.notify"
# A completed run's metadata.output (``workflows.run_output``, up to AOB_OUTPUT_TIME_LIMIT_S each): a
# queue of its own, so one owner's heavy outputs never take the workers every user's nodes need.
OUTPUT_QUEUE = "wf.output"
# A schedule's firing (``triggers.fire_schedule``) starts a run, its entry nodes inserted and sent
# (0.65 s for 1,000 of them, a red team's measure, up to an owner's run-start rate): a queue of its
# own, so owners' firings never stand in front of the sweeper on the maintenance queue.
TRIGGERS_QUEUE = "wf.triggers"
# The queues that carry no node type's work; every way of starting workers consumes them. Each
# with what stops while no running worker consumes it (``sweeper.check_service_queues``, the health answer).
SERVICE_QUEUES = (COORDINATOR_QUEUE, MAINTENANCE_QUEUE, NOTIFY_QUEUE, OUTPUT_QUEUE, TRIGGERS_QUEUE)
UNSERVED_STOPS = {COORDINATOR_QUEUE: "no run goes on past a node", MAINTENANCE_QUEUE: "nothing is swept",
                  NOTIFY_QUEUE: "no approver is notified", OUTPUT_QUEUE: "no run's metadata.output is computed",
                  TRIGGERS_QUEUE: "no schedule fires"}
# Celery's default queue: nothing of ours is routed here, a worker of the whole stack still consumes it.
DEFAULT_NODE_QUEUE = "wf.tasks.default"
# The one executor task: its queue comes from the node type (``dispatch.publish_now``).
EXECUTOR_TASK = "workers.execute"
# A completed run's metadata.output, computed once (``services.runs.run_output_store``), on OUTPUT_QUEUE.
OUTPUT_TASK = "workflows.run_output"

Check = Callable[[dict[str, Any]], list[tuple[str, str, str]]]


class NodeFailed(AobError):
    """An executor's way to fail its node with a reason a person can act on (``error_type`` = ``code``);
    ``extra["transient"]`` marks errors worth a retry."""

    code = "NodeFailed"

    @property
    def transient(self) -> bool:
        return bool(self.extra.get("transient"))


class RegistryError(Exception):
    """A node type registered twice, or a worker asked to serve a type nobody registered."""


@dataclass(frozen=True)
class NodeContext:
    run_id: str
    node_run_id: int
    node_id: str
    node_type: str
    iteration: int
    attempt: int
    config: dict[str, Any]
    raw_config: dict[str, Any]
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    timeout_s: float | None
    owner_id: int
    definition: dict[str, Any] = field(default_factory=dict)
    # the owner was active when the node run was claimed (``engine.owners``): else it fails, unstarted
    owner_active: bool = True
    # where the run's requests may go (``workflows.egress``: its ``metadata.allowed_hosts`` and those
    # of the runs above it), each list binding; none: no bound of this kind
    hosts: tuple[tuple[str, ...], ...] = ()
    # the run whose name its Idempotency-Keys carry (``Run.key_run``); "": its own
    key_run_id: str = ""
    # it goes on with that run's unsettled work (``Run.goes_on``): attempts of unknown outcome came
    # before its first
    goes_on: bool = False


class Repeats(NamedTuple):
    """How a node sends its action again (``NodeType.repeats``): each flag True where it does, and
    what a repeat is recognised by outside."""

    flags: tuple[bool, ...] = ()
    known_by: Any = None


@dataclass(frozen=True)
class NodeType:
    """Every per-type fact, in one place."""

    node_type: str
    # Turns a NodeContext into the node's output; None for an inline type.
    run: Callable[[NodeContext], Any] | None
    config_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object", "additionalProperties": False})
    description: str = ""
    # Evaluated by the coordinator in its own decision, with no worker hop (``conditional``, ``loop``).
    inline: bool = False
    # ``run`` is pure (no I/O, bounded: ``transform``): the coordinator may evaluate a node of this type
    # inside the decision that reaches it, recorded as its own node run (workflows/engine/pure.py), unless
    # its config says ``dispatch: "queue"``.
    pure: bool = False
    # The executor receives its config with ``$inputs…``, ``$nodes…`` and ``${…}`` resolved.
    resolve_config: bool = True
    # Keys of the config its executor reads as written, never resolved (``transform``'s CEL
    # ``expression``: a ``${nodes.x}`` in it is text): they are left as they are.
    raw_keys: frozenset[str] = frozenset()
    # The executor reads its predecessors' outputs even where its config names none (``agent``, ``hitl``).
    reads_upstream: bool = False
    # The Celery queue its executor task is published to; ``wf.tasks.<type>`` unless given.
    queue: str = ""
    # Rules a JSON Schema cannot say: (JSON Pointer under the config, rule, message) per problem.
    check: Check | None = None
    # The outbound policy on what the config names literally (the SSRF policy's static verdict on an
    # ``http`` URL, and the ``allowed_hosts`` lists binding the run, ``workflows.egress.binding``,
    # given as the second argument): (pointer under the config, rule, message, details) per problem. Run where literal URLs
    # are judged (``validate(literal_urls=True)``, every patch).
    check_outbound: Callable[[dict[str, Any], tuple[tuple[str, ...], ...]],
                             list[tuple[str, str, str, dict[str, Any]]]] | None = None
    # What a node of this type may do with a config (an agent's tools): a patch may not give a node
    # it adds more than its proposer holds (workflows/services/patches/policy.py).
    grants: Callable[[dict[str, Any]], list[str]] | None = None
    # The model a node of this type calls with a config (an agent's: the one it names, else the
    # operator's default): the executor calls that one, and a patch may give a node it adds no model
    # but its proposer's, the default or one the author chose (workflows/services/patches/policy.py).
    model: Callable[[dict[str, Any]], str] | None = None
    # Whether a node of this type with a config sends its action again, as the executor decides it
    # (an http request's: after a lost attempt or an unknown outcome, ``repeats_when_lost``; on a
    # status, ``fail_on_status``), and what the outside recognises a repeat by (its method and key
    # header). A person's to say: an agent's patch may not turn a repeat on for a step a person set,
    # nor change what recognises one where it repeats (patches/policy.py).
    repeats: Callable[[dict[str, Any]], Repeats] | None = None
    # The bounds a person sets in a config of this type, each a number where lower is tighter (None:
    # not set there; the operator's ceiling holds): an http request's deadline and answer size. An
    # agent's patch may not raise one of a step a person set, nor drop it (patches/policy.py).
    limits: Callable[[dict[str, Any]], dict[str, int | None]] | None = None
    # How many rounds of tool calls a node of this type makes with a config (an agent's
    # ``max_tool_rounds``, else its default): a patch may give a node no more than its proposer's.
    tool_rounds: Callable[[dict[str, Any]], int] | None = None
    # The human gate (``hitl``): holds an agent's patch for a person (run, patch, before, after: graph
    # summaries), and voids approvals whose guarded action a patch changed (run, reopen, revote, below,
    # patch_seq); both inside the patch's transaction (workflows/services/patches).
    hold_patch: Callable[..., Any] | None = None
    void_approvals: Callable[..., Any] | None = None
    # Called inside the transaction that ends a run (run id, status, time): a type that leaves rows
    # waiting on people (``hitl``'s approvals) settles them with the run.
    on_run_ending: Callable[[str, str, Any], None] | None = None
    # What its node runs that wait (``wait_reason``) wait for, where the type knows more than the
    # reason's words (``NodeRun.WAITING_FOR``): given such node runs' ids, the words for those it says
    # more of, by id (``hitl``: an approval nobody can decide). Called once per answer for all of them
    # that the run's details, timeline or a node's iterations show: a bounded number of queries.
    waiting_for: Callable[[list[Any]], dict[Any, str]] | None = None
    # Whether a run this type's node started (a ``workflow`` node's child run: run id) began inside
    # an action its parent's approvers approved: every patch to it is then judged as changing an
    # approved action that has begun (workflows/services/patches: ``run_state``).
    started_approved: Callable[[Any], bool] | None = None
    # A node of this type acts with its owner's authority beyond anything an agent holds (``workflow``:
    # it runs another of the owner's workflows): an agent's patch may not add, change or reach one
    # (``agent_privilege``, workflows/services/patches/policy.py). Say it of a type of yours that does.
    acts_for_owner: bool = False
    # Its output is what someone outside answered (a remote's response, a person's decision), not
    # something computed from what it read: a gate's decision it reads is not carried on in it
    # (``gates.deciders``). Left False, a node of the type that reads a decision carries it on.
    answers_outside: bool = False
    # What a node of this type does outside, as the fields of its resolved config that say it (an
    # http request's method, URL, headers, query and payload; a ``workflow`` node's child: the version
    # that runs, as resolved at its start, its tag, pinned version and inputs): a replay that runs the
    # node again keeps its source's unsettled work's Idempotency-Key when these are the same
    # (``idempotency.going_on``). Empty: not compared.
    sends: tuple[str, ...] = ()
    # Called after commit whenever any run has finished (run id, its status): a type whose nodes
    # wait on other runs (``workflow``) resumes or cancels them here. See workflows.engine.hooks.
    on_run_finished: Callable[[str, str], None] | None = None
    # Its ``timeout_ms`` bounds what a node of this type waits for (``workflow``: its child run, by
    # ``SubRun.deadline``), not the executor task that starts the wait: that task runs under
    # ``AOB_DEFAULT_NODE_TIMEOUT_MS`` (``dispatch.task_timeout_ms``).
    times_wait: bool = False

    def __post_init__(self) -> None:
        # A routed type without ``run`` is refused at start-up by the system check (workers/checks.py).
        if not self.inline and not self.queue:
            object.__setattr__(self, "queue", QUEUE_PREFIX + self.node_type)

    @property
    def routed(self) -> bool:
        """Runs on a worker (as opposed to inside the coordinator's decision)."""
        return not self.inline


# The record's former name; the engine and the tests may still say it.
ExecutorSpec = NodeType

_TYPES: dict[str, NodeType] = {}
_lock = threading.Lock()


def register(spec: NodeType) -> NodeType:
    with _lock:
        if spec.node_type in _TYPES:
            raise RegistryError(f"node type {spec.node_type!r} is already registered "
                                f"(by {_owner(_TYPES[spec.node_type])}); a type has one record")
        _TYPES[spec.node_type] = spec
    return spec


def _owner(spec: NodeType) -> str:
    fn = spec.run or spec.on_run_finished or spec.check
    return getattr(fn, "__module__", "?") if fn is not None else "an inline registration"


def executor(node_type: str, *, config_schema: dict[str, Any] | None = None, description: str = "",
             **facts: Any) -> Callable[[Callable[[NodeContext], Any]], Callable[[NodeContext], Any]]:
    """``@executor("http", config_schema=..., check=...)`` registers the function as the type's executor;
    any other field of ``NodeType`` may be given by keyword."""

    def decorate(fn: Callable[[NodeContext], Any]) -> Callable[[NodeContext], Any]:
        register(NodeType(node_type, fn, config_schema or {"type": "object", "additionalProperties": False},
                          description or (fn.__doc__ or "").strip(), **facts))
        return fn

    return decorate


def inline_type(node_type: str, *, config_schema: dict[str, Any], description: str) -> None:
    register(NodeType(node_type, None, config_schema, description, inline=True))


def get(node_type: str) -> NodeType | None:
    _load()
    return _TYPES.get(node_type)


def acts(node_type: Any) -> bool:
    """Whether a node of this type does anything beyond computing what the run reads (a request
    out, a model called, a person asked, another workflow run): neither inline nor pure. An unknown
    type does."""
    spec = get(node_type) if isinstance(node_type, str) else None
    return spec is None or not (spec.inline or spec.pure)


def acts_for_owner(node_type: Any) -> bool:
    spec = get(node_type) if isinstance(node_type, str) else None
    return spec is not None and spec.acts_for_owner


def answers_outside(node_type: Any) -> bool:
    spec = get(node_type) if isinstance(node_type, str) else None
    return spec is not None and spec.answers_outside


def times_wait(node_type: Any) -> bool:
    spec = get(node_type) if isinstance(node_type, str) else None
    return spec is not None and spec.times_wait


def takes_input(node_type: Any) -> bool:
    """Whether a node of this type reads its predecessors' outputs (an agent's prompt) or passes them
    on (a conditional); an unknown type is taken to."""
    spec = get(node_type) if isinstance(node_type, str) else None
    return spec is None or spec.inline or spec.reads_upstream


def repeats(node_type: Any, config: Any) -> Repeats:
    spec = get(node_type) if isinstance(node_type, str) else None
    if spec is None or spec.repeats is None or not isinstance(config, dict):
        return Repeats()
    return spec.repeats(config)


def limits(node_type: Any, config: Any) -> dict[str, int | None]:
    spec = get(node_type) if isinstance(node_type, str) else None
    if spec is None or spec.limits is None or not isinstance(config, dict):
        return {}
    return spec.limits(config)


def calls_a_model(node_type: str) -> bool:
    """A node of this type calls a model (the agent's: ``model`` registered)."""
    spec = get(node_type)
    return spec is not None and spec.model is not None


def is_inline(node_type: str) -> bool:
    spec = get(node_type)
    return spec is not None and spec.inline


def catalogue() -> dict[str, NodeType]:
    _load()
    return dict(_TYPES)


def routed() -> dict[str, NodeType]:
    """The types that run on workers, by name."""
    return {name: spec for name, spec in catalogue().items() if spec.routed}


def queue_for(node_type: str) -> str:
    """The queue a node of this type is published to (Celery's default queue for a type nobody
    registered: the coordinator skips those, so nothing is published there in practice)."""
    spec = get(node_type)
    return spec.queue if spec is not None and spec.queue else DEFAULT_NODE_QUEUE


def queues(node_types: Iterable[str] | None = None) -> list[str]:
    """The queues of these node types (all routed types when None or ``*``), in a stable order. A name
    nobody registered, or an inline type, is refused: a worker started for it would idle forever."""
    types = routed()
    if node_types is None:
        return sorted({spec.queue for spec in types.values()})
    wanted = [t.strip() for t in node_types if t.strip()]
    if wanted == ["*"]:
        return queues()
    unknown = [t for t in wanted if t not in types]
    if unknown:
        raise RegistryError(f"no node type runs on workers under the name(s) {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(types))}")
    return sorted({types[t].queue for t in wanted})


def all_queues() -> list[str]:
    """Every queue of the whole stack: each routed type's, the default, and the service queues (the
    coordinator's, maintenance, notifications, run outputs, schedules' firings)."""
    return [COORDINATOR_QUEUE, *queues(), DEFAULT_NODE_QUEUE, *(q for q in SERVICE_QUEUES if q != COORDINATOR_QUEUE)]


def run_ending_hooks() -> list[Callable[[str, str, Any], None]]:
    return [spec.on_run_ending for spec in catalogue().values() if spec.on_run_ending is not None]


def run_finished_hooks() -> list[Callable[[str, str], None]]:
    return [spec.on_run_finished for spec in catalogue().values() if spec.on_run_finished is not None]


_loaded = False
_loading = threading.local()


def _load() -> None:
    """Import ``<app>.nodetypes`` of every installed app once, so the registry is complete in any
    process (web, worker, coordinator, CLI command) whichever module asks first. A registration
    that fails (a duplicate, say) fails every later lookup too, never a half-filled registry."""
    global _loaded
    if _loaded or getattr(_loading, "active", False):
        return
    from django.utils.module_loading import autodiscover_modules

    with _load_lock:
        if _loaded:
            return
        _loading.active = True
        try:
            autodiscover_modules("nodetypes")
        finally:
            _loading.active = False
        _loaded = True


_load_lock = threading.RLock()
