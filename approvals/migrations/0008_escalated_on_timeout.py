"""An escalated approval's next deadline rejects (a second escalation never happens): since this
release the escalation stores that in ``on_timeout``, so the events, the notifications, the pages
and the admin say what the deadline will do. Approvals escalated before it still said
``escalate``: they are rewritten the same way (``reject``, or nothing when the escalation set no
deadline)."""

from django.db import migrations


def escalated_reject(apps, schema_editor) -> None:
    Approval = apps.get_model("approvals", "Approval")
    escalated = Approval.objects.filter(escalated=True, on_timeout="escalate")
    escalated.filter(deadline__isnull=False).update(on_timeout="reject")
    escalated.filter(deadline__isnull=True).update(on_timeout="")


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0007_delivery_created_at_index"),
    ]

    operations = [
        migrations.RunPython(escalated_reject, migrations.RunPython.noop),
    ]
