"""Inputs past a limit, or that PostgreSQL cannot hold, are a 400 in the one error format, never a
413 or a 500: body size, node count, nesting depth, NUL characters, numbers beyond 64 bits."""

from __future__ import annotations

import gzip
import json
from collections import OrderedDict

import pytest
from django.conf import settings

from tests.api.factories import (
    API,
    assert_error,
    deep_workflow,
    fetch_then_store,
    many_nodes,
    post_raw,
    post_workflow,
    problems,
)
from workflows.definition.validation import json_depth
from workflows.limits import loads_storable, unstorable
from workflows.models import Artifact, Run, Workflow

MB = 1024 * 1024


def _body_of_size(size: int) -> str:
    """A valid create body of exactly ``size`` bytes, padded inside an http node's payload."""
    definition = fetch_then_store()
    definition["nodes"][0]["config"]["payload"] = ""
    empty = json.dumps({"tag_name": "big", "workflow": definition})
    definition["nodes"][0]["config"]["payload"] = "x" * (size - len(empty))
    body = json.dumps({"tag_name": "big", "workflow": definition})
    assert len(body) == size
    return body


def test_the_body_limit_is_one_megabyte():
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == MB


def test_a_body_of_exactly_one_megabyte_is_accepted(api):
    response = post_raw(api, "/workflows", _body_of_size(MB))

    assert response.status_code == 201, response.content[:300]


@pytest.mark.parametrize("size", [MB + 1, 2 * MB, 5 * MB])
def test_a_body_over_one_megabyte_is_a_400(api, size):
    body = assert_error(post_raw(api, "/workflows", _body_of_size(size)), 400, "body_too_large")

    assert body["details"]["rule"] == "body_too_large"
    assert not Workflow.objects.exists()


def test_a_body_over_one_megabyte_is_a_400_on_validate_and_patch_too(api):
    post_workflow(api, "small", fetch_then_store())
    padding = "x" * (MB + 10)

    validate = post_raw(api, "/workflows/validate", json.dumps({"workflow": {"nodes": [], "pad": padding}}))
    patch = api.generic("PATCH", f"{API}/workflows/small/patch", json.dumps(
        {"operations": [{"op": "add", "path": "/metadata", "value": {"description": padding}}]}),
        content_type="application/json")

    assert_error(validate, 400, "body_too_large")
    assert_error(patch, 400, "body_too_large")


def test_a_thousand_nodes_are_accepted(api):
    response = post_workflow(api, "wide", many_nodes(1000))

    assert response.status_code == 201, response.content[:300]
    assert response.json()["nodes_count"] == 1000


def test_a_thousand_and_one_nodes_are_a_400_max_nodes(api):
    body = assert_error(post_workflow(api, "wide", many_nodes(1001)), 400, "invalid_workflow")

    assert problems(body) == {("/nodes", "max_nodes")}
    assert not Workflow.objects.exists()


def test_validate_reports_max_nodes(api):
    response = api.post(f"{API}/workflows/validate", {"workflow": many_nodes(1001)}, format="json")

    assert response.json()["valid"] is False
    assert [(e["path"], e["rule"]) for e in response.json()["errors"]] == [("/nodes", "max_nodes")]


def test_nesting_64_deep_is_accepted(api):
    response = post_workflow(api, "deep", deep_workflow(64))

    assert response.status_code == 201, response.content[:300]


@pytest.mark.parametrize("depth", [65, 100, 900])
def test_nesting_deeper_than_64_is_a_400(api, depth):
    body = assert_error(post_workflow(api, "deep", deep_workflow(depth)), 400, "max_depth")

    assert body["details"]["rule"] == "max_depth"
    assert not Artifact.objects.exists()


@pytest.mark.parametrize("raw", [
    "[" * 100_000 + "]" * 100_000,
    "[" * 100_000,
    '{"a":' * 100_000 + "1" + "}" * 100_000,
    '{"tag_name": "deep", "workflow": {"nodes": ' + "[" * 100_000 + "]" * 100_000 + "}}",
], ids=["closed arrays", "unclosed arrays", "objects", "inside a workflow"])
def test_very_deep_nesting_is_a_400_not_a_500(api, raw):
    assert_error(post_raw(api, "/workflows", raw), 400, "max_depth")
    assert_error(post_raw(api, "/workflows/validate", raw), 400, "max_depth")


@pytest.mark.parametrize("raw", [
    '{"tag_name": "nul", "workflow": {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "\'\\u0000\'"}}]}}',
    '{"tag_name": "nul\\u0000", "workflow": {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "1"}}]}}',
    '{"tag_name": "nul", "workflow": {"nodes": [{"id": "a", "type": "transform", "config": {"template": {"k\\u0000": 1}}}]}}',
], ids=["in a value", "in the tag", "in a key"])
def test_a_nul_character_is_a_400(api, raw):
    assert_error(post_raw(api, "/workflows", raw), 400, "nul_character")
    assert not Workflow.objects.exists()


