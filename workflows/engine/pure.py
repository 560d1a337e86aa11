"""Pure nodes in the decision: a node whose type is ``pure`` in the registry (``transform``) is
evaluated by the coordinator when the plan reaches it, with no worker hop, and recorded as its own
node run with the events, input, output and timings a worker would have written.

The planner stays pure: it asks an ``Evaluator`` (built here by the coordinator, per decision)
for a node's ``Outcome`` over the outputs its state holds; the evaluator runs the type's one
function (the registry's ``run``, the same a worker calls), capped at what is left of the
decision's ``Budget`` and at the node's own ``timeout_ms``. Past the budget, when the cap stopped
it, or when the outcome is an error worth a retry, it answers None and the node goes through the
queue like any other, where a worker applies the node's timeout and retries.

The ``Budget`` bounds everything one decision evaluates in place, pure nodes and the planner's own
(``conditional`` and ``loop`` nodes, edge and loop conditions): ``AOB_DECISION_MAX_NODES`` nodes and
``AOB_DECISION_MAX_MS`` of evaluation. Once spent, the planner leaves each finished node run it
would route next unconsumed, for a decision of its own (``Plan.continued``), and the conditions
still to evaluate share what is left of one ``AOB_CEL_TIMEOUT_MS``; so a loop of inline nodes or a
long run of expensive conditions cannot hold a coordinator, a web request or the run lock.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.utils import timezone

from aob_project.metrics import NODE_DURATION
from workflows import registry
from workflows.definition.expressions import capped
from workflows.definition.ir import Node
from workflows.models import canonical_json, size_of, text_id
from workflows.registry import NodeContext

from .outputs import OutputTooLarge, refuse_large_output, strict_json

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What evaluating a pure node gave: an output (with its artifact id and size) or an error
    payload, the resolved config (the node run's input) and when it ran."""

    output: Any = None
    error: dict[str, Any] | None = None
    input: Any = None
    artifact_id: str | None = None
    size: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int = 0


def evaluate(ctx: NodeContext) -> tuple[NodeContext, Any, dict[str, Any] | None]:
    """Run a node's registered function as a worker would: resolve the config (where the type
    asks), call ``run``; an error becomes the payload a worker records. Returns the context with
    its resolved config, the output, and the error (None when it completed)."""
    from .execution import error_payload, prepared  # a worker's own preparation and error mapping

    try:
        ctx, run = prepared(ctx)
        return ctx, strict_json(run(ctx)), None  # the one rule for what an output may hold
    except SoftTimeLimitExceeded:
        raise  # the decision's own time limit: the decision is retried, not this node failed
    except Exception as exc:  # noqa: BLE001 - a bug in a pure function fails its node, as on a worker
        return ctx, None, error_payload(exc)


def in_decision(node: Node) -> bool:
    """Whether the planner may evaluate this node itself: its type is pure and its config does not
    ask for the queue (``dispatch: "queue"``)."""
    spec = registry.get(node.type)
    return bool(spec is not None and spec.pure and spec.run is not None
                and (node.config or {}).get("dispatch") != "queue")


# The most a pure node evaluated in a decision may read of other nodes' stored outputs, together:
# past it the node goes to its queue, a worker's to evaluate. Its references are resolved and its
# output serialised before the time cap can stop it (a template copying a 13 MB output: 3.4 s of
# the decision against its 50 ms, then thrown away and done again on a worker: a red team's find).
READ_MAX_BYTES = 256 * 1024


class Budget:
    """What one decision may evaluate in place: ``max_nodes`` nodes (pure, conditional, loop) and
    ``max_ms`` of evaluation (pure nodes and their reads, edge and loop conditions, the planner's
    judging of edges in and its dead-path skips). ``spent`` once either is used."""

    def __init__(self, max_nodes: int | None = None, max_ms: float | None = None) -> None:
        self.max_nodes = settings.AOB_DECISION_MAX_NODES if max_nodes is None else max_nodes
        self.max_ms = settings.AOB_DECISION_MAX_MS if max_ms is None else max_ms
        self.nodes = 0
        self.seconds = 0.0  # spent evaluating in this decision
        self.condition_seconds = 0.0  # of which in conditions

    @classmethod
    def none(cls) -> Budget:
        """A request's decision (a run's start, a patch's refresh): it takes on no node to evaluate
        in place (pure, conditional, loop), so a start evaluates no expression in the web process;
        each such node goes on in a coordinator's decision (``Plan.continued``). A refresh still
        routes a finished node's new edges itself, their conditions within the one shared second."""
        return cls(max_nodes=0, max_ms=0)

    @property
    def spent(self) -> bool:
        return self.nodes >= self.max_nodes or self.seconds * 1000 >= self.max_ms

    def left_ms(self) -> float:
        return max(0.0, self.max_ms - self.seconds * 1000)

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        """Time spent in the block, less what conditions inside it counted already (``conditions``:
        a loop's, in an inline node's timing, was counted twice, and its decision stopped at half its
        ``max_ms``: a review's find)."""
        started, counted = time.monotonic(), self.condition_seconds
        try:
            yield
        finally:
            self.seconds += time.monotonic() - started - (self.condition_seconds - counted)

    @contextlib.contextmanager
    def conditions(self) -> Iterator[None]:
        """A condition's evaluation, timed, and capped at what is left of the one
        ``AOB_CEL_TIMEOUT_MS`` every condition of this decision shares: the budget stops the
        decision taking on more nodes, this bounds the conditions of those it has taken on (one
        node's branch rules, the loops among its targets). A condition stopped by it counts as
        false, with a ``condition_error`` event, as one that ran out of its own time."""
        started = time.monotonic()
        try:
            with capped(max(0.0, settings.AOB_CEL_TIMEOUT_MS - self.condition_seconds * 1000)):
                yield
        finally:
            elapsed = time.monotonic() - started
            self.seconds += elapsed
            self.condition_seconds += elapsed


