# The size of runs started before 0014: the database's measure of their stored text (jsonb's,
# with a space after each ':' and ','), at least the canonical size, so a marker comes no later
# than it would have. In batches of 1,000 rows, each its own transaction (atomic = False): no
# lock is held on workflows_run for the whole table, and it may stop and run again. Runs with no
# inputs keep 0 and are not rewritten.
#
# A rolling deploy: a process still on the code before 0014 starts runs with 0. Once the last one
# is gone, `python manage.py migrate workflows 0014 && python manage.py migrate workflows` runs
# this again for those (docs/OPERATIONS.md).

from django.db import migrations

BATCH = """
UPDATE workflows_run SET inputs_bytes = octet_length(inputs::text)
 WHERE id IN (SELECT id FROM workflows_run WHERE inputs_bytes = 0 AND inputs <> '{}'::jsonb LIMIT 1000)
"""


def backfill(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        while True:
            cursor.execute(BATCH)
            if cursor.rowcount == 0:
                return


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('workflows', '0014_run_inputs_bytes'),
    ]

    operations = [
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
