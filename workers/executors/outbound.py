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


def literal_url_problems(config: dict[str, Any], hosts: egress.Lists = (),
                         ) -> list[tuple[str, str, str, dict[str, Any]]]:
    """A URL without ``$`` (a reference or template is known only at run time) that the policy
    refuses; and, under ``hosts`` (the lists binding the run), a URL whose origin is literal (with or
    without references after it) to a host one of them leaves off. The check at the send stays the
    authority (a host a reference fills, a redirect)."""
    url = config.get("url")
    if not isinstance(url, str):
        return []
    if "$" not in url:
        try:
            target = check_url_static(url)
        except SSRFBlocked as exc:
            return [("/url", "ssrf", exc.message,
                     {**{k: v for k, v in exc.extra.items() if k != "rule"}, "reason": exc.rule})]
    elif hosts and (origin := LITERAL_ORIGIN.match(url)):
        try:  # only its host, for the list: the SSRF rules judge a URL with a reference at the send, as ever
            target = check_url_static(origin.group(0))
        except SSRFBlocked:
            return []
    else:
        return []
    refused_by = egress.refusing(target.host, hosts)
    if refused_by is not None:
        return [("/url", egress.RULE, egress.refusal(target.host, refused_by), {"host": target.host, "url": url})]
    return []
