"""Numbers as PostgreSQL's jsonb keeps them: it stores the decimal Python wrote (a float's shortest
form, ``5e-324``) and writes it back out in full, without an exponent. Every size bound measures
the value as Python writes it (``canonical_json``), so a number other than 0 below 1e-20 is refused
(``workflows.limits.number_problem``, rule ``invalid_number``): 140,000 copies of ``5e-324`` were a
980 KB body, measured under AOB_DETAILS_MAX_BYTES and read back as 45.9 MB. And a float jsonb reads
back as another number (``1e16`` an integer, ``-0.0`` as ``0.0``) has the id of what is read back."""

from __future__ import annotations

import json

from django.db import connection

from tests.api.factories import API, assert_error, many_nodes, post_raw
from workflows.limits import SMALLEST
from workflows.models import Artifact, Run, content_id


def test_a_run_of_numbers_jsonb_writes_out_in_full_is_a_400_naming_where_and_starts_nothing(api):
    body = json.dumps({"workflow": many_nodes(1), "inputs": {"xs": [5e-324] * 140_000}}, separators=(",", ":"))

    error = assert_error(post_raw(api, "/runs", body), 400, "invalid_number")

    assert error["details"]["path"] == "/inputs/xs/0", error
    assert "/inputs/xs/0" in error["message"] and "326 characters" in error["message"], error
    assert not Run.objects.exists()


def test_a_number_at_the_bound_reads_back_from_the_database_at_most_17_characters_longer(api):
    numbers = [SMALLEST, -SMALLEST, 1.5e-20, -1.2345678901234567e-20, 1e-05, 0.0]
    started = api.post(f"{API}/runs", {"workflow": many_nodes(1), "inputs": {"xs": numbers}}, format="json")
    assert started.status_code == 201, started.content[:300]
    assert post_raw(api, "/runs", json.dumps({"workflow": many_nodes(1), "inputs": {"x": 9.99e-21}})).status_code == 400

    with connection.cursor() as cursor:  # the text PostgreSQL writes, as every read of the whole value answers
        cursor.execute("SELECT x::text FROM workflows_run, jsonb_array_elements(inputs -> 'xs') x WHERE id = %s",
                       [started.json()["run_id"]])
        written = [row[0] for row in cursor.fetchall()]

    assert written[0] == "0.00000000000000000001", written
    for number, text in zip(numbers, written, strict=True):
        assert float(text) == number
        assert len(text) - len(json.dumps(number)) <= 17, (number, text)


def test_a_stored_definition_reads_back_as_the_content_its_id_names(api):
    """``1e16`` and ``-0.0`` come back from jsonb as ``10000000000000000`` and ``0.0``: the id is of
    that, so a patch that changes nothing (one ``test`` operation) saves no new version."""
    definition = many_nodes(1)
    definition["metadata"] = {"name": "n", "scale": 1e16, "offset": -0.0, "wide": -1.5e18}
    saved = api.post(f"{API}/workflows", {"tag_name": "n", "workflow": definition}, format="json")
    assert saved.status_code == 201, saved.content[:300]
    artifact = Artifact.objects.get(pk=saved.json()["artifact_id"])
    assert artifact.content["metadata"]["scale"] == 10**16  # as jsonb reads it back
    assert content_id(artifact.content) == artifact.pk

    patched = api.patch(f"{API}/workflows/n/patch",
                        {"operations": [{"op": "test", "path": "/nodes/0/id", "value": "n0"}]}, format="json")

    assert patched.status_code == 200, patched.content[:300]
    assert patched.json()["artifact_id"] == saved.json()["artifact_id"], (saved.json(), patched.json())
