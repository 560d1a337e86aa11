"""DRF throttles over the sliding windows of ``workflows/ratelimit.py``.

DRF checks throttles after authentication, which is the point: the global write limit counts
only requests by known users, so anonymous traffic cannot spend it, and anonymous requests have
a limit of their own per client address. A throttle that is full raises ``RateLimited`` itself
(rather than answering False), so the 429 names the layer, its limit and ``Retry-After`` exactly
as every other limit does.

DRF checks permissions before throttles, so an anonymous request to an endpoint that needs a user
is refused (401) without reaching them; the exception handler counts those
(``count_refused_anonymous``), so every request without a valid identity is counted once.
"""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from workflows import ratelimit

WRITES = {"POST", "PUT", "PATCH", "DELETE"}


class AnonymousThrottle(BaseThrottle):
    def allow_request(self, request: Request, view: Any) -> bool:
        if not request.user.is_authenticated:
            ratelimit.check_anonymous(address=ratelimit.client_address(request.META))
        return True


class AnonymousUntilProven(BaseThrottle):
    """For a request that proves itself in the view rather than by DRF's authenticators (a hook's
    signed delivery): counted as anonymous for its address like any other, and the entry kept on
    the request (``anonymous_entry``) so the view takes it out again once the request has proved
    itself (``proven``). A sender that delivers many tenants' hooks from one address (GitHub,
    Stripe) then spends none of that address's limit on deliveries that prove themselves."""

    def allow_request(self, request: Request, view: Any) -> bool:
        address = ratelimit.client_address(request.META)
        request.anonymous_entry = (address, ratelimit.count_anonymous(address=address))
        return True


def proven(request: Request) -> None:
    """``request`` proved its identity: it no longer counts as anonymous (``AnonymousUntilProven``)."""
    address, member = getattr(request, "anonymous_entry", (None, None))
    if member is not None:
        request.anonymous_entry = (address, None)
        ratelimit.uncount_anonymous(address=address, member=member)


class GlobalWriteThrottle(BaseThrottle):
    """State-changing requests across all users, and each user's share of them
    (``ratelimit.check_write``). A view that changes nothing although it is a POST (the editor's
    validate-as-you-type) leaves this throttle out of its ``throttle_classes``; a view that starts
    a run leaves it to ``run_start`` (``run_start_throttles``)."""

    def allow_request(self, request: Request, view: Any) -> bool:
        if request.method in WRITES and request.user.is_authenticated:
            ratelimit.check_write(user_id=request.user.pk)
        return True


def run_start_throttles() -> list[BaseThrottle]:
    """The throttles of a view that starts a run: the defaults without the global write limit,
    which ``run_start(api_write=True)`` checks in the same round trip as the run's own limits."""
    return [throttle() for throttle in api_settings.DEFAULT_THROTTLE_CLASSES if throttle is not GlobalWriteThrottle]


class LoginThrottle(BaseThrottle):
    """Password attempts, per client address and per username (brute force, and credential
    stuffing across many names from one address)."""

    def allow_request(self, request: Request, view: Any) -> bool:
        if request.method == "POST":
            username = request.data.get("username") if isinstance(request.data, dict) else None
            ratelimit.check_login(address=ratelimit.client_address(request.META),
                                  username=username if isinstance(username, str) else "")
        return True


def count_refused_anonymous(request: Any) -> None:
    """Count a request refused for want of a valid identity (raises RateLimited when its address
    is over the limit)."""
    ratelimit.check_anonymous(address=ratelimit.client_address(request.META))
