"""Model serializers build their fields once per class (``FieldsBuiltOnce``): every instance
still gets fields of its own, and answers exactly what DRF's per-instance build answers."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework import serializers

from tests.conftest import set_inputs, stored_run
from workflows.api import serializers as s
from workflows.engine import events
from workflows.models import Event, NodeRun, Run


def rebuilt_per_instance(cls: type[serializers.ModelSerializer]) -> type[serializers.ModelSerializer]:
    """The same serializer with DRF's own ``get_fields``: built anew for each instance."""
    return type(f"Rebuilt{cls.__name__}", (cls,), {"get_fields": serializers.ModelSerializer.get_fields})


def shape(serializer: serializers.Serializer) -> dict[str, Any]:
    return {name: (type(field).__name__, field.source, field.read_only, field.allow_null)
            for name, field in serializer.fields.items()}


@pytest.mark.parametrize("cls", [s.RunOut, s.RunResultOut, s.EventOut])
def test_fields_built_once_answer_as_fields_built_per_instance(cls: Any, make_user: Any) -> None:
    run = stored_run(make_user())
    set_inputs(run, {"x": [1, 2]}, usage={"tokens": 3})
    events.append(run.pk, run.owner_id, [(Event.Type.WORKFLOW_STARTED, "", {"why": "test"})])
    instance = Event.objects.get(run=run) if cls is s.EventOut else Run.objects.get(pk=run.pk)

    first, second, plain = cls(instance), cls(instance), rebuilt_per_instance(cls)(instance)
    assert first.data == second.data == plain.data
    assert shape(first) == shape(plain)
    assert all(first.fields[name] is not second.fields[name] for name in first.fields)  # each binds its own
    assert all(field.parent is first for field in first.fields.values())


def test_a_serializer_kept_per_thread_answers_as_a_fresh_one(make_user: Any) -> None:
    from workflows import selectors

    owner = make_user()
    runs = [stored_run(owner), stored_run(owner, {"nodes": [
        {"id": "a", "type": "transform", "config": {"expression": "1"}},
        {"id": "b", "type": "transform", "config": {"expression": "2"}}], "edges": [{"from": "a", "to": "b"}]})]
    set_inputs(runs[0], {"x": [1, 2]}, status=Run.Status.COMPLETED)
    kept = s.RenderedPerThread(s.RunDetailsOut)

    # one kept serializer renders each run as a fresh serializer does, nothing carried over
    for run in [*runs, runs[0]]:
        details = selectors.run_details(run=selectors.run_get(user=owner, run_id=run.pk))
        assert kept.render(details) == s.RunDetailsOut(details).data

    # a run that moved on between two answers: the second shows where it is now (details, and
    # GET /runs/{id}'s RunResultOut)
    result = s.RenderedPerThread(s.RunResultOut)
    before = kept.render(selectors.run_details(run=selectors.run_get(user=owner, run_id=runs[1].pk)))
    assert result.render(Run.objects.get(pk=runs[1].pk))["output"] is None
    NodeRun.objects.create(run=runs[1], node_id="b", node_type="transform", status=NodeRun.Status.COMPLETED,
                           output={"x": 2}, consumed=True)
    Run.objects.filter(pk=runs[1].pk).update(status=Run.Status.COMPLETED)
    details = selectors.run_details(run=selectors.run_get(user=owner, run_id=runs[1].pk))
    after = kept.render(details)
    assert after == s.RunDetailsOut(details).data
    assert (before["run"]["status"], before["run"]["output"]) == ("queued", None)
    assert (after["run"]["status"], after["run"]["output"]) == ("completed", {"b": {"x": 2}})
    completed = Run.objects.get(pk=runs[1].pk)
    assert result.render(completed) == s.RunResultOut(completed).data
    assert result.render(completed)["output"] == {"b": {"x": 2}}

    started = s.RenderedPerThread(s.RunStartedOut)
    assert started.render(runs[1]) == s.RunStartedOut(runs[1]).data


def test_each_thread_keeps_its_own_serializer() -> None:
    import threading

    kept = s.RenderedPerThread(s.RunStartedOut)
    run = Run(tag="t", base_artifact_id="sha256:x", status=Run.Status.QUEUED)
    seen = []

    def render() -> None:
        kept.render(run)
        seen.append(kept._local.serializer)

    threads = [threading.Thread(target=render) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    render()

    assert len({id(serializer) for serializer in seen}) == 3
