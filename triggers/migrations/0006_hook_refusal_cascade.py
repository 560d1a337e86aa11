"""The database deletes a hook's refusals with it (ON DELETE CASCADE): a process of the release
before deletes hooks knowing nothing of that table, and Django's cascade is its own, so without it
such a delete failed at commit during a rolling deploy. Its own migration: the foreign key 0004
makes is added when 0004 ends."""

from django.db import migrations

CASCADE = """
DO $$
DECLARE made text;
BEGIN
    SELECT conname INTO made FROM pg_constraint
     WHERE conrelid = 'triggers_hookrefusal'::regclass AND contype = 'f';
    EXECUTE format('ALTER TABLE triggers_hookrefusal DROP CONSTRAINT %I', made);
    ALTER TABLE triggers_hookrefusal ADD CONSTRAINT triggers_hookrefusal_hook_id_cascade
        FOREIGN KEY (hook_id) REFERENCES triggers_hook (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED;
END $$;
"""


class Migration(migrations.Migration):

    dependencies = [
        ("triggers", "0005_hook_previous_secret"),
    ]

    operations = [
        migrations.RunSQL(CASCADE, reverse_sql=migrations.RunSQL.noop),
    ]
