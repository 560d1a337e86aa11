# The ``usage.kept_bytes`` of runs started before 0032: their node runs' inputs as the database
# measured them (``input_bytes``, or the text of a row from before 0020) and their computed
# output's artifact. A definition a run was sent with is not told apart from a saved version's
# here, so runs from before count none. In batches of 1,000 rows, each its own transaction
# (atomic = False): no lock is held on workflows_run for the whole table, and it may stop and run
# again. A finished run's new sum moves its owner's figure through 0032's trigger.
#
# A rolling deploy: a run that a process on the new code counted a node of before this ran keeps
# only what that code counted.

from django.db import migrations

BATCH = """
UPDATE workflows_run r SET usage = jsonb_set(COALESCE(r.usage, '{}'::jsonb), '{kept_bytes}', to_jsonb(
         COALESCE((SELECT SUM(COALESCE(n.input_bytes, octet_length(n.input::text)))
                     FROM workflows_noderun n WHERE n.run_id = r.id), 0)
       + COALESCE((SELECT a.size_bytes FROM workflows_artifact a WHERE a.id = r.output_artifact_id), 0)))
 WHERE r.id IN (SELECT id FROM workflows_run WHERE NOT (COALESCE(usage, '{}'::jsonb) ? 'kept_bytes') LIMIT 1000)
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
        ('workflows', '0032_run_kept_bytes'),
    ]

    operations = [
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
