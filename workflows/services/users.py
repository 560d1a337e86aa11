"""Users as AOB makes them outside the admin (``manage.py aob_create_user``, ``aob_demo``): a new
one's username is judged as the admin's form judges it (the field's own rules, then
``workflows.approvers``); and the end of a user's API token and sessions."""

from __future__ import annotations

import logging

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from rest_framework.authtoken.models import Token

from aob_project.exceptions import ValidationFailed
from aob_project.passwords import password_signed_out
from workflows.approvers import validate_username

logger = logging.getLogger(__name__)


def user_get_or_create(*, username: str) -> tuple[User, bool]:
    """The user named ``username``, made when there is none; a new one may not take a group's name
    (an existing one, clashing from before the rule, is returned to be changed)."""
    user = User.objects.filter(username=username).first()
    if user is not None:
        return user, False
    try:
        # the admin's form: not blank, at most 150 characters, letters, digits and @.+-_ only
        User._meta.get_field("username").clean(username, None)
    except ValidationError as exc:
        raise ValidationFailed("username: " + " ".join(exc.messages), code=exc.error_list[0].code,
                               extra={"field": "username"}) from None
    try:
        validate_username(username)
    except ValidationError as exc:
        raise ValidationFailed(" ".join(exc.messages), code=exc.code,
                               extra={"field": "username"}) from None
    return User.objects.get_or_create(username=username)


def token_revoke(*, user_id: int, why: str) -> bool:
    """The user's API token deleted: every client holding it is refused from its next request (no
    token is cached) and its open sockets at their next check; signing in again makes a new one.
    ``why``: ``revoked`` (the user's own ``DELETE /auth/token``), ``password_changed`` or
    ``deactivated``. Whether there was one."""
    deleted, _ = Token.objects.filter(user_id=user_id).delete()
    if deleted:
        logger.info("auth.token_revoked", extra={"user_id": user_id, "why": why})
    return bool(deleted)


def sessions_end(*, user: User) -> None:
    """Every session of ``user`` ended for good, whichever store holds it: the stored password hash
    they are bound to is rewritten, the password kept (``aob_project.passwords``), and on ``user``
    too, so a later save of the same instance does not write the old hash back."""
    signed_out = password_signed_out(user.password)
    if signed_out is None:  # a hash too long to wrap: its sessions are found in the database's store
        _sessions_deleted(user)
        return
    user.password = signed_out
    User.objects.filter(pk=user.pk).update(password=user.password)
    logger.info("auth.sessions_ended", extra={"user_id": user.pk})


def _sessions_deleted(user: User) -> None:
    """The user's sessions deleted from the database's session store, each read to find its user
    (the store keeps no index by user): only for a hash the wrapper cannot take, at a deactivation.
    With another store the sessions stay bound to the kept hash, and the log says so."""
    from django.conf import settings
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    if settings.SESSION_ENGINE != "django.contrib.sessions.backends.db":
        logger.warning("auth.sessions_not_ended", extra={"user_id": user.pk, "engine": settings.SESSION_ENGINE})
        return
    mine = [session.pk for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator(chunk_size=2000)
            if session.get_decoded().get("_auth_user_id") == str(user.pk)]
    Session.objects.filter(pk__in=mine).delete()
    logger.info("auth.sessions_ended", extra={"user_id": user.pk, "deleted": len(mine)})
