"""What the approvals inbox reads and answers is bounded, however large what one user stored: a
node gate's context (its inputs and upstream outputs) is bounded where it is stored; a page of up
to 1,000 approvals spends one answer's budget on their messages, contexts and decisions, and what
did not fit links to the whole value; no approval read loads its run's inputs; and who could
approve a page's gates is judged in as many statements for any page."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import TextField
from django.db.models.functions import Cast, Length
from django.test import Client
from django.test.utils import CaptureQueriesContext

from approvals.models import Approval, Decision, Delivery
from approvals.services import gate_context
from tests.approvals.runs import approval_of, decide, parked, submit
from tests.conftest import client_for, set_inputs, stored_run, wait_for_run
from workflows.answers import json_size

PAD = "x" * 100_000  # past the default AOB_APPROVAL_CONTEXT_MAX_BYTES (64 KiB)
API = "/api/v1"


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
    stored = Approval.objects.filter(pk__in=[a.pk for a in approvals])
    messages = sum(len(a.message.encode()) for a in stored)
    names = sum(json_size(a.approvers) + json_size(a.escalate_to) for a in stored)  # no forms here
    # the messages, the approvers and whom each escalates to are spent first (``fill_page``); then
    # two contexts fit, not three
    settings.AOB_DETAILS_MAX_BYTES = messages + names + max(sizes.values()) + min(sizes.values()) + 1
    api = client_for(user)

    listed = api.get("/api/v1/approvals?status=pending").json()["results"]

    full = [a for a in listed if not a["context"].get("truncated")]
    [marked] = [a for a in listed if a["context"].get("truncated")]
    assert len(full) == 2 and all(a["context"]["upstream"]["prepare"]["amount"] == 42 for a in full)
    assert marked["context"] == {"truncated": True, "bytes": sizes[marked["id"]],
                                 "href": f"/api/v1/approvals/{marked['id']}"}
    assert api.get(marked["context"]["href"]).json()["context"]["upstream"]["prepare"]["amount"] == 42


def test_no_approval_read_loads_its_run_s_inputs(user: Any, bob: Any) -> None:
    """An approval's reads select its run for its owner and definition only, never its inputs (up
    to AOB_MAX_RUN_INPUTS_BYTES, 16 MiB), which no approval answer shows (``selectors.RUN_UNREAD``):
    the run's owner chooses them, and the approvers' inbox paid for them. Measured before: 200
    approvals of one run with 4 MB inputs, ``GET /approvals?status=pending&limit=200`` as Bob took
    3.4-6.4 s (about 800 MB read and parsed) for a 97 kB answer; the detail and the approval's page
    read them on every poll."""
    run = stored_run(user)
    set_inputs(run, {"blob": "x" * 2_000_000})
    approvals = Approval.objects.bulk_create([Approval(run=run, node_id=f"gate{i}", approvers=["bob"])
                                              for i in range(5)])
    as_bob, browser = client_for(bob), Client()
    browser.force_login(bob)

    for client, path in ((as_bob, f"{API}/approvals?status=pending"), (as_bob, f"{API}/approvals"),
                         (as_bob, f"{API}/approvals/{approvals[0].pk}"), (browser, f"/approvals/{approvals[0].pk}/")):
        with CaptureQueriesContext(connection) as reads:
            assert client.get(path).status_code == 200
        assert [q["sql"][:120] for q in reads.captured_queries if '"workflows_run"."inputs"' in q["sql"]] == [], path


def test_the_inbox_judges_who_could_approve_in_as_many_statements_for_any_page(user: Any, bob: Any) -> None:
    """Who could approve each pending gate that needs more than one person (four-eyes, or
    ``required_approvals`` > 1) is counted for the page at once (``who_could_approve_each``, of
    which ``who_could_approve`` is the one-gate case). Measured before, one count per gate: 11
    statements for 2 four-eyes gates, 209 for 200; now 13 for either."""
    run = stored_run(user)

    def inbox() -> int:
        with CaptureQueriesContext(connection) as reads:
            assert client_for(bob).get(f"{API}/approvals?status=pending&limit=1000").status_code == 200
        return len(reads)

    Approval.objects.bulk_create([Approval(run=run, node_id=f"few{i}", approvers=["bob"], allow_self_approval=False)
                                  for i in range(2)])
    few = inbox()
    Approval.objects.bulk_create([Approval(run=run, node_id=f"many{i}", approvers=["bob"],
                                           allow_self_approval=False, required_approvals=2) for i in range(60)])
    many = inbox()

    assert many == few, f"{few} statements for 2 gates, {many} for 62"


def test_a_page_of_approvals_fits_one_answer_s_budget(user: Any, bob: Any) -> None:
    """A page spends one ``AOB_DETAILS_MAX_BYTES`` on its messages, then its contexts, then its
    decisions' comments and data (``selectors.fill_page``); past it each is a marker linking to the
    approval, which answers it whole. Measured before, when only the contexts were counted: 1,000
    approvals each with a 20,000-"€" message and a decision of 60 kB data and a 10,000-character
    comment, ``GET /approvals?limit=1000`` answered 130.6 MB in 1.5 s; the 150 here, 19.6 MB
    (now 1.15 MB: 17 messages whole, the rest markers)."""
    run = stored_run(user)
    approvals = Approval.objects.bulk_create([
        Approval(run=run, node_id=f"gate{i}", approvers=["bob"], status="approved", message="€" * 20_000)
        for i in range(150)])
    Decision.objects.bulk_create([Decision(approval=a, user=bob, username="bob", approve=True,
                                           data={"note": "y" * 60_000}, comment="c" * 10_000) for a in approvals])

    answer = client_for(bob).get(f"{API}/approvals?limit=1000")

    assert answer.status_code == 200
    assert len(answer.content) <= 2 * settings.AOB_DETAILS_MAX_BYTES, f"{len(answer.content):,} bytes"
    [first, *_, last] = answer.json()["results"]
    assert first["message"] == "€" * 20_000  # the newest first, whole
    assert last["message"] == {"truncated": True, "bytes": 60_000, "href": f"{API}/approvals/{last['id']}"}
    [decision] = last["decisions"]
    assert decision["comment"]["truncated"] and decision["data"]["href"] == f"{API}/approvals/{last['id']}"
    whole = client_for(bob).get(last["message"]["href"]).json()
    assert whole["message"] == "€" * 20_000 and whole["decisions"][0]["comment"] == "c" * 10_000


def test_a_page_of_approvals_counts_their_forms_approvers_and_notifications(user: Any, bob: Any) -> None:
    """The forms (up to 64 KiB each), the approvers and whom each escalates to (up to 100 names of
    150 characters each) and the notifications (up to the run's 200, each error up to 2,000
    characters) were answered whole beside the budget of the rest (a red-team helper's finding):
    300 gates of 62 kB forms and 100 long names answered Bob's ``limit=1000`` with 28 MB. They are
    spent from the one budget now, a list shows an approval's latest five notifications, and what
    does not fit is the marker linking to the approval."""
    run = stored_run(user)
    form = {"type": "object", "properties": {f"f{i}": {"type": "string", "description": "d" * 600}
                                             for i in range(100)}}
    names = ["bob", *(f"n{i:03d}" + "z" * 140 for i in range(99))]
    approvals = Approval.objects.bulk_create([
        Approval(run=run, node_id=f"gate{i}", approvers=names, escalate_to=names[1:], form=form, message="m")
        for i in range(300)])
    Delivery.objects.bulk_create([Delivery(approval=approvals[-1], recipient=f"n{i:03d}", channel="email",
                                           status="failed", error=f"{i} " + "e" * 1990) for i in range(20)])

    answer = client_for(bob).get(f"{API}/approvals?status=pending&limit=1000")

    assert answer.status_code == 200
    assert len(answer.content) <= 2 * settings.AOB_DETAILS_MAX_BYTES, f"{len(answer.content):,} bytes"
    listed = answer.json()["results"]
    assert len(listed) == 300 and all(a["message"] == "m" for a in listed)
    first, last = listed[0], listed[-1]
    assert first["approvers"] == names and first["escalate_to"] == names[1:]  # the soonest first, whole
    for field in ("form", "approvers", "escalate_to", "deliveries"):
        assert last[field]["truncated"] and last[field]["href"] == f"{API}/approvals/{last['id']}", field
    # who can decide is judged from the names, not the marker's keys
    assert last["nobody_can_decide"] is False and last["cannot_be_approved"] is False
    # the whole approval answers all of them, and every notification
    notified = client_for(bob).get(f"{API}/approvals/{approvals[-1].pk}").json()
    assert notified["form"] == form and notified["approvers"] == names and len(notified["deliveries"]) == 20


def test_a_list_shows_an_approval_s_latest_notifications_oldest_first(user: Any, bob: Any) -> None:
    run = stored_run(user)
    approval = Approval.objects.create(run=run, node_id="gate", approvers=["bob"], message="m")
    Delivery.objects.bulk_create([Delivery(approval=approval, recipient="bob", channel="email", error=str(i))
                                  for i in range(8)])

    [listed] = client_for(bob).get(f"{API}/approvals?status=pending").json()["results"]

    assert [d["error"] for d in listed["deliveries"]] == ["3", "4", "5", "6", "7"]
