"""A node run's executor messages carry an id no other node run's can: workers remember the ids
that cancel revoked (for hours, in memory) and drop any message that carries one.

The ids were ``aob-node-run-<node run's primary key>``, and a primary key comes back when its
sequence restarts: ``manage.py flush`` (the test suite's own flush did it), a restore from a backup,
an operator's ``ALTER SEQUENCE``. A node run that got a revoked id back was dropped by every worker,
and so was each message the sweeper published again for it: its run stayed queued, with nothing
saying why. The id carries the run's UUID now (``dispatch.task_id``), which no restart brings back.
"""

from __future__ import annotations

from django.db import connection

from aob_project.celery import app
from tests.conftest import again_after_a_deadlock, wait_for_run
from tests.engine.flow import http, submit, wait_until
from workflows.engine.dispatch import task_id
from workflows.models import NodeRun, Run

from .test_cancel_stops_work import cancel, held_run


def revoked_by(worker, task: str) -> bool:
    replies = app.control.inspect(destination=[worker.node_name], timeout=5).revoked() or {}
    return task in replies.get(worker.node_name, [])


def test_a_node_run_that_gets_a_revoked_node_run_s_key_back_after_a_sequence_restart_still_runs(engine, api, remote):
    cancelled, key = held_run(api, remote)
    old = NodeRun.objects.get(run_id=cancelled, node_id="held")
    cancel(api, cancelled)  # its message's id is revoked: every worker remembers it
    wait_until(lambda: revoked_by(engine["worker"], task_id(cancelled, old.pk)), what="the worker noting the revoke")
    remote.release(key)
    wait_for_run(cancelled)

    # What a flush or a restore does: the rows go, the sequence starts again below them.
    # The worker may still be ending the cancelled node (the aborted request's executor and its
    # decision lock the run), which a deadlock can make the delete's victim.
    again_after_a_deadlock(Run.objects.filter(pk=cancelled).delete)
    with connection.cursor() as cursor:
        cursor.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s, false)", [NodeRun._meta.db_table, old.pk])

    run_id = submit(api, {"nodes": [http("again", f"{remote.base}/echo/again")], "edges": []})
    assert NodeRun.objects.get(run_id=run_id, node_id="again").pk == old.pk  # the key came back
    assert wait_for_run(run_id).status == "completed"
