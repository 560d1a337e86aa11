"""The index the hourly notification bounds read (``approvals.notifications._within_hourly``): the
last hour's deliveries, not every one an owner's runs ever made. Built without locking out the
writes of gates that ask meanwhile; not atomic, so a build that failed is dropped (left INVALID)
and made again by the next ``migrate``, as ``workflows.0018`` does."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


def drop_an_invalid_leftover(apps, schema_editor) -> None:
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass('delivery_created_at')")
        row = cursor.fetchone()
        if row and row[0]:
            cursor.execute("DROP INDEX CONCURRENTLY IF EXISTS delivery_created_at")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("approvals", "0006_decision_one_per_person"),
    ]

    operations = [
        migrations.RunPython(drop_an_invalid_leftover, migrations.RunPython.noop, elidable=True),
        AddIndexConcurrently(
            model_name="delivery",
            index=models.Index(fields=["created_at"], name="delivery_created_at"),
        ),
    ]
