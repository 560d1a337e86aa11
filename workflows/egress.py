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

Lists = tuple[tuple[str, ...], ...]  # each binds: a host must be on every one

_HOSTS: contextvars.ContextVar[Lists] = contextvars.ContextVar("aob_allowed_hosts", default=())


def of(metadata: Any) -> tuple[str, ...] | None:
    """A definition's ``metadata.allowed_hosts`` (validated by the schema: lower-case names, each
    exact or ``*.`` and a suffix), or None when it sets none. A value that is no list (stored before
    the schema named it) allows nothing: a list the author meant is never read as no list."""
    if not isinstance(metadata, dict) or "allowed_hosts" not in metadata:
        return None
    return _patterns(metadata["allowed_hosts"])


def binding(metadata: Any, above: Any) -> Lists:
    """The lists a run's requests must each pass: its definition's own, and those of the runs above
    it (``Run.hosts_above``: a sub-workflow runs under its parent's lists too, as under its parent's
    spend ceilings)."""
    own = of(metadata)
    if above is not None and not isinstance(above, list):
        above = [None]  # what is no list of lists allows nothing: a bound is never read as none
    return ((own,) if own is not None else ()) + tuple(_patterns(hosts) for hosts in above or ())


def _patterns(value: Any) -> tuple[str, ...]:
    """A stored list as patterns; what is no list allows nothing."""
    return tuple(h for h in value if isinstance(h, str)) if isinstance(value, list) else ()


def _numeric(host: str) -> bool:
    """An IPv6 address, or an IPv4 one (its last label a number): a wildcard names no address."""
    return ":" in host or host.rsplit(".", 1)[-1].isdigit()


def allows(host: str, patterns: Sequence[str]) -> bool:
    """Whether a normalized host (lower case, punycode, no trailing dot: ``workers.http.hosts``)
    is one the patterns name: ``example.com`` itself, ``*.example.com`` any name under it (a name:
    ``*.2.3.4`` matches neither ``9.2.3.4`` nor ``[2600::1.2.3.4]``)."""
    return any(host == p or (p.startswith("*.") and not _numeric(host) and host.endswith(p[1:])) for p in patterns)


def refusing(host: str, lists: Lists) -> tuple[str, ...] | None:
    """The first of ``lists`` that does not allow ``host``, or None."""
    return next((patterns for patterns in lists if not allows(host, patterns)), None)


def current() -> Lists:
    """The lists of the node running in this context: none outside a node, or for a run without."""
    return _HOSTS.get()


@contextlib.contextmanager
def only(lists: Lists) -> Iterator[None]:
    """Requests made inside go only to hosts every one of ``lists`` allows."""
    token = _HOSTS.set(lists)
    try:
        yield
    finally:
        _HOSTS.reset(token)


def refusal(host: str, patterns: Sequence[str]) -> str:
    shown = ", ".join(patterns[:10]) + (f" and {len(patterns) - 10} more" if len(patterns) > 10 else "")
    return (f"host {host!r} is not on the run's allowed hosts ({shown or 'none: no requests'}): its workflow's "
            "metadata.allowed_hosts, and a sub-workflow's parents'")
