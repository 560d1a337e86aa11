"""Strict outputs (workflows/engine/outputs.py): a value JSON cannot hold fails its node at once
with a message naming where it is (never three attempts and a WorkerLost); CEL timestamps,
durations and bytes are stored as ISO 8601 and base64 strings."""

from __future__ import annotations

import datetime
import json
import math
import tracemalloc
from pathlib import Path

import psutil
import pytest

from tests.engine.flow import edge, event_counts, http, node_runs, run_to_end, transform
from workflows.engine.outputs import NonJSONOutput, strict_json
from workflows.models import canonical_json, size_of, text_id


def test_an_http_body_with_nan_fails_the_node_at_once_naming_the_path(engine, api, remote):
    remote.script("nan", [{"ok": 1, "items": [{"x": math.nan}]}])  # json.dumps writes NaN
    run = run_to_end(api, {"nodes": [http("fetch", f"{remote.base}/seq/nan", retry={"max_attempts": 3}),
                                     transform("after", "1")],
                           "edges": [edge("fetch", "after")]})
    assert run.status == "failed"
    fetch = node_runs(run)["fetch"]
    assert fetch.status == "failed" and fetch.attempts == 1  # not retried, not lost
    assert fetch.error["error_type"] == "NonJSONOutput"
    assert fetch.error["path"] == "/body/items/0/x" and "/body/items/0/x" in fetch.error["message"]
    assert fetch.error["transient"] is False
    assert [entry["status"] for entry in fetch.attempt_log] == ["failed"]
    counts = event_counts(run)
    assert counts[("node_retrying", "fetch")] == 0
    assert run.error["error_type"] == "NonJSONOutput"


def test_cel_timestamps_durations_and_bytes_are_stored_as_strings(engine, api):
    conv = transform("conv", "{'t': timestamp('2024-01-02T03:04:05Z'), 'd': duration('90s'), 'b': b'hi', "
                             "'list': [duration('-1.5s'), timestamp('2024-01-02T03:04:05.25Z')], 1: 'one'}")
    run = run_to_end(api, {"nodes": [conv, transform("reads", "nodes.conv.t + ' / ' + nodes.conv.d")],
                           "edges": [edge("conv", "reads")]})
    assert run.status == "completed", run.error
    nrs = node_runs(run)
    assert nrs["conv"].output == {"t": "2024-01-02T03:04:05Z", "d": "PT1M30S", "b": "aGk=",
                                  "list": ["-PT1.5S", "2024-01-02T03:04:05.250000Z"], "1": "one"}
    assert nrs["conv"].attempts == 1
    assert nrs["reads"].output == "2024-01-02T03:04:05Z / PT1M30S"  # downstream reads strings


def test_infinity_from_cel_fails_the_node_and_nul_in_a_body_is_replaced(engine, api, remote):
    run = run_to_end(api, {"nodes": [transform("inf", "{'x': 1.0 / 0.0}")], "edges": []})
    assert run.status == "failed"
    assert node_runs(run)["inf"].error["error_type"] == "NonJSONOutput"
    assert node_runs(run)["inf"].error["path"] == "/x"

    remote.script("nul", [{"s": "a\u0000b"}])
    run = run_to_end(api, {"nodes": [http("fetch", f"{remote.base}/seq/nul")], "edges": []})
    assert run.status == "completed", run.error
    assert node_runs(run)["fetch"].output["body"] == {"s": "a\ufffdb"}


def test_a_tiny_number_is_stored_as_sent_and_measured_as_jsonb_writes_it(engine, api, remote):
    """A remote's p-value of 1e-30 is the output, as sent; its size is of the number written in
    full, as jsonb writes it back (``size_of``): 140,000 copies of 5e-324, a 1 MB answer,
    are 46 MB stored, past AOB_MAX_NODE_OUTPUT_BYTES (32 MiB), so the node fails by size, not
    retried, and stores nothing of it. Before, a number below 1e-20 failed the node as
    ``invalid_number`` whatever its size."""
    remote.script("tiny", [{"p": 1e-30, "items": [{"x": 5e-324}, {"x": -1.5e-300}], "s": "5e-324"}])
    run = run_to_end(api, {"nodes": [http("fetch", f"{remote.base}/seq/tiny")], "edges": []})
    assert run.status == "completed", run.error
    fetch = node_runs(run)["fetch"]
    assert fetch.output["body"] == {"p": 1e-30, "items": [{"x": 5e-324}, {"x": -1.5e-300}], "s": "5e-324"}
    assert run.usage["output_bytes"] >= size_of(canonical_json(fetch.output)) > 326 + 301 + 30

    remote.script("many", [{"xs": [5e-324] * 140_000}])
    run = run_to_end(api, {"nodes": [http("fetch", f"{remote.base}/seq/many", retry={"max_attempts": 3})],
                           "edges": []}, timeout=60)
    assert run.status == "failed"
    fetch = node_runs(run)["fetch"]
    assert fetch.status == "failed" and fetch.attempts == 1, fetch.error
    assert fetch.error["error_type"] == "OutputTooLarge" and fetch.error["bytes"] > 45_000_000, fetch.error
    assert fetch.output is None and fetch.output_artifact_id is None


