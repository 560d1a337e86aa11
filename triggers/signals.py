"""Beat's entry goes with its schedule, however the schedule row is removed.

A schedule is deleted by ``schedule_delete``, but also by the cascade from its workflow or its
owner (``workflows`` and ``auth`` never import triggers) and by the admin's bulk delete; each of
those removes the rows through the ORM's collector, which sends ``post_delete`` for every one. This
receiver is the one place that follows them all; the rule itself is ``periodic_task_remove``."""

from __future__ import annotations

from typing import Any


def schedule_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    from triggers.services.schedules import periodic_task_remove

    periodic_task_remove(schedule_id=instance.pk, task_id=instance.periodic_task_id)
