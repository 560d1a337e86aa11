"""What one API answer may carry: a byte budget spent in order (``Page``), and in place of a value
that did not fit, a marker with its size and where it is read whole (``left_out``). Shared by the
selectors (details, a node's iterations), the run's result (``workflows.results``) and the
approvals' contexts, so a truncated value looks the same wherever it is cut."""

from __future__ import annotations

import json
from typing import Any

from django.db.models import Case, F, Func, IntegerField, TextField, When
from django.db.models.functions import Cast
from django.db.models.lookups import LessThanOrEqual


def stored_bytes(field: str) -> Func:
    """A JSON (or text) column's size as the database measures it, in bytes of its text
    (``octet_length``; ``length`` counts characters, and a budget is in bytes): every size a list
    or an answer reads from the database before the values that fit (``STORED_BYTES_SQL`` in a
    statement's text). A text's is the size kept with it: measuring it never reads it."""
    return Func(Cast(field, TextField()), function="octet_length", output_field=IntegerField())


STORED_BYTES_SQL = "octet_length({}::text)"

# A text column's value up to this many bytes comes along with its size (``text_head``): PostgreSQL
# keeps values this small in the row it reads anyway, and a longer one's size is kept with it.
TEXT_READ_BYTES = 2000


def text_head(field: str) -> Case:
    """A text column's value when it is at most ``TEXT_READ_BYTES``, else null (left unread): a list
    carries its short texts without a second statement to read them (``selectors.measured``)."""
    stored = Func(F(field), function="octet_length", output_field=IntegerField())
    return Case(When(LessThanOrEqual(stored, TEXT_READ_BYTES), then=F(field)), default=None,
                output_field=TextField())


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


# What one row of a list holds beside the values its answer measures (ids, status, times, counts:
# a run's is 522 bytes), at most: spent for each row before them, so a page of 1,000 rows stays in
# its budget with them (as ``selectors.EVENT_FRAME_BYTES`` for an event).
ROW_FRAME_BYTES = 600


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

    def rows(self, count: int) -> Page:
        """This page with ``count`` rows' frames (``ROW_FRAME_BYTES``) spent: a list's, before its values."""
        self.spend(count * ROW_FRAME_BYTES)
        return self

    def left(self) -> int:
        return max(0, self.limit - self.used)
