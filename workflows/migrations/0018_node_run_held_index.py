"""The partial index of node runs held for a slot (workflows/engine/admission.py), built without
locking out the workers' writes (the node run table is the busiest there is). A migration of its
own, not atomic: a build that fails leaves nothing of 0017 to undo, and is run again alone."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("workflows", "0017_node_run_held"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="noderun",
            index=models.Index(condition=models.Q(("status", "queued"), ("wait_reason", "slot")),
                               fields=["held_for", "node_type", "queued_at", "id"], name="node_run_held"),
        ),
    ]
