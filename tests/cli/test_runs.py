"""run start --watch / status / list / cancel / replay / watch, and logs, on real workers."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

from tests.conftest import wait_for_run
from tests.engine.flow import http, transform, wait_until
from workflows.models import Run


def chain() -> dict:
    # worker nodes (``dispatch: "queue"``): a run of three queue hops lasts long enough to be watched live
    q = {"dispatch": "queue"}
    return {"nodes": [
        {"id": "a", "type": "transform", "config": {"expression": "{'x': inputs.n + 1}", **q}},
        {"id": "b", "type": "transform", "config": {"template": {"x": "$nodes.a.x"}, **q}},
        {"id": "c", "type": "transform", "config": {"expression": "nodes.b.x * 2", **q}},
    ], "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}]}


def parked() -> dict:
    return {"nodes": [{"id": "review", "type": "hitl", "config": {"message": "ok?"}},
                      {"id": "done", "type": "transform", "config": {"expression": "1"}}],
            "edges": [{"from": "review", "to": "done", "condition": "$.approved == true"}]}


def event_types(lines: list[str]) -> list[tuple[str, str]]:
    """(type, node) of each pretty event line: ``seq  time  type  node  data``."""
    return [(cols[2], cols[3]) for cols in (line.split(maxsplit=4) for line in lines) if cols and cols[0].isdigit()]


CHAIN_EVENTS = [("workflow_started", "-"), ("node_started", "a"), ("node_completed", "a"), ("node_started", "b"),
                ("node_completed", "b"), ("node_started", "c"), ("node_completed", "c"), ("workflow_completed", "-")]


def test_start_watch_a_chain_then_status_list_logs_replay(engine, as_alice, write_json, live_api):
    started = as_alice("run", "start", write_json("chain.json", chain()), "--inputs", '{"n": 41}', "--watch")

    assert started.code == 0, started.err
    first, *events = started.lines()
    assert first.startswith("run ") and first.endswith(" queued")
    run_id = first.split()[1]
    assert event_types(events) == CHAIN_EVENTS
    assert events[-2].startswith("completed in ") and events[-1] == 'output: {"c": 84}'  # the result, last

    status = as_alice("run", "status", run_id)
    assert status.lines()[0].split() == ["run", run_id, "completed", "(no", "tag)"]
    assert " duration " in status.lines()[1] and status.lines()[1].split()[-1] in ("ms", "s")
    assert status.lines()[2] == 'output: {"c": 84}'
    assert [line.split()[:3] for line in status.lines() if line[:2] in ("a ", "b ", "c ")] == [
        ["a", "transform", "completed"], ["b", "transform", "completed"], ["c", "transform", "completed"]]
    details = as_alice("-o", "json", "run", "status", run_id).json()
    assert {n["node_id"]: n["output"] for n in details["nodes"]} == {"a": {"x": 42}, "b": {"x": 42}, "c": 84}
    listed = as_alice("-o", "json", "run", "list", "--status", "completed").json()
    assert [r["run_id"] for r in listed["results"]] == [run_id]

    assert event_types(as_alice("logs", run_id).lines()) == CHAIN_EVENTS
    as_json = as_alice("-o", "json", "logs", run_id).json()
    assert [e["seq"] for e in as_json] == list(range(1, 9)) and as_json[-1]["type"] == "workflow_completed"
    past_the_end = as_alice("run", "watch", run_id, "--after", "8")  # ended already: no wait, only the result
    assert past_the_end.code == 0 and past_the_end.lines()[1:] == ['output: {"c": 84}']
    assert event_types(past_the_end.lines()) == []

    replay = as_alice("-o", "json", "run", "replay", run_id, "c", "--watch")
    assert replay.code == 0, replay.err
    frames = [json.loads(line) for line in replay.lines()]  # a stream: one JSON object a line
    assert frames[0]["replay_of"] == run_id and frames[-1]["type"] == "workflow_completed"
    assert ("node_completed", "c") in [(f.get("type"), f.get("node_id")) for f in frames]


def test_a_failing_workflow_by_tag_exits_1(engine, as_alice, write_json):
    failing = chain()
    failing["nodes"][1] = {"id": "b", "type": "transform", "config": {"expression": "1/0"}}
    assert as_alice("workflow", "create", "boom", write_json("boom.json", failing)).code == 0

    watched = as_alice("run", "start", "boom", "-i", '{"n": 1}', "--watch")

    assert watched.code == 1, (watched.out, watched.err)
    assert watched.lines()[0].endswith(" queued (boom)")
    types = event_types(watched.lines()[1:])
    assert ("node_failed", "b") in types and types[-1][0] == "workflow_failed"
    (listed,) = as_alice("-o", "json", "run", "list", "--tag", "boom").json()["results"]
    assert listed["status"] == "failed"
    status = as_alice("run", "status", listed["run_id"]).lines()
    assert status[0].split()[2:] == ["failed", "boom"]
    assert status[2].startswith("error: transform expression failed: ZeroDivisionError") and "(node b)" in status[2]
    # one error shown once: the failed node's row points at it instead of repeating it
    assert sum("ZeroDivisionError" in line for line in status) == 1
    assert [line.split()[-1] for line in status if line.startswith("b ")] == ["(above)"]


def test_a_watch_that_reaches_a_gate_prints_the_approve_command(engine, as_alice, write_json):
    run_id = str(as_alice("-o", "json", "run", "start", write_json("gate.json", parked())).json()["run_id"])
    assert wait_for_run(run_id, statuses={"waiting_for_approval"}).status == "waiting_for_approval"
    assert as_alice("approve", run_id, "review").code == 0  # the watch below replays from the start

    watched = as_alice("run", "watch", run_id)

    assert watched.code == 0, watched.err
    lines = watched.lines()
    gate = next(i for i, line in enumerate(lines) if "approval_required" in line)
    assert lines[gate + 1].lstrip().startswith("→ waiting for alice at review: ")
    assert f"aob approve {run_id} review" in lines[gate + 1]
    assert lines[-1] == 'output: {"done": 1}'
    as_json = as_alice("-o", "json", "run", "watch", run_id)  # the hint goes to stderr there
    assert f"aob approve {run_id} review" in as_json.err
    assert all(line.startswith("{") for line in as_json.lines())


def test_cancel_then_watch_exits_2(engine, as_alice, write_json):
    run_id = str(as_alice("-o", "json", "run", "start", write_json("wait.json", parked())).json()["run_id"])
    assert wait_for_run(run_id, statuses={"waiting_for_approval"}).status == "waiting_for_approval"

    cancelled = as_alice("run", "cancel", run_id)
    assert cancelled.code == 0 and cancelled.out.strip() == f"run {run_id} cancelled"
    watched = as_alice("run", "watch", run_id)
    assert watched.code == 2 and event_types(watched.lines())[-1] == ("run_cancelled", "-")

    again = as_alice("run", "cancel", run_id)
    assert again.code == 1 and again.err.strip() == "error: run is already cancelled"


def test_a_watch_that_cannot_follow_exits_3_not_as_a_failed_run(engine, as_alice, aob):
    """A follow the API refuses (an unknown run, a token it does not know) exited 1, as a failed run:
    a script testing ``$? -eq 1`` took a server's restart, or a typo, for a run that failed."""
    unknown = as_alice("run", "watch", "00000000-0000-0000-0000-000000000000")
    refused = aob("run", "watch", "00000000-0000-0000-0000-000000000000", token="not-a-token")

    assert unknown.code == 3 and unknown.err.startswith("error: "), unknown.err
    assert refused.code == 3 and "Invalid token" in refused.err, refused.err