def test_a_body_of_huge_numbers_fails_by_size_without_the_worker_writing_them_out(engine, api, remote):
    """A remote's 3.2 MB of ``1e300`` is 400,000 integers of 301 digits as jsonb writes them out
    (121 MB): measured from their exponents (``size_of``), past AOB_MAX_NODE_OUTPUT_BYTES, so the
    node fails by size, not retried, and no pool process grows by more than a few times the body.
    Before, every digit was written out (``canonical_json``) before any bound was judged: 50 times
    the body (a 10 MiB answer, the response bound, built 500 MB)."""
    pool = psutil.Process(engine["worker"].popen.pid).children()
    before = {proc.pid: _peak_reset(proc.pid) for proc in pool}
    remote.script("huge", [[1e300] * 400_000])  # "1e+300, " each

    run = run_to_end(api, {"nodes": [http("fetch", f"{remote.base}/seq/huge", retry={"max_attempts": 3})],
                           "edges": []}, timeout=60)

    grown = max(_peak(pid) - rss for pid, rss in before.items())
    assert grown < 48 * 1024 * 1024, f"a pool process grew by {grown} bytes for a 3.2 MB answer"
    assert run.status == "failed"
    fetch = node_runs(run)["fetch"]
    assert fetch.status == "failed" and fetch.attempts == 1, fetch.error
    assert fetch.error["error_type"] == "OutputTooLarge", fetch.error
    assert fetch.error["bytes"] > 400_000 * 302, fetch.error  # as jsonb would write it out
    assert fetch.output is None and fetch.output_artifact_id is None


def _peak_reset(pid: int) -> int:
    """Start ``pid``'s peak resident size (VmHWM) again from now; its resident size now."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status(pid, "VmRSS")


def _peak(pid: int) -> int:
    return _status(pid, "VmHWM")


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


# --- the rule itself (a pure function) ----------------------------------------------------------


def test_the_rule():
    assert strict_json({"a": [1, "x", None, True, 1.5]}) == {"a": [1, "x", None, True, 1.5]}
    assert strict_json({"t": datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC)}) == {"t": "2024-01-02T00:00:00Z"}
    assert strict_json(datetime.date(2024, 1, 2)) == "2024-01-02"
    assert strict_json(datetime.timedelta(days=1, seconds=1)) == "P1DT1S"
    assert strict_json(bytearray(b"\x00\xff")) == "AP8="
    assert strict_json({True: 1, 10: (3, 4), 2: 0}) == {"true": 1, "10": [3, 4], "2": 0}
    assert canonical_json(strict_json({"k": (1, 2)})) == canonical_json({"k": [1, 2]})
    assert strict_json({True: b"", 2: (3, 4)}) == {"true": "", "2": [3, 4]}
    assert strict_json("\ud800x\x00") == "\ufffdx\ufffd"
    assert strict_json({"e": [math.inf, -math.inf, math.nan]}, non_finite="null") == {"e": [None, None, None]}
    with pytest.raises(NonJSONOutput) as err:
        strict_json({"a/b": {"c": -math.inf}})
    assert err.value.extra["path"] == "/a~1b/c"
    with pytest.raises(NonJSONOutput) as err:
        strict_json({"x": object()})
    assert err.value.extra["path"] == "/x" and err.value.extra["type"] == "object"
    assert strict_json({"x": ValueError("boom")}, non_finite="null") == {"x": "boom"}  # an error payload
    assert strict_json({"x": [1e-20, "1e-300", -5e-324]}) == {"x": [1e-20, "1e-300", -5e-324]}


def test_huge_numbers_are_measured_without_being_written_out():
    """``1e300`` is 301 digits as jsonb writes it out: measured (``size_of``) and hashed
    (``text_id``, as the integer read back) from the text as Python writes it, never built."""
    body = {"body": [1e300, -1.5e300] * 85_000}
    sent = len(json.dumps(body))  # 1.2 MB; written out, 51 MB
    tracemalloc.start()
    try:
        text = canonical_json(strict_json(body))
        size = size_of(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert size == len('{"body":[]}') + 85_000 * (301 + 1 + 302 + 1) - 1
    assert peak < 8 * sent, f"{peak} bytes held to measure {sent} characters"
    assert text_id(canonical_json([1.5e300, -0.0])) == text_id("[" + "15" + "0" * 299 + ",0.0]")
