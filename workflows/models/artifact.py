from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

from django.db import models


def canonical_json(value: Any) -> str:
    """The one serialization that content ids are taken over: sorted keys, no whitespace; a number
    as PostgreSQL's jsonb reads it back (``as_read``), so a value read back has the id it was
    stored under."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if "e+" in text or "-0.0" in text:  # perhaps such a float (or a string that reads so: the same text)
        return json.dumps(as_read(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text


def as_read(value: Any) -> Any:
    """``value`` with its floats as jsonb reads them back: jsonb keeps the decimal Python wrote and
    writes it out in full, so ``1e+16`` is read back as the integer 10000000000000000 (as many
    digits as the exponent says: ``1.5e+300`` is 301) and ``-0.0`` as ``0.0`` (no negative zero)."""
    if isinstance(value, float):
        if value == 0:
            return 0.0
        if abs(value) >= 1e16:  # where Python writes a float with an exponent: a whole number
            return int(Decimal(float.__repr__(value)))
        return value
    if isinstance(value, dict):
        return {key: as_read(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [as_read(item) for item in value]
    return value


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