def test_a_finished_run_is_deleted_once_asked_and_an_unfinished_one_is_refused(engine, as_alice, write_json):
    run_id = str(as_alice("-o", "json", "run", "start", write_json("wait.json", parked())).json()["run_id"])
    assert wait_for_run(run_id, statuses={"waiting_for_approval"}).status == "waiting_for_approval"

    refused = as_alice("run", "delete", run_id, "--yes")
    assert refused.code == 1 and "cancel it first" in refused.err
    assert as_alice("run", "cancel", run_id).code == 0
    deleted = as_alice("run", "delete", run_id, "--yes")

    assert deleted.code == 0 and deleted.out.strip() == f"deleted run {run_id}"
    assert not Run.objects.filter(pk=run_id).exists()


def test_runs_are_deleted_by_ids_or_by_the_lists_filters_and_one_refused_leaves_the_rest(as_alice, alice):
    """One run a command freed little room; now several ids, each on its own (one that cannot be
    deleted is said and the rest go), or the runs list's filters in one request at a time."""
    from tests.api.test_lists import a_run

    first, second, waiting = a_run(alice, status="failed"), a_run(alice), a_run(alice, status="waiting_for_approval")
    billing = [a_run(alice, tag="billing", status="failed", days_ago=3) for _ in range(2)]
    other = a_run(alice, tag="billing", status="completed", days_ago=3)

    some = as_alice("run", "delete", str(first.pk), str(waiting.pk), str(second.pk), "--yes")

    assert some.code == 1 and "1 of 3 runs were not deleted" in some.err
    assert some.out.splitlines() == [f"deleted run {first.pk}", f"not deleted run {waiting.pk}: run is "
                                     "waiting_for_approval: cancel it first, or wait for it to finish",
                                     f"deleted run {second.pk}"]
    assert set(Run.objects.filter(owner=alice).values_list("pk", flat=True)) == {waiting.pk, other.pk,
                                                                               *(r.pk for r in billing)}
    counted = as_alice("run", "delete", "--workflow", "billing", "--dry-run")
    declined = as_alice("run", "delete", "--workflow", "billing", "--status", "failed", input="n\n")
    assert counted.out.strip() == "3 runs would be deleted", counted.err  # a count first, nothing deleted
    assert declined.code == 1 and "2 runs would be deleted. Delete them" in declined.err, declined.err
    assert Run.objects.filter(pk__in=[r.pk for r in billing]).count() == 2
    none = as_alice("run", "delete", "--workflow", "nothing-here")  # no question about nothing
    assert (none.code, none.out.strip(), none.err) == (0, "0 runs would be deleted", ""), none.err
    matching = as_alice("-o", "json", "run", "delete", "--workflow", "billing", "--status", "failed", "--yes")
    assert matching.code == 0, matching.err
    assert matching.json() == {"deleted": 2, "kept": 0}
    assert set(Run.objects.filter(owner=alice).values_list("pk", flat=True)) == {waiting.pk, other.pk}
    assert as_alice("run", "delete", str(other.pk), "--status", "failed", "--yes").code == 2  # ids or filters


