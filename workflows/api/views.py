"""REST API v1 (workflows, runs, artifacts, health). Views parse the request, read through
``workflows.selectors`` or call one service, and answer with the output serializer the schema names."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, viewsets
from rest_framework.authtoken.models import Token
from rest_framework.decorators import action
from rest_framework.fields import DateTimeField
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aob_project.exceptions import AobError, NotFound, ValidationFailed
from workflows import ratelimit, results, selectors, storage
from workflows.definition.validation import validate, workflow_schema
from workflows.engine.sweeper import queues_health, sweeper_health
from workflows.models import Run, Workflow
from workflows.services import definitions, idempotency, patches, runs, users

from . import filters
from . import serializers as s
from .pagination import BoundedLimitOffsetPagination
from .params import int_parameter, query_bool, query_choice, query_int
from .throttles import AnonymousThrottle, LoginThrottle, run_start_throttles

# 503: the database did not answer (workflows/api/errors.py)
ERRORS = {400: s.ErrorOut, 401: s.ErrorOut, 404: s.ErrorOut, 503: s.ErrorOut}
# run_start's rate limits (429), the owner's storage bound (409, workflows/storage.py) and its fail-closed
# answer when Redis is unreachable (503)
RUN_START_ERRORS = {**ERRORS, 409: s.ErrorOut, 429: s.ErrorOut, 503: s.ErrorOut}
# a read of a stored value whole: its per-user limits, by rate and in flight (429, ``WholeRead``)
WHOLE_READ_ERRORS = {**ERRORS, 429: s.ErrorOut}


def _key_parameter(what: str) -> OpenApiParameter:
    """The ``Idempotency-Key`` header of a request ``what`` names (``idempotency.request_once``)."""
    return OpenApiParameter(
        idempotency.HEADER, str, OpenApiParameter.HEADER, required=False, pattern=r"^[\x20-\x7e]{1,255}$",
        description=f"Makes the {what} safe to retry: within 24 h the same key and the same request body return what "
                    "the first request made (200, the same body), never a second one; the same key with another "
                    "body or endpoint is refused (422). Keys are scoped per user.")


IDEMPOTENCY_KEY = _key_parameter("start")
PATCH_IDEMPOTENCY_KEY = _key_parameter("patch")


def _request_id(request: Request) -> str:
    return getattr(request, "request_id", "") or request.headers.get("X-Request-ID", "")[:64] or uuid.uuid4().hex


class TokenView(APIView):
    """``POST``: the user's API token, for their password (nothing else authenticates it; limited as
    logins are). ``DELETE``: that token revoked, as the request authenticates (the token itself, or a
    browser's session): every client holding it (another machine's CLI, a script, a leaked copy) is
    refused from the next request on, and the next ``POST`` makes a new one. One token a user, so
    ``aob logout`` only forgets it locally unless asked to revoke it (``--revoke``)."""

    def _logging_in(self) -> bool:
        return getattr(self.request, "method", None) == "POST"  # no request while the schema is made

    def get_authenticators(self) -> list[Any]:
        return [] if self._logging_in() else super().get_authenticators()

    def get_permissions(self) -> list[Any]:
        return [AllowAny()] if self._logging_in() else super().get_permissions()

    def get_throttles(self) -> list[Any]:
        return [LoginThrottle()] if self._logging_in() else super().get_throttles()

    @extend_schema(request=None, responses={204: None, 401: s.ErrorOut, 429: s.ErrorOut})
    def delete(self, request: Request) -> Response:
        users.token_revoke(user_id=request.user.pk, why="revoked")
        return Response(status=204)

    @extend_schema(request=s.TokenIn, responses={200: s.TokenOut, 400: s.ErrorOut, 401: s.ErrorOut, 429: s.ErrorOut})
    def post(self, request: Request) -> Response:
        data = s.TokenIn(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(request, **data.validated_data)
        if user is None:
            raise AobError("wrong username or password", code="invalid_credentials", status=401)
        ratelimit.login_remembered(address=ratelimit.client_address(request.META), username=user.get_username())
        token, _ = Token.objects.get_or_create(user=user)
        return Response(s.TokenOut(token).data)


class MeView(APIView):
    """Who the token belongs to: the CLI's ``whoami``."""

    @extend_schema(responses={200: s.MeOut, 401: s.ErrorOut})
    def get(self, request: Request) -> Response:
        user = request.user
        return Response(s.MeOut({"username": user.get_username(), "is_staff": user.is_staff,
                                 "storage": storage.owner_storage(user.pk)}).data)


