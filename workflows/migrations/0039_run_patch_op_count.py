"""How many operations each run patch has (``RunPatch.op_count``), kept when a patch is written: a
list of patches (``GET /runs/{id}/patches``, details) counted them in the database, reading every
listed patch's whole operations (up to 1 MiB each) for one number. Nullable, so the code before it
runs beside it in a rolling deploy (a list counts what it left null); the patches already written
are counted here, a batch at a time (a transaction each: a run may be patched meanwhile)."""

from django.db import migrations, models

BATCH = 1000


def count_operations(apps, schema_editor):
    while True:
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(
                "UPDATE workflows_runpatch SET op_count = CASE jsonb_typeof(operations) "
                "WHEN 'array' THEN jsonb_array_length(operations) ELSE 0 END "
                "WHERE id IN (SELECT id FROM workflows_runpatch WHERE op_count IS NULL LIMIT %s)", [BATCH])
            if cursor.rowcount < BATCH:
                return


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('workflows', '0038_run_key_origins'),
    ]

    operations = [
        migrations.AddField(
            model_name='runpatch',
            name='op_count',
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.RunPython(count_operations, migrations.RunPython.noop, elidable=True),
    ]
