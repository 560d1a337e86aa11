"""Secrets API: write-only values. ``GET /secrets`` lists names and timestamps; ``PUT
/secrets/{name}`` sets a value; ``DELETE /secrets/{name}`` removes it. No answer carries a value."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from workflows.api.serializers import ErrorOut, StrictSerializer

from . import services
from .models import Secret
from .names import NAME

ERRORS = {400: ErrorOut, 401: ErrorOut, 404: ErrorOut}
# the service's rule, said in the document: a name outside it is a 400 naming the rule
NAME_PARAMETER = OpenApiParameter("name", {"type": "string", "pattern": f"^{NAME}$"}, OpenApiParameter.PATH)


class SecretIn(StrictSerializer):
    value = serializers.CharField(min_length=services.MIN_LENGTH, max_length=services.MAX_LENGTH,
                                  trim_whitespace=False, write_only=True)


class SecretOut(serializers.ModelSerializer):
    class Meta:
        model = Secret
        fields = ["name", "created_at", "updated_at"]


class SecretListView(APIView):
    serializer_class = SecretOut

    @extend_schema(responses={200: SecretOut(many=True), 401: ErrorOut})
    def get(self, request: Request) -> Response:
        return Response(SecretOut(Secret.objects.filter(owner=request.user).order_by("name"), many=True).data)


class SecretDetailView(APIView):
    serializer_class = SecretOut

    @extend_schema(request=SecretIn, responses={200: SecretOut, 201: SecretOut, **ERRORS}, parameters=[NAME_PARAMETER])
    def put(self, request: Request, name: str) -> Response:
        data = SecretIn(data=request.data)
        data.is_valid(raise_exception=True)
        secret, created = services.secret_set(owner=request.user, name=name, value=data.validated_data["value"])
        return Response(SecretOut(secret).data, status=201 if created else 200)

    @extend_schema(responses={204: None, **ERRORS}, parameters=[NAME_PARAMETER])
    def delete(self, request: Request, name: str) -> Response:
        services.secret_delete(owner=request.user, name=name)
        return Response(status=204)