def test_an_unknown_run_is_the_apis_message(engine, as_alice):
    ghost = str(uuid.uuid4())
    for args, code in ((["run", "status", ghost], 1), (["run", "watch", ghost], 3)):  # a watch: could not follow
        answer = as_alice(*args)
        assert (answer.code, answer.err.strip()) == (code, "error: run not found"), args


def test_budget_sets_a_runs_ceilings_and_needs_one(engine, as_alice, write_json):
    run_id = str(as_alice("-o", "json", "run", "start", write_json("wait.json", parked())).json()["run_id"])
    assert wait_for_run(run_id, statuses={"waiting_for_approval"}).status == "waiting_for_approval"

    raised = as_alice("run", "budget", run_id, "--max-cost-usd", "7.5")

    assert raised.code == 0, raised.err
    assert raised.out.strip() == f"run {run_id} waiting_for_approval: budget $7.5, 500000 tokens (spent $0, 0 tokens)"
    both = as_alice("-o", "json", "run", "budget", run_id, "--max-tokens", "1000")
    assert both.json()["budget"] == {"max_cost_usd": 7.5, "max_tokens": 1000}
    neither = as_alice("run", "budget", run_id)
    assert neither.code == 2 and "--max-cost-usd" in neither.err


def test_run_list_filters_by_workflow_dates_and_text_and_pages_by_cursor(as_alice, alice):
    from tests.api.test_lists import a_run

    old = a_run(alice, tag="billing", days_ago=10, inputs={"customer": "Ada Lovelace"})
    mid = a_run(alice, tag="billing", status="failed", days_ago=5, error={"message": "card declined", "node_id": "pay"})
    new = a_run(alice, tag="reports", days_ago=1)

    def listed(*args: str) -> list[str]:
        result = as_alice("-o", "json", "run", "list", *args)
        assert result.code == 0, result.err
        return [r["run_id"] for r in result.json()["results"]]

    assert listed("--workflow", "billing") == [str(mid.pk), str(old.pk)]
    assert listed("--since", "2000-01-01", "--search", "lovelace") == [str(old.pk)]
    assert listed("--until", (new.created_at.date()).isoformat(), "--search", "declined") == [str(mid.pk)]
    first = as_alice("run", "list", "--limit", "2")
    assert first.lines()[0].split() == ["RUN", "STATUS", "WORKFLOW", "CREATED", "DURATION", "ERROR"]
    assert "card declined (node pay)" in first.out
    cursor = first.lines()[-1].removeprefix("(more: --cursor ").removesuffix(")")
    assert listed("--limit", "2", "--cursor", cursor) == [str(old.pk)]
    bad = as_alice("run", "list", "--since", "last week")  # the option's other name is the API's field
    assert bad.code == 1 and bad.err.startswith("error: created_after: 'last week' must be an ISO 8601 date-time")
    assert listed("--created-after", "2000-01-01", "--search", "lovelace") == [str(old.pk)]


