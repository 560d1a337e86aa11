"""How many operations each run patch has (``RunPatch.op_count``), kept when a patch is written: a
list of patches (``GET /runs/{id}/patches``, details) counted them in the database, reading every
listed patch's whole operations (up to 1 MiB each) for one number. Nullable, so the code before it
runs beside it in a rolling deploy (a list counts what it left null); the patches already written
are counted here, a batch at a time (a transaction each: a run may be patched meanwhile)."""

from django.db import migrations, models

BATCH = 1000


def count_operations(apps, schema_editor):
    # A range of ids at a time, from where the last one ended (as 0033 pages by id): a batch that
    # looked for the first 1,000 patches with no count (no index on it) scanned every patch the
    # batches before it had counted, so the work grew with the square of the table (a review's
    # find). Each range starts at the next patch there is (min(id) reads the primary key's index,
    # with or without statistics: ORDER BY id LIMIT 1000 sorted the whole table on one never
    # analysed), so ids left sparse by deleted runs cost no empty batches.
    after = 0
    with schema_editor.connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT min(id) FROM workflows_runpatch WHERE id > %s", [after])
            [first] = cursor.fetchone()
            if first is None:
                return
            after = first + BATCH - 1
            cursor.execute(
                "UPDATE workflows_runpatch SET op_count = CASE jsonb_typeof(operations) "
                "WHEN 'array' THEN jsonb_array_length(operations) ELSE 0 END "
                "WHERE id >= %s AND id <= %s AND op_count IS NULL", [first, after])


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
