"""Node runs held for a slot of their owner (workflows/engine/admission.py): who they wait for (a
nullable column: adding it rewrites nothing), and the ``node_held`` event. Its index is 0018."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('workflows', '0016_event_type_node_unserved'),
    ]

    operations = [
        migrations.AddField(
            model_name='noderun',
            name='held_for',
            field=models.IntegerField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='event',
            name='type',
            field=models.CharField(choices=[('workflow_started', 'Workflow Started'), ('node_started', 'Node Started'), ('node_completed', 'Node Completed'), ('node_failed', 'Node Failed'), ('node_skipped', 'Node Skipped'), ('node_retrying', 'Node Retrying'), ('node_unserved', 'Node Unserved'), ('node_held', 'Node Held'), ('condition_error', 'Condition Error'), ('approval_required', 'Approval Required'), ('approval_decided', 'Approval Decided'), ('approval_voided', 'Approval Voided'), ('notifications_capped', 'Notifications Capped'), ('node_paused', 'Node Paused'), ('budget_raised', 'Budget Raised'), ('budget_freed', 'Budget Freed'), ('patch_applied', 'Patch Applied'), ('patch_rejected', 'Patch Rejected'), ('workflow_completed', 'Workflow Completed'), ('output_computed', 'Output Computed'), ('workflow_failed', 'Workflow Failed'), ('run_cancelled', 'Run Cancelled'), ('subworkflow_started', 'Subworkflow Started')], max_length=32),
        ),
    ]
