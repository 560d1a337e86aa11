"""The ``http`` type's outbound check at save (``NodeType.check_outbound``): the SSRF policy's
static verdict on a literal URL, from the one SSRF-safe client's own rules (workers/http)."""

from __future__ import annotations

from typing import Any

from workers.http import SSRFBlocked, check_url_static


def literal_url_problems(config: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """A URL without ``$`` (a reference or template is known only at run time) that the policy refuses."""
    url = config.get("url")
    if not isinstance(url, str) or "$" in url:
        return []
    try:
        check_url_static(url)
    except SSRFBlocked as exc:
        return [("/url", "ssrf", exc.message,
                 {**{k: v for k, v in exc.extra.items() if k != "rule"}, "reason": exc.rule})]
    return []
