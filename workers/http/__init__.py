"""The one SSRF-safe outbound HTTP client: every HTTP node and agent tool request goes through it.

``request(...)`` sends; ``check_url`` / ``check_url_static`` judge a URL without sending.
The policy and its settings are described in ``docs/SECURITY.md``.
"""

from workers.http.client import HttpResult, client_close, request
from workers.http.exceptions import (
    DNSResolutionFailed,
    HTTPRequestError,
    InvalidHeader,
    ResponseTooLarge,
    SSRFBlocked,
    TooManyRedirects,
)
from workers.http.headers import check_headers, header_problem
from workers.http.ssrf import CheckedTarget, Target, check_url, check_url_static

__all__ = [
    "CheckedTarget", "DNSResolutionFailed", "HTTPRequestError", "InvalidHeader", "HttpResult", "ResponseTooLarge", "SSRFBlocked", "Target",
    "TooManyRedirects", "check_headers", "check_url", "header_problem", "check_url_static", "client_close", "request",
]
