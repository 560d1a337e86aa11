"""A node run's heavy fields have their sizes kept by the database as each is written
(``NodeRun.input_bytes``, ``output_bytes``, ``attempt_log_bytes``; the trigger of migration 0020),
the same number the answers measured at every request before (``octet_length(field::text)``), so
``GET /runs/{id}/details`` and ``/output`` read a number instead of rendering up to eight 32 MiB
outputs a request. Rows written before the columns are measured as before."""

from __future__ import annotations

from typing import Any

from django.db import connection

from tests.conftest import wait_for_run
from tests.engine.flow import edge, submit, transform
from workflows.models import NodeRun

SIZED = ("input", "output", "attempt_log")


def unmatched(run_ids: list[str]) -> list[tuple[Any, ...]]:
    """Node runs whose kept sizes differ from their fields measured now."""
    checks = " OR ".join(f"{f}_bytes IS DISTINCT FROM octet_length({f}::text)" for f in SIZED)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT node_id, iteration, status, {', '.join(f + '_bytes' for f in SIZED)} "  # noqa: S608
                       f"FROM workflows_noderun WHERE run_id = ANY(%s::uuid[]) AND ({checks})", [run_ids])
        return cursor.fetchall()


def test_every_writer_keeps_the_sizes_the_answers_measured(engine: Any, api: Any) -> None:
    """Completed on a worker and in the decision, failed, skipped, a conditional's output and a
    loop's counters: each field's kept size is its measured size."""
    mixed = {"nodes": [transform("pure", "inputs.items", pure=True), transform("queued", "size(inputs.items)"),
                       {"id": "gate", "type": "conditional", "config": {}},
                       transform("yes", "'yes'"), transform("no", "'no'"), transform("broken", "1 / 0")],
             "edges": [edge("pure", "queued"), edge("queued", "gate"), edge("gate", "yes", "inputs.go"),
                       edge("gate", "no")]}
    looped = {"nodes": [transform("body", "iteration"),
                        {"id": "again", "type": "loop", "config": {"max_iterations": 3, "loop_back_to": "body",
                                                                   "condition": "true"}}],
              "edges": [edge("body", "again")]}
    runs = [submit(api, mixed, {"items": ["é" * 50, {"k": [1, 2.5, None]}], "go": True}), submit(api, looped)]
    finished = [wait_for_run(run_id) for run_id in runs]
    assert [r.status for r in finished] == ["failed", "completed"], [r.error for r in finished]
    rows = NodeRun.objects.filter(run_id__in=runs)
    assert rows.filter(output_bytes__isnull=False).count() >= 6  # outputs of both kinds of node were sized
    assert rows.filter(status="failed", attempt_log_bytes__gt=2).exists()  # the failed attempt's entry
    assert unmatched(runs) == []


def test_details_read_the_kept_size_and_measure_a_row_from_before(engine: Any, api: Any, settings: Any) -> None:
    settings.AOB_DETAILS_MAX_BYTES = 64 * 1024  # the output (300 kB) is past it: a marker with its size
    big = "x" * 300_000
    run_id = submit(api, {"nodes": [transform("one", f"'{big[:10]}' + inputs.pad")], "edges": []}, {"pad": big})
    assert wait_for_run(run_id).status == "completed"
    node_run = NodeRun.objects.get(run_id=run_id, node_id="one")
    measured = len(f'"{"x" * 10}{big}"')
    assert node_run.output_bytes == measured

    def shown_bytes() -> Any:
        node = api.get(f"/api/v1/runs/{run_id}/details").json()["nodes"][0]
        return node["output"]["bytes"]

    assert shown_bytes() == measured
    NodeRun.objects.filter(pk=node_run.pk).update(output_bytes=123_456)  # sets no field the trigger watches
    assert shown_bytes() == 123_456  # read, not measured
    NodeRun.objects.filter(pk=node_run.pk).update(output_bytes=None)  # a row from before the columns
    assert shown_bytes() == measured
