# What each applied patch changed (RunPatch.wrote), kept from now on when a patch applies; 0022
# measures it for the patches of runs still going.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('workflows', '0020_node_run_sizes'),
    ]

    operations = [
        migrations.AddField(
            model_name='runpatch',
            name='wrote',
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
