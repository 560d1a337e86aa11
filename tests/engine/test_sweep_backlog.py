"""A node run waiting its turn in its type's queue is not published again: every sweep re-sent
each of a 1,000-wide fan-out's waiting node runs (14,000 duplicates, 15 decisions a node run), and
the join behind them waited 88 s."""

from __future__ import annotations

from datetime import timedelta

import redis
from django.conf import settings
from django.utils import timezone

from tests.conftest import stored_run
from workflows import registry
from workflows.engine import sweeper
from workflows.engine.dispatch import publish_now
from workflows.models import NodeRun, Run


def test_a_node_run_waiting_in_its_types_backlog_is_not_published_again(db, user):
    run = stored_run(user, {"nodes": [{"id": "loud", "type": "shout", "config": {"text": "hi"}}], "edges": []})
    Run.objects.filter(pk=run.pk).update(status=Run.Status.RUNNING)
    waiting = timezone.now() - timedelta(seconds=settings.AOB_REPUBLISH_AFTER_S * 2)  # within the backlog's patience
    node = NodeRun.objects.create(run=run, node_id="loud", node_type="shout", status=NodeRun.Status.QUEUED)
    NodeRun.objects.filter(pk=node.pk).update(dispatched_at=waiting)
    queue = registry.queue_for("shout")  # the example type's own queue, which the suite's workers leave alone
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete(queue)
    try:
        publish_now(sweeper._dispatch(NodeRun.objects.select_related("run").get(pk=node.pk)))
        assert broker.llen(queue) == 1

        sweeper.sweep()

        assert broker.llen(queue) == 1  # its message waits its turn: not a second one behind it
        assert NodeRun.objects.get(pk=node.pk).dispatched_at == waiting
    finally:
        broker.delete(queue)
