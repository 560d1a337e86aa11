# What each applied patch changed (RunPatch.wrote), kept from now on when a patch applies; 0022
# measures it for the patches of runs still going. The column has a database default ({}), so a
# process still on the code before it (a rolling deploy) inserts a patch without naming it.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('workflows', '0020_node_run_sizes'),
    ]

    operations = [
        migrations.AddField(
            model_name='runpatch',
            name='wrote',
            field=models.JSONField(blank=True, default=dict, db_default=models.Value({}, models.JSONField())),
        ),
    ]
