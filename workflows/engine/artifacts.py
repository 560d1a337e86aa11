"""Artifacts written for a reference: the one place that stores content (same content, same
artifact) for a row about to refer to it, the web's versions and patches and the engine's outputs
alike. The executor's completion stores its output inside its own statement
(``execution.COMPLETE``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import connection

from workflows.models import size_of

KEEP = """
WITH kept AS (  -- stored already: held until the transaction ends, so a prune passes them by
    SELECT id FROM workflows_artifact WHERE id = ANY(%(ids)s) ORDER BY id FOR KEY SHARE
), stored AS (
    INSERT INTO workflows_artifact (id, kind, content, size_bytes, created_at)
    SELECT id, kind, content, size_bytes, now()
      FROM unnest(%(ids)s::varchar[], %(kinds)s::varchar[], %(contents)s::jsonb[], %(sizes)s::int[])
           AS given (id, kind, content, size_bytes)
     WHERE id <> ALL (ARRAY(SELECT id FROM kept))
     ORDER BY id
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
    meanwhile is held on the next pass. Rows are taken in id order, so two writers of the same new
    contents never wait on each other in a circle."""
    ids = sorted(items)
    params: dict[str, Any] = {"ids": ids, "kinds": [items[i][0] for i in ids], "contents": [items[i][1] for i in ids],
              "sizes": [size_of(items[i][1]) for i in ids]}
    for _ in range(5):
        with connection.cursor() as cursor:
            cursor.execute(KEEP, params)
            if cursor.fetchone()[0] == len(ids):
                return
    raise RuntimeError(f"artifacts {ids} could be neither stored nor held")
