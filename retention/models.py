from __future__ import annotations

from django.conf import settings
from django.db import models


class RetentionPolicy(models.Model):
    """How long one owner's finished runs are kept (else ``AOB_RETENTION_DAYS``)."""

    owner = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    days = models.PositiveIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "retention policies"

    def __str__(self) -> str:
        return f"{self.owner}: {self.days} days"
