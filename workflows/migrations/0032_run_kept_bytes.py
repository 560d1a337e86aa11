"""What a run keeps counts its ``usage.kept_bytes`` too: its node runs' resolved inputs (each up
to AOB_MAX_RESOLVED_CONFIG_BYTES, a copy per pass of a loop), its computed ``metadata.output`` (an
artifact up to AOB_MAX_NODE_OUTPUT_BYTES) and the definition sent with it (up to
AOB_MAX_DEFINITION_BYTES), kept as long as the run and counted nowhere before: 100 KB of inputs
made a 10 MB output, 30 passes of a loop kept 6.2 MB of inputs counted as 210 KB.

0027's function and its update trigger's ``WHEN`` are replaced with the new sum; the insert and
delete triggers call the same function and stay. Nothing is moved here: every run has no
``kept_bytes`` yet, so each one's sum is what it was. 0033 measures the runs kept before."""

from django.db import migrations

FINISHED = "('completed', 'failed', 'cancelled')"
OLD_KEPT = "({row}.inputs_bytes + COALESCE(({row}.usage->>'output_bytes')::bigint, 0))"
KEPT = ("({row}.inputs_bytes + COALESCE(({row}.usage->>'output_bytes')::bigint, 0)"
        " + COALESCE(({row}.usage->>'kept_bytes')::bigint, 0))")


def triggers(kept: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION workflows_run_kept() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delta bigint := 0;
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.status IN {FINISHED} THEN
        delta := delta - {kept.format(row="OLD")};
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.status IN {FINISHED} THEN
        delta := delta + {kept.format(row="NEW")};
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
DROP TRIGGER IF EXISTS workflows_run_kept_update ON workflows_run;
CREATE TRIGGER workflows_run_kept_update AFTER UPDATE ON workflows_run FOR EACH ROW
    WHEN ((OLD.status IN {FINISHED} OR NEW.status IN {FINISHED})
          AND (OLD.status IS DISTINCT FROM NEW.status OR {kept.format(row="OLD")} IS DISTINCT FROM {kept.format(row="NEW")}))
    EXECUTE FUNCTION workflows_run_kept();
"""


class Migration(migrations.Migration):

    dependencies = [
        ('workflows', '0031_event_run_moved'),
    ]

    operations = [
        migrations.RunSQL(triggers(KEPT), triggers(OLD_KEPT)),
    ]
