"""A node gate's context (its inputs and upstream outputs) is bounded where it is stored, so the
inbox, which lists up to 200 gates with their contexts, stays small; what did not fit links to
the whole value."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import TextField
from django.db.models.functions import Cast, Length

from approvals.models import Approval
from approvals.services import gate_context
from tests.approvals.runs import approval_of, decide, parked, submit
from tests.conftest import client_for, wait_for_run

PAD = "x" * 100_000  # past the default AOB_APPROVAL_CONTEXT_MAX_BYTES (64 KiB)


def _gate_after_small_and_large() -> dict[str, Any]:
    return {"nodes": [
        {"id": "small", "type": "transform", "config": {"expression": "{'amount': 5}"}},
        {"id": "large", "type": "transform", "config": {"template": {"pad": "$inputs.pad"}}},
        {"id": "review", "type": "hitl", "config": {"message": "Pay?"}},
    ], "edges": [{"from": "small", "to": "review"}, {"from": "large", "to": "review"}]}


def test_a_gate_stores_what_fits_and_links_to_the_rest(engine: Any, user: Any) -> None:
    run_id = submit(user, _gate_after_small_and_large(), inputs={"pad": PAD})
    approval = approval_of(run_id)
    api = client_for(user)

    listed = api.get("/api/v1/approvals?status=pending")

    assert listed.status_code == 200
    assert len(listed.content) < settings.AOB_APPROVAL_CONTEXT_MAX_BYTES + 10_000
    [shown] = listed.json()["results"]
    context = shown["context"]
    assert context["truncated"] is True
    assert context["upstream"]["small"] == {"amount": 5}
    marker = context["upstream"]["large"]
    assert marker["truncated"] is True and marker["bytes"] > 100_000
    assert marker["href"].startswith("/api/v1/artifacts/")
    whole = api.get(marker["href"])
    assert whole.status_code == 200 and PAD in whole.content.decode()
    assert api.get(f"/api/v1/approvals/{approval.pk}").json()["context"] == context
    # the gate still decides as before
    assert decide(user, approval).status_code == 200
    assert wait_for_run(run_id).status == "completed"


def test_inputs_past_the_bound_link_to_the_run_which_carries_them_whole(settings: Any) -> None:
    """The inputs a gate shows are the run's (not the gate node's resolved config): read at the run."""
    settings.AOB_APPROVAL_CONTEXT_MAX_BYTES = 1024
    upstream = {"b": {"v": "b" * 400}, "a": {"v": "a" * 400}}

    context = gate_context(run_id="r1", inputs={"pad": "i" * 2000}, upstream=upstream)

    assert context == {"inputs": {"truncated": True, "bytes": 2010, "href": "/api/v1/runs/r1/inputs"},
                       "upstream": upstream, "truncated": True}
    assert gate_context(run_id="r1", inputs={}, upstream=upstream) == {
        "inputs": {}, "upstream": upstream, "truncated": False}


def test_the_inbox_reads_contexts_while_they_fit_its_answer(engine: Any, user: Any, settings: Any) -> None:
    """Contexts stored before their bound, and patch gates' graphs, still meet the answer's budget."""
    approvals = [parked(user)[1] for _ in range(3)]
    sizes = dict(Approval.objects.filter(pk__in=[a.pk for a in approvals])
                 .annotate(size=Length(Cast("context", TextField()))).values_list("pk", "size"))
    settings.AOB_DETAILS_MAX_BYTES = max(sizes.values()) + min(sizes.values()) + 1  # two fit, not three
    api = client_for(user)

    listed = api.get("/api/v1/approvals?status=pending").json()["results"]

    full = [a for a in listed if not a["context"].get("truncated")]
    [marked] = [a for a in listed if a["context"].get("truncated")]
    assert len(full) == 2 and all(a["context"]["upstream"]["prepare"]["amount"] == 42 for a in full)
    assert marked["context"] == {"truncated": True, "bytes": sizes[marked["id"]],
                                 "href": f"/api/v1/approvals/{marked['id']}"}
    assert api.get(marked["context"]["href"]).json()["context"]["upstream"]["prepare"]["amount"] == 42