@pytest.mark.parametrize("raw", [
    '{"tag_name": "s", "workflow": {"nodes": [{"id": "a", "type": "transform", "config": {"template": "\\ud800"}}]}}',
    '{"tag_name": "s", "workflow": {"nodes": [{"id": "a", "type": "transform", "config": {"template": {"\\udfff": 1}}}]}}',
    '{"tag_name": "s", "workflow": {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "\'\\ud800\'"}}]}}',
], ids=["in a value", "in a key", "in an expression"])
def test_a_lone_surrogate_is_a_400(api, raw):
    assert_error(post_raw(api, "/workflows", raw), 400, "invalid_unicode")
    assert not Artifact.objects.exists()


def test_text_beyond_ascii_is_kept_as_it_was_sent(api):
    definition = fetch_then_store()
    definition["metadata"] = {"name": "Grüße, 東京 \U0001f680", "description": "SURROGATE_PAIR"}
    raw = json.dumps({"tag_name": "unicode", "workflow": definition}, ensure_ascii=False)
    raw = raw.replace("SURROGATE_PAIR", "\\ud83d\\ude80 as a pair of escapes")

    response = post_raw(api, "/workflows", raw.encode("utf-8"))

    assert response.status_code == 201, response.content[:300]
    stored = api.get(f"{API}/workflows/unicode", {"materialize": "true"}).json()["definition"]
    assert stored["metadata"] == {"name": "Grüße, 東京 \U0001f680", "description": "\U0001f680 as a pair of escapes"}


@pytest.mark.parametrize("number", [2**63, -(2**63) - 1, 10**30])
def test_an_integer_beyond_64_bits_is_a_400(api, number):
    raw = json.dumps({"tag_name": "big", "workflow": {**fetch_then_store(), "metadata": {"n": number}}})

    error = assert_error(post_raw(api, "/workflows", raw), 400, "integer_out_of_range")
    assert error["details"]["path"] == "/workflow/metadata/n", error  # where (the parser once named no place)


@pytest.mark.parametrize("number", [2**63 - 1, -(2**63)])
def test_an_integer_at_the_64_bit_edge_is_accepted(api, number):
    definition = {**fetch_then_store(), "metadata": {"n": number}}

    response = post_raw(api, "/workflows", json.dumps({"tag_name": "edge", "workflow": definition}))

    assert response.status_code == 201, response.content[:300]
    stored = api.get(f"{API}/workflows/edge", {"materialize": "true"}).json()["definition"]
    assert stored["metadata"]["n"] == number


@pytest.mark.parametrize("literal", ["1e20", "-1e19", "9.3e18", "1.5e300"])
def test_a_float_beyond_64_bits_is_a_400_as_the_integer_it_would_be_read_back_as(api, literal):
    """PostgreSQL's jsonb keeps 1e20 as the number it is and reads it back as an integer, 21 digits:
    taken, the definition a client read would be refused when saved back as read (the integers' rule)."""
    raw = json.dumps({"tag_name": "wide", "workflow": fetch_then_store()})
    raw = raw.replace('"method": "GET"', f'"method": "GET", "wide": {literal}')

    error = assert_error(post_raw(api, "/workflows", raw), 400, "integer_out_of_range")
    assert "64-bit range" in error["message"], error
    assert error["details"]["path"].endswith("/config/wide"), error  # where it is, in the details and the message
    assert error["details"]["path"] in error["message"]
    assert not Workflow.objects.exists()


def test_a_definition_with_floats_read_back_saves_again_as_read(api):
    definition = {**fetch_then_store(), "metadata": {"f": 9.2e18, "g": 1.5, "h": -1e-20}}
    assert post_raw(api, "/workflows", json.dumps({"tag_name": "floats", "workflow": definition})).status_code == 201
    read = api.get(f"{API}/workflows/floats", {"materialize": "true"}).json()["definition"]
    assert read["metadata"]["f"] == 9_200_000_000_000_000_000  # jsonb's reading: an integer, within 64 bits
    assert type(read["metadata"]["f"]) is int
    read["metadata"]["note"] = "saved again"

    again = post_raw(api, "/workflows", json.dumps({"tag_name": "floats", "workflow": read}))

    assert again.status_code == 201, again.content[:300]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_a_number_postgres_cannot_hold_is_a_400(api, literal):
    raw = json.dumps({"tag_name": "nan", "workflow": fetch_then_store()})
    raw = raw.replace('"method": "GET"', f'"method": "GET", "timeout_ms": {literal}')

    body = assert_error(post_raw(api, "/workflows", raw), 400, "invalid_number")
    # named where it is, as an integer past 64 bits is (one rule: ``limits.unstorable``)
    assert body["details"]["path"] == "/workflow/nodes/0/config/timeout_ms", body
    assert not Workflow.objects.exists()


