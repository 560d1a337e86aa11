"""Semantic 3, branches: CEL over `output`, `$.x`, first true rule in authoring order, the
unconditional edge as default, no match ends the branch, conditions on any node's edges."""

from __future__ import annotations

from tests.engine.flow import edge, event_counts, events, node_runs, statuses, submit, transform, wait_all
from workflows.models import Run


def routed(score: int, *, default: bool = True) -> dict:
    """source → gate (conditional) → one of hi / mid / low (/ fallback)."""
    edges = [
        edge("source", "gate"),
        edge("gate", "hi", "output.score > 90"),   # CEL over the predecessor's output
        edge("gate", "mid", "$.score > 50"),        # `$.x` means output.x
        edge("gate", "low", "$.score > 10"),
    ]
    nodes = [
        transform("source", "{'score': inputs.score}"),
        {"id": "gate", "type": "conditional", "config": {}},
        transform("hi", "'hi'"), transform("mid", "'mid'"), transform("low", "'low'"),
    ]
    if default:
        nodes.append(transform("fallback", "'fallback'"))
        edges.append(edge("gate", "fallback"))
    return {"nodes": nodes, "edges": edges}


def test_conditional_routes_first_true_rule_in_authoring_order_else_default(engine, api):
    cases = {  # score: the one target that runs
        95: "hi",        # hi, mid and low all match: the first authored wins
        60: "mid",       # mid and low match
        20: "low",
        5: "fallback",   # nothing matches: the unconditional edge
    }
    ids = {score: submit(api, routed(score), {"score": score}) for score in cases}
    wait_all(list(ids.values()))
    for score, winner in cases.items():
        run = Run.objects.get(pk=ids[score])
        assert run.status == "completed", (score, run.error)
        got = statuses(run)
        assert got["gate"] == "completed"
        assert got["source"] == "completed"
        for target in ("hi", "mid", "low", "fallback"):
            assert got[target] == ("completed" if target == winner else "skipped"), (score, got)
        assert node_runs(run)[winner].output == winner
        counts = event_counts(run)
        assert counts[("node_completed", "gate")] == 1
        assert counts[("workflow_completed", "")] == 1
        for target in ("hi", "mid", "low", "fallback"):
            if target != winner:
                assert counts[("node_skipped", target)] == 1
                assert counts[("node_started", target)] == 0


def test_no_match_and_no_default_skips_the_targets_and_the_run_completes(engine, api):
    definition = routed(1, default=False)
    definition["nodes"].append(transform("after_low", "'never'"))
    definition["edges"].append(edge("low", "after_low"))
    run = wait_all([submit(api, definition, {"score": 1})])[0]
    assert run.status == "completed"
    got = statuses(run)
    assert got == {"source": "completed", "gate": "completed", "hi": "skipped", "mid": "skipped",
                   "low": "skipped", "after_low": "skipped"}  # the skip propagates downstream
    counts = event_counts(run)
    assert counts[("workflow_completed", "")] == 1
    assert counts[("node_skipped", "after_low")] == 1


def test_condition_on_an_edge_leaving_a_non_conditional_node_tests_its_own_output(engine, api):
    definition = {
        "nodes": [
            transform("check", "{'ok': inputs.ok, 'n': 3}"),
            transform("when_ok", "nodes.check.n * 10"),
            transform("otherwise", "'default'"),
        ],
        "edges": [edge("check", "when_ok", "$.ok && output.n == 3"), edge("check", "otherwise")],
    }
    yes = submit(api, definition, {"ok": True})
    no = submit(api, definition, {"ok": False})
    wait_all([yes, no])
    assert statuses(yes) == {"check": "completed", "when_ok": "completed", "otherwise": "skipped"}
    assert node_runs(yes)["when_ok"].output == 30
    assert statuses(no) == {"check": "completed", "when_ok": "skipped", "otherwise": "completed"}
    assert Run.objects.get(pk=yes).status == Run.objects.get(pk=no).status == "completed"


def test_a_rule_over_a_null_output_reads_null_not_an_empty_map(engine, api):
    """`find` answers null when there is nothing: `output == null` holds, and a field of it is a
    `condition_error` (counted false), as a field of any other value that has none."""
    definition = {
        "nodes": [transform("find", "inputs.items.size() > 0 ? inputs.items[0] : null"),
                  transform("by_field", "'never'"), transform("not_found", "'nothing'"), transform("use", "'used'")],
        "edges": [edge("find", "by_field", "output.id == 1"), edge("find", "not_found", "output == null"),
                  edge("find", "use", "output != null")],
    }
    run = wait_all([submit(api, definition, {"items": []})])[0]
    assert run.status == "completed", run.error
    assert node_runs(run)["find"].output is None
    assert statuses(run) == {"find": "completed", "by_field": "skipped", "not_found": "completed", "use": "skipped"}
    assert event_counts(run)[("condition_error", "find")] == 1


def test_a_condition_on_the_only_edge_of_an_http_node_is_honoured(engine, api, remote):
    definition = {
        "nodes": [
            {"id": "call", "type": "http", "config": {"url": f"{remote.base}/status/404"}},
            transform("found", "'found'"),
        ],
        "edges": [edge("call", "found", "$.status_code == 200")],
    }
    run = wait_all([submit(api, definition)])[0]
    assert run.status == "completed"
    assert statuses(run) == {"call": "completed", "found": "skipped"}


def test_a_condition_that_is_not_a_boolean_is_a_condition_error_not_a_silent_dead_path(engine, api):
    """`$.items` meant as "non-empty", `'yes'`, a number: never `true`, each was skipped as a dead
    path without a word (red team 11). Now each is a `condition_error` saying what it gave, counted
    false as an error is: the default edge runs; a loop whose condition gives a list breaks, saying so."""
    definition = {
        "nodes": [transform("a", "{'items': [1, 2], 'answer': 'yes', 'n': 3}"), transform("listed", "1"),
                  transform("said", "2"), transform("counted", "3"), transform("fallback", "4")],
        "edges": [edge("a", "listed", "$.items"), edge("a", "said", "$.answer"), edge("a", "counted", "$.n"),
                  edge("a", "fallback")],
    }
    looping = {"nodes": [transform("body", "{'items': [1]}"),
                         {"id": "again", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "body",
                                                                    "condition": "$.items"}}],
               "edges": [edge("body", "again"), edge("again", "body")]}
    ids = [submit(api, definition), submit(api, looping)]
    run, looped = sorted(wait_all(ids), key=lambda r: ids.index(str(r.pk)))
    assert run.status == Run.Status.COMPLETED, run.error
    assert statuses(run) == {"a": "completed", "listed": "skipped", "said": "skipped", "counted": "skipped",
                             "fallback": "completed"}
    said = {e.data["to"]: e.data["error"] for e in events(run) if e.type == "condition_error"}
    assert sorted(said) == ["counted", "listed", "said"]
    assert "gave list, not a boolean" in said["listed"] and "gave string" in said["said"] and "gave int" in said["counted"]
    assert looped.status == Run.Status.COMPLETED, looped.error
    assert node_runs(looped)["again"].output["decision"] == "break"
    [loop_error] = [e.data for e in events(looped) if e.type == "condition_error"]
    assert loop_error["loop"] == "again" and "gave list, not a boolean" in loop_error["error"]
