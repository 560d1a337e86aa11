"""The runs list's text search (``?q=`` on ``GET /api/v1/runs`` and the ``/runs/`` page), and its bounds.

Matching text in a run's inputs means casting them to text and scanning it, and inputs may be up to
``AOB_MAX_RUN_INPUTS_BYTES``; an unbounded search over every run a user owns cost seconds of a web
thread and of the database per request, growing with what the user stored (25 runs of 4 MiB and a
200-character near miss: 26 s). Three bounds, each an operator's setting, hold one search to a
constant whatever was stored:

- it looks at the latest ``AOB_RUN_SEARCH_MAX_RUNS`` runs the other filters leave (a date filter
  reaches further back);
- it reads a run's inputs only when their measured size (``Run.inputs_bytes``, stored at the
  start) is at most ``AOB_RUN_SEARCH_INPUTS_MAX_BYTES``; larger ones are never detoasted, the run
  still matches on its error (which ``bounded_error`` keeps small);
- its one statement runs with ``statement_timeout = AOB_RUN_SEARCH_TIMEOUT_MS``, whatever the
  first two let through (a near miss costs per byte about as much as the text is long); past it
  the answer is a 400 naming ``q`` and the rule, never a 500 or a 503.

The search is one statement, run once, to the ids it found (at most ``AOB_RUN_SEARCH_MAX_RUNS``);
the page, its cursor and its order are then read by id, at no cost the search could raise.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import OperationalError, connection, transaction
from django.db.models import QuerySet

from aob_project.exceptions import ValidationFailed
from workflows.models import Run

QUERY_CANCELED = "57014"  # PostgreSQL's SQLSTATE for a statement stopped by statement_timeout (or a cancel)


# The window first, then the match over its rows only: a subquery with a LIMIT is a fence PostgreSQL
# pushes no condition through (as a join back by id is not: on a small table the planner matched
# every user's runs, then kept this user's). The CASE judges the size before the cast, which a plain
# AND does not promise. UPPER(...) LIKE UPPER(...) as Django's icontains, so what matched still does.
SEARCH = """
SELECT w.id FROM ({window}) AS w (id, inputs_bytes, inputs, error)
 WHERE UPPER(CASE WHEN w.inputs_bytes <= %s THEN w.inputs::text ELSE '' END) LIKE UPPER(%s)
    OR UPPER(w.error::text) LIKE UPPER(%s)
"""


def runs_search(*, runs: QuerySet[Run], text: str) -> QuerySet[Run]:
    """The runs of ``runs`` (already filtered) whose inputs or error hold ``text``, in any case,
    within the bounds above. Raises ``ValidationFailed`` (field ``q``, rule ``search_timeout``)
    when the search does not finish in time."""
    latest = runs.order_by("-created_at", "-id").values_list("pk", "inputs_bytes", "inputs", "error")
    try:
        window, params = latest[:settings.AOB_RUN_SEARCH_MAX_RUNS].query.sql_with_params()
    except EmptyResultSet:
        return runs.none()
    pattern = f"%{connection.ops.prep_for_like_query(text)}%"
    limit_ms = settings.AOB_RUN_SEARCH_TIMEOUT_MS
    try:
        with statement_timeout(limit_ms), connection.cursor() as cursor:
            cursor.execute(SEARCH.format(window=window),
                           [*params, settings.AOB_RUN_SEARCH_INPUTS_MAX_BYTES, pattern, pattern])
            found = [row[0] for row in cursor.fetchall()]
    except OperationalError as exc:
        if getattr(exc.__cause__, "sqlstate", None) != QUERY_CANCELED:
            raise
        raise ValidationFailed(
            f"q: the search did not finish within {limit_ms} ms; narrow it with workflow, status or "
            "created_after / created_before, or search for a shorter text",
            extra={"field": "q", "rule": "search_timeout", "limit_ms": limit_ms}) from None
    return runs.filter(pk__in=found)


def search_scope() -> str:
    """What a search looks at, in words, for the page that offers it."""
    return (f"Searches the latest {settings.AOB_RUN_SEARCH_MAX_RUNS:,} runs the other filters leave (Created before "
            f"reaches further back), in inputs of at most {settings.AOB_RUN_SEARCH_INPUTS_MAX_BYTES:,} bytes and in errors")


@contextmanager
def statement_timeout(ms: int) -> Iterator[None]:
    """Statements inside stop after ``ms`` (``set_config(..., is_local => true)``: ``SET LOCAL``,
    which takes no parameter). In a transaction of its own, so the setting ends with it; inside a
    caller's transaction (a savepoint) it would outlive a released savepoint, so it is put back."""
    outer, was = connection.in_atomic_block, ""
    with transaction.atomic(), connection.cursor() as cursor:
        if outer:
            cursor.execute("SELECT current_setting('statement_timeout')")
            was = cursor.fetchone()[0]
        cursor.execute("SELECT set_config('statement_timeout', %s, true)", [f"{ms}ms"])
        yield
        if outer:
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [was])
