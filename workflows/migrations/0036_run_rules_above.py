from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('workflows', '0035_replay_provenance_backfill'),
    ]

    operations = [
        migrations.AddField(
            model_name='run',
            name='rules_above',
            field=models.JSONField(blank=True, default=None, null=True),
        ),
    ]
