"""The admin's order of approvals (``approvals.models.PENDING_FIRST``): the waiting first, then the
newest, read from this index a page at a time. Without it each visit to the approvals page sorted
every approval ever made for its 100. Built without locking out the writes of gates that ask
meanwhile; not atomic, so what a run cut off left is dropped and made again by the next ``migrate``
(as ``0009_approval_pending_approvers``)."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


def drop_a_leftover(apps, schema_editor) -> None:
    """An index of this name before the migration is recorded is a leftover of a build cut off."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("DROP INDEX CONCURRENTLY IF EXISTS approval_pending_first")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("approvals", "0010_delivery_target"),
    ]

    operations = [
        migrations.RunPython(drop_a_leftover, migrations.RunPython.noop, elidable=True),
        AddIndexConcurrently(
            model_name="approval",
            index=models.Index(models.Case(models.When(status="pending", then=models.Value(0)),
                                           default=models.Value(1), output_field=models.IntegerField()),
                               models.OrderBy(models.F("id"), descending=True), name="approval_pending_first"),
        ),
    ]
