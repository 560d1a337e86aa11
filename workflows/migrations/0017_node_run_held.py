"""Node runs held for a slot of their owner (workflows/engine/admission.py): who they wait for, and
a partial index of only those. The index is built without locking out the workers' writes (a
node run table is the busiest there is); the column is nullable, so adding it rewrites nothing."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("workflows", "0016_event_type_node_unserved"),
    ]

    operations = [
        migrations.AddField(
            model_name="noderun",
            name="held_for",
            field=models.IntegerField(blank=True, null=True),
        ),
        AddIndexConcurrently(
            model_name="noderun",
            index=models.Index(condition=models.Q(("status", "queued"), ("wait_reason", "slot")),
                               fields=["held_for", "node_type", "queued_at", "id"], name="node_run_held"),
        ),
    ]
