"""``POST /api/v1/prune`` (staff): run retention now, for at most ``AOB_PRUNE_REQUEST_S`` (``finished``
false: the rest is left to the next prune, the beat's or a repeat), or with ``dry_run`` count what
would go (each count up to ``AOB_PRUNE_PREVIEW_CAP``)."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from workflows.api.serializers import ErrorOut, JSONBooleanField, StrictSerializer

from .services import prune


class PruneIn(StrictSerializer):
    dry_run = JSONBooleanField(required=False, default=False)


class PruneView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(request=PruneIn, responses={200: OpenApiTypes.OBJECT, 400: ErrorOut, 401: ErrorOut,
                                               403: ErrorOut})
    def post(self, request: Request) -> Response:
        data = PruneIn(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(prune(dry_run=data.validated_data["dry_run"], within_s=settings.AOB_PRUNE_REQUEST_S))
