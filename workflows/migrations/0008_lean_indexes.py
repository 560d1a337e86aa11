# Issue 20: the hot tables keep only the indexes something reads (see the models' Meta comments).

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('workflows', '0007_event_type_subworkflow'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name='event',
            name='run',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='events', to='workflows.run'),
        ),
        migrations.AlterField(
            model_name='noderun',
            name='output_artifact',
            field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='workflows.artifact'),
        ),
        migrations.AlterField(
            model_name='noderun',
            name='run',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='node_runs', to='workflows.run'),
        ),
        migrations.AlterField(
            model_name='run',
            name='base_artifact',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='workflows.artifact'),
        ),
        migrations.AlterField(
            model_name='run',
            name='current_artifact',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='workflows.artifact'),
        ),
        migrations.AlterField(
            model_name='run',
            name='owner',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='runs', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AlterField(
            model_name='run',
            name='status',
            field=models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('waiting_for_approval', 'Waiting For Approval'), ('completed', 'Completed'), ('failed', 'Failed'), ('cancelled', 'Cancelled')], default='queued', max_length=24),
        ),
        migrations.AddIndex(
            model_name='noderun',
            index=models.Index(fields=['output_artifact'], name='node_run_output_artifact'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(fields=['status'], name='run_status'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(fields=['base_artifact'], name='run_base_artifact'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(fields=['current_artifact'], name='run_current_artifact'),
        ),
    ]