class HealthView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(responses={200: s.HealthOut, 503: s.HealthOut})
    def get(self, request: Request) -> Response:
        """503 when this process cannot serve (its database, Redis, broker); ``degraded`` with 200
        when only the background is (the sweeper, which beat and a worker run): restarting or
        unrouting the web would mend nothing there."""
        serving = {"db": _check_db(), "redis": _check_redis(), "broker": _check_broker()}
        checks = {**serving, "sweeper": sweeper_health(), "queues": queues_health()}
        health = {"status": "ok" if all(v in ("ok", "disabled") or v.startswith("unknown: not checked")
                                        for v in checks.values()) else "degraded", "checks": checks}
        return Response(s.HealthOut(health).data, status=200 if all(v == "ok" for v in serving.values()) else 503)


def _check_db() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:  # noqa: BLE001 - health reports, it does not raise
        return f"error: {type(exc).__name__}"


def _check_redis() -> str:
    import redis
    from django.conf import settings

    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2).ping()
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return f"error: {type(exc).__name__}"


def _check_broker() -> str:
    from aob_project.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return f"error: {type(exc).__name__}"


class WorkflowSchemaView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request) -> Response:
        return Response(workflow_schema())


class WorkflowValidateView(APIView):
    throttle_classes = [AnonymousThrottle]  # a POST that changes nothing: not counted as a write
    """POST validates. The path is also where a workflow named "validate" would be, and there is
    none (the name is refused at save), so reading or deleting it is that workflow's 404. The
    operation here is POST only, and ``Allow`` says so."""

    @property
    def allowed_methods(self) -> list[str]:
        return ["POST", "OPTIONS"]

    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        raise NotFound("workflow 'validate' not found (the name is reserved)")

    @extend_schema(exclude=True)
    def delete(self, request: Request) -> Response:
        raise NotFound("workflow 'validate' not found (the name is reserved)")

    @extend_schema(request=s.WorkflowValidateIn, responses={200: s.ValidationOut, **ERRORS})
    def post(self, request: Request) -> Response:
        data = s.WorkflowValidateIn(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(s.ValidationOut(validate(data.validated_data["workflow"], literal_urls=True, written=True)).data)


def _base_version(request: Request, data: dict[str, Any]) -> definitions.BaseVersion:
    """The version a write was based on: ``base_version`` in the body. ``If-Match`` is refused
    rather than ignored: a client that sent it expects a precondition, and ignoring it would be the
    lost update it meant to prevent (the save's target, a tag in the body, is no URL to match)."""
    if "If-Match" in request.headers:
        raise ValidationFailed("If-Match is not read here: send the version your edit started from as "
                               "base_version in the body", extra={"field": "If-Match", "rule": "use_base_version"})
    return data.get("base_version", definitions.ANY)


MATERIALIZE = OpenApiParameter("materialize", bool, description="include the definition (true or false)")
FORCE = OpenApiParameter("force", bool, description="also delete the schedules and hooks that start the tag "
                                                    "(true or false; without it a tag in use is a 409)")
SCOPES = ["user", "global", "all"]


class WorkflowViewSet(viewsets.GenericViewSet):
    lookup_field = "tag"
    lookup_value_regex = r"[^/\x00]+"  # NUL cannot reach PostgreSQL (a 500); such a tag is no URL: 404
    serializer_class = s.WorkflowOut
    filterset_class = filters.WorkflowFilter

    def get_queryset(self) -> Any:
        return selectors.workflows_visible(user=self.request.user)

    def _get(self, tag: str) -> Workflow:
        return selectors.workflow_get(owner=self.request.user, tag=tag)

    @extend_schema(parameters=[OpenApiParameter("scope", str, enum=SCOPES), MATERIALIZE,
                               OpenApiParameter("q", str, pattern=filters.TAG_PARAM_PATTERN,
                                                description="text in the tag, name or description")],
                   responses={200: s.WorkflowOut(many=True), 400: s.ErrorOut, 401: s.ErrorOut})
    def list(self, request: Request) -> Response:
        scope = query_choice(request, "scope", SCOPES, default="user")
        materialize = query_bool(request, "materialize")
        qs = selectors.workflows_answered(selectors.workflows_listed(user=request.user, scope=scope))
        qs = selectors.with_last_run(filters.CheckedFilterBackend().filter_queryset(request, qs, self), user=request.user)
        page = selectors.workflows_fill(self.paginate_queryset(qs), user=request.user, materialize=materialize)
        return self.get_paginated_response(s.WorkflowOut(page, many=True, context={"materialize": materialize}).data)

    @extend_schema(request=s.WorkflowCreateIn, responses={201: s.WorkflowSavedOut, 200: s.WorkflowSavedOut,
                                                          409: s.ErrorOut, 413: s.ErrorOut, **ERRORS})
    def create(self, request: Request) -> Response:
        data = s.WorkflowCreateIn(data=request.data)
        data.is_valid(raise_exception=True)
        saved = definitions.workflow_save(owner=request.user, tag=data.validated_data["tag_name"],
                                          definition=data.validated_data["workflow"],
                                          description=data.validated_data["description"],
                                          base_version=_base_version(request, data.validated_data))
        return Response(s.WorkflowSavedOut(saved).data, status=201 if saved.created else 200)

    @extend_schema(parameters=[MATERIALIZE], responses={200: s.WorkflowOut, **ERRORS})
    def retrieve(self, request: Request, tag: str) -> Response:
        workflow = selectors.workflow_with_last_run(workflow=self._get(tag), user=request.user)
        return Response(s.WorkflowOut(workflow, context={"materialize": query_bool(request, "materialize")}).data)

    @extend_schema(parameters=[FORCE], responses={204: None, 409: s.ErrorOut, **ERRORS})
    def destroy(self, request: Request, tag: str) -> Response:
        """Delete the tag and its versions (runs keep the definitions they ran). A tag its schedules
        or hooks start is a 409 ``workflow_in_use`` naming them, unless ``force=true`` deletes them too."""
        definitions.workflow_delete(workflow=self._get(tag), force=query_bool(request, "force"))
        return Response(status=204)

    @extend_schema(request=s.WorkflowPatchIn, responses={200: s.WorkflowSavedOut, 409: s.ErrorOut, 413: s.ErrorOut,
                                                         **ERRORS})
    @action(detail=True, methods=["patch"], url_path="patch")
    def patch_definition(self, request: Request, tag: str) -> Response:
        data = s.WorkflowPatchIn(data=request.data)
        data.is_valid(raise_exception=True)
        saved = definitions.workflow_patch(workflow=self._get(tag), operations=data.validated_data["operations"],
                                           description=data.validated_data["description"],
                                           base_version=_base_version(request, data.validated_data))
        return Response(s.WorkflowSavedOut(saved).data)

    @extend_schema(parameters=[int_parameter("after", 0, "only versions with a greater seq (the first is 0 unless "
                                             "the tag was deleted before)"),
                               int_parameter("limit", 1, "at most this many (at most 1000)")],
                   responses={200: s.VersionOut(many=True), **ERRORS})
    @action(detail=True, methods=["get"], url_path="versions", pagination_class=None)
    def versions(self, request: Request, tag: str) -> Response:
        """The versions oldest first, at most ``limit`` (1,000) an answer: ask again with ``after``
        the last one's ``seq`` until fewer come."""
        after = query_int(request, "after", -1, 0, 2**31 - 1)  # absent: from the first
        limit = query_int(request, "limit", 1000, 1, 1000)
        return Response(s.VersionOut(selectors.workflow_versions(workflow=self._get(tag), after=after, limit=limit),
                                     many=True).data)

    @extend_schema(parameters=[MATERIALIZE], responses={200: s.VersionOut, **ERRORS})
    @action(detail=True, methods=["get"], url_path=r"versions/(?P<seq>\d{1,9})")
    def version(self, request: Request, tag: str, seq: str) -> Response:
        materialize = query_bool(request, "materialize")
        version = selectors.workflow_version_get(workflow=self._get(tag), seq=int(seq))
        return Response(s.VersionOut(version, context={"materialize": materialize}).data)

    @extend_schema(request=s.ExecuteIn, parameters=[IDEMPOTENCY_KEY],
                   responses={201: s.RunStartedOut, 200: s.RunStartedOut, 422: s.ErrorOut, **RUN_START_ERRORS})
    @action(detail=True, methods=["post"], url_path="execute")
    def execute(self, request: Request, tag: str) -> Response:
        data = s.ExecuteIn(data=request.data)
        data.is_valid(raise_exception=True)
        workflow = selectors.workflow_get(owner=request.user, tag=tag, content=False)
        artifact_id = _version_run(workflow, data.validated_data.get("version"))
        return _request_once(request, lambda record: _tag_run_start(
            request, workflow, artifact_id, data.validated_data["inputs"], record))

    def get_throttles(self) -> list[Any]:
        return run_start_throttles() if self.action == "execute" else super().get_throttles()

    @extend_schema(parameters=[int_parameter("limit", 1)], responses={200: s.RunOut(many=True), **ERRORS})
    @action(detail=True, methods=["get"], url_path="runs", pagination_class=None)
    def runs(self, request: Request, tag: str) -> Response:
        limit = query_int(request, "limit", 20, 1, 500)
        rows = list(selectors.workflow_runs(workflow=self._get(tag), user=request.user, limit=limit))
        return Response(s.RunOut(selectors.fill_inputs(rows) if rows else [], many=True).data)


# the hottest answers' serializers, kept per thread (serializers.RenderedPerThread)
_RUN_STARTED = s.RenderedPerThread(s.RunStartedOut)
_RUN_DETAILS = s.RenderedPerThread(s.RunDetailsOut)
_RUN_RESULT = s.RenderedPerThread(s.RunResultOut)  # GET /runs/{id}, what clients poll


def _version_run(workflow: Any, version: int | None) -> str:
    """The definition a start of ``workflow`` runs: the ``version`` its client read, else "": the
    current one, read by ``_tag_run_start`` in the run's transaction."""
    if version is None:
        return ""
    return selectors.workflow_version_get(workflow=workflow, seq=version).artifact_id


def _tag_run_start(request: Request, workflow: Workflow, artifact_id: str, inputs: dict[str, Any],
                   record: Any) -> Run:
    """A run of the tag's version ``artifact_id``, or of its current one (""), held for the run as a
    hook's delivery and a schedule's firing hold it (``workflow_version_for_start``): a start that
    met a save's lock started the version the save replaced after the save answered."""
    with transaction.atomic():
        if not artifact_id:
            artifact_id = definitions.workflow_version_for_start(workflow=workflow).artifact_id
        return runs.run_start(owner=request.user, artifact_id=artifact_id, inputs=inputs, workflow=workflow,
                              request_id=_request_id(request), record=record, api_write=True)


def _run_started(run: Run) -> dict[str, Any]:
    """The start's answer as plain JSON (an idempotent repeat answers it again from storage)."""
    return json.loads(json.dumps(_RUN_STARTED.render(run), cls=DjangoJSONEncoder))


def _replay_started(run: Run) -> dict[str, Any]:
    return json.loads(json.dumps(s.ReplayStartedOut(run).data, cls=DjangoJSONEncoder))


def _request_once(request: Request, begin: Any, respond: Callable[[Any], dict[str, Any]] = _run_started,
                run_of: Callable[[Any], Run] = lambda run: run) -> Response:
    """A start (or a run's patch) that honours ``Idempotency-Key`` (workflows/services/idempotency.py):
    201 with what it made, or 200 with the answer the key's first request got."""
    start = idempotency.start_key(header=request.headers.get(idempotency.HEADER),
                                  endpoint=f"{request.method} {request.path}", body=request.data)
    answer, created = idempotency.request_once(owner=request.user, start=start, respond=respond, begin=begin,
                                                 run_of=run_of)
    return Response(answer, status=201 if created else 200)


class WholeRead:
    """One read of a stored value answered whole to ``request``'s user. ``admit(size)`` is asked once
    the value is found visible and before it is read (``ratelimit.begin_whole_read``: the user's
    rate of them, and a place among the user's reads in flight); ``answer(body)`` is its response,
    which holds the place until it has been sent (``http_handler.SEND_WITHIN_S``: a client reading
    32 MiB slowly keeps it in the web process's memory that long, and one that has not read it within
    ``AOB_WHOLE_READ_SEND_S`` is cut off). As a ``with`` block: a read that fails before its answer
    gives its place back at once."""

    def __init__(self, request: Request) -> None:
        self.user_id = request.user.pk
        self.end: Callable[[], None] | None = None

    def admit(self, size: int | None) -> None:
        self.end = ratelimit.begin_whole_read(user_id=self.user_id, size=size)

    def answer(self, body: str) -> HttpResponse:
        response = _Held(body.encode(), content_type="application/json")
        response.aob_send_within_s = settings.AOB_WHOLE_READ_SEND_S
        response.end, self.end = self.end, None
        return response

    def __enter__(self) -> WholeRead:
        return self

    def __exit__(self, *failure: object) -> None:
        if self.end is not None:
            self.end()
            self.end = None


class _Held(HttpResponse):
    """A whole read's answer: its ``close()``, once it has been sent (or cut off), ends the read."""
    aob_send_within_s: float | None = None
    end: Callable[[], None] | None = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.end is not None:
                self.end()
                self.end = None


class ArtifactView(APIView):
    @extend_schema(responses={200: s.ArtifactOut, **WHOLE_READ_ERRORS})
    def get(self, request: Request, artifact_id: str) -> HttpResponse:
        """An artifact whole: where the markers of outputs lead. Its content is written as the
        database stores its JSON text, never parsed (``selectors.artifact_get``)."""
        with WholeRead(request) as read:
            artifact = selectors.artifact_get(user=request.user, artifact_id=artifact_id, admit=read.admit)
            head = json.dumps({"id": artifact.pk, "kind": artifact.kind})[:-1]
            tail = json.dumps({"size_bytes": artifact.size_bytes,
                               "created_at": DateTimeField().to_representation(artifact.created_at)})[1:]
            return read.answer(f'{head}, "content": {artifact.text}, {tail}')  # type: ignore[attr-defined]


EVENTS_NEXT = OpenApiParameter(
    "Link", str, OpenApiParameter.HEADER, response=[200],
    description='while more events follow: <…/events?after=<the last seq of this answer>>; rel="next"')
NODE_FIELD = OpenApiParameter("field", str, OpenApiParameter.PATH, enum=list(selectors.HEAVY_FIELDS),
                              description="the node run's field to read whole")


class RunViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = s.RunOut
    lookup_value_regex = r"[^/]+"
    filter_backends = [filters.CheckedFilterBackend]
    filterset_class = filters.RunFilter
    pagination_class = filters.KeysetPagination

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):  # the OpenAPI generator has no user
            return Run.objects.none()
        return selectors.runs_for_list(user=self.request.user, owner=self.request.query_params.get("owner"))

    @extend_schema(parameters=filters.RUN_FILTER_PARAMETERS,
                   responses={200: s.RunOut(many=True), 400: s.ErrorOut, 401: s.ErrorOut, 404: s.ErrorOut})
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """A page of runs, each one's inputs while the page fits its byte budget, else a marker
        linking to the run (``selectors.fill_inputs``)."""
        page = self.paginate_queryset(selectors.runs_without_inputs(self.filter_queryset(self.get_queryset()))) or []
        rows = selectors.fill_inputs(page) if page else []
        return self.get_paginated_response(self.get_serializer(rows, many=True).data)

    def get_throttles(self) -> list[Any]:
        return run_start_throttles() if self.action == "create" else super().get_throttles()

    def _run(self, pk: str, change: bool = False) -> Run:
        """The run by id: one the user may see, or with ``change`` one it may change."""
        return selectors.run_get(user=self.request.user, run_id=pk, change=change)

    @extend_schema(request=s.RunCreateIn, parameters=[IDEMPOTENCY_KEY],
                   responses={201: s.RunStartedOut, 200: s.RunStartedOut, 422: s.ErrorOut, **RUN_START_ERRORS})
    def create(self, request: Request) -> Response:
        data = s.RunCreateIn(data=request.data)
        data.is_valid(raise_exception=True)
        if "tag" in data.validated_data:
            workflow = selectors.workflow_get(owner=request.user, tag=data.validated_data["tag"], content=False)
            artifact_id = _version_run(workflow, data.validated_data.get("version"))
            return _request_once(request, lambda record: _tag_run_start(
                request, workflow, artifact_id, data.validated_data["inputs"], record))
        return _request_once(request, lambda record: runs.run_start(
            owner=request.user, definition=data.validated_data["workflow"], inputs=data.validated_data["inputs"],
            request_id=_request_id(request), record=record, api_write=True))

    @extend_schema(responses={200: s.RunResultOut, **ERRORS})
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(_RUN_RESULT.render(self._run(pk)))

    @extend_schema(responses={200: s.TimelineOut, **ERRORS})
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def timeline(self, request: Request, pk: str) -> Response:
        """Every node run with its queue wait, run time and attempts, for a Gantt chart."""
        return Response(s.TimelineOut(results.run_timeline(run=self._run(pk))).data)

    @extend_schema(responses={200: s.RunOutputOut, **WHOLE_READ_ERRORS})
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def output(self, request: Request, pk: str) -> HttpResponse:
        """The run's output whole: where the run's and its details' markers lead once it passes
        their byte budget. Written as it is read: the terminal nodes' outputs, or the stored
        ``metadata.output``, are the database's own JSON text, never parsed (``results.run_output_text``)."""
        run = self._run(pk)
        with WholeRead(request) as read:
            read.admit(None)  # its size is known only once it is read
            text, error = results.run_output_text(run)
            pending = json.dumps(run.output_pending)
            return read.answer(f'{{"run_id":"{run.pk}","output":{text},"output_error":{json.dumps(error)},'
                               f'"output_pending":{pending}}}')

    @extend_schema(responses={200: s.RunInputsOut, **WHOLE_READ_ERRORS})
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def inputs(self, request: Request, pk: str) -> HttpResponse:
        """The run's inputs whole (up to AOB_MAX_RUN_INPUTS_BYTES): where the markers of the run's
        answers and its ``workflow_started`` event lead. The database's JSON text, never parsed."""
        run = self._run(pk)
        with WholeRead(request) as read:
            read.admit(run.inputs_bytes)
            with connection.cursor() as cursor:
                cursor.execute("SELECT inputs::text FROM workflows_run WHERE id = %s", [run.pk])
                text = cursor.fetchone()[0]
            return read.answer(f'{{"run_id":"{run.pk}","inputs":{text}}}')

    @extend_schema(responses={200: s.RunDetailsOut, **ERRORS})
    @action(detail=True, methods=["get"], filter_backends=[])
    def details(self, request: Request, pk: str) -> Response:
        return Response(_RUN_DETAILS.render(selectors.run_details(run=self._run(pk))))

    @extend_schema(parameters=[int_parameter("offset", 0), int_parameter("limit", 1)],
                   responses={200: s.NodeIterationsOut, **ERRORS})
    @action(detail=True, methods=["get"], url_path=r"nodes/(?P<node_id>[A-Za-z0-9_\-]{1,200})/iterations",
            pagination_class=None)
    def iterations(self, request: Request, pk: str, node_id: str) -> Response:
        """A node's iterations, a page at a time (details carries only the latest)."""
        run = self._run(pk)
        offset = query_int(request, "offset", 0, 0, 2**31 - 1)
        limit = query_int(request, "limit", 20, 1, 100)
        return Response(s.NodeIterationsOut(selectors.node_iterations(run=run, node_id=node_id, offset=offset,
                                                                      limit=limit)).data)

    @extend_schema(operation_id="runs_nodes_iterations_field_retrieve", parameters=[NODE_FIELD],
                   responses={200: s.NodeFieldOut, **WHOLE_READ_ERRORS})
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[],
            url_path=r"nodes/(?P<node_id>[A-Za-z0-9_\-]{1,200})/iterations/(?P<iteration>\d{1,9})/(?P<field>[^/]+)")
    def node_field(self, request: Request, pk: str, node_id: str, iteration: str, field: str) -> HttpResponse:
        """One field of one node run whole (input, output or attempt_log), whatever its size: where
        the markers of details and iterations lead once it passes their byte budget (an output
        with an artifact links to the artifact instead). Only that column of that row is read, and
        written as it is read, the database's JSON text never parsed (``selectors.node_field_text``);
        its size is bounded by what was written (an input, the resolved config: 16 MiB)."""
        run = self._run(pk)
        with WholeRead(request) as read:
            text = selectors.node_field_text(run=run, node_id=node_id, iteration=int(iteration), field=field,
                                             admit=read.admit)
            # node_id is the URL's pattern and field one of HEAVY_FIELDS (checked above): nothing to escape
            return read.answer(f'{{"run_id":"{run.pk}","node_id":"{node_id}","iteration":{int(iteration)},'
                               f'"field":"{field}","value":{text}}}')

    @extend_schema(parameters=[int_parameter("after", 0), EVENTS_NEXT],
                   responses={200: s.EventOut(many=True), **ERRORS})
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def events(self, request: Request, pk: str) -> Response:
        """The run's events after sequence number ``after``, in order: at most 1,000 an answer, and
        while their bytes fit ``AOB_DETAILS_MAX_BYTES`` (at least one; ``selectors.events_page``).
        While more follow, ``Link: <…/events?after=<the last one's seq>>; rel="next"`` says where
        they are read; an answer without it holds the last of them, as stored now
        (``ws/runs/<id>/`` follows them live)."""
        after = query_int(request, "after", 0, 0, 2**31 - 1)
        run = self._run(pk)
        page, more = selectors.events_page(run_id=run.pk, after=after)
        response = Response(s.EventOut(page, many=True).data)
        if more:
            response["Link"] = f'<{request.build_absolute_uri(request.path)}?after={page[-1].seq}>; rel="next"'
        return response

    @extend_schema(request=None, responses={200: s.RunOut, 409: s.ErrorOut, **ERRORS})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        return Response(s.RunOut(runs.run_cancel(run=self._run(pk, change=True), user=request.user)).data)

    @extend_schema(request=s.RunBudgetIn, responses={200: s.RunOut, 409: s.ErrorOut, **ERRORS})
    @action(detail=True, methods=["post"])
    def budget(self, request: Request, pk: str) -> Response:
        """Raise (or set) the run's LLM spend ceilings; agent nodes paused on them resume."""
        run = self._run(pk, change=True)
        data = s.RunBudgetIn(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(s.RunOut(runs.run_budget_raise(run=run, user=request.user, **data.validated_data)).data)

    @extend_schema(request=s.ReplayIn, parameters=[IDEMPOTENCY_KEY],
                   responses={201: s.ReplayStartedOut, 200: s.ReplayStartedOut, 409: s.ErrorOut, 422: s.ErrorOut,
                              **RUN_START_ERRORS})
    @action(detail=True, methods=["post"], url_path=r"nodes/(?P<node_id>[A-Za-z0-9_\-]{1,200})/replay")
    def replay(self, request: Request, pk: str, node_id: str) -> Response:
        run = self._run(pk, change=True)
        body = request.data  # no body at all is {}; any other body is judged, a list too
        data = s.ReplayIn(data={} if isinstance(body, dict) and not body else body)
        data.is_valid(raise_exception=True)
        return _request_once(request, lambda record: runs.run_replay(
            run=run, node_id=node_id, user=request.user, request_id=_request_id(request),
            reuse_llm=data.validated_data["reuse_llm"], record=record), respond=_replay_started)

    @extend_schema(methods=["GET"], responses={200: s.RunPatchOut(many=True), **ERRORS},
                   description="The run's patches in order, a page at a time; each one's description, then each "
                               "one's operations, while the page has room (AOB_DETAILS_MAX_BYTES), else a marker "
                               "linking to the patch.")
    @extend_schema(methods=["POST"], request=s.RunPatchIn, parameters=[PATCH_IDEMPOTENCY_KEY],
                   responses={201: s.RunPatchOut, 200: s.RunPatchOut, 403: s.ErrorOut, 409: s.ErrorOut,
                              413: s.ErrorOut, 422: s.ErrorOut, **ERRORS})
    @action(detail=True, methods=["get", "post"], url_path="patches", pagination_class=BoundedLimitOffsetPagination,
            filter_backends=[])
    def patches(self, request: Request, pk: str) -> Response:
        if request.method == "GET":
            run = self._run(pk)
            page = self.paginate_queryset(selectors.run_patches_listed(run=run))
            return self.get_paginated_response(
                s.RunPatchOut(selectors.patches_fill(page, run=run), many=True).data)
        run = self._run(pk, change=True)
        data = s.RunPatchIn(data=request.data)
        data.is_valid(raise_exception=True)
        # a retry of a lost answer must not apply an index-addressed patch twice (a second
        # ``remove /nodes/3`` removes another node): the same key answers the first patch
        return _request_once(request, lambda record: patches.run_patch_propose(
            run=run, operations=data.validated_data["operations"], description=data.validated_data["description"],
            node_id=data.validated_data.get("node_id", ""), user=request.user, record=record,
            base_artifact_id=data.validated_data.get("base_artifact_id")),
            respond=lambda patch: s.RunPatchOut(patch).data, run_of=lambda patch: patch.run)

    @extend_schema(responses={200: s.RunPatchOut, **ERRORS})
    @action(detail=True, methods=["get"], url_path=r"patches/(?P<seq>\d{1,9})")
    def patch_detail(self, request: Request, pk: str, seq: str) -> Response:
        return Response(s.RunPatchOut(selectors.run_patch_get(run=self._run(pk), seq=int(seq))).data)

    @extend_schema(responses={200: s.PatchRefusalOut, **ERRORS})
    @action(detail=True, methods=["get"], url_path=r"refusals/(?P<refusal_id>\d{1,18})")
    def refusal_detail(self, request: Request, pk: str, refusal_id: str) -> Response:
        """One refused patch whole (its operations as kept, at most 64 KiB): where details' markers lead."""
        return Response(s.PatchRefusalOut(selectors.run_refusal_get(run=self._run(pk),
                                                                     refusal_id=int(refusal_id))).data)
