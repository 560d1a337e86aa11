"""The OpenAPI document says exactly what the server accepts.

- Request bodies of ``StrictSerializer``\\ s refuse unknown fields, so their schemas say
  ``additionalProperties: false``; ``min_properties``, ``one_of_required`` and ``any_of_required`` on
  a serializer become ``minProperties``, ``oneOf`` and ``anyOf`` (rules the view or ``validate`` checks).
- Every operation says the answers of the API's edges: a 400 for a query parameter given twice or
  undeclared (``QueryParametersMiddleware``), a 415 for a body that is not JSON (``StrictJSONParser``).
- Links from the answers that create things to the operations that read and act on them, so a
  stateful client (schemathesis) can walk from a new workflow to its versions and runs, and from a
  run to its patches, timeline and approvals.

Imported by ``workflows.api.urls``, which registers the serializer extension before any schema is
generated; the links are a drf-spectacular post-processing hook (``SPECTACULAR_SETTINGS``).
"""

from __future__ import annotations

from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.views import SpectacularAPIView
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from workflows.api.params import query_choice

TAG = "$response.body#/tag"
RUN = "$response.body#/run_id"


class StrictSerializerExtension(OpenApiSerializerExtension):
    target_class = "workflows.api.serializers.StrictSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        if direction == "request":
            schema["additionalProperties"] = False
            minimum = getattr(self.target, "min_properties", None)
            if minimum:
                schema["minProperties"] = minimum
            one_of = getattr(self.target, "one_of_required", None)
            if one_of:
                schema["oneOf"] = [{"required": list(names)} for names in one_of]
            any_of = getattr(self.target, "any_of_required", None)
            if any_of:
                schema["anyOf"] = [{"required": list(names)} for names in any_of]
        return schema


def _link(operation_id: str, description: str, **parameters: str) -> dict[str, Any]:
    return {"operationId": operation_id, "description": description, "parameters": parameters}


# (path, method, status) -> links from that answer
LINKS: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}


def _workflow_links() -> dict[str, dict[str, Any]]:
    return {
        "GetWorkflow": _link("workflows_retrieve", "the workflow", tag=TAG),
        "ListVersions": _link("workflows_versions_list", "its versions", tag=TAG),
        "GetVersion": _link("workflows_versions_retrieve", "this version", tag=TAG, seq="$response.body#/version"),
        "Execute": _link("workflows_execute_create", "run it", tag=TAG),
        "PatchWorkflow": _link("workflows_patch_partial_update", "a design-time patch", tag=TAG),
        "ListRuns": _link("workflows_runs_list", "its runs", tag=TAG),
    }


def _run_links() -> dict[str, dict[str, Any]]:
    return {
        "GetRun": _link("runs_retrieve", "the run, its output and duration", id=RUN),
        "GetDetails": _link("runs_details_retrieve", "each node's state", id=RUN),
        "GetTimeline": _link("runs_timeline_retrieve", "each node run's timings", id=RUN),
        "ListEvents": _link("runs_events_list", "what happened", id=RUN),
        "ListPatches": _link("runs_patches_list", "its patches", id=RUN),
        "ProposePatch": _link("runs_patches_create", "patch the running run", id=RUN),
        "ListApprovals": _link("approvals_list", "its approvals", run=RUN),
        "RaiseBudget": _link("runs_budget_create", "raise its spend ceilings", id=RUN),
        "Cancel": _link("runs_cancel_create", "cancel it", id=RUN),
    }


