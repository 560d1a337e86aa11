"""Beat's cron rows no periodic task uses go with the prune: a schedule made one for each cron and
zone it was ever saved with, and nothing removed them (a user changing a cron all day left
thousands; the red team's 40 changes left 41 rows). Rows in use stay, a row shared by two
schedules included."""

from __future__ import annotations

from typing import Any

from django_celery_beat.models import CrontabSchedule, PeriodicTask

from retention.services import prune
from tests.triggers.test_schedules import GREETING
from triggers.services.schedules import schedule_create, schedule_delete, schedule_update
from workflows.models import Workflow
from workflows.services.definitions import workflow_save


def test_cron_rows_no_task_uses_are_removed_and_those_in_use_kept(db: Any, user: Any) -> None:
    workflow_save(owner=user, tag="crons", definition=GREETING)
    workflow = Workflow.objects.get(owner=user, tag="crons")
    changing = schedule_create(owner=user, workflow=workflow, cron="0 9 * * *")
    shared = [schedule_create(owner=user, workflow=workflow, cron="30 6 * * 1-5") for _ in range(2)]
    gone = schedule_create(owner=user, workflow=workflow, cron="15 3 * * *", tz="Europe/Paris")
    for minute in range(1, 11):
        changing = schedule_update(schedule=changing, cron=f"{minute} 9 * * *")
    schedule_delete(schedule=gone)
    in_use = set(PeriodicTask.objects.filter(crontab__isnull=False).values_list("crontab_id", flat=True))
    assert CrontabSchedule.objects.count() == 13 and len(in_use) == 2

    assert prune(dry_run=True)["crontabs"] == 11
    counts = prune(batch_size=4)

    assert counts["crontabs"] == 11 and counts["finished"] is True
    assert set(CrontabSchedule.objects.values_list("pk", flat=True)) == in_use
    assert {s.periodic_task.crontab.minute for s in [changing, *shared]} == {"10", "30"}
