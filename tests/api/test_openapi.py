"""The OpenAPI 3 document is served, valid, generated without warnings, and describes the API;
the workflow JSON Schema is served as the file the validator uses."""

from __future__ import annotations

import io
import json

import pytest
import yaml
from django.core.management import call_command
from django.test import Client
from drf_spectacular.drainage import GENERATOR_STATS
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from rest_framework.test import APIClient

from tests.api.factories import API, fetch_then_store, loop_workflow
from workflows.definition.validation import SCHEMA_PATH

PATHS = {
    "/api/v1/workflows": {"get", "post"},
    "/api/v1/workflows/{tag}": {"get", "delete"},
    "/api/v1/workflows/{tag}/patch": {"patch"},
    "/api/v1/workflows/{tag}/versions": {"get"},
    "/api/v1/workflows/{tag}/versions/{seq}": {"get"},
    "/api/v1/workflows/{tag}/execute": {"post"},
    "/api/v1/workflows/validate": {"post"},
    "/api/v1/artifacts/{artifact_id}": {"get"},
    "/api/v1/auth/token": {"post", "delete"},
    "/api/v1/health": {"get"},
    "/api/v1/schema/workflow": {"get"},
    "/api/v1/runs": {"get", "post"},
    "/api/v1/runs/{id}/nodes/{node_id}/iterations/{iteration}/{field}": {"get"},
    "/api/v1/runs/{id}/inputs": {"get"},
    "/api/v1/runs/{id}/output": {"get"},
}


def openapi_json(client: APIClient, **request: str) -> dict:
    response = client.get(f"{API}/schema/", **request)
    assert response.status_code == 200, response.content[:300]
    assert "json" in response["Content-Type"], response["Content-Type"]
    return json.loads(response.content)


@pytest.mark.parametrize("request_kwargs", [{"data": {"format": "json"}},
                                            {"HTTP_ACCEPT": "application/vnd.oai.openapi+json"},
                                            {"HTTP_ACCEPT": "application/json"}],
                         ids=["?format=json", "Accept: openapi+json", "Accept: json"])
def test_the_openapi_document_is_served_as_valid_openapi_3(api, request_kwargs):
    document = openapi_json(api, **request_kwargs)

    assert document["openapi"].startswith("3.")
    validate(document)  # raises OpenAPIValidationError with the offending path


def test_the_openapi_document_is_yaml_by_default(api):
    response = api.get(f"{API}/schema/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    assert yaml.safe_load(response.content) == openapi_json(api, data={"format": "json"})


def test_the_openapi_document_is_public(db):
    document = openapi_json(APIClient(), data={"format": "json"})

    validate(document)


def test_the_openapi_document_describes_every_endpoint(api):
    document = openapi_json(api, data={"format": "json"})

    for path, methods in PATHS.items():
        assert path in document["paths"], path
        assert methods <= set(document["paths"][path]), (path, set(document["paths"][path]))


def test_token_and_session_authentication_are_declared(api):
    document = openapi_json(api, data={"format": "json"})

    schemes = document["components"]["securitySchemes"]
    assert {"type": "apiKey", "in": "header", "name": "Authorization"}.items() <= schemes["tokenAuth"].items()
    assert schemes["cookieAuth"]["in"] == "cookie"
    security = document["paths"]["/api/v1/workflows"]["post"]["security"]
    assert {"tokenAuth": []} in security


def test_errors_are_documented_in_the_one_error_format(api):
    document = openapi_json(api, data={"format": "json"})

    create = document["paths"]["/api/v1/workflows"]["post"]["responses"]
    assert {"200", "201", "400", "401"} <= set(create)
    ref = create["400"]["content"]["application/json"]["schema"]["$ref"]
    error = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert set(error["properties"]) == {"error", "message", "details"}


def test_the_schema_generates_without_warnings_and_validates(tmp_path):
    GENERATOR_STATS.reset()
    stderr = io.StringIO()

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "openapi.yaml"),
                 stderr=stderr)

    assert stderr.getvalue() == ""
    validate(yaml.safe_load((tmp_path / "openapi.yaml").read_text()))