class Evaluator:
    """The coordinator's evaluator for one decision: pure nodes until the budget is spent."""

    def __init__(self, *, run_id: str, owner_id: int, inputs: dict[str, Any], owner_active: bool,
                 budget: Budget | None = None, max_nodes: int | None = None, max_ms: float | None = None) -> None:
        self.run_id, self.owner_id, self.inputs, self.owner_active = run_id, owner_id, inputs, owner_active
        self.budget = budget if budget is not None else Budget(max_nodes, max_ms)

    def __call__(self, node: Node, iteration: int, outputs: dict[str, Any]) -> Outcome | None:
        budget = self.budget
        if budget.spent:
            return None  # the rest goes through the queue: one run cannot hold a coordinator slot
        budget.nodes += 1
        # at most what the budget has left, and never past the node's own timeout (a worker's limit)
        cap_ms = min(budget.left_ms(), node.timeout_ms or budget.left_ms())
        started_at = timezone.now()
        started = time.monotonic()
        ctx = NodeContext(run_id=self.run_id, node_run_id=0, node_id=node.id, node_type=node.type,
                          iteration=iteration, attempt=1, config=node.config, raw_config=node.config,
                          inputs=self.inputs, outputs=outputs,
                          timeout_s=(node.timeout_ms / 1000) if node.timeout_ms else None, owner_id=self.owner_id,
                          definition={"retry": node.retry, "timeout_ms": node.timeout_ms},
                          owner_active=self.owner_active)
        with capped(cap_ms) as cap, budget.timing():
            ctx, output, error = evaluate(ctx)
        elapsed = time.monotonic() - started
        if elapsed * 1000 >= cap_ms or cap.stopped:
            return None  # stopped by (or ran into) the cap: a worker evaluates it under the node's own limits
        if error is not None and error.get("transient"):
            return None  # its retries with backoff are the queue's
        text, size = "", 0
        if error is None:
            try:
                text = canonical_json(output)
            except (TypeError, ValueError):
                return None  # not storable as JSON: the worker's path records that failure
            size = size_of(text)
            try:
                refuse_large_output(size)  # as a worker's completion: failed, nothing stored
            except OutputTooLarge as exc:
                from .execution import error_payload

                output, error = None, error_payload(exc)
        status = "failed" if error is not None else "completed"
        NODE_DURATION.labels(node.type, status).observe(elapsed)  # as a worker observes it
        logger.info(f"node_run.{status}", extra={"run_id": self.run_id, "node_id": node.id, "iteration": iteration,
                                                  "duration_ms": int(elapsed * 1000), "in_decision": True,
                                                  **({"error_type": error.get("error_type")} if error else {})})
        common: dict[str, Any] = {"input": ctx.config, "started_at": started_at, "finished_at": timezone.now(),
                  "duration_ms": int(elapsed * 1000)}
        if error is not None:
            return Outcome(error=error, **common)
        return Outcome(output=output, artifact_id=text_id(text), size=size, **common)


def evaluator_for(run: Any, inputs: dict[str, Any], budget: Budget) -> Evaluator | None:
    """The evaluator for a decision about ``run`` (its ``inputs`` as the decision read them, and
    ``owner_active`` as ``coordinator.locked_run`` read it) within ``budget``, or None when the
    setting turns the feature off."""
    if not settings.AOB_PURE_NODES:
        return None
    return Evaluator(run_id=str(run.pk), owner_id=run.owner_id, inputs=inputs or {},
                     owner_active=run.owner_active, budget=budget)
