"""A child's start refused by the owner's run limits (``workflows.ratelimit``) is a transient
failure of the ``workflow`` node: its ``retry`` applies, as for any rate limit. Before, the node
failed for good on the first refusal, whatever ``retry`` its author wrote, and its whole run with
it (a red-team helper's finding, 5 December)."""

from __future__ import annotations

from django.utils import timezone

from subflows.models import SubRun
from tests.conftest import stored_run
from workflows.engine import execution
from workflows.models import NodeRun
from workflows.services.definitions import workflow_save

CHILD = {"nodes": [{"id": "leaf", "type": "transform", "config": {"expression": "1"}}], "edges": []}


def _queued(user, retry=None):
    node = {"id": "child", "type": "workflow", "config": {"tag": "quick"}, **({"retry": retry} if retry else {})}
    run = stored_run(user, {"nodes": [node], "edges": []})
    return NodeRun.objects.create(run=run, node_id="child", node_type="workflow", status="queued",
                                  queued_at=timezone.now(), dispatched_at=timezone.now())


def test_a_child_start_refused_by_the_owners_run_limit_is_retried_as_the_node_allows(transactional_db, user,
                                                                                      settings):
    workflow_save(owner=user, tag="quick", definition=CHILD)
    node_run = _queued(user, retry={"max_attempts": 3, "backoff_ms": 60_000})
    settings.AOB_RATE_USER_RUNS_PER_MIN = 0  # the owner's run starts of this minute are spent

    outcome = execution.execute(node_run.pk)

    node_run.refresh_from_db()
    assert (outcome, node_run.status) == ("retrying", "queued"), (outcome, node_run.status, node_run.error)
    assert node_run.error["error_type"] == "user_rate_limit_exceeded" and node_run.error["transient"] is True
    assert not SubRun.objects.filter(parent_node_run=node_run).exists()


def test_without_retry_a_refused_child_start_fails_the_node_naming_the_limit(transactional_db, user, settings):
    workflow_save(owner=user, tag="quick", definition=CHILD)
    node_run = _queued(user)
    settings.AOB_RATE_USER_RUNS_PER_MIN = 0

    assert execution.execute(node_run.pk) == "failed"

    node_run.refresh_from_db()
    assert node_run.error["error_type"] == "user_rate_limit_exceeded" and node_run.error["limit"] == 0
