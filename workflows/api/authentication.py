"""Token authentication that also takes ``Authorization: Bearer <key>``: most HTTP clients and
API tools send ``Bearer``, and answering them "credentials were not provided" helps nobody."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.hashers import is_password_usable
from django.contrib.auth.models import User
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.authtoken.models import Token
from rest_framework.request import Request

from aob_project.compiled import PROBE_TEXT, CompiledRead
from workflows.services.users import sessions_end, token_revoke

SCHEMES = (b"token", b"bearer")

# Every API request reads its token and user: compiled once per thread (aob_project/compiled.py).
_TOKEN_WITH_USER = CompiledRead(lambda key: Token.objects.select_related("user").filter(key=key),
                                key=PROBE_TEXT)
KEY_MAX = Token._meta.get_field("key").max_length


def token_with_user(key: str) -> Token | None:
    """The token whose key ``key`` is, its user read with it, for the API and the WebSocket
    handshake alike; None when there is none, and, unasked, for what no key can be: empty, longer
    than the column holds, or anything but printable ASCII without spaces (a NUL, which PostgreSQL
    refuses in text: a DataError, a 500 and a handshake that raised)."""
    if not (0 < len(key) <= KEY_MAX and key.isascii() and key.isprintable() and " " not in key):
        return None
    found = _TOKEN_WITH_USER.objects(key=key)
    return found[0] if found else None


class TokenOrBearerAuthentication(TokenAuthentication):
    def authenticate(self, request: Request) -> Any:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != b"bearer":
            return super().authenticate(request)
        if len(parts) != 2:
            return super().authenticate(_AsToken(request, parts))
        try:
            key = parts[1].decode()
        except UnicodeError:
            return super().authenticate(_AsToken(request, parts))
        return self.authenticate_credentials(key)

    def authenticate_credentials(self, key: str) -> tuple[User, Token]:
        """DRF's lookup and checks, on the compiled read."""
        token = token_with_user(str(key))
        if token is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Token realm="api", Bearer realm="api"'


def password_change_noted(sender: Any, instance: User, **kwargs: Any) -> None:
    """Whether this save changes the user's password (``pre_save``), for ``token_ends_with_account``:
    one set (``set_password``: the admin's password form, ``aob_create_user --password``, a password
    change page; a sign-in's rehash with the preferred hasher clears Django's ``_password`` before it
    saves, and is no change), or the one stored made unusable (the admin's "Disabled" password-based
    authentication): only a change from a usable one, so an unusable user's other edits are none."""
    fields = kwargs.get("update_fields")
    changed = not instance._state.adding and (fields is None or "password" in fields)
    if changed and instance._password is None:
        changed = not instance.has_usable_password() and is_password_usable(
            User.objects.filter(pk=instance.pk).values_list("password", flat=True).first())
    instance._aob_password_changed = changed  # type: ignore[attr-defined]


def token_ends_with_account(sender: Any, instance: User, **kwargs: Any) -> None:
    """A user whose password is changed, or who is saved deactivated, loses their API token
    (``post_save``): a password reset after a leak ends the key a leaked CLI config or CI log holds,
    as it ends the sessions (Django binds them to the stored hash), and ``aob_create_user`` prints a
    new one; deactivating someone ends that key and every session cookie they left, for good, not
    only while the account is off. Each was refused while inactive and worked again on re-activation
    (a rehire, a suspension lifted after a password reset), wherever it had been left. Signing in
    again makes a new one (``POST /auth/token``, the login pages)."""
    if getattr(instance, "_aob_password_changed", False):
        instance._aob_password_changed = False  # type: ignore[attr-defined]
        token_revoke(user_id=instance.pk, why="password_changed")
    fields = kwargs.get("update_fields")
    if instance.is_active or (fields is not None and "is_active" not in fields):
        return
    token_revoke(user_id=instance.pk, why="deactivated")
    sessions_end(user=instance)


class _AsToken:
    """A malformed ``Bearer`` header, shown to the Token scheme's checks for their messages."""

    def __init__(self, request: Request, parts: list[bytes]) -> None:
        self.headers = {"authorization": b" ".join([b"Token", *parts[1:]])}
        self._request = request


class AuthenticatedRequest(Request):
    """The request of a view behind ``IsAuthenticated`` (every API view unless it says otherwise):
    its user is a ``User``, never the anonymous one. For the type checker only."""

    user: User  # type: ignore[assignment]
