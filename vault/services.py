"""Secrets: set (create or replace), delete, and read values for an executor. Values are write-only
everywhere else."""

from __future__ import annotations

import functools
import logging

from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import CommonPasswordValidator
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Sum

from workflows.limits import refuse_more

from . import crypto
from .exceptions import SecretInvalid, SecretMissing, SecretNotFound, SecretUnreadable
from .models import Secret
from .names import NAME_RE

logger = logging.getLogger(__name__)

# A shorter value cannot be told apart from ordinary text when masking: a value of "1234", "http"
# or four spaces was taken, and every output that held it was rewritten ("[secret:K]s://…", JSON's
# indentation), showing where it occurs (a red team's finding; 4 until 6 December).
MIN_LENGTH = 8
MAX_LENGTH = 65536


@functools.cache
def _common_passwords() -> CommonPasswordValidator:
    return CommonPasswordValidator()  # reads its list once a process


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SecretInvalid("a secret's name is a letter or _ followed by up to 63 letters, digits or _",
                            extra={"field": "name", "rule": "pattern"})


def secret_set(*, owner: User, name: str, value: str) -> tuple[Secret, bool]:
    """Create or replace ``name``; returns the row and whether it was created."""
    _check_name(name)
    if not isinstance(value, str) or not MIN_LENGTH <= len(value) <= MAX_LENGTH:
        raise SecretInvalid(f"a secret's value is text of {MIN_LENGTH} to {MAX_LENGTH} characters",
                            extra={"field": "value", "rule": "length"})
    if not value.strip():
        raise SecretInvalid("a secret's value must not be whitespace alone: outputs holding it would be masked "
                            "wherever it occurs", extra={"field": "value", "rule": "blank"})
    if "\x00" in value:
        raise SecretInvalid("a secret's value must not contain NUL", extra={"field": "value", "rule": "nul"})
    try:  # Django's list of 20,000 common passwords: ordinary text holds them, masked wherever they occur
        _common_passwords().validate(value)
    except ValidationError:
        raise SecretInvalid("a secret's value is a common password (Django's list): outputs holding the word "
                            "would be masked wherever it occurs, and it guards nothing", extra={
                                "field": "value", "rule": "common"}) from None
    size = len(value.encode())
    with transaction.atomic():
        User.objects.select_for_update().filter(pk=owner.pk).first()  # one owner's writes in turn: count and total hold
        secret = Secret.objects.select_for_update().filter(owner=owner, name=name).first()  # made under that lock
        others = Secret.objects.filter(owner=owner)
        if secret is None:
            refuse_more(others, setting="AOB_MAX_SECRETS_PER_OWNER", what="secrets", field="name", rule="max_secrets",
                        error=SecretInvalid)
        else:
            others = others.exclude(pk=secret.pk)
        _check_total(size + (others.aggregate(total=Sum("value_bytes"))["total"] or 0))
        created = secret is None
        if secret is None:
            secret = Secret.objects.create(owner=owner, name=name, ciphertext=crypto.encrypt(value), value_bytes=size)
        else:
            secret.ciphertext, secret.value_bytes = crypto.encrypt(value), size
            secret.save(update_fields=["ciphertext", "value_bytes", "updated_at"])
    logger.info("secret.set", extra={"owner_id": owner.pk, "secret": name, "new": created})
    return secret, created


def _check_total(total: int) -> None:
    """An executor masks every form of each secret it sends (``vault.references``): up to some 160
    characters for each byte of a secret, all in one worker's memory. 200 secrets of 64 Ki characters
    (the count and length caps alone) did not fit it; 64 KiB of them take at most about 500 MB at the
    peak and 3 s to make ready, once per node (measured 7 December, with the URL forms encoded twice,
    for 64 KiB of the punctuation every encoder escapes: 240 MB and 1.7 s before them)."""
    limit = settings.AOB_MAX_SECRETS_BYTES_PER_OWNER
    if total > limit:
        raise SecretInvalid(f"an owner's secrets are at most {limit} bytes together (AOB_MAX_SECRETS_BYTES_PER_OWNER); "
                            f"with this value they would be {total}: delete one, or set a shorter value",
                            extra={"field": "value", "rule": "max_secrets_bytes", "limit": limit, "size": total})


def secret_delete(*, owner: User, name: str) -> None:
    _check_name(name)  # a NUL reached PostgreSQL (a 500); any other miss was a 404 naming no rule
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
