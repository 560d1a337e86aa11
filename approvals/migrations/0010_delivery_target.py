"""A webhook delivery goes to one target (``Delivery.target``): one row for all of a person's
targets was sent to each in turn and stopped at the first that failed, so every retry of a failing
target repeated the notification to those before it (six times, at the retry limit), and those after
it were never told. A webhook delivery still waiting is given its person's (or group's) first
enabled target, and one copy of itself for each further one; one already ended keeps none."""

import django.db.models.deletion
from django.db import migrations, models


def one_target_each(apps, schema_editor) -> None:
    Delivery = apps.get_model("approvals", "Delivery")
    NotificationTarget = apps.get_model("approvals", "NotificationTarget")
    waiting = Delivery.objects.filter(channel="webhook", status="pending", target__isnull=True).order_by("pk")
    for delivery in waiting.iterator():
        owner = {"user_id": delivery.user_id} if delivery.user_id is not None else {"group_id": delivery.group_id}
        if delivery.user_id is None and delivery.group_id is None:
            continue  # its group was deleted: it fails as it would have
        targets = list(NotificationTarget.objects.filter(enabled=True, **owner).order_by("pk").values_list("pk", flat=True))
        if not targets:
            continue
        Delivery.objects.filter(pk=delivery.pk).update(target_id=targets[0])
        for target in targets[1:]:
            delivery.pk = None
            delivery.target_id = target
            delivery.attempts = 0
            delivery.error = ""
            delivery.save(force_insert=True)


class Migration(migrations.Migration):

    dependencies = [
        ("approvals", "0009_approval_pending_approvers"),
    ]

    operations = [
        migrations.AddField(
            model_name="delivery",
            name="target",
            field=models.ForeignKey(blank=True, db_index=False, null=True,
                                    on_delete=django.db.models.deletion.SET_NULL, related_name="+",
                                    to="approvals.notificationtarget"),
        ),
        migrations.RunPython(one_target_each, migrations.RunPython.noop),
    ]
