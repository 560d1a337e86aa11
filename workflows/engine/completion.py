"""What an executor hands its coordinator: the typed completion of one node run.

The executor task returns it as a plain list of its fields in order (Celery serialises task
results as JSON, and writes a ``repr`` of each for Flower and the task events: a list costs a
third of a dict's) and Celery prepends it to the linked ``workflows.coordinate`` task's arguments;
the coordinator reads it back with ``Completion.from_message``, which also takes the dict older
workers returned. It carries the node run as the completion left it and the
run's graph at that moment, so a plain step routes without reading them back; its SQL checks
they still hold.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields
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
    # a sub-workflow's run (it has a run above): its steps take the full decision, which asks first
    # whether its tree has ended (``coordinator._decide``); a plain step would not
    below: bool = False

    def as_message(self) -> list[Any]:
        return list(astuple(self))

    @classmethod
    def from_message(cls, message: Any) -> Completion | None:
        """The completion in an executor's return value; None for a status word (``duplicate``,
        ``waiting``, ``failed``, ...) or anything else."""
        try:
            if isinstance(message, list):
                return cls(*message)
            if isinstance(message, dict):  # from a worker before the list (a rolling deploy)
                names = {f.name for f in fields(cls)}
                return cls(**{k: v for k, v in message.items() if k in names})
        except TypeError:
            return None
        return None
