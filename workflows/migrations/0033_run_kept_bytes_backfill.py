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

# By the primary key, from where the last batch ended: a batch that looked for the runs not yet
# measured scanned every run the batches before it had measured (quadratic: 80,000 runs took 8
# times 20,000's; a review's find).
BATCH = """
WITH batch AS (SELECT id FROM workflows_run WHERE id > %(after)s ORDER BY id LIMIT 1000),
     measured AS (
       UPDATE workflows_run r SET usage = jsonb_set(COALESCE(r.usage, '{}'::jsonb), '{kept_bytes}', to_jsonb(
                COALESCE((SELECT SUM(COALESCE(n.input_bytes, octet_length(n.input::text)))
                            FROM workflows_noderun n WHERE n.run_id = r.id), 0)
              + COALESCE((SELECT a.size_bytes FROM workflows_artifact a WHERE a.id = r.output_artifact_id), 0)))
         FROM batch WHERE r.id = batch.id AND NOT (COALESCE(r.usage, '{}'::jsonb) ? 'kept_bytes'))
SELECT id FROM batch ORDER BY id DESC LIMIT 1
"""


def backfill(apps, schema_editor):
    after = "00000000-0000-0000-0000-000000000000"
    with schema_editor.connection.cursor() as cursor:
        while True:
            cursor.execute(BATCH, {"after": after})
            last = cursor.fetchone()
            if last is None:
                return
            after = last[0]


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('workflows', '0032_run_kept_bytes'),
    ]

    operations = [
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
