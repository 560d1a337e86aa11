"""A workflow's newest run by its own index (``selectors.with_last_run``, read for every workflow a
list shows): with the foreign key's index alone the planner walked every tenant's runs by time, per
workflow, and `GET /workflows` took 4.6 s at 200,000 runs of another owner (a red team's
measure). The composite index leads with the key, so it serves what the key's own index did (a
workflow's delete setting its runs' key to null), and that index goes: as many indexes written
per run as before.

Built and dropped without locking out the runs' writes, so not atomic; a build that failed leaves
its index INVALID, dropped by the next ``migrate`` before it builds again (as ``0018``)."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


def drop_an_invalid_leftover(apps, schema_editor) -> None:
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass('run_workflow_created')")
        row = cursor.fetchone()
        if row and row[0]:
            cursor.execute("DROP INDEX CONCURRENTLY IF EXISTS run_workflow_created")


def drop_the_key_s_own_index(apps, schema_editor) -> None:
    """The index Django made for the key (its name is a hash): the one on ``workflow_id`` alone."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("""
            SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
            WHERE i.indrelid = 'workflows_run'::regclass AND i.indnatts = 1 AND a.attname = 'workflow_id'""")
        for (name,) in cursor.fetchall():
            cursor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')


def make_the_key_s_own_index(apps, schema_editor) -> None:
    """Back to 0028: the key's index again (under a name of its own: Django's is a hash)."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS run_workflow ON workflows_run (workflow_id)")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("workflows", "0028_run_deleting_at"),
    ]

    operations = [
        migrations.RunPython(drop_an_invalid_leftover, migrations.RunPython.noop, elidable=True),
        AddIndexConcurrently(
            model_name="run",
            index=models.Index(fields=["workflow", "-created_at"], name="run_workflow_created"),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="run",
                    name="workflow",
                    field=models.ForeignKey(blank=True, db_index=False, null=True,
                                            on_delete=models.deletion.SET_NULL, related_name="runs",
                                            to="workflows.workflow"),
                ),
            ],
            database_operations=[
                migrations.RunPython(drop_the_key_s_own_index, make_the_key_s_own_index),
            ],
        ),
    ]
