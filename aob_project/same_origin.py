"""The event streams' origin check: a socket opens only for a page of AOB's own origin (scheme,
host and port, as the socket's own request names them) or of ``CSRF_TRUSTED_ORIGINS``, the rule
Django's CSRF check applies to a form, once the socket's ``Host`` is one of ``ALLOWED_HOSTS`` (as
Django's ``get_host``: a rebinding name pointed at AOB is refused). Channels'
``AllowedHostsOriginValidator`` compared the Origin's host name alone with ``ALLOWED_HOSTS``;
cookies are not scoped by port, so a page another account of a shared machine served on another
port of the host opened a user's stream with their session, and read every event of their runs
live."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import is_same_domain, split_domain_port, validate_host


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin1")
    return None


DEFAULT_PORTS = {"http": 80, "https": 443}


def _key(origin: str) -> tuple[str, str, int | None] | None:
    """An origin as (scheme, host, port), the scheme's default port filled in (RFC 6454 §4): the
    aob CLI's ``http://host:80`` is the origin of ``Host: host``."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port if port is not None else DEFAULT_PORTS.get(parts.scheme)


def own_origin(scope: dict[str, Any]) -> str | None:
    """The origin of the socket's own request: ``https`` when it came over TLS (or a trusted proxy
    says so, ``SECURE_PROXY_SSL_HEADER``), its ``Host`` as sent."""
    host = _header(scope, b"host")
    if not host:
        return None
    secure = scope.get("scheme") in ("wss", "https")
    proxy = settings.SECURE_PROXY_SSL_HEADER
    if proxy:
        name, value = proxy
        told = _header(scope, name.removeprefix("HTTP_").lower().replace("_", "-").encode())
        secure = secure or (told or "").split(",")[0].strip() == value
    return f"{'https' if secure else 'http'}://{host.lower()}"


def trusted(origin: str) -> bool:
    """``origin`` is one of ``CSRF_TRUSTED_ORIGINS`` (``https://*.example.com`` naming its subdomains
    too), as Django's CSRF check reads them."""
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    parts = urlsplit(origin)
    return any(is_same_domain(parts.netloc, urlsplit(pattern).netloc[1:])
               for pattern in settings.CSRF_TRUSTED_ORIGINS
               if "*" in pattern and urlsplit(pattern).scheme == parts.scheme)


class SameOriginValidator:
    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            raise ValueError("SameOriginValidator guards WebSocket connections only")
        origin = (_header(scope, b"origin") or "").lower()
        own = own_origin(scope)
        same = own is not None and _key(origin) is not None and _key(origin) == _key(own)
        if origin and _allowed_host(scope) and (same or trusted(origin)):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)


def _allowed_host(scope: dict[str, Any]) -> bool:
    hosts = settings.ALLOWED_HOSTS or (["localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
    domain, _ = split_domain_port(_header(scope, b"host") or "")
    return bool(domain) and validate_host(domain, hosts)