def test_a_run_body_with_inputs_given_twice_is_a_400_naming_the_key_and_starts_nothing(api):
    """Python's parser keeps the last of a key given twice: the run started with ``{}``, the inputs
    the client wrote first lost without a word."""
    post_workflow(api, "dup", fetch_then_store())

    response = post_raw(api, "/workflows/dup/execute", '{"inputs": {"amount": 1000000, "approve": false}, "inputs": {}}')

    body = assert_error(response, 400, "duplicate_key")
    assert body["details"] == {"rule": "duplicate_key", "path": "/inputs"}, body
    assert not Run.objects.exists()


@pytest.mark.parametrize(("raw", "path"), [
    ('{"tag_name": "dup", "workflow": {"nodes": [NODE], "nodes": [], "edges": []}}', "/workflow/nodes"),
    ('{"tag_name": "dup", "workflow": {"nodes": [{"id": "a", "id": "b", "type": "http", "config": {}}], "edges": []}}',
     "/workflow/nodes/0/id"),
    ('{"tag_name": "dup", "workflow": {"nodes": [NODE], "edges": [], "metadata": {"a/~b": {"k": 1, "k": 1}}}}',
     "/workflow/metadata/a~1~0b/k"),
    # the outer key is named: the inner object that repeats one is in the value it lost
    ('{"tag_name": "dup", "workflow": {"nodes": [{"x": 1, "x": 2}], "nodes": [NODE], "edges": []}}', "/workflow/nodes"),
    # a key no answer could carry as it is (a lone surrogate is not UTF-8) is named by its escape
    ('{"tag_name": "dup", "workflow": {"nodes": [NODE], "edges": [], "metadata": {"\\ud800": 1, "\\ud800": 2}}}',
     "/workflow/metadata/\\ud800"),
], ids=["nodes", "a node's id", "an escaped key", "outermost", "a lone surrogate"])
def test_a_definition_with_a_key_given_twice_is_a_400_naming_its_path(api, raw, path):
    node = json.dumps(fetch_then_store()["nodes"][0])

    body = assert_error(post_raw(api, "/workflows", raw.replace("NODE", node)), 400, "duplicate_key")

    assert body["details"] == {"rule": "duplicate_key", "path": path}, body
    assert not Workflow.objects.exists()


def test_the_same_key_in_different_objects_is_accepted(api):
    definition = fetch_then_store()
    definition["metadata"] = {"a": {"k": 1}, "b": {"k": 1}, "k": [{"k": 1}, {"k": 2}]}

    assert post_raw(api, "/workflows", json.dumps({"tag_name": "same", "workflow": definition})).status_code == 201


@pytest.mark.parametrize(("raw", "code"), [
    (b"{", "malformed_json"),
    (b'{"tag_name": "x",}', "malformed_json"),
    (b"{'tag_name': 'x'}", "malformed_json"),
    (b"nodes: []", "malformed_json"),
    (b"\xff\xfe{}", "malformed_json"),
    (b"", "validation_error"),
    (b"[]", "validation_error"),
    (b'"a string"', "validation_error"),
], ids=["unclosed", "trailing comma", "single quotes", "yaml", "not utf-8", "empty", "an array", "a string"])
def test_malformed_json_is_a_400(api, raw, code):
    response = api.generic("POST", f"{API}/workflows", raw, content_type="application/json")

    assert_error(response, 400, code)
    assert not Workflow.objects.exists()


@pytest.mark.parametrize("coding", ["gzip", "br", " Deflate "])
def test_a_compressed_body_is_a_415_naming_its_coding(api, coding):
    """It was a 400 "request body is not UTF-8": true, and no help to a client that compresses."""
    response = api.generic("POST", f"{API}/workflows", gzip.compress(json.dumps({"tag_name": "z", "workflow": fetch_then_store()}).encode()),
                           content_type="application/json", HTTP_CONTENT_ENCODING=coding)

    assert_error(response, 415, "unsupported_media_type")
    assert response.json()["details"] == {"field": "Content-Encoding", "rule": "content_encoding",
                                          "accepted": ["identity"]}
    assert repr(coding.strip().lower()) in response.json()["message"]
    assert not Workflow.objects.exists()


