"""A node that runs longer than its lease keeps it by heartbeat: it is not re-run behind its back."""

from __future__ import annotations

from tests.conftest import wait_for_run
from workflows.models import Event, NodeRun


def test_long_node_keeps_its_lease_and_runs_once(engine, api, remote):
    # the test stack's lease is 3 s and the sweeper runs every second: without renewals this node
    # would be re-queued and run again while the first attempt is still working
    definition = {"nodes": [{"id": "slow", "type": "http", "config": {"url": f"{remote.base}/sleep/8"}}], "edges": []}
    run = wait_for_run(api.post("/api/v1/runs", {"workflow": definition}, format="json").json()["run_id"], timeout=40)
    assert run.status == "completed", (run.error, list(NodeRun.objects.filter(run=run).values("attempts", "attempt_log")))
    node = NodeRun.objects.get(run=run, node_id="slow")
    assert node.attempts == 1
    assert len(remote.hits("/sleep")) == 1
    assert not Event.objects.filter(run=run, type="node_retrying").exists()
