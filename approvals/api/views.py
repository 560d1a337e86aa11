"""Approvals API: the inbox, one approval, and deciding (the one service every surface uses).
Reads go through ``approvals.selectors`` (runs through ``workflows.selectors.run_get``)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from approvals import selectors, services
from approvals.models import Approval
from workflows.api.authentication import AuthenticatedRequest
from workflows.api.filters import TAG_PARAM_PATTERN
from workflows.api.params import query_choice, query_text
from workflows.api.serializers import ErrorOut
from workflows.selectors import run_get

from . import serializers as s

ERRORS = {400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut}


class ApprovalViewSet(viewsets.GenericViewSet):
    serializer_class = s.ApprovalOut
    lookup_value_regex = r"[^/]+"

    request: AuthenticatedRequest

    def get_queryset(self) -> Any:
        return selectors.approvals_visible(user=self.request.user)

    @extend_schema(parameters=[OpenApiParameter("status", str, enum=Approval.Status.values),
                               OpenApiParameter("run", str, description="only this run's approvals (run id)"),
                               OpenApiParameter("asked_by", str, pattern=TAG_PARAM_PATTERN,
                                                description="only approvals of this user's runs (username)")],
                   responses={200: s.ApprovalOut(many=True), 400: ErrorOut, 401: ErrorOut, 404: ErrorOut})
    def list(self, request: AuthenticatedRequest) -> Response:
        status = query_choice(request, "status", Approval.Status.values)  # also keeps NUL from PostgreSQL
        run_id = request.query_params.get("run")
        run = run_get(user=request.user, run_id=run_id) if run_id else None
        asked_by = query_text(request, "asked_by")
        page = self.paginate_queryset(selectors.approvals_listed(user=request.user, status=status, run=run,
                                                                 asked_by=asked_by))
        return self.get_paginated_response(s.ApprovalOut(selectors.fill_page(page or []), many=True).data)

    @extend_schema(responses={200: s.ApprovalOut, **ERRORS})
    def retrieve(self, request: AuthenticatedRequest, pk: str) -> Response:
        return Response(s.ApprovalOut(selectors.approval_get(user=request.user, approval_id=pk)).data)

    @extend_schema(request=s.DecideIn, responses={200: s.ApprovalOut, **ERRORS})
    @action(detail=True, methods=["post"])
    def decide(self, request: AuthenticatedRequest, pk: str) -> Response:
        data = s.DecideIn(data=request.data)
        data.is_valid(raise_exception=True)
        approval = selectors.approval_get(user=request.user, approval_id=pk)
        approval = services.approval_decide(approval=approval, user=request.user, approve=data.validated_data["approve"],
                                            comment=data.validated_data["comment"], data=data.validated_data["data"],
                                            action_digest=data.validated_data["action_digest"])
        return Response(s.ApprovalOut(selectors.approval_get(user=request.user, approval_id=approval.pk)).data)

    @extend_schema(request=s.CompatDecideIn, responses={200: s.ApprovalOut, **ERRORS})
    def create(self, request: AuthenticatedRequest) -> Response:
        """Compatible form of the system we replace: decide by run and node."""
        data = s.CompatDecideIn(data=request.data)
        data.is_valid(raise_exception=True)
        run = run_get(user=request.user, run_id=data.validated_data["run_id"])
        approval = selectors.approval_for_node(user=request.user, run=run, node_id=data.validated_data["node_id"])
        approval = services.approval_decide(approval=approval, user=request.user,
                                            approve=data.validated_data["approved"],
                                            comment=data.validated_data["comment"], data=data.validated_data["data"],
                                            action_digest=data.validated_data["action_digest"])
        return Response(s.ApprovalOut(selectors.approval_get(user=request.user, approval_id=approval.pk)).data)
