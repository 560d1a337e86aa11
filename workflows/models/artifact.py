from __future__ import annotations

import hashlib
import json
from typing import Any

from django.db import models


def canonical_json(value: Any) -> str:
    """The one serialization that content ids are taken over: sorted keys, no whitespace."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_id(value: Any) -> str:
    return text_id(canonical_json(value))


def text_id(canonical: str) -> str:
    """The content id of a value already in ``canonical_json`` form."""
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def size_of(canonical: str) -> int:
    """An artifact's ``size_bytes``: its ``canonical_json`` in UTF-8."""
    return len(canonical.encode("utf-8"))


class Artifact(models.Model):
    """An immutable, content-addressed blob: same content, same id, stored once."""

    class Kind(models.TextChoices):
        DAG_VERSION = "dag_version"
        PATCH_SET = "patch_set"
        NODE_IO = "node_io"

    id = models.CharField(primary_key=True, max_length=71, editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    content = models.JSONField()
    size_bytes = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} {self.id[:19]}"
