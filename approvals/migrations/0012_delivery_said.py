"""What a delivery's first attempt said (``Delivery.said``), which its retries say again under its
one key: each attempt rendered the approval as it then was, so a retry after an escalation (or a
patch that asked again) said another deadline under the first attempt's ``Idempotency-Key`` (or
``Message-ID``), which a receiver keeping the key refuses (422) or drops. A nullable column, added
without a rewrite; a delivery attempted before it has none, and says what it did before."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("approvals", "0011_approval_pending_first"),
    ]

    operations = [
        migrations.AddField(
            model_name="delivery",
            name="said",
            field=models.JSONField(blank=True, null=True),
        ),
    ]
