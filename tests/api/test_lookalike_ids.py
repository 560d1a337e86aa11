"""A definition's patterns mean what JSON Schema (ECMA-262) says: ``$`` is the end of the text.

Python's ``re`` lets ``$`` match before a final line break, so ``^[a-zA-Z0-9_-]+$`` took
``"pay\\n"``: a node id shown as ``pay`` beside the real ``pay`` (to an approver reading a held
patch, on the run page), a node type shown as ``hitl`` that runs as an unknown type (skipped, so
nothing waits for anyone), a sub-workflow's tag that names no workflow. The editor's JavaScript,
on the same schema, refused them; the server stored them.
"""

from __future__ import annotations

import pytest

from tests.api.factories import API, assert_error, fetch_then_store, post_workflow, problems
from workflows.definition.validation import validate
from workflows.models import Workflow


def _definition(**second: str) -> dict:
    definition = fetch_then_store()
    definition["nodes"][1].update(second)
    return definition


@pytest.mark.parametrize(("field", "value"), [("id", "store\n"), ("id", "fetch\n"), ("type", "transform\n"),
                                              ("type", "hitl\n")])
def test_an_id_or_type_ending_in_a_line_break_is_refused_naming_the_pattern(api, field, value):
    definition = _definition(**{field: value})
    definition["edges"] = []

    body = assert_error(post_workflow(api, "lookalike", definition), 400, "invalid_workflow")

    assert (f"/nodes/1/{field}", "schema.pattern") in problems(body)
    assert not Workflow.objects.exists()
    checked = api.post(f"{API}/workflows/validate", {"workflow": definition}, format="json").json()
    assert (f"/nodes/1/{field}", "schema.pattern") in {(e["path"], e["rule"]) for e in checked["errors"]}


def test_a_config_pattern_is_held_to_the_end_of_the_text_too():
    child = {"id": "child", "type": "workflow", "config": {"tag": "billing\n"}}
    report = validate({"nodes": [child], "edges": []})

    assert ("/nodes/0/config/tag", "config.pattern") in {(p.path, p.rule) for p in report.errors}


def test_the_ids_the_pattern_allows_still_pass():
    definition = _definition(id="Store_2-b")
    definition["edges"] = [{"from": "fetch", "to": "Store_2-b"}]

    assert validate(definition).valid
