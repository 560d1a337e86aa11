"""A node's error is bounded where it is made (``limits.bounded_error``): an exception's text
can carry a value the node read (CEL names a missing key, and a key can be 16 MiB of a run's
inputs), and the error is copied into the node run, its ``node_failed`` event, the run's error
(in every run a list answers, 1,000 a page) and a parent's error. Through the real workers, on
both paths a transform takes (a worker, the decision)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.engine.flow import node_runs, run_to_end, transform, unique
from workflows.limits import ERROR_MAX_BYTES
from workflows.models import Event


def size(value: Any) -> int:
    """Bytes as the database stores the value (UTF-8 JSON)."""
    return len(json.dumps(value, ensure_ascii=False).encode())


def test_a_node_error_naming_a_large_value_is_stored_bounded(engine, api) -> None:
    key = "k" * 600_000  # the API's body is at most 1 MiB; a hook or a parent can build 16 MiB
    for pure in (False, True):
        node_id = unique("lookup")
        run = run_to_end(api, {"nodes": [transform(node_id, "inputs.table[inputs.key]", pure=pure)], "edges": []},
                         {"table": {}, "key": key})

        assert run.status == "failed"
        error = node_runs(run)[node_id].error
        assert error["error_type"] == "ExpressionError" and error["truncated"] is True
        assert "KeyError: 'kkkk" in error["message"] and "characters in all" in error["message"]
        [failed] = Event.objects.filter(run=run, type="node_failed")
        for stored in (error, failed.data["error"], run.error):
            assert size(stored) <= ERROR_MAX_BYTES, (pure, size(stored))
        listed = api.get("/api/v1/runs", {"limit": 1}).json()["results"][0]
        assert listed["run_id"] == str(run.pk) and size(listed["error"]) <= ERROR_MAX_BYTES


def test_an_error_past_the_bound_keeps_its_type_the_start_of_its_message_and_its_small_fields() -> None:
    from workflows.limits import bounded_error

    small = {"error_type": "AgentLoop", "message": "m", "reason": "excessive_agent_nodes"}
    assert bounded_error(small) is small
    cut = bounded_error({**small, "message": "x" * 50_000, "tool_calls": [{"arguments": "a" * 9_000}]})
    assert cut == {"error_type": "AgentLoop", "message": "x" * 2000 + "… (50000 characters in all)",
                   "reason": "excessive_agent_nodes", "tool_calls": {"truncated": True, "bytes": 9_018},
                   "truncated": True}
    assert size(cut) <= ERROR_MAX_BYTES


def test_an_error_is_within_its_bound_whatever_its_characters_and_however_many_its_fields() -> None:
    from workflows.limits import bounded_error

    wide = bounded_error({"error_type": "X", "message": "€" * 5_000})  # 3 bytes each in UTF-8
    many = bounded_error({"error_type": "X", "message": "m" * 9_000, **{f"f{i}": "v" * 1000 for i in range(50)}})

    for cut in (wide, many):
        assert size(cut) <= ERROR_MAX_BYTES and cut["truncated"] is True
    assert wide["message"].startswith("€" * 600) and wide["message"].endswith("(5000 characters in all)")
    kept = [k for k in many if k.startswith("f") and k[1:].isdigit()]
    assert 0 < len(kept) < 50 and many["fields_left_out"] == 50 - len(kept)


def test_a_condition_that_fails_naming_a_large_value_says_so_in_a_bounded_event(engine, api) -> None:
    """A condition error's message is in its event twice (its error, its warning), and a loop's
    condition can fail on every pass."""
    gate, after = unique("gate"), unique("after")
    run = run_to_end(api, {"nodes": [{"id": gate, "type": "conditional", "config": {}}, transform(after, "1")],
                           "edges": [{"from": gate, "to": after, "condition": "inputs.table[inputs.key] == 1"}]},
                     {"table": {}, "key": "k" * 600_000})

    [event] = Event.objects.filter(run=run, type="condition_error")
    assert size(event.data) <= 3 * 2000 + 4096 + 200, size(event.data)  # two messages, the condition
    assert "characters in all" in event.data["error"]


def test_an_error_of_control_characters_and_colliding_keys_is_within_its_bound() -> None:
    """A control character is six bytes once stored as JSON; keys cut to their first 100 bytes can
    be one key."""
    from workflows.limits import bounded_error

    escaped = bounded_error({"error_type": "\x01" * 5_000, "message": "\x02" * 50_000})
    colliding = bounded_error({"error_type": "X", "message": "m" * 9_000,
                               **{"k" * 100 + str(i): i for i in range(3_000)}})

    for cut in (escaped, colliding):
        assert size(cut) <= ERROR_MAX_BYTES and cut["truncated"] is True
    kept = [key for key in colliding if key.startswith("k")]  # one per length of the cut keys' suffix
    assert 0 < len(kept) <= 4 and colliding["fields_left_out"] == 3_000 - len(kept)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=60)


@settings(max_examples=100, deadline=None, derandomize=True)
@example(data={}).via("empty")
@example(data={"": "é"}).via("a character of two bytes, no slack elsewhere")
@example(data={"": "\x00"}).via("an escaped control character, six bytes")
@example(data={"": -(10**20)}).via("an integer's digits and sign")
@example(data={"": [[], {}]}).via("empty containers")
@given(data=st.dictionaries(st.text(max_size=12), _JSON, max_size=6))
def test_an_event_s_fast_bound_never_passes_what_its_measure_would_cut(data: dict) -> None:
    """``events.bounded`` judges small data by an upper bound of its JSON, without serialising it
    (the hot path's events); that fast path is derived from the one measure (``canonical_json`` in
    UTF-8) and must never let through what the measure says is past the bound: at a bound one byte
    below the data's size it never says the data surely fits."""
    from workflows.engine.events import _surely_within
    from workflows.models import canonical_json, size_of

    size = size_of(canonical_json(data))
    assert not _surely_within(data, size - 1)
    assert _surely_within({"iteration": 3, "attempt": 1}, 64 * 1024)  # the hot path's events are judged fast


