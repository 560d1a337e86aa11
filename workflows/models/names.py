from __future__ import annotations

from django.db import models


class LeftName(models.Model):
    """A username or group name its holder left (renamed, or deleted). Approvals, their visibility
    and their notifications name people by it (``workflows.approvers``), so it is never given to
    another user or group: a newcomer under a freed name read and decided the gates, and read the
    runs, of the person who had it (a red-team helper's finding). Its holder may take it back."""

    name = models.CharField(max_length=150, unique=True)
    user_id = models.IntegerField(null=True, blank=True)  # the user who left it, or
    group_id = models.IntegerField(null=True, blank=True)  # the group
    left_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name
