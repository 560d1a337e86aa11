"""The ``Idempotency-Key`` every outbound request carries (the Stripe / IETF draft header), so a
remote that honours it applies a repeated request once.

One key per effect: stable for a run, node and iteration (and, for an agent, the turn, the tool
call and the step), so the retries of one node run and the attempt that follows a worker killed
mid-request send the same key; another iteration, and a replay (a new run), send another.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from workflows.registry import NodeContext

HEADER = "Idempotency-Key"
NAMESPACE = uuid.UUID("5b0f7d9e-2c4a-4f57-9a61-0d3e8f2b6c11")

# Methods a remote treats as idempotent by definition (RFC 9110): sending them again is safe with or
# without a key. POST and PATCH are safe to repeat only when the remote can recognise the repeat.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


def effect_key(ctx: NodeContext, *parts: Any) -> str:
    """A UUID named by the run, node and iteration (and ``parts``): the same for every attempt."""
    return str(uuid.uuid5(NAMESPACE, "/".join([ctx.run_id, ctx.node_id, str(ctx.iteration), *map(str, parts)])))


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