NUL_REGEX = '"a".matches("\\u0000(")'  # CEL's escape: the pattern holds a NUL, and its error quotes it


def test_an_error_quoting_a_nul_fails_its_node_or_its_condition_and_the_run_goes_on(engine, api) -> None:
    """``jsonb`` holds no NUL: an error text quoting one, stored as it was, failed the write. In the
    decision that was the whole decision, three times, and the run failed as ``DecisionFailed``."""
    from tests.engine.flow import edge

    for pure in (False, True):
        node_id = unique("regex")
        run = run_to_end(api, {"nodes": [transform(node_id, NUL_REGEX, pure=pure)], "edges": []})
        assert run.status == "failed" and run.error["node_id"] == node_id, (pure, run.error)
        error = node_runs(run)[node_id].error
        assert error["error_type"] == "ExpressionError" and "\x00" not in json.dumps(error), error

    run = run_to_end(api, {"nodes": [transform("a", "1"), transform("b", "2"), transform("c", "3")],
                           "edges": [edge("a", "b", NUL_REGEX), edge("a", "c")]})
    assert run.status == "completed", run.error
    assert {n: r.status for n, r in node_runs(run).items()} == {"a": "completed", "b": "skipped", "c": "completed"}
    [said] = Event.objects.filter(run=run, type="condition_error")
    assert said.data["condition"] == NUL_REGEX and "\x00" not in json.dumps(said.data)


def test_every_event_and_node_error_is_stored_as_strict_json() -> None:
    from workflows.engine.events import bounded
    from workflows.engine.execution import error_payload

    assert bounded("r", "condition_error", {"error": "a\x00b", "n": float("nan")}) == {"error": "a\ufffdb", "n": None}
    assert error_payload(ValueError("bad \x00 pattern"))["message"] == "bad \ufffd pattern"


def test_a_node_whose_many_branch_rules_fail_writes_a_few_events_and_one_for_the_rest(engine, api) -> None:
    """Each branch rule that failed to evaluate wrote its own condition_error, every pass: 18,000
    identical rules in a loop of 10 passes wrote 180,000 events (a red-team helper's finding).
    Now the first CONDITION_ERRORS_SHOWN a node and decision, then one that counts the rest."""
    from workflows.engine.planner import CONDITION_ERRORS_SHOWN

    source, fallback = unique("source"), unique("fallback")
    targets = [unique(f"t{i}") for i in range(10)]
    run = run_to_end(api, {"nodes": [transform(source, "{}"), transform(fallback, "1"),
                                     *[transform(t, "1") for t in targets]],
                           "edges": [*[{"from": source, "to": t, "condition": "output.nope == 1"} for t in targets],
                                     {"from": source, "to": fallback}]}, {})
    assert run.status == "completed", run.error
    said = list(Event.objects.filter(run=run, type="condition_error").order_by("seq"))
    assert [e.data["to"] for e in said[:CONDITION_ERRORS_SHOWN]] == targets[:CONDITION_ERRORS_SHOWN]
    assert len(said) == CONDITION_ERRORS_SHOWN + 1 and said[-1].data["omitted"] == 10 - CONDITION_ERRORS_SHOWN
    assert node_runs(run)[fallback].status == "completed"  # every rule counted as false: the default edge
