"""The node runs waiting and the patches waiting for a person, each in a partial index holding only
those, so that ``/metrics``' gauges of what is in flight (aob_project/scrape.py) read them without
reading the finished rows a retention keeps (a scrape grouped every node run ever kept: 200,000
finished ones, 0.2 s a scrape, growing with them). No ordinary step writes either: a node run enters
``node_run_waiting`` only when it parks.

Built without locking out the workers' writes, so not atomic: an index of either name before the
migration is recorded is a leftover of a run cut off (INVALID, or the first built whole while the
second was cancelled), dropped by the next ``migrate`` before it builds again (as
``approvals/0011``; dropping only an INVALID one, as ``0018`` does, left the first and the next
``migrate`` failed on it: "relation node_run_waiting already exists")."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models

INDEXES = ("node_run_waiting", "run_patch_pending")


def drop_a_leftover(apps, schema_editor) -> None:
    with schema_editor.connection.cursor() as cursor:
        for name in INDEXES:
            cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("workflows", "0036_run_rules_above"),
    ]

    operations = [
        migrations.RunPython(drop_a_leftover, migrations.RunPython.noop, elidable=True),
        AddIndexConcurrently(
            model_name="noderun",
            index=models.Index(condition=models.Q(("status", "waiting")), fields=["node_type"],
                               name="node_run_waiting"),
        ),
        AddIndexConcurrently(
            model_name="runpatch",
            index=models.Index(condition=models.Q(("status", "pending_approval")), fields=["run"],
                               name="run_patch_pending"),
        ),
    ]
