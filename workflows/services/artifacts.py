from __future__ import annotations

from typing import Any

from workflows.models import Artifact, canonical_json, content_id


def artifact_store(*, kind: str, content: Any) -> Artifact:
    """Store content once under its hash; the same content is the same artifact."""
    aid = content_id(content)
    artifact, _ = Artifact.objects.get_or_create(
        pk=aid, defaults={"kind": kind, "content": content, "size_bytes": len(canonical_json(content).encode())}
    )
    return artifact
