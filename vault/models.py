from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

from .names import NAME_RE


class Secret(models.Model):
    """A named secret of one owner, encrypted at rest (``vault.crypto``). Its value leaves the
    database only inside an executor at send time (``vault.references``): never in an API answer,
    the admin, node inputs or outputs, events or logs."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=64, validators=[RegexValidator(NAME_RE)])
    ciphertext = models.TextField()
    # The value's UTF-8 bytes, set with it: an owner's secrets together are at most
    # AOB_MAX_SECRETS_BYTES_PER_OWNER (``vault.services``), counted without decrypting them.
    value_bytes = models.PositiveIntegerField(default=0, db_default=0)  # db_default: a rolling deploy
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="secret_owner_name_unique")]
        ordering = ["owner_id", "name"]

    def __str__(self) -> str:
        return f"secret {self.name}"