def test_start_sends_an_idempotency_key_a_new_one_per_invocation_unless_given(engine, as_alice, write_json):
    from workflows.models import IdempotencyKey, Run

    flow = write_json("chain.json", chain())
    one = as_alice("-o", "json", "run", "start", flow, "--inputs", '{"n": 1}').json()
    two = as_alice("-o", "json", "run", "start", flow, "--inputs", '{"n": 1}').json()
    assert one["run_id"] != two["run_id"]
    keys = list(IdempotencyKey.objects.values_list("key", flat=True))
    assert len(keys) == 2 and all(uuid.UUID(k) for k in keys)  # one uuid per invocation

    key = str(uuid.uuid4())
    first = as_alice("-o", "json", "run", "start", flow, "--inputs", '{"n": 2}', "--idempotency-key", key)
    again = as_alice("-o", "json", "run", "start", flow, "--inputs", '{"n": 2}', "--idempotency-key", key)
    assert first.code == again.code == 0, (first.err, again.err)
    assert again.json() == first.json()  # the retry answered the run already started
    other = as_alice("run", "start", flow, "--inputs", '{"n": 3}', "--idempotency-key", key)
    assert other.code != 0 and "Idempotency-Key" in other.err
    assert Run.objects.count() == 3
    for run_id in Run.objects.values_list("pk", flat=True):
        assert wait_for_run(run_id).status == "completed"


def test_watch_follows_a_run_still_running_over_the_websocket(engine, as_alice, write_json, live_api, remote):
    """A run that is still running when the watch has caught up is followed live over the socket
    (a run that ends during the catch-up is, rightly, never followed at all)."""
    key = f"cli-ws-{uuid.uuid4().hex[:8]}"
    flow = {"nodes": [http("wait", f"{remote.base}/hold/{key}"), transform("after", "1")],
            "edges": [{"from": "wait", "to": "after"}]}
    outcome: dict[str, Any] = {}
    watch = threading.Thread(target=lambda: outcome.update(
        result=as_alice("run", "start", write_json("held.json", flow), "--watch")))
    watch.start()
    try:
        wait_until(lambda: '"WebSocket /ws/runs/' in live_api.log(), timeout=30, what="the watch's WebSocket")
    finally:
        remote.release(key)
        watch.join(60)
    result = outcome["result"]
    assert result.code == 0, result.err
    types = event_types(result.lines()[1:])
    assert ("node_completed", "wait") in types and ("node_completed", "after") in types
    assert types[-1] == ("workflow_completed", "-")


def test_inline_json_longer_than_a_file_name_may_be_is_read_as_json(engine, as_alice, write_json):
    from workflows.models import Run

    inputs = {"n": 1, "note": "x" * 300}  # past the 255 bytes a file name may have: no path, but JSON
    started = as_alice("-o", "json", "run", "start", write_json("chain.json", chain()), "--inputs", json.dumps(inputs))

    assert started.code == 0, started.err
    run_id = started.json()["run_id"]
    assert Run.objects.get(pk=run_id).inputs == inputs
    assert wait_for_run(run_id).status == "completed"
    not_json = as_alice("run", "start", write_json("chain.json", chain()), "--inputs", "{" + "x" * 300)
    assert not_json.code == 1 and not_json.err.startswith("error: --inputs is neither a file nor valid JSON: ")
    long_tag = as_alice("run", "start", "t" * 300)  # not a file either: a tag, which the API judges
    assert long_tag.code == 1 and long_tag.err.startswith("error: "), long_tag.err
    assert "Traceback" not in not_json.err + long_tag.err


