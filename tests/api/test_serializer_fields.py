"""Model serializers build their fields once per class (``FieldsBuiltOnce``): every instance
still gets fields of its own, and answers exactly what DRF's per-instance build answers."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework import serializers

from tests.conftest import stored_run
from workflows.api import serializers as s
from workflows.engine import events
from workflows.models import Event, Run


def rebuilt_per_instance(cls: type[serializers.ModelSerializer]) -> type[serializers.ModelSerializer]:
    """The same serializer with DRF's own ``get_fields``: built anew for each instance."""
    return type(f"Rebuilt{cls.__name__}", (cls,), {"get_fields": serializers.ModelSerializer.get_fields})


def shape(serializer: serializers.Serializer) -> dict[str, Any]:
    return {name: (type(field).__name__, field.source, field.read_only, field.allow_null)
            for name, field in serializer.fields.items()}


@pytest.mark.parametrize("cls", [s.RunOut, s.RunResultOut, s.EventOut])
def test_fields_built_once_answer_as_fields_built_per_instance(cls: Any, make_user: Any) -> None:
    run = stored_run(make_user())
    Run.objects.filter(pk=run.pk).update(inputs={"x": [1, 2]}, usage={"tokens": 3})
    events.append(run.pk, run.owner_id, [(Event.Type.WORKFLOW_STARTED, "", {"why": "test"})])
    instance = Event.objects.get(run=run) if cls is s.EventOut else Run.objects.get(pk=run.pk)

    first, second, plain = cls(instance), cls(instance), rebuilt_per_instance(cls)(instance)
    assert first.data == second.data == plain.data
    assert shape(first) == shape(plain)
    assert all(first.fields[name] is not second.fields[name] for name in first.fields)  # each binds its own
    assert all(field.parent is first for field in first.fields.values())