def _fill_links() -> None:
    if LINKS:
        return
    for path, method, status in (("/api/v1/workflows", "post", "201"), ("/api/v1/workflows", "post", "200"),
                                 ("/api/v1/workflows/{tag}/patch", "patch", "200")):
        LINKS[(path, method, status)] = _workflow_links()
    for path, method, status in (("/api/v1/runs", "post", "201"), ("/api/v1/workflows/{tag}/execute", "post", "201"),
                                 ("/api/v1/runs/{id}/nodes/{node_id}/replay", "post", "201")):
        LINKS[(path, method, status)] = _run_links()
    LINKS[("/api/v1/runs/{id}/patches", "post", "201")] = {
        "GetPatch": _link("runs_patches_retrieve", "the patch", id="$request.path.id", seq="$response.body#/seq"),
        "GetRun": _link("runs_retrieve", "the patched run", id="$request.path.id"),
    }
    LINKS[("/api/v1/approvals", "get", "200")] = {
        "GetApproval": _link("approvals_retrieve", "the first approval", id="$response.body#/results/0/id"),
        "Decide": _link("approvals_decide_create", "decide it", id="$response.body#/results/0/id"),
    }
    LINKS[("/api/v1/approvals/{id}/decide", "post", "200")] = {
        "GetApproval": _link("approvals_retrieve", "the decided approval", id="$request.path.id"),
        "GetRun": _link("runs_retrieve", "its run", id="$response.body#/run_id"),
    }
    LINKS[("/api/v1/runs", "get", "200")] = {
        "GetFirstRun": _link("runs_retrieve", "the newest run", id="$response.body#/results/0/run_id"),
        "GetFirstTimeline": _link("runs_timeline_retrieve", "its timeline", id="$response.body#/results/0/run_id"),
        "ListFirstPatches": _link("runs_patches_list", "its patches", id="$response.body#/results/0/run_id"),
    }
    LINKS[("/api/v1/workflows", "get", "200")] = {
        "GetFirstWorkflow": _link("workflows_retrieve", "the first workflow", tag="$response.body#/results/0/tag"),
        "ListFirstVersions": _link("workflows_versions_list", "its versions", tag="$response.body#/results/0/tag"),
    }


def add_links(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular post-processing hook: OpenAPI links on the answers above; and a body whose
    schema asks for at least one property is a required body (an absent body has none)."""
    schemas = result.get("components", {}).get("schemas", {})
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            if not body:
                continue
            ref = body.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
            if schemas.get(ref.rsplit("/", 1)[-1], {}).get("minProperties"):
                body["required"] = True
    _fill_links()
    for (path, method, status), links in LINKS.items():
        response = result.get("paths", {}).get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is not None:
            response["links"] = links
    return result


class JsonAsides(APIView):
    """The document's views (the schema, Swagger UI, ReDoc) render the document in its formats and
    all else as the rest of the API does, in JSON: errors (a 405 was YAML or HTML) and OPTIONS
    (Swagger UI's was a 500: its renderer has no template for it). An unknown ``?format=`` is a 400
    naming the formats (it was a bare 404)."""

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[BaseRenderer, str]:
        if not force:
            query_choice(request, api_settings.URL_FORMAT_OVERRIDE or "format",
                         sorted({renderer.format for renderer in self.get_renderers()}))
        return super().perform_content_negotiation(request, force)

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        if getattr(response, "exception", False) or request.method == "OPTIONS":
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)


class SchemaView(JsonAsides, SpectacularAPIView):
    """``GET /api/v1/schema/``: the document, generated once a process. It is the same for every
    caller (``SERVE_PUBLIC``: anonymous ones too) and for the process's life (its views are code);
    generating it took 70 ms of the web's CPU a request (290 ms the first), and anonymous callers
    from eight addresses held every thread with it (a red team's measure). It is rendered per
    request (YAML 25 ms, JSON 7 ms). One version: a ``?version=`` is not read (each would have been
    a document of its own to keep)."""

    _document: dict[str, Any] | None = None

    def _get_version_parameter(self, request: Any) -> None:
        return None

    def _get_schema_response(self, request: Any) -> Response:
        if SchemaView._document is None:
            generator = self.generator_class(urlconf=self.urlconf, api_version=self.api_version, patterns=self.patterns)
            SchemaView._document = generator.get_schema(request=request, public=self.serve_public)
        return Response(data=SchemaView._document,
                        headers={"Content-Disposition": f'inline; filename="{self._get_filename(request, None)}"'})


@receiver(setting_changed)
def _schema_again(**_: Any) -> None:
    """A setting changed (in tests): the document is generated again at its next request."""
    SchemaView._document = None


def require_bodies(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """An operation whose body must name something (``minProperties``, ``oneOf``, ``anyOf``: a
    ``StrictSerializer``'s rules) requires a body: drf-spectacular required one only for a required
    field, so a request without any was schema-valid, and refused (schemathesis)."""
    schemas = result.get("components", {}).get("schemas", {})
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            for media in (body or {}).get("content", {}).values():
                name = media.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1]
                if {"minProperties", "oneOf", "anyOf"} & set(schemas.get(name, {})):
                    body["required"] = True
    return result


def declare_edges(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """What every operation may answer before its view runs: a 400 for a query parameter given twice
    or not declared (``QueryParametersMiddleware``, on every API path), and a 415 for a body that is
    not JSON where an operation takes one (``StrictJSONParser``)."""
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}, "description": ""}
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            responses.setdefault("400", dict(error))
            if operation.get("requestBody"):
                responses.setdefault("415", dict(error))
    return result
