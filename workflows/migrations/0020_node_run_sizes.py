"""Node runs keep the sizes of their heavy fields (``input_bytes``, ``output_bytes``,
``attempt_log_bytes``), measured by the database when a field is written: a run's details, its
``/output`` and its node pages measured every latest input and output at every request
(``octet_length(output::text)``: 0.23 s for a 32 MiB output of small objects, up to eight of them
a run), now they read a number. Nullable columns with no default: adding them rewrites nothing.
Rows written before keep NULL and are measured as before.

The trigger fires on an insert and on an update that sets one of the three fields (``UPDATE OF``:
a claim, a lease renewal or a decision's ``consumed`` does not), and measures only a field that
changed."""

from django.db import migrations, models

SIZES = """
CREATE FUNCTION workflows_noderun_sizes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.input IS DISTINCT FROM OLD.input THEN
        NEW.input_bytes := octet_length(NEW.input::text);
    END IF;
    IF TG_OP = 'INSERT' OR NEW.output IS DISTINCT FROM OLD.output THEN
        NEW.output_bytes := octet_length(NEW.output::text);
    END IF;
    IF TG_OP = 'INSERT' OR NEW.attempt_log IS DISTINCT FROM OLD.attempt_log THEN
        NEW.attempt_log_bytes := octet_length(NEW.attempt_log::text);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER workflows_noderun_sizes BEFORE INSERT OR UPDATE OF input, output, attempt_log
    ON workflows_noderun FOR EACH ROW EXECUTE FUNCTION workflows_noderun_sizes();
"""

DROP = """
DROP TRIGGER IF EXISTS workflows_noderun_sizes ON workflows_noderun;
DROP FUNCTION IF EXISTS workflows_noderun_sizes();
"""


class Migration(migrations.Migration):

    dependencies = [
        ("workflows", "0019_deleted_tag"),
    ]

    operations = [
        migrations.AddField(model_name="noderun", name="input_bytes",
                            field=models.BigIntegerField(blank=True, editable=False, null=True)),
        migrations.AddField(model_name="noderun", name="output_bytes",
                            field=models.BigIntegerField(blank=True, editable=False, null=True)),
        migrations.AddField(model_name="noderun", name="attempt_log_bytes",
                            field=models.BigIntegerField(blank=True, editable=False, null=True)),
        migrations.RunSQL(SIZES, DROP),
    ]
