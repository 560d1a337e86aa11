"""``POST /api/v1/prune`` (staff who may see and delete every owner's runs: ``MayPrune``): run
retention now, for at most ``AOB_PRUNE_REQUEST_S`` (``finished`` false: the rest is left to the next
prune, the beat's or a repeat), or with ``dry_run`` count what would go (each count up to
``AOB_PRUNE_PREVIEW_CAP``).

``POST /api/v1/runs/{id}/delete`` (the run's owner): delete one finished run as a prune would.
``POST /api/v1/runs/delete``: delete the caller's finished runs a filter of the runs list chooses."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from workflows.api.filters import TAG_PARAM_PATTERN, RunFilter, checked, refuse
from workflows.api.serializers import ErrorOut, JSONBooleanField, StrictSerializer
from workflows.models import Run
from workflows.selectors import run_get, runs_owned
from workflows.visibility import reads_every_run

from .services import prune, run_remove, runs_remove, runs_remove_preview


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


@extend_schema_field(OpenApiTypes.DATETIME)
class _DateTimeText(serializers.CharField):
    """A date-time as the text the runs list's filter reads (``RunFilter`` judges it, one reading)."""


class RunsDeleteIn(StrictSerializer):
    """The runs list's filters (``GET /runs``: the same words, read by the same filter), at least one."""

    # no filter chose every run of the caller's: refused (``filter_required``); ``dry_run`` is none
    any_of_required = (("workflow",), ("status",), ("created_after",), ("created_before",))
    workflow = serializers.CharField(required=False, max_length=200, validators=[RegexValidator(TAG_PARAM_PATTERN)],
                                     help_text="runs of this workflow (tag)")
    status = serializers.ChoiceField(required=False, choices=list(Run.FINISHED), help_text="a finished status")
    created_after = _DateTimeText(required=False, max_length=64, help_text="created at or after (ISO 8601)")
    created_before = _DateTimeText(required=False, max_length=64, help_text="created before (ISO 8601)")
    dry_run = JSONBooleanField(required=False, default=False, help_text=(
        "true: delete nothing, count what would go and what would stay (RunsDeletePreviewOut)"))


class RunsDeletePreviewOut(serializers.Serializer):
    dry_run = serializers.BooleanField()
    would_delete = serializers.IntegerField(help_text="finished runs the filters choose that may go now")
    kept = serializers.IntegerField(help_text="finished runs the filters choose that an unfinished run reads")
    at_least = serializers.ListField(child=serializers.CharField(), help_text=(
        "the counts that reached AOB_PRUNE_PREVIEW_CAP, where counting stopped"))


class RunsDeleteOut(serializers.Serializer):
    deleted = serializers.IntegerField(help_text="runs deleted by this request")
    finished = serializers.BooleanField(help_text=(
        "false: AOB_PRUNE_REQUEST_S ran out first; the same request again goes on (202)"))
    kept = serializers.IntegerField(required=False, help_text=(
        "when finished: runs the filter matches that stay, as an unfinished run reads each (a parent waiting for "
        "its outcome, a replay of it), or another request held it"))


class RunsDeleteView(APIView):
    @extend_schema(operation_id="runs_delete_matching", request=RunsDeleteIn,
                   responses={200: PolymorphicProxySerializer("RunsDeleteAnswer", [RunsDeleteOut, RunsDeletePreviewOut],
                                                              resource_type_field_name=None),
                              202: RunsDeleteOut, 400: ErrorOut, 401: ErrorOut})
    def post(self, request: Request) -> Response:
        """Delete the caller's finished runs that the runs list's filters choose (workflow, status,
        created_after, created_before; at least one), each as ``POST /runs/{id}/delete`` deletes
        one, for at most ``AOB_PRUNE_REQUEST_S``: 202 when that ran out first (the same request goes on).
        With ``dry_run`` nothing is deleted: the answer counts what would go and what would stay."""
        data = RunsDeleteIn(data=request.data)
        data.is_valid(raise_exception=True)
        wanted = dict(data.validated_data)
        dry_run = wanted.pop("dry_run")
        if not wanted:
            raise refuse("created_before", "a filter is required: workflow, status, created_after or created_before "
                                           "(created_before now chooses every finished run of yours)", "filter_required")
        runs = checked(RunFilter(data=wanted, queryset=runs_owned(user=request.user)), wanted)
        if dry_run:
            return Response(RunsDeletePreviewOut(runs_remove_preview(runs=runs)).data)
        deleted, finished = runs_remove(runs=runs)
        if not finished:
            return Response(RunsDeleteOut({"deleted": deleted, "finished": False}).data, status=202)
        kept = runs.filter(status__in=Run.FINISHED).count()
        return Response(RunsDeleteOut({"deleted": deleted, "finished": True, "kept": kept}).data)
