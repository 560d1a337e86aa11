from __future__ import annotations

from django.conf import settings
from django.db import models


class OwnerStorage(models.Model):
    """What one owner's finished runs keep, in bytes: each one's inputs and node outputs as stored
    (``Run.inputs_bytes`` and ``usage.output_bytes``), and its node runs' inputs, computed output
    and inline definition (``usage.kept_bytes``). Kept by the database (migration 0027's trigger on
    ``workflows_run``, its sum 0032's): a run adds its bytes when it finishes, and takes them back if it
    leaves a finished state or is deleted (a prune, a cascade). Never written by Python; read with
    the owner's unfinished runs by ``workflows.storage.owner_stored_bytes``."""

    owner = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True,
                                 related_name="+")
    finished_bytes = models.BigIntegerField(default=0, db_default=0)

    def __str__(self) -> str:
        return f"{self.owner_id}: {self.finished_bytes} bytes in finished runs"
