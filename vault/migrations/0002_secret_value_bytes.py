"""Each secret's size, for AOB_MAX_SECRETS_BYTES_PER_OWNER: from its value where a key of
AOB_SECRETS_KEYS decrypts it, else the most its ciphertext can hold (a Fernet token, base64 undone,
less its 57 bytes of framing and the one byte of padding it has at least). The column has a
database default: a process still on the code before it (a rolling deploy) stores secrets without
naming it."""

import base64
import binascii

from django.db import migrations, models


def sizes(apps, schema_editor):
    from vault import crypto

    Secret = apps.get_model("vault", "Secret")
    for pk, token in Secret.objects.values_list("pk", "ciphertext").iterator(chunk_size=500):
        try:
            size = len(crypto.decrypt(token).encode())
        except (crypto.InvalidToken, ValueError):
            try:
                size = max(0, len(base64.urlsafe_b64decode(token)) - 57 - 1)
            except (binascii.Error, ValueError):
                size = len(token)
        Secret.objects.filter(pk=pk).update(value_bytes=size)


class Migration(migrations.Migration):

    dependencies = [("vault", "0001_initial")]

    operations = [
        migrations.AddField(model_name="secret", name="value_bytes", field=models.PositiveIntegerField(db_default=0, default=0)),
        migrations.RunPython(sizes, migrations.RunPython.noop),
    ]
