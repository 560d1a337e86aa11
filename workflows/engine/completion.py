"""What an executor hands its coordinator: the typed completion of one node run.

The executor task returns it as a plain dict (Celery serialises task results as JSON) and Celery
prepends it to the linked ``workflows.coordinate`` task's arguments; the coordinator reads it
back with ``Completion.from_message``. It carries the node run as the completion left it and the
run's graph at that moment, so a plain step routes without reading them back; its SQL checks
they still hold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Completion:
    node_run_id: int
    run_id: str
    node_id: str
    node_type: str
    iteration: int
    run_status: str  # the run's status when the node run completed
    artifact_id: str  # the graph the run was on then
    patch_seq: int
    output_bytes: int = 0  # what the run's outputs had stored, this one included
    status: str = "completed"

    def as_message(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_message(cls, message: Any) -> Completion | None:
        """The completion in an executor's return value; None for a status word (``duplicate``,
        ``waiting``, ``failed``, ...) or anything else."""
        if not isinstance(message, dict):
            return None
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in message.items() if k in names})
        except TypeError:
            return None
