"""The Content-Security-Policy of every response: django-csp's middleware, with the policy in
settings (``CONTENT_SECURITY_POLICY``), and the page's own WebSocket origin added to
``connect-src``.

``'self'`` covers ``ws:``/``wss:`` to the page's host in CSP Level 3, but not in every browser a
person may use (older Safari), and the live pages (a run, the runs list, the approvals inbox)
would then fall silent. The origin is the request's host as Django validated it against
``ALLOWED_HOSTS``; a request whose host is not allowed gets the policy without it."""

from __future__ import annotations

from csp.middleware import CSPMiddleware, PolicyParts
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponseBase


class ContentPolicyMiddleware(CSPMiddleware):
    def get_policy_parts(self, request: HttpRequest, response: HttpResponseBase,
                         report_only: bool = False) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        try:
            host = request.get_host()
        except DisallowedHost:
            return parts
        socket = f"{'wss' if request.is_secure() else 'ws'}://{host}"
        update = dict(parts.update or {})
        update["connect-src"] = [*update.get("connect-src", []), socket]
        parts.update = update
        return parts