def test_the_interactive_docs_are_served(api):
    response = api.get(f"{API}/docs/")

    assert response.status_code == 200
    assert b"swagger" in response.content.lower()
    assert f"{API}/schema/".encode() in response.content


def test_the_workflow_json_schema_is_served(db):
    response = APIClient().get(f"{API}/schema/workflow")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    schema = response.json()
    assert schema == json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    assert validator.is_valid(fetch_then_store())
    assert validator.is_valid(loop_workflow())
    assert not validator.is_valid({"nodes": [{"id": "bad id", "type": "http"}]})
    assert not validator.is_valid({"nodes": [{"id": "a", "type": "http"}], "extra": True})


# Answers that are documents of their own, not API objects.
FREE_FORM = {"/api/v1/schema/workflow": "the workflow JSON Schema", "/api/v1/prune": "counts by kind of row"}


def test_every_answer_with_a_body_is_a_named_output_serializer(api):
    document = openapi_json(api, data={"format": "json"})

    unnamed = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation.get("responses", {}).items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if schema is not None and "$ref" not in json.dumps(schema) and path not in FREE_FORM:
                    unnamed.append(f"{method.upper()} {path} {status}")

    assert unnamed == []


def test_options_on_the_docs_pages_is_json(db):
    """OPTIONS on Swagger UI went through its page's renderer, which has no template for it: a 500."""
    for url in (f"{API}/docs/", f"{API}/redoc/", f"{API}/schema/"):
        response = Client(raise_request_exception=False).options(url)

        assert response.status_code == 200, (url, response.content[:200])
        assert response["Content-Type"].startswith("application/json"), (url, response["Content-Type"])


@pytest.mark.parametrize(("method", "url", "status"), [
    ("post", "/schema/", 405), ("delete", "/schema/", 405), ("post", "/docs/", 405), ("delete", "/docs/", 405),
    ("post", "/redoc/", 405), ("delete", "/redoc/", 405), ("get", "/schema/?format=xml", 400),
])
def test_errors_of_the_document_and_its_pages_are_json(db, method, url, status):
    """They were rendered as the document is (YAML) or as the page (HTML); an unknown ?format= was a
    bare 404 naming neither the parameter nor the formats it takes."""
    response = getattr(Client(raise_request_exception=False), method)(API + url)

    assert response.status_code == status, response.content[:200]
    assert response["Content-Type"].startswith("application/json"), (response["Content-Type"], response.content[:120])
    assert set(response.json()) == {"error", "message", "details"}
    if status == 400:
        assert response.json()["details"] == {"field": "format", "rule": "enum", "allowed": ["json", "yaml"]}


@pytest.mark.parametrize(("method", "url", "body", "content_type", "status"), [
    ("post", "/runs", b"inputs=1", "application/x-www-form-urlencoded", "415"),
    ("put", "/secrets/S1", b"value=x", "text/plain", "415"),
    ("get", "/health?verbose=1", None, None, "400"),
    ("get", "/secrets?limit=5", None, None, "400"),
])
def test_the_document_declares_the_answers_of_the_api_s_edges(api, method, url, body, content_type, status):
    """A body that is not JSON (415) and an undeclared query parameter (400) are answered before any
    view runs, on every operation; the document said neither but on the hooks' delivery."""
    response = (api.generic(method.upper(), API + url, body, content_type=content_type) if body is not None
                else getattr(api, method)(API + url))
    assert str(response.status_code) == status

    document = openapi_json(api, data={"format": "json"})
    responses = document["paths"][API + url.split("?")[0].replace("/S1", "/{name}")][method]["responses"]
    assert status in responses, sorted(responses)
    assert responses[status]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/ErrorOut"
