"""The partial index of node runs held for a slot (workflows/engine/admission.py), built without
locking out the workers' writes (the node run table is the busiest there is). A migration of its
own, not atomic: a build that fails leaves nothing of 0017 to undo, and is run again alone.

A failed CREATE INDEX CONCURRENTLY (cancelled, timed out, a deadlock, a restart while it waited for
the workers' writes) leaves its index behind, INVALID; the build first drops such a leftover, so
the next ``migrate`` passes here instead of dying on "relation node_run_held already exists"."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


def drop_an_invalid_leftover(apps, schema_editor) -> None:
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass('node_run_held')")
        row = cursor.fetchone()
        if row and row[0]:
            cursor.execute("DROP INDEX CONCURRENTLY IF EXISTS node_run_held")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("workflows", "0017_node_run_held"),
    ]

    operations = [
        migrations.RunPython(drop_an_invalid_leftover, migrations.RunPython.noop, elidable=True),
        AddIndexConcurrently(
            model_name="noderun",
            index=models.Index(condition=models.Q(("status", "queued"), ("wait_reason", "slot")),
                               fields=["held_for", "node_type", "queued_at", "id"], name="node_run_held"),
        ),
    ]
