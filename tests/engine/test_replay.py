"""POST /runs/{id}/nodes/{node_id}/replay: a new run, linked to its source, that executes the node
and what follows it again and reuses the recorded outputs of the other nodes that completed."""

from __future__ import annotations

import pytest

from tests.conftest import wait_for_run
from tests.engine.flow import edge, event_counts, http, node_runs, submit, transform, unique, wait_until
from tests.support.remote import Reply
from workflows.models import Run


def pipeline(remote) -> dict:
    """fetch (remote) → shape → finish, and fetch → side (a sibling not upstream of shape)."""
    return {
        "nodes": [
            http("fetch", f"{remote.base}/echo", config={"method": "POST", "payload": {"n": "$inputs.n"}}),
            transform("shape", "{'n': nodes.fetch.body.json.n, 'twice': nodes.fetch.body.json.n * 2}"),
            transform("finish", "nodes.shape.twice + 1"),
        ],
        "edges": [edge("fetch", "shape"), edge("shape", "finish")],
    }


def test_replay_reuses_upstream_outputs_and_executes_from_the_node_on(engine, api, remote):
    source = wait_for_run(submit(api, pipeline(remote), {"n": 5}))
    assert source.status == "completed"
    assert len(remote.hits("/echo")) == 1

    response = api.post(f"/api/v1/runs/{source.pk}/nodes/shape/replay")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["replay_of"] == str(source.pk)
    assert body["status"] == "queued"
    replay = wait_for_run(body["run_id"])
    assert replay.status == "completed", replay.error
    assert replay.replay_of_id == source.pk
    assert replay.replay_from_node == "shape"
    assert replay.inputs == {"n": 5}

    assert len(remote.hits("/echo")) == 1  # fetch was not executed again
    old, new = node_runs(source), node_runs(replay)
    assert new["fetch"].reused is True
    assert new["fetch"].output == old["fetch"].output
    assert new["fetch"].attempts == 0
    assert new["shape"].reused is False and new["shape"].attempts == 1
    assert new["shape"].output == {"n": 5, "twice": 10}
    assert new["finish"].output == 11
    counts = event_counts(replay)
    assert counts[("node_started", "fetch")] == 0
    assert counts[("node_started", "shape")] == counts[("node_started", "finish")] == 1
    assert counts[("workflow_completed", "")] == 1

    details = api.get(f"/api/v1/runs/{replay.pk}/details").json()
    by_id = {n["node_id"]: n for n in details["nodes"]}
    assert by_id["fetch"]["reused"] is True
    assert by_id["fetch"]["status"] == "completed"
    assert details["run"]["replay_of"] == str(source.pk)
    assert api.get(f"/api/v1/runs/{replay.pk}").json()["replay_from_node"] == "shape"
    assert Run.objects.get(pk=source.pk).status == "completed"  # the source is untouched


def test_replay_from_an_entry_node_runs_everything_again(engine, api, remote):
    source = wait_for_run(submit(api, pipeline(remote), {"n": 1}))
    response = api.post(f"/api/v1/runs/{source.pk}/nodes/fetch/replay")
    assert response.status_code == 201
    replay = wait_for_run(response.json()["run_id"])
    assert replay.status == "completed"
    assert len(remote.hits("/echo")) == 2
    assert not any(nr.reused for nr in node_runs(replay).values())


def test_a_replay_sent_again_with_its_idempotency_key_starts_no_second_run(engine, api, remote):
    """A script or the CLI retrying a replay whose answer it lost gets the replay it started."""
    source = wait_for_run(submit(api, pipeline(remote), {"n": 2}))
    path = f"/api/v1/runs/{source.pk}/nodes/shape/replay"
    first = api.post(path, {}, format="json", HTTP_IDEMPOTENCY_KEY="replay-shape-1")
    again = api.post(path, {}, format="json", HTTP_IDEMPOTENCY_KEY="replay-shape-1")
    assert (first.status_code, again.status_code) == (201, 200), (first.json(), again.json())
    assert again.json() == first.json() and first.json()["replay_of"] == str(source.pk)
    other = api.post(path, {"reuse_llm": True}, format="json", HTTP_IDEMPOTENCY_KEY="replay-shape-1")
    assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused"
    assert Run.objects.filter(replay_of=source).count() == 1
    assert wait_for_run(first.json()["run_id"]).status == "completed"


