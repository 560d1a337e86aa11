"""An idempotency key outlives its run (``IdempotencyKey.run``: SET_NULL, was CASCADE). The SQL is
``ALTER COLUMN run_id DROP NOT NULL`` alone (``sqlmigrate``): a catalog change, no rewrite and no
check of the foreign key again; SET_NULL itself is Django's, done when a run is deleted."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('workflows', '0029_run_workflow_created'),
    ]

    operations = [
        migrations.AlterField(
            model_name='idempotencykey',
            name='run',
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='workflows.run'),
        ),
    ]
