"""The inbox's index (``approvals.selectors.approvals_decidable``): the waiting approvals naming a
user or their groups (``approvers ?| names``), a GIN index of the waiting ones only. Scanned,
another tenant's 300,000 waiting gates made every inbox load 0.43 s (19 ms with it). Built without
locking out the writes of gates that ask meanwhile; not atomic, so a build that failed is dropped
(left INVALID) and made again by the next ``migrate``, as ``0007`` does."""

from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


def drop_an_invalid_leftover(apps, schema_editor) -> None:
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass('approval_pending_approvers')")
        row = cursor.fetchone()
        if row and row[0]:
            cursor.execute("DROP INDEX CONCURRENTLY IF EXISTS approval_pending_approvers")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("approvals", "0008_escalated_on_timeout"),
    ]

    operations = [
        migrations.RunPython(drop_an_invalid_leftover, migrations.RunPython.noop, elidable=True),
        AddIndexConcurrently(
            model_name="approval",
            index=GinIndex(condition=models.Q(("status", "pending")), fields=["approvers"],
                           name="approval_pending_approvers"),
        ),
    ]
