"""The model's name validator is the vault's one name pattern (``vault.names.NAME_RE``): it
ended in ``$``, which admits a trailing newline. Validators only: no statement is run."""

import django.core.validators
import re
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('vault', '0002_secret_value_bytes'),
    ]

    operations = [
        migrations.AlterField(
            model_name='secret',
            name='name',
            field=models.CharField(max_length=64, validators=[django.core.validators.RegexValidator(re.compile('^[A-Za-z_][A-Za-z0-9_]{0,63}\\Z'))]),
        ),
    ]
