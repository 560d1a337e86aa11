"""The ``http`` type's outbound check at save (``NodeType.check_outbound``): the SSRF policy's
static verdict on a literal URL, from the one SSRF-safe client's own rules (workers/http), and the
host of a literal origin by the workflow's ``allowed_hosts`` (``workflows.egress``)."""

from __future__ import annotations

import re
from typing import Any

from workers.http import SSRFBlocked, check_url_static
from workflows import egress

# The start of a URL that fixes where a request goes (scheme, host, port, then /, ? or #), before
# any reference: a node that sends secrets must have one, so no reference can aim them elsewhere.
LITERAL_ORIGIN = re.compile(r"^https?://[^/?#\\$@]+[/?#]", re.IGNORECASE)


def literal_url_problems(config: dict[str, Any], hosts: tuple[str, ...] | None = None,
                         ) -> list[tuple[str, str, str, dict[str, Any]]]:
    """A URL without ``$`` (a reference or template is known only at run time) that the policy
    refuses; and, under ``hosts``, a URL whose origin is literal (with or without references after
    it) to a host not on the list. The check at send stays the authority (a reference's host, a
    redirect)."""
    url = config.get("url")
    if not isinstance(url, str):
        return []
    try:
        if "$" not in url:
            target = check_url_static(url)
        elif hosts is not None and (origin := LITERAL_ORIGIN.match(url)):
            target = check_url_static(origin.group(0))
        else:
            return []
    except SSRFBlocked as exc:
        return [("/url", "ssrf", exc.message,
                 {**{k: v for k, v in exc.extra.items() if k != "rule"}, "reason": exc.rule})]
    if hosts is not None and not egress.allows(target.host, hosts):
        return [("/url", egress.RULE, egress.refusal(target.host, hosts), {"host": target.host, "url": url})]
    return []
