"""The errors of the outbound HTTP client, in the one AobError tree.

``extra["transient"]`` says whether a retry may help, the way executors decide to retry.
"""

from __future__ import annotations

from typing import Any

from aob_project.exceptions import AobError


class SSRFBlocked(AobError):
    """A destination the policy refuses. ``extra["rule"]`` names the rule, ``extra["url"]`` the URL."""

    code = "SSRFBlocked"
    status = 400

    def __init__(self, message: str, *, rule: str, url: str | None = None, **extra: Any) -> None:
        details: dict[str, Any] = {"rule": rule, **extra}
        if url is not None:
            details["url"] = url
        super().__init__(message, extra=details)

    @property
    def rule(self) -> str:
        return self.extra["rule"]

    @property
    def transient(self) -> bool:
        return bool(self.extra.get("transient"))


class DNSResolutionFailed(SSRFBlocked):
    """The host name has no address now (NXDOMAIN, no answer, a resolver failure). Transient: DNS
    fails and recovers, so the node's retries are used. Still a refusal to connect (rule
    ``unresolvable``): a name that does not resolve is never sent to some fallback."""

    code = "DNSResolutionFailed"
    status = 502

    def __init__(self, message: str, *, url: str | None = None, **extra: Any) -> None:
        super().__init__(message, rule="unresolvable", url=url, **{**extra, "transient": True})


class HTTPRequestError(AobError):
    """The request could not complete: timeout, refused connection, broken protocol.

    Timeouts and connection-level failures carry ``extra["transient"] = True``.
    """

    code = "HTTPRequestError"
    status = 502

    @property
    def transient(self) -> bool:
        return bool(self.extra.get("transient"))


class ResponseTooLarge(HTTPRequestError):
    """The response body passed the size cap; reading stopped there."""

    code = "ResponseTooLarge"


class TooManyRedirects(HTTPRequestError):
    """More redirect hops than allowed."""

    code = "TooManyRedirects"


class InvalidHeader(AobError):
    """A request header a workflow may not send (``workers.http.headers``); never retried."""

    code = "InvalidHeader"
    status = 400
