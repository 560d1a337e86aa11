from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from django.db import connection, models


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


KEEP = """
WITH given (id, kind, content, size_bytes) AS (
    SELECT * FROM unnest(%s::varchar[], %s::varchar[], %s::jsonb[], %s::int[])
), kept AS (  -- stored already: held until the transaction ends, so a prune skips them
    SELECT a.id FROM workflows_artifact a JOIN given USING (id) FOR KEY SHARE OF a
), stored AS (
    INSERT INTO workflows_artifact (id, kind, content, size_bytes, created_at)
    SELECT id, kind, content, size_bytes, now() FROM given WHERE id NOT IN (SELECT id FROM kept)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
SELECT (SELECT count(*) FROM kept) + (SELECT count(*) FROM stored)
"""


def keep_artifacts(items: Mapping[str, tuple[str, str]]) -> None:
    """Store each ``id: (kind, canonical JSON)`` once, or hold the row stored already, for a
    reference the caller's transaction is about to write. A stored row is locked (``FOR KEY
    SHARE``) until that transaction ends, so a prune deleting unreferenced artifacts
    (``retention``, ``FOR UPDATE SKIP LOCKED``) passes it by instead of deleting it from under the
    reference; one a prune deleted first is stored again. A row another transaction inserted
    meanwhile is held on the next pass."""
    ids = list(items)
    params = [ids, [kind for kind, _ in items.values()], [text for _, text in items.values()],
              [size_of(text) for _, text in items.values()]]
    for _ in range(5):
        with connection.cursor() as cursor:
            cursor.execute(KEEP, params)
            if cursor.fetchone()[0] == len(ids):
                return
    raise RuntimeError(f"artifacts {ids} could be neither stored nor held")


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