def test_replay_needs_completed_upstream_nodes_and_a_known_node(engine, api, remote):
    failing = {
        "nodes": [http("fetch", f"{remote.base}/status/500", config={"fail_on_status": True}),
                  transform("shape", "1")],
        "edges": [edge("fetch", "shape")],
    }
    source = wait_for_run(submit(api, failing))
    assert source.status == "failed"
    response = api.post(f"/api/v1/runs/{source.pk}/nodes/shape/replay")
    assert response.status_code == 409
    assert response.json()["error"] == "replay_upstream_incomplete"
    assert response.json()["details"]["nodes"] == ["fetch"]
    assert api.post(f"/api/v1/runs/{source.pk}/nodes/nope/replay").status_code == 404
    assert Run.objects.filter(replay_of=source).count() == 0


def test_a_replay_copies_the_recorded_values_in_the_database_without_reading_them(engine, api, remote):
    """A replay read each reused node run whole (input, output, log) and wrote them again through
    the web process: 48 outputs of 1.4 MB took 28 s and 715 MB (a red team's find). The copies take
    them in the database (``COPY_RECORDED``); the replay reads an output only where routing needs it."""
    import re

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    source = wait_for_run(submit(api, pipeline(remote), {"n": 5}))
    with CaptureQueriesContext(connection) as queries:
        response = api.post(f"/api/v1/runs/{source.pk}/nodes/finish/replay")
    assert response.status_code == 201, response.json()

    read = [re.sub(r"CASE WHEN .*? END", "", re.split(r"\bFROM\b", q["sql"], maxsplit=1)[0], flags=re.S)
            for q in queries.captured_queries if q["sql"].lstrip().startswith("SELECT") and "workflows_noderun" in q["sql"]]
    assert read and not any(f'"workflows_noderun"."{column}"' in columns for columns in read
                            for column in ("input", "output", "attempt_log")), read
    replay = wait_for_run(response.json()["run_id"])
    assert replay.status == "completed", replay.error
    old, new = node_runs(source), node_runs(replay)
    for reused in ("fetch", "shape"):
        assert new[reused].reused and (new[reused].input, new[reused].output) == (old[reused].input, old[reused].output)
        assert new[reused].output_bytes == old[reused].output_bytes  # measured by the database, as every write
    assert new["finish"].output == 11


def test_a_run_still_going_is_not_replayed(engine, api, remote):
    """The web page offered a replay only of a finished run, the API and CLI of any: a replay of a
    run still going ran what follows the node in both runs, under two keys (a one-truth review's
    find). A finished run's is the one rule (``run_finished_check``, a delete's too)."""
    key = unique("still-going")
    going = {"nodes": [transform("start", "1"), http("wait", f"{remote.base}/hold/{key}")],
             "edges": [edge("start", "wait")]}
    run_id = submit(api, going)
    wait_until(lambda: remote.hits(f"/hold/{key}"), what="the run's request held")

    response = api.post(f"/api/v1/runs/{run_id}/nodes/start/replay")

    assert response.status_code == 409, response.json()
    assert (response.json()["error"], response.json()["details"]["rule"]) == ("run_not_finished", "finished")
    assert not Run.objects.filter(replay_of_id=run_id).exists()
    remote.release(key)
    assert wait_for_run(run_id).status == "completed"
    assert api.post(f"/api/v1/runs/{run_id}/nodes/start/replay").status_code == 201  # once it has finished


def test_a_replay_from_a_failed_node_does_not_repeat_a_sibling_that_completed(engine, api, remote):
    """A run that paid, then failed to tell anyone, replayed from the step that failed: the payment
    (a sibling of that step, neither upstream nor downstream of it) is the source's, not made again
    under a new Idempotency-Key the payee cannot tell from a second order. Only the node and what
    follows it run again, as Airflow's "clear downstream" and Prefect's retry from a failed task do."""
    hold, tell = unique("hold"), unique("tell")
    remote.script(tell, [Reply(500, {"error": "mail relay down"}), {"sent": True}])
    definition = {
        "nodes": [
            http("fetch", f"{remote.base}/echo"),
            http("pay", f"{remote.base}/effect/{hold}/0", config={"method": "POST", "payload": {"amount": 10}}),
            http("wait", f"{remote.base}/hold/{hold}"),
            http("tell", f"{remote.base}/seq/{tell}", config={"fail_on_status": True}),
        ],
        "edges": [edge("fetch", "pay"), edge("fetch", "wait"), edge("wait", "tell")],
    }
    run_id = submit(api, definition)
    wait_until(lambda: remote.effects(hold) and remote.hits(f"/hold/{hold}"), what="the payment and the hold")
    remote.release(hold)
    source = wait_for_run(run_id)
    assert source.status == "failed" and source.error["node_id"] == "tell", source.error
    assert node_runs(source)["pay"].status == "completed"
    assert len(remote.effects(hold)) == 1

    response = api.post(f"/api/v1/runs/{source.pk}/nodes/tell/replay")
    assert response.status_code == 201, response.json()
    replay = wait_for_run(response.json()["run_id"])
    assert replay.status == "completed", replay.error

    assert len(remote.effects(hold)) == 1, remote.effects(hold)  # paid once, not twice
    new = node_runs(replay)
    assert new["pay"].reused is True and new["pay"].output == node_runs(source)["pay"].output
    assert new["tell"].reused is False and new["tell"].output["body"] == {"sent": True}
    assert event_counts(replay)[("node_started", "pay")] == 0


