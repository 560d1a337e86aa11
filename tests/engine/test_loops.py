"""Semantic 6, loops: `max_iterations`, `loop_back_to`, `condition` (true = go round again),
`break_path`, `timeout_path`."""

from __future__ import annotations

from tests.engine.flow import edge, event_counts, http, node_runs, submit, transform, wait_all
from workflows.models import NodeRun


def polling(body: dict, max_iterations: int) -> dict:
    """start → body → again? (loop back to body) → done | gave_up."""
    return {
        "nodes": [
            transform("start", "'go'"),
            body,
            {"id": "again", "type": "loop", "config": {
                "max_iterations": max_iterations, "loop_back_to": "body", "condition": "$.state == 'pending'",
                "break_path": "done", "timeout_path": "gave_up"}},
            transform("done", "{'final': nodes.body.state}"),
            transform("gave_up", "'timeout'"),
        ],
        "edges": [edge("start", "body"), edge("body", "again"), edge("again", "body")],
    }


def bodies(run) -> list[NodeRun]:
    return list(NodeRun.objects.filter(run=run, node_id="body").order_by("iteration"))


def test_body_answers_pending_pending_done_then_the_break_path_runs_once(engine, api):
    body = transform("body", "{'state': iteration < 2 ? 'pending' : 'done', 'i': iteration}")
    run = wait_all([submit(api, polling(body, max_iterations=10))])[0]
    assert run.status == "completed", run.error
    assert [(nr.iteration, nr.status, nr.output["state"]) for nr in bodies(run)] == [
        (0, "completed", "pending"), (1, "completed", "pending"), (2, "completed", "done")]
    loops = NodeRun.objects.filter(run=run, node_id="again").order_by("iteration")
    assert [nr.output["decision"] for nr in loops] == ["again", "again", "break"]
    nrs = node_runs(run)
    assert nrs["done"].status == "completed"
    assert nrs["done"].output == {"final": "done"}  # it reads the last iteration's output
    assert nrs["gave_up"].status == "skipped"
    counts = event_counts(run)
    assert counts[("node_completed", "body")] == 3
    assert counts[("node_completed", "done")] == 1
    assert counts[("node_started", "gave_up")] == 0
    assert counts[("workflow_completed", "")] == 1


def test_loop_over_a_remote_that_answers_pending_pending_done(engine, api, remote):
    remote.script("job", [{"state": "pending"}, {"state": "pending"}, {"state": "done"}])
    body = http("body", f"{remote.base}/seq/job")
    definition = polling(body, max_iterations=5)
    definition["nodes"][2]["config"]["condition"] = "$.body.state == 'pending'"
    definition["nodes"][3] = transform("done", "{'final': nodes.body.body.state}")
    run = wait_all([submit(api, definition)])[0]
    assert run.status == "completed", run.error
    assert len(remote.hits("/seq/job")) == 3
    assert [nr.output["body"]["state"] for nr in bodies(run)] == ["pending", "pending", "done"]
    assert node_runs(run)["done"].output == {"final": "done"}
    assert node_runs(run)["gave_up"].status == "skipped"


def test_always_pending_with_max_three_takes_the_timeout_path(engine, api):
    body = transform("body", "{'state': 'pending'}")
    run = wait_all([submit(api, polling(body, max_iterations=3))])[0]
    assert run.status == "completed", run.error
    assert len(bodies(run)) == 3
    loops = NodeRun.objects.filter(run=run, node_id="again").order_by("iteration")
    assert [nr.output["decision"] for nr in loops] == ["again", "again", "timeout"]
    nrs = node_runs(run)
    assert nrs["gave_up"].status == "completed"
    assert nrs["gave_up"].output == "timeout"
    assert nrs["done"].status == "skipped"
    counts = event_counts(run)
    assert counts[("node_completed", "gave_up")] == 1
    assert counts[("workflow_completed", "")] == 1


def test_an_exhausted_loop_without_a_timeout_path_does_not_take_its_break_path(engine, api):
    """Giving up is not stopping: with no `timeout_path` named, an exhausted loop takes its
    forward edges but never its `break_path` (what runs once the job is done)."""
    definition = polling(transform("body", "{'state': 'pending'}"), max_iterations=3)
    del definition["nodes"][2]["config"]["timeout_path"]
    definition["nodes"] = [n for n in definition["nodes"] if n["id"] != "gave_up"]
    run = wait_all([submit(api, definition)])[0]
    assert run.status == "completed", run.error
    loops = NodeRun.objects.filter(run=run, node_id="again").order_by("iteration")
    assert [nr.output["decision"] for nr in loops] == ["again", "again", "timeout"]
    assert node_runs(run)["done"].status == "skipped"


def nested_loops() -> dict:
    """a → b → inner? (back to b, twice) → c → outer? (back to a, twice) → d."""
    return {
        "nodes": [
            transform("a", "'a'"), transform("b", "'b'"),
            {"id": "inner", "type": "loop", "config": {"max_iterations": 2, "loop_back_to": "b"}},
            transform("c", "'c'"),
            {"id": "outer", "type": "loop", "config": {"max_iterations": 2, "loop_back_to": "a"}},
            transform("d", "'d'"),
        ],
        "edges": [edge("a", "b"), edge("b", "inner"), edge("inner", "b"), edge("inner", "c"),
                  edge("c", "outer"), edge("outer", "a"), edge("outer", "d")],
    }


def test_nested_loops_run_every_pass_of_both_loops_then_the_exit(engine, api):
    """The inner loop's passes never collide with the outer loop's: each outer pass runs the
    inner loop twice, and the run ends with the node after the outer loop."""
    run = wait_all([submit(api, nested_loops())])[0]
    counts = {n: NodeRun.objects.filter(run=run, node_id=n, status="completed").count()
              for n in ("a", "b", "inner", "c", "outer", "d")}
    assert run.status == "completed", run.error
    assert counts == {"a": 2, "b": 4, "inner": 4, "c": 2, "outer": 2, "d": 1}
    inner = [nr.output["decision"] for nr in NodeRun.objects.filter(run=run, node_id="inner").order_by("iteration")]
    assert inner == ["again", "timeout", "again", "timeout"]
