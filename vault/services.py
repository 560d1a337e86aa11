"""Secrets: set (create or replace), delete, and read values for an executor. Values are write-only
everywhere else."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from . import crypto
from .exceptions import SecretInvalid, SecretMissing, SecretNotFound, SecretUnreadable
from .models import Secret
from .references import NAME_RE

logger = logging.getLogger(__name__)

MIN_LENGTH = 4  # a shorter value cannot be told apart from ordinary text when masking
MAX_LENGTH = 65536


def secret_set(*, owner: User, name: str, value: str) -> tuple[Secret, bool]:
    """Create or replace ``name``; returns the row and whether it was created."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SecretInvalid("a secret's name is a letter or _ followed by up to 63 letters, digits or _",
                            extra={"field": "name", "rule": "pattern"})
    if not isinstance(value, str) or not MIN_LENGTH <= len(value) <= MAX_LENGTH:
        raise SecretInvalid(f"a secret's value is text of {MIN_LENGTH} to {MAX_LENGTH} characters",
                            extra={"field": "value", "rule": "length"})
    if "\x00" in value:
        raise SecretInvalid("a secret's value must not contain NUL", extra={"field": "value", "rule": "nul"})
    with transaction.atomic():
        secret = Secret.objects.select_for_update().filter(owner=owner, name=name).first()
        created = secret is None
        if secret is None:
            User.objects.select_for_update().filter(pk=owner.pk).first()  # one owner's creations in turn: the count holds
            limit = settings.AOB_MAX_SECRETS_PER_OWNER
            if Secret.objects.filter(owner=owner).count() >= limit:
                raise SecretInvalid(f"an owner has at most {limit} secrets (AOB_MAX_SECRETS_PER_OWNER); delete one "
                                    "first", extra={"field": "name", "rule": "max_secrets", "limit": limit})
            secret, created = Secret.objects.get_or_create(owner=owner, name=name,
                                                           defaults={"ciphertext": crypto.encrypt(value)})
        if not created:
            secret.ciphertext = crypto.encrypt(value)
            secret.save(update_fields=["ciphertext", "updated_at"])
    logger.info("secret.set", extra={"owner_id": owner.pk, "secret": name, "new": created})
    return secret, created


def secret_delete(*, owner: User, name: str) -> None:
    deleted, _ = Secret.objects.filter(owner=owner, name=name).delete()
    if not deleted:
        raise SecretNotFound(f"no secret named {name!r}", extra={"field": "name"})
    logger.info("secret.deleted", extra={"owner_id": owner.pk, "secret": name})


def secret_values(*, owner_id: int, names: set[str]) -> dict[str, str]:
    """The values an executor is about to send; a missing one fails the node, naming it."""
    rows = dict(Secret.objects.filter(owner_id=owner_id, name__in=names).values_list("name", "ciphertext"))
    missing = sorted(names - set(rows))
    if missing:
        raise SecretMissing(f"secret {missing[0]!r} is not set for this run's owner",
                            extra={"secret": missing[0], "transient": False})
    values = {}
    for name, token in sorted(rows.items()):
        try:
            values[name] = crypto.decrypt(token)
        except crypto.InvalidToken:
            raise SecretUnreadable(
                f"secret {name!r} was encrypted with a key no longer in AOB_SECRETS_KEYS: the operator puts that key "
                "back (last) and runs manage.py aob_rotate_secrets, or its owner sets it again",
                extra={"secret": name, "transient": False}) from None
    return values