def test_a_body_that_is_not_json_is_a_415_in_the_error_format(api):
    response = api.generic("POST", f"{API}/workflows", b"tag_name=x", content_type="application/x-www-form-urlencoded")

    assert_error(response, 415)


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/workflows/a%00b"),
    ("GET", "/workflows/a%00b/versions/0"),
    ("DELETE", "/workflows/a%00b"),
    ("PATCH", "/workflows/a%00b/patch"),
    ("POST", "/workflows/a%00b/execute"),
    ("GET", "/artifacts/sha256:%00"),
    ("GET", "/runs/%00"),
])
def test_a_nul_character_in_the_url_is_a_404_not_a_500(api, method, path):
    post_workflow(api, "a", fetch_then_store())

    response = api.generic(method, f"{API}{path}", '{"operations": [{"op": "test", "path": "/nodes", "value": []}]}',
                           content_type="application/json")

    assert_error(response, 404, "not_found")


def test_a_nul_character_in_a_query_filter_is_a_400(api):
    body = assert_error(api.get(f"{API}/runs", {"tag": "a\x00b"}), 400, "validation_error")

    assert body["details"]["field"] == "tag"


@pytest.mark.django_db
def test_more_query_parameters_than_django_reads_is_a_json_400_naming_the_rule(api):
    """Django refuses past DATA_UPLOAD_MAX_NUMBER_FIELDS before any view: its HTML page answered (a
    red-team helper's finding); every error is JSON."""
    response = api.get("/api/v1/runs?" + "&".join(f"p{i}=1" for i in range(1100)))
    assert response.status_code == 400 and response["Content-Type"].startswith("application/json")
    assert response.json() == {"error": "bad_request", "message": "at most 1000 parameters a request",
                               "details": {"rule": "too_many_fields_sent"}}


# Texts whose values are on either side of each part of ``unstorable``'s rule, and on either side
# of ``loads_storable``'s reasons to judge a value (an exponent, 19 digits, an escape).
EDGES = [
    "NaN", "-Infinity", "Infinity", "1e999", "-1e999", "1E400", "1e20", "-1e19", "9.3e18", "1.5E+19",
    "9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
    "9223372036854775807.0", "9223372036854775808.0", "-9223372036854775808.0", "-9223372036854775809.0",
    "9223372036854775296.0", "922337203685477580.7", "100000000000000000000", "99999999999999999999e-2",
    "1e-20", "1E-20", "1e-21", "-1e-21", "9.99e-21", "0.00000000000000000001", "0.000000000000000000001",
    "-0.0000000000000000000099", "5e-324", "0", "-0", "0.0", "-0.0", "0e0", "0E-400", "1e5", "1.5",
    "123456789012345678", "-123456789012345678", "1234567890123456789", "0.1234567890123456789",
    '"\\u0000"', '"a\\u0000b"', '"\\\\u0000"', '"\\ud800"', '"\\uDBFF"', '"\\udc00"', '"\\uDFFF"',
    '"\\ud83d\\ude00"', '"\\uD83D\\uDE00"', '"\\ud83d\\ud83d"', '"\\ude00\\ud83d"', '"\\\\ud800"',
    '"\\\\\\ud800"', '"\\ud83d\\\\ude00"', '"\\\\ud83d\\ude00"', '"\\u00e9"', '"\\u00e9\\u0000"', '"é"',
    '"\\ud7ff\\ue000"', '"NaN"', '"1e999"', '"12345678901234567890"', '"\\u0030e5"',
]


@pytest.mark.parametrize("int64", [True, False])
def test_a_value_is_refused_by_the_text_it_was_parsed_from_as_by_the_walk(int64):
    """``loads_storable`` skips the walk where the text cannot hold what ``unstorable`` refuses:
    it answers as the walk does, for each edge alone, as a key and inside a larger value."""
    texts = [*EDGES, *(f'{{"{edge[1:-1]}": 1}}' for edge in EDGES if edge.startswith('"'))]
    texts += [f'{{"a": [1, {{"b": {edge}}}, "x"], "c": 1.5}}' for edge in EDGES]
    texts += [f"[{a}, {b}]" for a in EDGES for b in EDGES[::7]]
    for text in texts:
        walked = unstorable(json.loads(text), int64=int64)

        value, found = loads_storable(text, int64=int64)

        assert found == walked, text
        assert json.dumps(value) == json.dumps(json.loads(text)), text


def test_json_depth_counts_each_level_of_dicts_and_lists_alike():
    assert [json_depth(value, 64) for value in (1, "x", {}, [], [1, "x"], {"a": [{}]}, [1, [2, [3]], {"b": {}}])] \
        == [0, 0, 1, 1, 1, 3, 3]
    assert json_depth([[[[0]]], [1, {"a": [[[[2]]]]}]], 64) == 7
    assert json_depth([[[[0]]]], 2) == 3  # past the limit: stops
    assert json_depth(OrderedDict(a=[OrderedDict(b=1)]), 64) == 3
