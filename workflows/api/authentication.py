"""Token authentication that also takes ``Authorization: Bearer <key>``: most HTTP clients and
API tools send ``Bearer``, and answering them "credentials were not provided" helps nobody."""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.request import Request

SCHEMES = (b"token", b"bearer")


class TokenOrBearerAuthentication(TokenAuthentication):
    def authenticate(self, request: Request) -> Any:
        parts = get_authorization_header(request).split()
        if parts and parts[0].lower() == b"bearer":
            request.META["HTTP_AUTHORIZATION"] = b" ".join([b"Token", *parts[1:]]).decode("latin-1")
        return super().authenticate(request)

    def authenticate_header(self, request: Request) -> str:
        return 'Token realm="api", Bearer realm="api"'
