"""The ``Idempotency-Key`` every outbound request carries (the Stripe / IETF draft header), so a
remote that honours it applies a repeated request once.

One key per effect: stable for a run, node and iteration (and, for an agent, the turn, the tool
call and the step), so the retries of one node run and the attempt that follows a worker killed
mid-request send the same key; another iteration, and a replay (a new run), send another, except
where the replay goes on with its source's work that did not settle (a payment in flight when the
source failed: ``run_replay``), which keeps the source's run in its key (``Run.key_run``), as does
a sub-workflow its parent's node's (``run_workflow``): the same work is one request outside.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from workflows.definition.ir import MAX_BACKOFF_MS
from workflows.registry import NodeContext

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
