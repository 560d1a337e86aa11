from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.functions import Now

from .run import Run


class IdempotencyKey(models.Model):
    """A request's ``Idempotency-Key`` (a run's start, a person's run patch): the run it started or
    patched and the answer it got, so a client that retries (a timeout, a lost answer) gets that
    answer back instead of a second run or the patch applied twice.

    Unique per user: two requests with one key race on this constraint, never on a read."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    # sha256 of the endpoint and the canonical request body: the same key with another request is refused
    fingerprint = models.CharField(max_length=64)
    # SET_NULL, as HookDelivery.run and ScheduleFiring.run: the key outlives its run. Cascaded, an
    # owner's delete of the run took the key along and a retry within TTL started a second run
    # (tests/engine/test_idempotent_starts.py); kept, the retry answers ``response`` again.
    run = models.ForeignKey(Run, null=True, on_delete=models.SET_NULL, related_name="+")
    response = models.JSONField()
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "key"], name="idempotency_key_unique")]

    def __str__(self) -> str:
        return f"idempotency key {self.key!r} → run {self.run_id}"