def test_start_watch_prints_the_output_a_worker_computes_after_the_run_completes(engine, as_alice, write_json):
    """``metadata.output`` is stored by a worker after the run completes: ``--watch`` waits for it."""
    definition = {**chain(), "metadata": {"output": {"expression": "{'doubled': nodes.c}"}}}
    started = as_alice("run", "start", write_json("output.json", definition), "--inputs", '{"n": 41}', "--watch")

    assert started.code == 0, started.err
    assert started.lines()[-1] == 'output: {"doubled": 84}'
    run_id = started.lines()[0].split()[1]
    assert as_alice("run", "status", run_id).lines()[2] == 'output: {"doubled": 84}'


def test_logs_of_a_long_run_follow_the_events_pages_and_print_as_they_read(engine, alice, as_alice):
    """An answer of the events endpoint stops at 1,000 events (or its byte budget) and says where
    the next is (``Link: rel="next"``): ``aob logs`` follows it to the end, page by page, printing
    each as it reads (the JSON the same text as the whole list dumped at once)."""
    from django.utils import timezone

    from tests.conftest import stored_run
    from workflows.models import Event

    count = 2_345
    run_ = stored_run(alice, chain())
    Event.objects.bulk_create(Event(run=run_, seq=seq, type="node_started", node_id="a", data={"iteration": seq},
                                    created_at=timezone.now()) for seq in range(1, count + 1))

    pretty = as_alice("logs", str(run_.pk))
    assert pretty.code == 0, pretty.err
    assert [int(line.split()[0]) for line in pretty.lines()] == list(range(1, count + 1))

    as_json = as_alice("-o", "json", "logs", str(run_.pk), "--after", "1500")
    assert as_json.code == 0, as_json.err
    events = as_json.json()
    assert [e["seq"] for e in events] == list(range(1501, count + 1))
    assert as_json.out == json.dumps(events, indent=2, ensure_ascii=False) + "\n"
    empty = as_alice("-o", "json", "logs", str(run_.pk), "--after", str(count))
    assert empty.out == "[]\n"


def test_a_watch_that_reaches_a_gate_nobody_can_decide_says_so_and_how_it_ends(engine, as_alice, write_json):
    gate = {"nodes": [{"id": "review", "type": "hitl", "config": {"message": "ok?", "approvers": ["nobody-here"]}}],
            "edges": []}
    run_id = str(as_alice("-o", "json", "run", "start", write_json("nobody.json", gate)).json()["run_id"])
    assert wait_for_run(run_id, statuses={"waiting_for_approval"}).status == "waiting_for_approval"
    assert as_alice("run", "cancel", run_id).code == 0  # the watch below replays from the start

    lines = as_alice("run", "watch", run_id).lines()

    gate_at = next(i for i, line in enumerate(lines) if "approval_required" in line)
    assert "nobody can decide approval" in lines[gate_at + 1] and f"aob run cancel {run_id}" in lines[gate_at + 1]
    assert "aob approve" not in lines[gate_at + 1]


def test_run_list_says_where_to_read_an_error_too_long_to_list(as_alice, alice):
    """Past the answer's byte budget (1 MiB) a run's error is a marker ({"truncated", "bytes",
    "href"}), and ``run list`` printed the dict in its column."""
    from tests.api.test_lists import a_run

    error = {"error_type": "HttpError", "message": "\U0001F600" * 2000, "node_id": "a"}  # 8 KB
    runs = [a_run(alice, status="failed", error=error) for _ in range(200)]

    listed = as_alice("run", "list", "--limit", "200")

    assert listed.code == 0, listed.err[-2000:]
    rows = {line.split()[0]: line for line in listed.lines()[1:]}
    assert rows[str(runs[-1].pk)].endswith("\U0001F600" * 60)  # the newest first, and fit: cut to 60, as before
    cut = [line for line in rows.values() if "(too long to list: " in line]
    assert cut and all(f"see /api/v1/runs/{line.split()[0]})" in line for line in cut), cut[:1]
