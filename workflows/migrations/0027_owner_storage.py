"""What each owner's finished runs keep (``OwnerStorage.finished_bytes``), kept by the database: a
run's bytes (its inputs and node outputs as stored, ``inputs_bytes + usage.output_bytes``) are added
when it enters a finished state, taken back when it leaves one (a resume) or is deleted (a prune, a
cascade), and moved when a finished run's sizes change. The triggers' ``WHEN`` clauses leave every
other update of a run (a decision's step, each completion's usage) without a call. On a delete the
owner's row is only updated, never made: a user's deletion may have removed it already.

A partial index on the owner's unfinished runs lets a start add theirs without reading the rest
(``workflows.storage.owner_stored_bytes``). The backfill counts the runs finished before."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

FINISHED = "('completed', 'failed', 'cancelled')"
KEPT = "({row}.inputs_bytes + COALESCE(({row}.usage->>'output_bytes')::bigint, 0))"

TRIGGERS = f"""
CREATE FUNCTION workflows_run_kept() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delta bigint := 0;
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.status IN {FINISHED} THEN
        delta := delta - {KEPT.format(row="OLD")};
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.status IN {FINISHED} THEN
        delta := delta + {KEPT.format(row="NEW")};
    END IF;
    IF delta = 0 THEN
        RETURN NULL;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE workflows_ownerstorage SET finished_bytes = finished_bytes + delta WHERE owner_id = OLD.owner_id;
    ELSE
        INSERT INTO workflows_ownerstorage (owner_id, finished_bytes) VALUES (NEW.owner_id, delta)
        ON CONFLICT (owner_id) DO UPDATE SET finished_bytes = workflows_ownerstorage.finished_bytes + EXCLUDED.finished_bytes;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER workflows_run_kept_insert AFTER INSERT ON workflows_run FOR EACH ROW
    WHEN (NEW.status IN {FINISHED}) EXECUTE FUNCTION workflows_run_kept();
CREATE TRIGGER workflows_run_kept_update AFTER UPDATE ON workflows_run FOR EACH ROW
    WHEN ((OLD.status IN {FINISHED} OR NEW.status IN {FINISHED})
          AND (OLD.status IS DISTINCT FROM NEW.status OR {KEPT.format(row="OLD")} IS DISTINCT FROM {KEPT.format(row="NEW")}))
    EXECUTE FUNCTION workflows_run_kept();
CREATE TRIGGER workflows_run_kept_delete AFTER DELETE ON workflows_run FOR EACH ROW
    WHEN (OLD.status IN {FINISHED}) EXECUTE FUNCTION workflows_run_kept();
INSERT INTO workflows_ownerstorage (owner_id, finished_bytes)
    SELECT owner_id, SUM({KEPT.format(row="workflows_run")}) FROM workflows_run
     WHERE status IN {FINISHED} GROUP BY owner_id;
"""

DROP = """
DROP TRIGGER IF EXISTS workflows_run_kept_insert ON workflows_run;
DROP TRIGGER IF EXISTS workflows_run_kept_update ON workflows_run;
DROP TRIGGER IF EXISTS workflows_run_kept_delete ON workflows_run;
DROP FUNCTION IF EXISTS workflows_run_kept();
"""


class Migration(migrations.Migration):

    dependencies = [
        ('auth', '0012_alter_user_first_name_max_length'),
        ('workflows', '0026_run_hosts_above'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='OwnerStorage',
            fields=[
                ('owner', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True,
                                               related_name='+', serialize=False, to=settings.AUTH_USER_MODEL)),
                ('finished_bytes', models.BigIntegerField(db_default=0, default=0)),
            ],
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(condition=models.Q(('status__in', ['queued', 'running', 'waiting_for_approval'])),
                               fields=['owner'], name='run_owner_unfinished'),
        ),
        migrations.RunSQL(TRIGGERS, DROP),
    ]
