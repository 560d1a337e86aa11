"""The hot tables carry no index that only costs writes (issue 20): every node step inserts and
updates ``workflows_noderun`` rows and appends ``workflows_event`` rows, and each write maintains
every index of its table."""

import pytest
from django.db import connection

HOT_TABLES = ["workflows_run", "workflows_noderun", "workflows_event"]


def _indexes(table: str) -> list[tuple[str, str, list[str], bool]]:
    """(name, definition, key columns, partial) of each index on ``table``."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT i.relname, pg_get_indexdef(i.oid),
                   ARRAY(SELECT a.attname FROM unnest(x.indkey) WITH ORDINALITY AS k(attnum, n)
                         JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum ORDER BY k.n),
                   x.indpred IS NOT NULL
              FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
             WHERE t.relname = %s
            """,
            [table],
        )
        return [(name, definition, list(columns), partial) for name, definition, columns, partial in cursor.fetchall()]


@pytest.mark.django_db
@pytest.mark.parametrize("table", HOT_TABLES)
def test_no_like_twin_indexes(table: str) -> None:
    """``db_index`` on a text column (or a key to a text primary key) adds a ``varchar_pattern_ops``
    index for ``LIKE`` queries; nothing queries these tables with ``LIKE``."""
    assert [name for name, definition, _, _ in _indexes(table) if "pattern_ops" in definition] == []


@pytest.mark.django_db
@pytest.mark.parametrize("table", HOT_TABLES)
def test_no_index_another_leads_with(table: str) -> None:
    """An index whose columns start a longer index's columns serves nothing the longer one does
    not (both b-tree, neither partial)."""
    full = [(name, columns) for name, _, columns, partial in _indexes(table) if not partial]
    redundant = [(name, longer) for name, columns in full for longer, other in full
                 if name != longer and len(columns) < len(other) and other[:len(columns)] == columns]
    assert redundant == []


@pytest.mark.django_db
def test_the_reads_keep_their_indexes() -> None:
    """What the engine and retention look up by still has an index: a run's node runs and events
    (the unique keys), node runs by output artifact (an artifact's deletion checks them)."""
    leading = {table: {columns[0] for _, _, columns, _ in _indexes(table)} for table in HOT_TABLES}
    assert "run_id" in leading["workflows_noderun"]
    assert "run_id" in leading["workflows_event"]
    assert "output_artifact_id" in leading["workflows_noderun"]
    assert {"owner_id", "status", "current_artifact_id", "base_artifact_id"} <= leading["workflows_run"]
