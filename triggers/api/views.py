"""Schedules and hooks API. ``POST /hooks/{id}`` is the public, signed entry point; every other
operation is the owner's, with a token or a session."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from workflows import selectors
from workflows.api.pagination import BoundedLimitOffsetPagination
from workflows.api.parsers import refuse_encoded
from workflows.api.serializers import ErrorOut
from workflows.api.throttles import AnonymousUntilProven, proven

from .. import selectors as trigger_selectors
from ..exceptions import HookNotFound, ScheduleNotFound
from ..models import Hook, Schedule, ScheduleFiring
from ..services import hooks, schedules
from . import serializers as s

ERRORS = {400: ErrorOut, 401: ErrorOut, 404: ErrorOut}
ID = r"[0-9]{1,18}"


def _schedule(request: Request, schedule_id: str) -> Schedule:
    schedule = (Schedule.objects.select_related("workflow").filter(pk=int(schedule_id), owner=request.user)
                .first())
    if schedule is None:
        raise ScheduleNotFound("schedule not found")
    return schedule


def _hook(request: Request, hook_id: str) -> Hook:
    hook = Hook.objects.select_related("workflow").filter(pk=hook_id, owner=request.user).first()
    if hook is None:
        raise HookNotFound("hook not found")
    return hook


class ScheduleListView(APIView):
    serializer_class = s.ScheduleOut

    @extend_schema(responses={200: s.ScheduleOut(many=True), 401: ErrorOut})
    def get(self, request: Request) -> Response:
        qs = Schedule.objects.filter(owner=request.user).select_related("workflow").order_by("id")
        return Response(s.ScheduleOut(qs, many=True).data)

    @extend_schema(request=s.ScheduleIn, responses={201: s.ScheduleOut, **ERRORS})
    def post(self, request: Request) -> Response:
        data = s.ScheduleIn(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        workflow = selectors.workflow_get(owner=request.user, tag=fields.pop("tag"), content=False)
        schedule = schedules.schedule_create(owner=request.user, workflow=workflow, tz=fields.pop("timezone"),
                                             **fields)
        return Response(s.ScheduleOut(schedule).data, status=201)


class ScheduleDetailView(APIView):
    serializer_class = s.ScheduleOut

    @extend_schema(responses={200: s.ScheduleOut, **ERRORS})
    def get(self, request: Request, schedule_id: str) -> Response:
        return Response(s.ScheduleOut(_schedule(request, schedule_id)).data)

    @extend_schema(request=s.ScheduleUpdateIn, responses={200: s.ScheduleOut, **ERRORS})
    def patch(self, request: Request, schedule_id: str) -> Response:
        schedule = _schedule(request, schedule_id)
        data = s.ScheduleUpdateIn(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(s.ScheduleOut(schedules.schedule_update(schedule=schedule, **data.validated_data)).data)

    @extend_schema(responses={204: None, **ERRORS})
    def delete(self, request: Request, schedule_id: str) -> Response:
        schedules.schedule_delete(schedule=_schedule(request, schedule_id))
        return Response(status=204)


class ScheduleFiringsView(APIView):
    """The schedule's firings, newest first, a page at a time (a bare list of the latest 100 until
    7 December: the rest were out of reach, and nothing said so)."""

    serializer_class = s.FiringOut
    pagination_class = BoundedLimitOffsetPagination

    @extend_schema(responses={200: s.FiringOut(many=True), **ERRORS})
    def get(self, request: Request, schedule_id: str) -> Response:
        schedule = _schedule(request, schedule_id)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(ScheduleFiring.objects.filter(schedule=schedule).order_by("-fire_time", "-pk"),
                                           request, view=self)
        return paginator.get_paginated_response(s.FiringOut(page, many=True).data)


class HookListView(APIView):
    serializer_class = s.HookOut

    @extend_schema(responses={200: s.HookOut(many=True), 401: ErrorOut})
    def get(self, request: Request) -> Response:
        qs = Hook.objects.filter(owner=request.user).select_related("workflow").order_by("created_at")
        return Response(s.HookOut(qs, many=True).data)

    @extend_schema(request=s.HookIn, responses={201: s.HookSecretOut, **ERRORS})
    def post(self, request: Request) -> Response:
        data = s.HookIn(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        workflow = selectors.workflow_get(owner=request.user, tag=fields.pop("tag"), content=False)
        hook, secret = hooks.hook_create(owner=request.user, workflow=workflow, **fields)
        hook.secret = secret
        return Response(s.HookSecretOut(hook).data, status=201)


SIGNATURE_HEADERS = [
    OpenApiParameter("X-AOB-Timestamp", str, OpenApiParameter.HEADER, description="unix seconds, signed"),
    OpenApiParameter("X-AOB-Signature", str, OpenApiParameter.HEADER,
                     description='"sha256=" + hex HMAC-SHA256 of "{timestamp}.{body}" with the hook\'s secret'),
    OpenApiParameter("X-AOB-Delivery", str, OpenApiParameter.HEADER, description="the sender's delivery id"),
]


class HookDetailView(APIView):
    """GET, PATCH and DELETE are the owner's; POST is the signed delivery, open to anyone who can sign."""

    serializer_class = s.HookOut

    def initialize_request(self, request: Any, *args: Any, **kwargs: Any) -> Request:
        self._delivery = request.method == "POST"
        return super().initialize_request(request, *args, **kwargs)

    def _is_delivery(self) -> bool:
        request = getattr(self, "request", None)
        return getattr(self, "_delivery", False) or (request is not None and request.method == "POST")

    def get_authenticators(self) -> list[Any]:
        return [] if self._is_delivery() else super().get_authenticators()

    def get_permissions(self) -> list[Any]:
        return [AllowAny()] if self._is_delivery() else [IsAuthenticated()]

    def get_throttles(self) -> list[Any]:
        # a signed delivery is anonymous until its signature is checked, then its owner's to count
        # (``ratelimit.check_hook_delivery``): a sender's address is many tenants' at once
        return [AnonymousUntilProven()] if self._is_delivery() else super().get_throttles()

    @extend_schema(responses={200: s.HookOut, **ERRORS})
    def get(self, request: Request, hook_id: str) -> Response:
        return Response(s.HookOut(_hook(request, hook_id)).data)

    @extend_schema(request=s.HookUpdateIn, responses={200: s.HookOut, **ERRORS})
    def patch(self, request: Request, hook_id: str) -> Response:
        hook = _hook(request, hook_id)
        data = s.HookUpdateIn(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(s.HookOut(hooks.hook_update(hook=hook, **data.validated_data)).data)

    @extend_schema(responses={204: None, **ERRORS})
    def delete(self, request: Request, hook_id: str) -> Response:
        hooks.hook_delete(hook=_hook(request, hook_id), user=request.user)
        return Response(status=204)

    @extend_schema(request=OpenApiTypes.OBJECT, parameters=SIGNATURE_HEADERS, auth=[], operation_id="hooks_deliver",
                   responses={202: s.HookAcceptedOut, 200: s.HookAcceptedOut, 400: ErrorOut, 401: ErrorOut, 404: ErrorOut, 415: ErrorOut,
                              429: ErrorOut, 503: ErrorOut})
    def post(self, request: Request, hook_id: str) -> Response:
        refuse_encoded(request.headers)
        accepted = hooks.hook_deliver(hook_id=hook_id, timestamp=request.headers.get("X-AOB-Timestamp"),
                                      signature=request.headers.get("X-AOB-Signature"),
                                      delivery_id=request.headers.get("X-AOB-Delivery"), body=request.body,
                                      headers={k.lower(): v for k, v in request.headers.items()
                                               if k.lower().startswith("x-") and "signature" not in k.lower()},
                                      authenticated=lambda: proven(request))
        body = {"run_id": accepted.run.pk if accepted.run else None, "duplicate": accepted.duplicate}
        return Response(s.HookAcceptedOut(body).data, status=200 if accepted.duplicate else 202)


class HookRotateView(APIView):
    serializer_class = s.HookSecretOut

    @extend_schema(request=s.HookRotateIn, responses={200: s.HookSecretOut, **ERRORS})
    def post(self, request: Request, hook_id: str) -> Response:
        hook = _hook(request, hook_id)
        data = s.HookRotateIn(data=request.data)
        data.is_valid(raise_exception=True)
        hook.secret = hooks.hook_rotate(hook=hook, **data.validated_data)
        return Response(s.HookSecretOut(hook).data)


class HookDeliveriesView(APIView):
    """The hook's deliveries, newest first, a page at a time: accepted ones with their run, refused
    ones (after their signature checked out) with what their sender was told."""

    serializer_class = s.HookDeliveryOut
    pagination_class = BoundedLimitOffsetPagination

    @extend_schema(responses={200: s.HookDeliveryOut(many=True), **ERRORS})
    def get(self, request: Request, hook_id: str) -> Response:
        hook = _hook(request, hook_id)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(trigger_selectors.hook_deliveries_listed(hook=hook), request, view=self)
        return paginator.get_paginated_response(s.HookDeliveryOut(page, many=True).data)