def test_a_replay_after_a_loop_does_not_run_the_loop_s_passes_again(engine, api, remote):
    """start → page (a POST) → more (a loop back to page: two passes) → after, replayed from after.
    The replay reuses each node's latest node run (page's pass 1, not its pass 0), and its state held
    start's unconsumed: page's pass 0 read as missing and was queued again, and the loop went round,
    POSTing the pages the source had already sent (``planner._Planner.known``)."""
    pages = f"/echo/{unique('pages')}"
    definition = {
        "nodes": [
            transform("start", "{'n': 1}"),
            http("page", f"{remote.base}{pages}", config={"method": "POST", "payload": {"page": True}}),
            {"id": "more", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "page",
                                                      "condition": "iteration < 1"}},
            transform("after", "2"),
        ],
        "edges": [edge("start", "page"), edge("page", "more"), edge("more", "after")],
    }
    source = wait_for_run(submit(api, definition))
    assert source.status == "completed", source.error
    assert len(remote.hits(pages)) == 2  # two passes of page

    response = api.post(f"/api/v1/runs/{source.pk}/nodes/after/replay")
    assert response.status_code == 201, response.json()
    replay = wait_for_run(response.json()["run_id"])

    assert replay.status == "completed", replay.error
    ran = list(replay.node_runs.filter(reused=False).values_list("node_id", "iteration"))
    assert [node_id for node_id, _ in ran] == ["after"], f"the replay ran {ran}"
    assert len(remote.hits(pages)) == 2, "the replay POSTed page again"


@pytest.mark.parametrize("from_node", ["more", "check"])
def test_a_replay_from_a_loop_s_last_pass_goes_on_with_the_count_its_source_had_there(engine, api, remote,
                                                                                       from_node):
    """start → page (a POST) → check → more (a loop back to page while ``iteration < 1``: two
    passes), replayed from the loop node, or from check in its body: the replay reuses page's last
    pass and decides the loop again at that pass. Its count started again at 0, so the loop went
    round and page POSTed a third time; it goes on from the source's count there
    (``run_replay``'s ``_loop_counts``): the loop ends, nothing is POSTed."""
    pages = f"/echo/{unique('pages')}"
    definition = {
        "nodes": [
            transform("start", "{'n': 1}"),
            http("page", f"{remote.base}{pages}", config={"method": "POST", "payload": {"page": True}}),
            transform("check", "1"),
            {"id": "more", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "page",
                                                      "condition": "iteration < 1"}},
            transform("after", "2"),
        ],
        "edges": [edge("start", "page"), edge("page", "check"), edge("check", "more"), edge("more", "after")],
    }
    source = wait_for_run(submit(api, definition))
    assert source.status == "completed", source.error
    assert len(remote.hits(pages)) == 2

    response = api.post(f"/api/v1/runs/{source.pk}/nodes/{from_node}/replay")
    assert response.status_code == 201, response.json()
    replay = wait_for_run(response.json()["run_id"])

    assert replay.status == "completed", replay.error
    ran = sorted(replay.node_runs.filter(reused=False).values_list("node_id", "iteration"))
    assert ran == sorted([*([("check", 1)] if from_node == "check" else []), ("more", 1), ("after", 0)]), ran
    more = replay.node_runs.get(node_id="more", iteration=1)
    assert (more.output["iteration"], more.output["decision"]) == (1, "break")
    assert len(remote.hits(pages)) == 2, f"the replay POSTed page again: {ran}"
