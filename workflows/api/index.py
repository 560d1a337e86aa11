"""The API's front door: ``GET /api/v1/`` (what is where) and ``GET /api/v1/node-types`` (the
registry's node types with their config JSON Schemas, which the visual builder draws from)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from workflows import registry

from .serializers import ErrorOut

# Where a config value may point, shown beside every config form of the builder.
REFERENCE_HELP = {
    "$inputs.<path>": "a value of the run's inputs, with its type (a whole string), e.g. $inputs.customer.name",
    "$nodes.<id>.<path>": "an upstream node's output, with its type, e.g. $nodes.fetch.body.items",
    "${…}": "either reference inside a longer string, as text, e.g. \"Hello ${$inputs.name}\"",
    "CEL": "conditions and transform expressions are CEL over inputs and nodes; `$.x` means output.x",
}


class IndexOut(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.CharField()
    docs = serializers.DictField(child=serializers.CharField())
    auth = serializers.DictField(child=serializers.CharField())
    endpoints = serializers.DictField(child=serializers.CharField())


class ApiIndexView(APIView):
    """What is where: docs, authentication and the collections."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(responses={200: IndexOut})
    def get(self, request: Request) -> Response:
        def url(name: str) -> str:
            return reverse(name, request=request)

        return Response(IndexOut({
            "name": "AOB API", "version": "v1",
            "docs": {"swagger_ui": url("api-docs"), "redoc": url("api-redoc"), "openapi": url("openapi"),
                     "workflow_schema": url("workflow-schema")},
            "auth": {"token": url("auth-token"),
                     "header": "Authorization: Token <key> (or Bearer <key>); the web UI's session works too"},
            "endpoints": {"health": url("health"), "me": url("auth-me"), "node_types": url("node-types"),
                          "workflows": url("workflow-list"), "validate": url("workflow-validate"),
                          "runs": url("run-list"), "approvals": url("approval-list")},
        }).data)


class NodeTypeOut(serializers.Serializer):
    type = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    inline = serializers.BooleanField(help_text="evaluated by the coordinator, no worker hop")
    config_schema = serializers.JSONField(help_text="the JSON Schema a node's config must match")


class NodeTypesOut(serializers.Serializer):
    types = NodeTypeOut(many=True)
    references = serializers.DictField(child=serializers.CharField(),
                                       help_text="how a config value refers to inputs and upstream outputs")


def node_types() -> list[dict[str, Any]]:
    return [{"type": name, "description": spec.description, "inline": spec.inline,
             "config_schema": spec.config_schema} for name, spec in sorted(registry.catalogue().items())]


class NodeTypesView(APIView):
    """The node types a definition may use, from the executor registry."""

    @extend_schema(responses={200: NodeTypesOut, 401: ErrorOut}, operation_id="node_types_list")
    def get(self, request: Request) -> Response:
        return Response(NodeTypesOut({"types": node_types(), "references": REFERENCE_HELP}).data)


__all__ = ["ApiIndexView", "NodeTypesView", "OpenApiTypes"]
