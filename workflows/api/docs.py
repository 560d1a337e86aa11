"""The interactive API docs (Swagger UI, ReDoc) from local static files only.

drf-spectacular-sidecar serves their scripts and styles from this server; a Content-Security-Policy
keeps the pages from reaching anywhere else (ReDoc's bundle, for one, loads a logo from its CDN),
so the docs work offline and tell nobody that they were opened."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerView

# Inline scripts and styles are the pages' own initialisation; workers come from blob: URLs.
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'self'; form-action 'self'")


def same_origin_only(view: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(request: Any, *args: Any, **kwargs: Any) -> Any:
        response = view(request, *args, **kwargs)
        response["Content-Security-Policy"] = CSP
        return response

    return wrapped


swagger_ui = same_origin_only(SpectacularSwaggerView.as_view(url_name="openapi"))
redoc = same_origin_only(SpectacularRedocView.as_view(url_name="openapi", template_name="aob/redoc.html"))
