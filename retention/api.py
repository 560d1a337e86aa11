"""``POST /api/v1/prune`` (staff who may see and delete every owner's runs: ``MayPrune``): run
retention now, for at most ``AOB_PRUNE_REQUEST_S`` (``finished`` false: the rest is left to the next
prune, the beat's or a repeat), or with ``dry_run`` count what would go (each count up to
``AOB_PRUNE_PREVIEW_CAP``).

``POST /api/v1/runs/{id}/delete`` (the run's owner): delete one finished run as a prune would."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from workflows.api.serializers import ErrorOut, JSONBooleanField, StrictSerializer
from workflows.selectors import run_get
from workflows.visibility import reads_every_run

from .services import prune, run_remove


class PruneIn(StrictSerializer):
    dry_run = JSONBooleanField(required=False, default=False)


class MayPrune(BasePermission):
    """Staff whom the admin lets see and delete every owner's runs (its ``workflows.view_run`` and
    ``workflows.delete_run`` permissions; a superuser holds every permission): a prune deletes every
    owner's finished runs past retention, and a dry run counts them. Before (6 December), being staff
    was enough, though an operator may make a person staff to look after their own schedules."""

    message = ("a prune counts and deletes every owner's runs: it needs staff with the workflows.view_run and "
               "workflows.delete_run permissions")

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        return reads_every_run(user) and user.has_perm("workflows.delete_run")  # reads_every_run: staff


class PruneView(APIView):
    permission_classes = [MayPrune]

    @extend_schema(request=PruneIn, responses={200: OpenApiTypes.OBJECT, 400: ErrorOut, 401: ErrorOut,
                                               403: ErrorOut})
    def post(self, request: Request) -> Response:
        data = PruneIn(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(prune(dry_run=data.validated_data["dry_run"], within_s=settings.AOB_PRUNE_REQUEST_S))


class RunDeleteOut(serializers.Serializer):
    finished = serializers.BooleanField(help_text=(
        "false: AOB_PRUNE_REQUEST_S ran out before all of the run's rows were deleted; the same request "
        "again goes on (the run stays, finished, with some of its rows gone)"))


class RunDeleteView(APIView):
    @extend_schema(request=None, responses={204: None, 202: RunDeleteOut, 400: ErrorOut, 401: ErrorOut,
                                            404: ErrorOut, 409: ErrorOut})
    def post(self, request: Request, pk: str) -> Response:
        """Delete a finished run of the caller's with everything that is its own (node runs, events,
        patches, approvals, the agent journal), as a prune deletes one: what the owner's runs keep
        (``AOB_OWNER_STORAGE_BYTES``) goes down by what it kept. 409 ``run_not_finished``, or
        ``run_in_use`` while an unfinished run reads it (a parent waiting for its outcome, a replay)."""
        if run_remove(run=run_get(user=request.user, run_id=pk, change=True), user=request.user):
            return Response(status=204)
        return Response(RunDeleteOut({"finished": False}).data, status=202)
