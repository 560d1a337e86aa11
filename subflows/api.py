"""``GET /runs/{id}/family``: a run's parent (if it is a child run) and its children, a page of
them (``?limit=``, ``?offset=``) with their total and the next page's link."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from workflows.api.pagination import BoundedLimitOffsetPagination
from workflows.api.serializers import ErrorOut
from workflows.selectors import run_get

from .selectors import CHILDREN_SHOWN, run_family


class RelativeOut(serializers.Serializer):
    run_id = serializers.UUIDField()
    node_id = serializers.CharField(help_text="the parent's workflow node")
    status = serializers.CharField()


class FamilyOut(serializers.Serializer):
    parent = RelativeOut(allow_null=True)
    children = RelativeOut(many=True, help_text=f"oldest first, a page of them: ?limit= ({CHILDREN_SHOWN} by "
                                                "default, at most 1000) from ?offset=")
    children_total = serializers.IntegerField(help_text="the children this user may see, on every page")
    next = serializers.URLField(allow_null=True, help_text="the next page of children, if there is one")


class FamilyPages(BoundedLimitOffsetPagination):
    default_limit = CHILDREN_SHOWN


class RunFamilyView(APIView):
    serializer_class = FamilyOut

    @extend_schema(responses={200: FamilyOut, 400: ErrorOut, 401: ErrorOut, 404: ErrorOut}, parameters=[
        OpenApiParameter("limit", int, description=f"children per page ({CHILDREN_SHOWN} by default, at most 1000)"),
        OpenApiParameter("offset", int, description="children to skip")])
    def get(self, request: Request, id: str) -> Response:  # the runs API names it id
        run = run_get(user=request.user, run_id=id)
        up, down = run_family(run=run, user=request.user)  # the relatives this user may see
        pages = FamilyPages()
        page = pages.paginate_queryset(down, request, view=self) or []
        return Response(FamilyOut({
            "parent": {"run_id": up.parent_run_id, "node_id": up.parent_node_run.node_id,
                       "status": up.parent_run.status} if up else None,
            "children": [{"run_id": link.child_run_id, "node_id": link.parent_node_run.node_id,
                          "status": link.child_run.status} for link in page],
            "children_total": pages.count, "next": pages.get_next_link()}).data)
