"""The ``Idempotency-Key`` every outbound request carries (the Stripe / IETF draft header), so a
remote that honours it applies a repeated request once.

One key per effect: stable for a run, node and iteration (and, for an agent, the turn, the tool
call and the step), so the retries of one node run and the attempt that follows a worker killed
mid-request send the same key; another iteration, and a replay (a new run), send another, except
where the replay goes on with its source's work that did not settle (a payment in flight when the
source failed: ``run_replay``), which keeps the source's run in its key (``Run.key_run``), as does
a sub-workflow its parent's node's (``run_workflow``): the same work is one request outside. A
replay's node that runs again (after a gate asked again, or replayed itself) keeps its source's
key too where the source's did not settle and it acts the same (``going_on``): decided just before
it acts (``decided_before_acting``), as only then is its resolved config known. Every type that
acts outside follows that one rule (``NodeType.sends``: an http request, a ``workflow`` node's
child, whose requests carry keys named by it); an agent's own journal and model calls decide its.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from workflows import registry
from workflows.definition.ir import MAX_BACKOFF_MS
from workflows.registry import NodeContext, NodeFailed

HEADER = "Idempotency-Key"
NAMESPACE = uuid.UUID("5b0f7d9e-2c4a-4f57-9a61-0d3e8f2b6c11")

# Methods a remote treats as idempotent by definition (RFC 9110): sending them again is safe with or
# without a key. POST and PATCH are safe to repeat only when the remote can recognise the repeat.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


def effect_key(ctx: NodeContext, *parts: Any) -> str:
    """A UUID named by the run (``ctx.key_run_id``: ``Run.key_run``), node and iteration (and
    ``parts``): the same for every attempt."""
    run = ctx.key_run_id or ctx.run_id
    return str(uuid.uuid5(NAMESPACE, "/".join([run, ctx.node_id, str(ctx.iteration), *map(str, parts)])))


# What an http request is, as the node's resolved config says it (its ``NodeType.sends``): what the
# remote is sent, its $secrets as written (the config is resolved before they are put in: a rotated
# secret is the same request, and no secret is kept or compared in clear). Its target first.
REQUEST_FIELDS = ("url", "method", "headers", "query", "payload")


def request_digest(node_type: str, config: Mapping[str, Any] | None) -> str | None:
    """What a node of ``node_type`` does outside, as its resolved ``config`` (or a node run's kept
    ``input``) says it (``NodeType.sends``); None when there is none to compare (a type that says
    none, or no input kept: a node run stopped mid-request on an older release)."""
    spec = registry.get(node_type)
    fields = spec.sends if spec is not None else ()
    if not fields or not isinstance(config, Mapping) or fields[0] not in config:
        return None
    request = {name: config.get(name) for name in fields}
    if "method" in request:  # an http method as sent: "post" and an omitted GET are what goes out
        request["method"] = str(request["method"] or "GET").upper()
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def decided_by_request(method: str, key_header: str | None) -> bool:
    """Whether a request's key is decided by what it sends (``going_on``), its resolved input kept
    before it goes out: a keyed one the remote could apply twice (not idempotent by definition)."""
    return bool(key_header) and method.upper() not in IDEMPOTENT_METHODS


def going_on(ctx: NodeContext, config: Mapping[str, Any]) -> tuple[NodeContext, dict[str, Any] | None]:
    """The context a replay's request is sent with, and why (None: nothing to decide). A node run
    that runs again in a replay (its node replayed, or after a gate asked again: ``run_replay``'s
    ``again``) whose source's node run began and did not settle (``NodeRun.unsettled``: its request
    may have taken effect) goes on under the source's key (``Run.key_run``, down a chain of replays)
    when it sends the same request (``request_digest`` of the source's kept input). The source is
    the nearest run of the replay chain whose node run may have acted (``last_acted``): a replay in
    between that never ran it (cancelled while a gate waited, or before its message was claimed) or
    stopped before it sent (``NodeRun.acted``) passes on the request before it. A changed one
    (a gate's new form data, an upstream's new price) is new work under a new key, which a remote
    refuses under the old (Stripe) or answers with the old request's answer (a key-only remote).
    The decision is kept in the run's ``key_origins`` before the request goes out, so the node
    run's retries, and replays of this run, carry the same key (``execution.claim``).

    A sibling ``run_replay`` sent on under its source's key (``ctx.goes_on`` at a first attempt) is
    compared too: its node cannot be patched (``RunState.started``), but a replay patched before
    that rule, or a definition read otherwise, may send another request; then its entry is dropped
    (its retries and replays follow: its own key). Where its source kept no request to compare
    (stopped mid-request on an older release) ``run_replay``'s decision stands: it runs the source's
    definition on the source's outputs, the same work, which a new key would have applied twice."""
    from django.db import connection

    from workflows.models import NodeRun, Run

    # an earlier attempt of this node run decided it (its first compared), and its decision was kept:
    # its retries repeat what it may have sent under that key, whatever their request says now
    if ctx.goes_on and ctx.attempt > 1:
        return ctx, None
    found = last_acted(ctx)
    if found is None or not NodeRun.unsettled(*found[2:5]):
        return ctx, None
    source_id, source_origins, *_, node_run_id = found
    key_run = Run.key_run(source_id, source_origins, ctx.node_id, ctx.iteration)
    kept = NodeRun.objects.filter(pk=node_run_id).values_list("input", flat=True).first()
    sent, now = request_digest(ctx.node_type, kept), request_digest(ctx.node_type, config)
    origin = Run.origin(ctx.node_id, ctx.iteration)
    if sent is None and ctx.goes_on:
        return ctx, {"run": key_run, "why": "its source's key: the replay goes on with its source's work, which kept "
                     "no request to compare (stopped mid-request on an older release)", "request": now}
    if sent is None or sent != now:
        why = ("its source kept no request to compare (stopped mid-request on an older release)"
               if sent is None else "its request differs from its source's, whose outcome is unknown")
        if ctx.goes_on:  # run_replay's decision is undone before the request goes out
            with connection.cursor() as cursor:
                cursor.execute("UPDATE workflows_run SET key_origins = key_origins - %s WHERE id = %s "
                               "RETURNING key_origins", [origin, ctx.run_id])
                row = cursor.fetchone()
            origins = json.loads(row[0]) if row and isinstance(row[0], str) else (row[0] if row else None)
            ctx = dataclasses.replace(ctx, key_run_id=Run.key_run(ctx.run_id, origins, ctx.node_id, ctx.iteration),
                                      goes_on=False)
        return ctx, {"run": ctx.key_run_id or ctx.run_id, "why": f"a new key: {why}", "request": now, "source": sent}
    return going_on_under(ctx, key_run), {
        "run": key_run, "why": "its source's key: the same request as its source's, whose outcome is unknown",
        "request": now}


def going_on_under(ctx: NodeContext, key_run: str) -> NodeContext:
    """The context of a node run that goes on with another run's unsettled work under ``key_run``'s
    key (``going_on``'s decision; an agent's reused answer, agents/loop.py), kept in its run's
    ``key_origins`` first: its later attempts (``execution.claim``) and replays of its run carry it."""
    from django.db import connection

    from workflows.models import Run

    if not ctx.goes_on or ctx.key_run_id != key_run:
        with connection.cursor() as cursor:  # one statement: the run's other origins stay as they are
            cursor.execute("UPDATE workflows_run SET key_origins = COALESCE(key_origins, '{}'::jsonb) || %s::jsonb "
                           "WHERE id = %s", [json.dumps({Run.origin(ctx.node_id, ctx.iteration): key_run}), ctx.run_id])
    return dataclasses.replace(ctx, key_run_id=key_run, goes_on=True)


# The runs a replay replays, nearest first (its source, the source's source...), with each one's node
# run of this node and iteration: where one never began, or stopped before it acted (``NodeRun.acted``),
# the request last sent for this node may be an earlier run's, whatever replays came in between
# (cancelled while a gate waited, failed before deciding). One statement; a run deleted ends the chain.
CHAIN = """
WITH RECURSIVE chain(id, replay_of_id, key_origins, depth) AS (
    SELECT s.id, s.replay_of_id, s.key_origins, 1
      FROM workflows_run r JOIN workflows_run s ON s.id = r.replay_of_id WHERE r.id = %(run_id)s
    UNION ALL
    SELECT s.id, s.replay_of_id, s.key_origins, chain.depth + 1
      FROM chain JOIN workflows_run s ON s.id = chain.replay_of_id
)
SELECT chain.id, chain.key_origins, nr.status, nr.attempts, nr.error, nr.id, {given_back}, {unsent}
  FROM chain JOIN workflows_noderun nr
    ON nr.run_id = chain.id AND nr.node_id = %(node_id)s AND nr.iteration = %(iteration)s
 ORDER BY chain.depth
"""


def last_acted(ctx: NodeContext) -> tuple[str, Any, str, int, Any, int] | None:
    """The nearest run in this replay's chain whose node run of this node may have acted
    (``NodeRun.acted``): (its id, its ``key_origins``, that node run's status, attempts, error and
    id); None when none did (not a replay, or nothing ran it before). The one walk an http or
    ``workflow`` node's request (``going_on``) and an agent's reused answers (agents/loop.py) follow."""
    from django.db import connection

    from workflows.engine.execution import given_back, unsent
    from workflows.models import NodeRun

    with connection.cursor() as cursor:
        cursor.execute(CHAIN.format(given_back=given_back("nr.attempt_log"), unsent=unsent("nr.attempt_log")),
                       {"run_id": ctx.run_id, "node_id": ctx.node_id, "iteration": ctx.iteration})
        rows = cursor.fetchall()
    for run_id, origins, status, attempts, error, node_run_id, unrun, not_sent in rows:
        origins = json.loads(origins) if isinstance(origins, str) else origins
        error = json.loads(error) if isinstance(error, str) else error
        if NodeRun.acted(status, attempts, unrun, not_sent):
            return str(run_id), origins, status, attempts, error, node_run_id
    return None


def decided_before_acting(ctx: NodeContext) -> tuple[NodeContext, dict[str, Any] | None]:
    """The one rule a node that acts outside (``NodeType.sends``) follows just before it acts (an http
    node's keyed POST/PATCH, a ``workflow`` node's child start): its resolved input is kept first
    (``kept_before_sending``: what a replay of its run compares with, were it stopped mid-way), then a
    replay's key is decided (``going_on``). Returns the context to act with and why it carries its
    key (None: nothing to decide); raises ``NodeFailed`` when the node run is no longer this
    attempt's (cancelled, moved on): nothing may act."""
    from workflows.engine.execution import kept_before_sending

    if not kept_before_sending(ctx):
        raise NodeFailed("the node run was stopped before it acted outside: nothing was sent",
                         code="NodeRunMoved", extra={"transient": False, "sent": False})
    return going_on(ctx, ctx.config)


def with_key(headers: Mapping[str, str] | None, name: str | None, key: str) -> dict[str, str]:
    """``headers`` plus ``name: key``, unless the caller set that header itself (its value wins)."""
    out = dict(headers or {})
    if name and name.lower() not in {h.lower() for h in out}:
        out[name] = key
    return out


def repeats_when_lost(method: str, on_lost: str | None, key_sent: bool) -> bool:
    """Whether an attempt that follows one whose worker died mid-request sends again: ``on_lost``
    when set, else yes for idempotent methods and for POST/PATCH that carry a key."""
    if on_lost:
        return on_lost == "repeat"
    return method.upper() in IDEMPOTENT_METHODS or key_sent


# Answers that say "not now" (408, 425 Too Early, 429): whatever was asked was not done, so a retry
# sends it again, after the answer's Retry-After when it gives one. A 503 says so only with a
# Retry-After (RFC 9110 15.6.4): a proxy answers a bare 503 when its upstream failed mid-request too.
NOT_NOW = frozenset({408, 425, 429})
# Answers that leave unknown whether the request took effect (the remote failed mid-way, or a
# gateway in front of it did) that the node's retry sends again, as after a lost attempt
# (``repeats_when_lost``). Every 5xx leaves it unknown (``outcome_answered``); these are retried.
OUTCOME_UNKNOWN = frozenset({500, 502, 503, 504})
_SECONDS = re.compile(r"[0-9]{1,10}")


def repeats_after(status: int, retry_after: float | None, method: str, on_lost: str | None, key_sent: bool) -> bool:
    """Whether a request answered ``status`` (with ``retry_after``: its ``retry_after_seconds``) may
    be sent again by the node's retry."""
    if status in NOT_NOW or (status == 503 and retry_after is not None):
        return True
    return status in OUTCOME_UNKNOWN and repeats_when_lost(method, on_lost, key_sent)


def outcome_answered(status: int, key_sent: bool) -> bool:
    """Whether an error answer ``status`` is the remote's own word on what came of the request
    (an http node's ``answered``: a replay sends it again as new work, under a new key). Only a
    4xx: any 5xx may be a gateway's or a CDN's in front of it (524, 520, 599 as much as 504: the
    origin may have taken the request and be applying it), not only ``OUTCOME_UNKNOWN``, which
    says what the node's retry sends again. Not a 409 to a keyed request either: the IETF draft's
    and Stripe's "a request with this key is still being processed"."""
    return 400 <= status < 500 and not (status == 409 and key_sent)


def retry_after_seconds(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """An answer's ``Retry-After`` (RFC 9110 10.2.3: ASCII digits, or an HTTP date) as seconds from
    now, at most an hour (``MAX_BACKOFF_MS``, the longest wait a node's own retry may ask); None
    when it has none or none that parses; a date past is 0."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        return min(float(value), MAX_BACKOFF_MS / 1000)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - (now or datetime.now(UTC))).total_seconds()), MAX_BACKOFF_MS / 1000)
