"""Where a run's requests may go: its workflow's ``metadata.allowed_hosts``, a bound its author sets
and the server enforces on every request a node of the run makes (an ``http`` node, an agent's
tools: a fetch of ``execute_pipeline``, ``openapi_action``), whoever wrote the node, and at every
redirect hop. An agent's patch cannot change it (``/metadata`` is out of an agent's reach), so a
prompt-injected agent cannot send what it read to a host of its choosing.

One rule, read in two places: at save, a literal URL's host (the ``http`` type's outbound check,
``workers.executors.outbound``), to name the problem early; at send, every hop's host
(``workers.http.client``), which is the authority. The engine sets the run's list around a node's
executor (``only``); without a list, any host the SSRF policy allows."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from typing import Any

RULE = "host_not_allowed"

_HOSTS: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar("aob_allowed_hosts", default=None)


def of(metadata: Any) -> tuple[str, ...] | None:
    """A definition's ``metadata.allowed_hosts`` (validated by the schema: lower-case names, each
    exact or ``*.`` and a suffix), or None when it sets none."""
    hosts = metadata.get("allowed_hosts") if isinstance(metadata, dict) else None
    return tuple(h for h in hosts if isinstance(h, str)) if isinstance(hosts, list) else None


def allows(host: str, patterns: Sequence[str]) -> bool:
    """Whether a normalized host (lower case, punycode, no trailing dot: ``workers.http.hosts``)
    is one the patterns name: ``example.com`` itself, ``*.example.com`` any name under it."""
    return any(host == p or (p.startswith("*.") and host.endswith(p[1:])) for p in patterns)


def current() -> tuple[str, ...] | None:
    """The list of the node running in this context, or None (no list, or no node)."""
    return _HOSTS.get()


@contextlib.contextmanager
def only(patterns: tuple[str, ...] | None) -> Iterator[None]:
    """Requests made inside go only to ``patterns`` (None: no bound of this kind)."""
    token = _HOSTS.set(patterns)
    try:
        yield
    finally:
        _HOSTS.reset(token)


def refusal(host: str, patterns: Sequence[str]) -> str:
    shown = ", ".join(patterns[:10]) + (f" and {len(patterns) - 10} more" if len(patterns) > 10 else "")
    return (f"host {host!r} is not in the workflow's metadata.allowed_hosts ({shown or 'none: no requests'})")
