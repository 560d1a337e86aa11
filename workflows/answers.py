"""What one API answer may carry: a byte budget spent in order (``Page``), and in place of a value
that did not fit, a marker with its size and where it is read whole (``left_out``). Shared by the
selectors (details, a node's iterations), the run's result (``workflows.results``) and the
approvals' contexts, so a truncated value looks the same wherever it is cut."""

from __future__ import annotations

import json
from typing import Any

from django.db.models import Func, IntegerField, TextField
from django.db.models.functions import Cast


def stored_bytes(field: str) -> Func:
    """A JSON column's size as the database measures it, in bytes of its text (``octet_length``;
    ``length`` counts characters, and a budget is in bytes): every size a list or an answer reads
    from the database before the values that fit (``STORED_BYTES_SQL`` in a statement's text)."""
    return Func(Cast(field, TextField()), function="octet_length", output_field=IntegerField())


STORED_BYTES_SQL = "octet_length({}::text)"


def json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), default=str))


def left_out(size: int, href: str) -> dict[str, Any]:
    """What an answer shows in place of a value that did not fit: its size and where to read it whole."""
    return {"truncated": True, "bytes": size, "href": href}


def within(value: Any, limit: int, href: str) -> Any:
    """``value`` when its JSON is at most ``limit`` bytes, else the marker linking to it whole."""
    size = json_size(value)
    return value if size <= limit else left_out(size, href)


def run_inputs_href(*, run_id: Any) -> str:
    """Where a run's inputs are read whole (``GET /runs/{id}/inputs``; up to AOB_MAX_RUN_INPUTS_BYTES)."""
    return f"/api/v1/runs/{run_id}/inputs"


def run_inputs_marker(run: Any) -> dict[str, Any]:
    """What an answer shows of a run's inputs that did not fit: their size (``Run.inputs_bytes``,
    measured once at the start) and where they are read whole."""
    return left_out(run.inputs_bytes, run_inputs_href(run_id=run.pk))


def run_inputs_within(run: Any, limit: int) -> Any:
    """A run's inputs when their size is at most ``limit``, else ``run_inputs_marker``;
    ``run.inputs`` is read only when they fit."""
    return run.inputs if run.inputs_bytes <= limit else run_inputs_marker(run)


def node_value_href(*, run_id: Any, node_id: str, iteration: int, field: str, artifact_id: str | None = None) -> str:
    """Where one field (input, output or attempt log) of a node run is read whole: an output's
    artifact when it has one, else the node run's field itself, answered whatever its size
    (``GET /runs/{id}/nodes/{node}/iterations/{iteration}/{field}``)."""
    if field == "output" and artifact_id:
        return f"/api/v1/artifacts/{artifact_id}"
    return f"/api/v1/runs/{run_id}/nodes/{node_id}/iterations/{iteration}/{field}"


class Page:
    """The byte budget of one answer, spent in order; what does not fit is left in the database."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def fits(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def spend(self, size: int) -> None:
        """What the answer carries whatever its size: what follows gets only what is left."""
        self.used += size

    def left(self) -> int:
        return max(0, self.limit - self.used)
