"""``aob run watch`` tells a gate's state as it is now (docs/OPERATIONS.md: ``nobody_can_decide``
"read as it is now: an approver deactivated later counts"): it asks the approval's answer, where it
read the ``approval_required`` event, written when the gate was asked (a red-team helper's
finding)."""

from __future__ import annotations

import threading
from typing import Any

from tests.approvals.runs import wait_until
from tests.conftest import client_for, wait_for_run


def test_a_watch_of_a_gate_whose_only_approver_was_deactivated_since_says_nobody_can_decide(
        engine: Any, as_alice: Any, alice: Any, make_user: Any, write_json: Any, live_api: Any) -> None:
    bob = make_user("bob")
    gate = {"nodes": [{"id": "review", "type": "hitl", "config": {"message": "ok?", "approvers": ["bob"]}}],
            "edges": []}
    run_id = str(as_alice("-o", "json", "run", "start", write_json("gate.json", gate)).json()["run_id"])
    assert wait_for_run(run_id, statuses={"waiting_for_approval"}).status == "waiting_for_approval"
    bob.is_active = False
    bob.save(update_fields=["is_active"])
    # the approval's own answer knows (tests/approvals/test_api.py covers it)
    (approval,) = client_for(alice).get(f"/api/v1/approvals?run={run_id}").json()["results"]
    assert approval["nobody_can_decide"] is True

    out: list[Any] = []
    watcher = threading.Thread(target=lambda: out.append(as_alice("run", "watch", run_id, timeout=60)))
    watcher.start()
    wait_until(lambda: f'"GET /api/v1/approvals/{approval["id"]} ' in live_api.log(), timeout=30,
               what="the watch's read of the gate as it is now")
    assert client_for(alice).post(f"/api/v1/runs/{run_id}/cancel", {}, format="json").status_code in (200, 202)
    watcher.join(60)
    lines = out[0].lines()

    gate_at = next(i for i, line in enumerate(lines) if "approval_required" in line)
    hint = lines[gate_at + 1]
    assert "nobody can decide" in hint, f"the watch of a gate nobody can decide now says: {hint!r}"
