# What the replays started before 0034 inherit of their sources' provenance, stored as a replay
# starting now stores it (``patches.provenance.replay_inherits``, the one rule: this migration
# calls it), oldest first, so a replay of a replay folds onto its source's row. In batches of 1,000
# replays, each its own transaction (atomic = False): it may stop and run again. A replay whose
# source was deleted before this ran has nothing left to inherit from (its link is null): it keeps
# what its own patches wrote, as before 0034.

from django.db import migrations, transaction

BATCH = 1000


def backfill(apps, schema_editor):
    # the live code, not the historical models: the fold is the provenance module's and no copy of it
    from workflows.models import Run
    from workflows.services.patches.provenance import replay_inherits

    while True:
        replays = list(Run.objects.filter(replay_of__isnull=False, inherited__isnull=True)
                       .select_related("replay_of").only("id", "replay_of__id", "replay_of__base_artifact")
                       .order_by("created_at", "pk")[:BATCH])
        if not replays:
            return
        with transaction.atomic():
            for replay in replays:
                replay_inherits(replay=replay, source=replay.replay_of)


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('workflows', '0034_replay_provenance'),
    ]

    operations = [
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
