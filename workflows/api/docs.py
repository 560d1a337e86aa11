"""The interactive API docs (Swagger UI, ReDoc) from local static files only.

drf-spectacular-sidecar serves their scripts and styles from this server; the site's
Content-Security-Policy (``CONTENT_SECURITY_POLICY`` in settings) keeps the pages from reaching
anywhere else (ReDoc's bundle, for one, loads a logo from its CDN), so the docs work offline and
tell nobody that they were opened. These two pages loosen it only where their bundles need it."""

from __future__ import annotations

from csp.decorators import csp_replace
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerView

from .openapi import JsonAsides

# Inline scripts and styles are the pages' own initialisation; workers come from blob: URLs; the
# bundles draw images and fonts from data: and blob: URLs.
DOCS_POLICY = {
    "script-src": ["'self'", "'unsafe-inline'"],
    "img-src": ["'self'", "data:", "blob:"],
    "font-src": ["'self'", "data:"],
    "worker-src": ["'self'", "blob:"],
}


class SwaggerView(JsonAsides, SpectacularSwaggerView):
    pass


class RedocView(JsonAsides, SpectacularRedocView):
    pass


swagger_ui = csp_replace(DOCS_POLICY)(SwaggerView.as_view(url_name="openapi"))
redoc = csp_replace(DOCS_POLICY)(RedocView.as_view(url_name="openapi", template_name="aob/redoc.html"))
