"""A run's ``key_origins`` (whose name its requests' Idempotency-Keys carry where not its own):
nullable, so the code before it (which sends its own run's keys) runs beside it in a rolling deploy."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('workflows', '0037_in_flight_indexes'),
    ]

    operations = [
        migrations.AddField(
            model_name='run',
            name='key_origins',
            field=models.JSONField(blank=True, default=None, null=True),
        ),
    ]
