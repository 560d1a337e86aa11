from .artifact import Artifact, canonical_json, content_id, size_of, stored_size, text_id
from .event import Event
from .idempotency import IdempotencyKey
from .names import LeftName
from .run import NodeRun, PatchRefusal, ReplayProvenance, Run, RunPatch
from .storage import OwnerStorage
from .workflow import DeletedTag, Workflow, WorkflowVersion

__all__ = [
    "Artifact",
    "DeletedTag",
    "Event",
    "IdempotencyKey",
    "LeftName",
    "NodeRun",
    "OwnerStorage",
    "PatchRefusal",
    "ReplayProvenance",
    "Run",
    "RunPatch",
    "Workflow",
    "WorkflowVersion",
    "canonical_json",
    "content_id",
    "size_of",
    "stored_size",
    "text_id",
]
