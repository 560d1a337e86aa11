# What the applied patches of runs still going (queued, running, waiting) changed, measured as
# patches.provenance.patch_wrote measures it when a patch applies: each patch's definition after
# against the one before it in the order they were applied (the run's base for the first). A held
# patch's before_artifact is the definition it was held against, not always the one it applied to,
# so the chain is followed instead. Finished runs start no agent: their patches are left as they are.
#
# A rolling deploy: a process still on the code before 0021 applies patches with wrote = {}, so
# their agents' text would be shown to later agents. Once the last one is gone,
# `python manage.py migrate workflows 0021 && python manage.py migrate workflows` runs this again.

import json

from django.db import migrations

GOING = ("queued", "running", "waiting_for_approval")


def _canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def patch_wrote(before, after):  # patches.provenance.patch_wrote as of this migration
    old = {n["id"]: _canonical(n) for n in before.get("nodes", [])}
    new = {n["id"]: _canonical(n) for n in after.get("nodes", [])}
    old_edges = {_canonical(e) for e in before.get("edges", [])}
    new_edges = {_canonical(e) for e in after.get("edges", [])}
    return {"added": sorted(new.keys() - old.keys()),
            "changed": sorted(i for i in new.keys() & old.keys() if new[i] != old[i]),
            "removed": sorted(old.keys() - new.keys()),
            "edges_added": sorted(new_edges - old_edges), "edges_removed": sorted(old_edges - new_edges)}


def backfill(apps, schema_editor):
    Run = apps.get_model("workflows", "Run")
    RunPatch = apps.get_model("workflows", "RunPatch")
    runs = Run.objects.filter(status__in=GOING, patches__status="applied").distinct()
    for run in runs.only("base_artifact").select_related("base_artifact").iterator(chunk_size=100):
        before = run.base_artifact.content
        for patch in (RunPatch.objects.filter(run=run, status="applied").order_by("applied_at", "seq")
                      .select_related("after_artifact").only("after_artifact__content")):
            after = patch.after_artifact.content
            RunPatch.objects.filter(pk=patch.pk).update(wrote=patch_wrote(before, after))
            before = after


class Migration(migrations.Migration):

    dependencies = [
        ('workflows', '0021_run_patch_wrote'),
    ]

    operations = [
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
