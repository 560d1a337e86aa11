from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('subflows', '0001_initial'),
    ]

    operations = [
        migrations.AddField(
            model_name='subrun',
            name='deadline',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name='subrun',
            index=models.Index(condition=models.Q(('deadline__isnull', False), ('settled_at__isnull', True)),
                               fields=['deadline'], name='subrun_deadline'),
        ),
    ]
