"""The inbox's index (``approvals.selectors.approvals_decidable``): the waiting approvals naming a
user or their groups (``approvers ?| names``), a GIN index of the waiting ones only. Scanned,
another tenant's 300,000 waiting gates made every inbox load 0.43 s (19 ms with it). Built without
locking out the writes of gates that ask meanwhile; not atomic, so what a run cut off left (an
INVALID build, or a built index whose migration was not recorded) is dropped and made again by the
next ``migrate``."""

from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


def drop_a_leftover(apps, schema_editor) -> None:
    """An index of this name before the migration is recorded is a leftover: a build that failed
    (INVALID), or one that finished while the migration's record did not (the run cut off between
    them): either is built again."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("DROP INDEX CONCURRENTLY IF EXISTS approval_pending_approvers")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("approvals", "0008_escalated_on_timeout"),
    ]

    operations = [
        migrations.RunPython(drop_a_leftover, migrations.RunPython.noop, elidable=True),
        AddIndexConcurrently(
            model_name="approval",
            index=GinIndex(condition=models.Q(("status", "pending")), fields=["approvers"],
                           name="approval_pending_approvers"),
        ),
    ]
