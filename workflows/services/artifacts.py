from __future__ import annotations

from typing import Any

from workflows.engine.artifacts import keep_artifacts
from workflows.models import Artifact, canonical_json, size_of, text_id


def artifact_store(*, kind: str, content: Any) -> Artifact:
    """Store content once under its hash (the same content is the same artifact), held for the
    reference the caller's transaction writes (``keep_artifacts``)."""
    text = canonical_json(content)
    aid = text_id(text)
    keep_artifacts({aid: (kind, text)})
    artifact = Artifact(id=aid, kind=kind, content=content, size_bytes=size_of(text))
    artifact._state.adding = False  # it is stored
    return artifact
