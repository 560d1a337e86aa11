"""Input serializers parse and check; output serializers shape. Neither saves domain objects."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import SkipField

from workflows.answers import run_inputs_within
from workflows.models import Event, Run, Workflow
from workflows.models.workflow import DESCRIPTION_MAX_CHARS as VERSION_DESCRIPTION_MAX_CHARS
from workflows.models.workflow import RESERVED_TAGS, TAG_MAX_CHARS, TAG_PATTERN, TAG_RULE
from workflows.results import Result, run_duration_ms, run_result
from workflows.selectors import HEAVY_FIELDS
from workflows.services.definitions import WORKFLOW_PATCH_MAX_OPERATIONS
from workflows.services.patches import DESCRIPTION_MAX_CHARS, MAX_OPERATIONS
from workflows.services.runs import BUDGET_MAX_COST_USD, BUDGET_MAX_TOKENS


class StrictSerializer(serializers.Serializer):
    """Unknown fields are an error, not silently dropped: a typo must not change meaning. Types are
    JSON's, as the OpenAPI document says: DRF would read 5 as the string "5" and "5" as the integer 5."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({unknown[0]: [serializers.ErrorDetail(
                    "unknown field", code="unknown_field")]})
            for name, field in self.fields.items():
                expected = _json_type(field)
                value = data.get(name)
                if expected and value is not None and not _is(value, expected):
                    raise serializers.ValidationError({name: [serializers.ErrorDetail(
                        f"must be {expected}", code="type")]})
        return super().to_internal_value(data)


def _json_type(field: serializers.Field) -> str | None:
    if isinstance(field, serializers.CharField):
        return "a string"
    if isinstance(field, serializers.IntegerField):
        return "an integer"
    if isinstance(field, serializers.FloatField):
        return "a number"
    return None


def _is(value: Any, expected: str) -> bool:
    if isinstance(value, bool):
        return False
    if expected == "a string":
        return isinstance(value, str)
    if expected == "an integer":
        return isinstance(value, int)
    return isinstance(value, int | float)


@extend_schema_field({"type": "object", "additionalProperties": {}})
class JSONObjectField(serializers.JSONField):
    default_error_messages = {"not_object": "must be a JSON object"}

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            self.fail("not_object")
        return value


class JSONBooleanField(serializers.BooleanField):
    """``true`` or ``false`` only: DRF's BooleanField also takes "yes", "on", 1 and "1", and a
    decision must not be read out of a string."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


DEFINITION_KEYS = {"nodes", "edges", "metadata"}


class EnvelopeSerializer(StrictSerializer):
    """A body that carries a definition under ``workflow``: a definition posted bare (an example
    file as it is) gets a message that shows the expected body instead of "unknown field"."""

    envelope = '{"workflow": {...}}'

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict) and "workflow" not in data and DEFINITION_KEYS & set(data):
            raise serializers.ValidationError({"workflow": [serializers.ErrorDetail(
                f"this looks like a bare workflow definition; send it wrapped: {self.envelope}",
                code="definition_not_wrapped")]})
        return super().to_internal_value(data)


def tag_field(**kwargs: Any) -> serializers.RegexField:
    """A workflow's tag as a request names it: judged by the tag's pattern as sent, not trimmed first
    (``"wf1 "`` was saved as ``wf1``, while ``GET /workflows/wf1%20`` found nothing)."""
    return serializers.RegexField(TAG_PATTERN, max_length=TAG_MAX_CHARS, trim_whitespace=False,
                                  error_messages={"invalid": TAG_RULE}, **kwargs)


class WorkflowCreateIn(EnvelopeSerializer):
    """Save a definition under a tag: a new version when the content is new."""

    envelope = '{"tag_name": "my-workflow", "workflow": {"nodes": [...], "edges": [...]}, "description": "..."}'
    tag_name = tag_field()

    def validate_tag_name(self, value: str) -> str:
        if value in RESERVED_TAGS:
            raise serializers.ValidationError(f"{value!r} is reserved (POST /workflows/{value} is an operation)",
                                              code="reserved")
        return value
    workflow = JSONObjectField()
    description = serializers.CharField(required=False, allow_blank=True, max_length=VERSION_DESCRIPTION_MAX_CHARS,
                                        default="")
    base_version = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=2**31 - 1,
        help_text="the version this edit started from (`version` of GET /workflows/{tag}): when another is current "
                  "now, the write is refused with 409 `version_conflict` naming it. null: the tag must be new. "
                  "Absent: no check, the write replaces whatever is current.")


class WorkflowValidateIn(EnvelopeSerializer):
    """A definition to check without saving."""

    # Any JSON: the answer says why it is not a workflow (valid: false), never a 400.
    workflow = serializers.JSONField(allow_null=True)


class WorkflowPatchIn(StrictSerializer):
    operations = serializers.ListField(child=JSONObjectField(), min_length=1, max_length=WORKFLOW_PATCH_MAX_OPERATIONS)
    description = serializers.CharField(required=False, allow_blank=True, max_length=VERSION_DESCRIPTION_MAX_CHARS,
                                        default="")
    base_version = serializers.IntegerField(
        required=False, min_value=0, max_value=2**31 - 1,
        help_text="the version these operations were written against: when another is current now, the patch is "
                  "refused with 409 `version_conflict` naming it. Absent: they apply to whatever is current.")


def version_field() -> serializers.IntegerField:
    """The saved version (seq) a start runs, as its client read it: another tab's save since then
    does not change what runs (omitted: the current one)."""
    return serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1, help_text=(
        "the version (seq) to run, as the client read it; omitted: the current one"))


class ExecuteIn(StrictSerializer):
    inputs = JSONObjectField(required=False, default=dict)
    version = version_field()


class RunCreateIn(EnvelopeSerializer):
    """Start a run of a saved workflow (tag) or of a definition (workflow): exactly one of them."""

    envelope = '{"tag": "my-workflow", "inputs": {...}} or {"workflow": {"nodes": [...]}, "inputs": {...}}'
    one_of_required = (("tag",), ("workflow",))
    tag = tag_field(required=False)
    version = version_field()
    workflow = JSONObjectField(required=False)
    inputs = JSONObjectField(required=False, default=dict)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("tag" in attrs) == ("workflow" in attrs):
            raise serializers.ValidationError({"tag": [serializers.ErrorDetail(
                "give exactly one of tag or workflow", code="one_of")]})
        if "version" in attrs and "tag" not in attrs:
            raise serializers.ValidationError({"version": [serializers.ErrorDetail(
                "a version is a saved workflow's: give its tag", code="requires_tag")]})
        return attrs


class TokenIn(StrictSerializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=1000, trim_whitespace=False)


F = TypeVar("F", bound=serializers.Field)


def computed(field_class: type[F], value: Callable[[Any], Any], **kwargs: Any) -> F:
    """An output field of ``field_class`` (its type is what the schema says, and it renders the
    value as that class does) whose value is ``value(instance)``: for what the instance holds only
    as a fact to derive (a count, a part of its definition)."""
    cls = type(field_class.__name__, (field_class,), {"get_attribute": lambda self, instance: value(instance)})
    return cls(**kwargs)


class MaterializedField(serializers.JSONField):
    """A definition, present only when the request asked for it (``materialize`` in the context)."""

    def __init__(self, value: Callable[[Any], Any], **kwargs: Any) -> None:
        self.value = value
        super().__init__(required=False, **kwargs)

    def get_attribute(self, instance: Any) -> Any:
        if not self.context.get("materialize"):
            raise SkipField
        return self.value(instance)


EMPTY_DEFINITION: dict[str, Any] = {"nodes": [], "edges": []}


def _current_definition(workflow: Workflow) -> dict[str, Any]:
    listed = getattr(workflow, "listed_definition", None)  # a list's: read while it fit, else a marker
    if listed is not None:
        return listed
    version = workflow.current_version
    return version.artifact.content if version else EMPTY_DEFINITION


def _summary(workflow: Workflow, field: str, empty: Any) -> Any:
    """One of the current version's summary fields (kept at save): a list reads no definition."""
    version = workflow.current_version
    return getattr(version, field) if version else empty


class ProblemOut(serializers.Serializer):
    """One finding; a rule may add keys of its own after these."""

    path = serializers.CharField()
    rule = serializers.CharField()
    message = serializers.CharField()

    def to_representation(self, problem: Any) -> dict[str, Any]:
        return {**super().to_representation(problem), **problem.details}


class WorkflowSavedOut(serializers.Serializer):
    # renders definitions.Saved: what saving a definition did

    artifact_id = serializers.CharField(source="version.artifact_id")
    cas_id = serializers.CharField(source="version.artifact_id")
    version_hash = computed(serializers.CharField, lambda saved: saved.version.artifact_id.split(":", 1)[1])
    tag = serializers.CharField(source="workflow.tag")
    owner = serializers.CharField(source="workflow.owner.username")
    version = serializers.IntegerField(source="version.seq")
    created = serializers.BooleanField()
    nodes_count = serializers.IntegerField(source="version.nodes_count")
    edges_count = serializers.IntegerField(source="version.edges_count")
    created_at = serializers.DateTimeField(source="version.created_at")
    warnings = ProblemOut(many=True, source="report.warnings")


class ValidationOut(serializers.Serializer):
    # renders validation.Report

    valid = serializers.BooleanField()
    errors = ProblemOut(many=True)
    warnings = ProblemOut(many=True)


def left_out_text(item: str, what: str = "a string") -> str:
    """What the schema says of a value a list reads while the answer has room (``selectors.fill_within``)."""
    return (f'{what}; in a list, while the page has room (AOB_DETAILS_MAX_BYTES), else {{"truncated": true, '
            f'"bytes", "href"}} linking to {item}, which answers it whole')


def listed_text(item: str) -> serializers.JSONField:
    """A text field that a list may carry as a marker (``left_out_text``); ``item``: where it leads."""
    return serializers.JSONField(help_text=left_out_text(item))


class LastRunOut(serializers.Serializer):
    # renders a workflow's selectors.with_last_run annotations; null when it has no run

    run_id = serializers.UUIDField(source="last_run_id")
    status = serializers.CharField(source="last_run_status",
                                   help_text="a run status: " + ", ".join(Run.Status.values))
    created_at = serializers.DateTimeField(source="last_run_at")

    def get_attribute(self, workflow: Workflow) -> Workflow | None:
        return workflow if workflow.last_run_id else None


class WorkflowOut(serializers.Serializer):
    # renders a workflow annotated by selectors.with_last_run; its definition with context["materialize"]

    tag = serializers.CharField()
    owner = serializers.CharField(source="owner.username")
    artifact_id = serializers.CharField(source="current_version.artifact_id", allow_null=True)
    version = serializers.IntegerField(source="current_version.seq", allow_null=True)
    nodes_count = computed(serializers.IntegerField, lambda w: _summary(w, "nodes_count", 0))
    edges_count = computed(serializers.IntegerField, lambda w: _summary(w, "edges_count", 0))
    name = computed(serializers.JSONField, lambda w: _summary(w, "metadata_name", ""), help_text=(
        "metadata.name of the current version: " + left_out_text("the workflow")))
    description = computed(serializers.JSONField, lambda w: _summary(w, "metadata_description", ""), help_text=(
        "metadata.description of the current version: " + left_out_text("the workflow")))
    last_run = LastRunOut(allow_null=True, help_text="the newest run of this workflow the reader may see")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    definition = MaterializedField(_current_definition, help_text=(
        "with materialize=true; in a list, while the page's definitions fit AOB_DETAILS_MAX_BYTES, past it "
        '{"truncated": true, "bytes", "href"} linking to where it is read whole'))


class VersionOut(serializers.Serializer):
    # renders a WorkflowVersion; its definition with context["materialize"]

    tag = serializers.CharField(source="workflow.tag")
    seq = serializers.IntegerField()
    artifact_id = serializers.CharField()
    description = listed_text("the version (GET /workflows/{tag}/versions/{seq})")
    created_at = serializers.DateTimeField()
    definition = MaterializedField(lambda version: version.artifact.content)


class RunStartedOut(serializers.Serializer):
    run_id = serializers.UUIDField(source="pk")
    artifact_id = serializers.CharField(source="base_artifact_id")
    status = serializers.CharField()
    tag = serializers.CharField(allow_blank=True)


class ReplayStartedOut(RunStartedOut):
    replay_of = serializers.UUIDField(source="replay_of_id", help_text="the run replayed")


class TokenOut(serializers.Serializer):
    # renders an authtoken Token

    token = serializers.CharField(source="key")
    username = serializers.CharField(source="user.username")


class StorageOut(serializers.Serializer):
    stored_bytes = serializers.IntegerField(help_text=(
        "what your runs keep now: their inputs and node outputs as stored, finished or not"))
    limit_bytes = serializers.IntegerField(allow_null=True, help_text=(
        "AOB_OWNER_STORAGE_BYTES: past it a run's start is refused 409 owner_storage_full; null: no bound"))


class MeOut(serializers.Serializer):
    username = serializers.CharField()
    is_staff = serializers.BooleanField()
    storage = StorageOut()


class HealthOut(serializers.Serializer):
    status = serializers.CharField(help_text="ok, or degraded when a check is not ok (503 only when db, redis or broker is not)")
    checks = serializers.DictField(child=serializers.CharField(), help_text=(
        'per part: "ok", or "error: <what failed>" (db, redis, broker); the sweeper "ok", "disabled", '
        '"stale: <since when>" or "unknown: <why>"; queues "ok", "unserved: <each service queue no running '
        'worker consumes, what stops, the -Q to add>" or "unknown: not checked lately"'))


class FieldsBuiltOnce(serializers.ModelSerializer):
    """A model serializer whose fields are built from the model once per class and deep-copied
    for each instance, as DRF copies declared fields: DRF builds them anew per instance, which
    was 0.43 ms of a details request's CPU for ``RunResultOut`` (the copy: 0.21 ms). Nothing the
    build reads varies per instance (``Meta``, the declared fields, the model);
    ``tests/api/test_serializer_fields.py`` compares both."""

    _fields_built: ClassVar[dict[str, serializers.Field]]

    def get_fields(self) -> dict[str, serializers.Field]:
        built = type(self).__dict__.get("_fields_built")
        if built is None:
            built = super().get_fields()
            type(self)._fields_built = built  # a race builds the same fields twice, harmlessly
        return copy.deepcopy(built)


class RenderedPerThread:
    """An output serializer built once per thread and kept: ``render(obj)`` is its
    ``to_representation``. Building a ``RunDetailsOut`` (its fields, its nested serializers' fields)
    was 0.46 ms of a details answer's CPU and rendering 0.06 ms. Only for serializers the views
    build without context: each answer gets an empty context of its own, as a fresh serializer
    would (``RunResultOut`` caches a run's result there for one answer). A serializer is bound to
    one thread because its fields point back at it while they render.
    ``tests/api/test_serializer_fields.py`` compares the output with a fresh serializer's ``data``."""

    def __init__(self, serializer_class: type[serializers.Serializer]) -> None:
        self.serializer_class = serializer_class
        self._local = threading.local()

    def render(self, instance: Any) -> dict[str, Any]:
        serializer = getattr(self._local, "serializer", None)
        if serializer is None:
            serializer = self._local.serializer = self.serializer_class()
        serializer._context = {}
        return serializer.to_representation(instance)


_UNSET = object()


class RunOut(FieldsBuiltOnce):
    run_id = serializers.UUIDField(source="id")
    artifact_id = serializers.CharField(source="base_artifact_id")
    current_artifact_id = serializers.CharField()
    replay_of = serializers.UUIDField(source="replay_of_id", allow_null=True)
    budget = serializers.JSONField(source="shown_ceilings", help_text="The run's LLM spend ceilings {max_tokens, "
                                   "max_cost_usd}: its owner's, else the operator's. A sub-workflow's are null "
                                   "unless its owner set them, and within_run names the run whose ceilings its "
                                   "spend counts against")
    duration_ms = serializers.SerializerMethodField(help_text="from submission to the end; null until it ends")
    inputs = serializers.SerializerMethodField()
    error = serializers.JSONField(allow_null=True, help_text=left_out_text(
        "the run (GET /runs/{id})", "why it failed: {error_type, message, node_id, ...} (at most 8 KiB), or null"))
    deleting_at = serializers.DateTimeField(read_only=True, allow_null=True, help_text=(
        "when a delete (the owner's, or a prune) that did not finish took the first of its rows; null otherwise. "
        "What is left reads as before, a replay of it is refused, and the same delete again goes on"))

    class Meta:
        model = Run
        fields = ["run_id", "tag", "status", "artifact_id", "current_artifact_id", "inputs", "error", "replay_of",
                  "replay_from_node", "usage", "budget", "spawned_agents", "created_at", "started_at", "finished_at",
                  "duration_ms", "deleting_at"]

    @extend_schema_field({"type": "integer", "nullable": True})
    def get_duration_ms(self, run: Run) -> int | None:
        return run_duration_ms(run)

    @extend_schema_field({"type": "object", "additionalProperties": {}, "description": (
        "the run's inputs while they fit the answer's byte budget (AOB_DETAILS_MAX_BYTES), else "
        '{"truncated": true, "bytes", "href"} linking to GET /runs/{id}/inputs, which answers them whole')})
    def get_inputs(self, run: Run) -> Any:
        # a run read for an answer (``selectors.run_get``) or a list's row (``selectors.fill_inputs``)
        # says what it shows; a run a service wrote and returned (a cancel's) is judged here, by
        # the same stored size
        shown = getattr(run, "inputs_shown", _UNSET)
        if shown is not _UNSET:
            return shown
        return run_inputs_within(run, settings.AOB_DETAILS_MAX_BYTES)


class RunResultOut(RunOut):
    """A run with its result: ``output`` (``metadata.output`` as a worker computed and stored it
    once the run completed, else the terminal nodes' outputs by node id; null until the run
    completes, and while ``output_pending``) and ``output_error`` when that failed. The output is
    carried while it fits the answer's byte budget (``workflows.results.run_result``): the run's
    selector may have read it already (details, sharing one budget with the nodes, sets
    ``run.result``); else it is read here, once per answer."""

    output = serializers.SerializerMethodField()
    output_error = serializers.SerializerMethodField()
    output_pending = serializers.SerializerMethodField(help_text=(
        "the run completed and a worker is computing its metadata.output (an output_computed event "
        "follows); output is null until then"))

    class Meta(RunOut.Meta):
        fields = [*RunOut.Meta.fields, "output", "output_error", "output_pending"]

    def _result(self, run: Run) -> Result:
        cache = self.context.setdefault("_results", {})
        if run.pk not in cache:
            read = getattr(run, "result", None)
            cache[run.pk] = read if read is not None else run_result(run)
        return cache[run.pk]

    @extend_schema_field({"nullable": True, "description": "any JSON value; past the answer's byte budget "
                          "(AOB_DETAILS_MAX_BYTES) a {truncated: true, bytes, href} marker in its place (a terminal "
                          "node's entry: its artifact; metadata.output: GET /runs/{id}/output)"})
    def get_output(self, run: Run) -> Any:
        return self._result(run).output

    @extend_schema_field({"type": "object", "nullable": True, "additionalProperties": {},
                          "description": "why metadata.output could not be computed: {error_type, rule, message}"})
    def get_output_error(self, run: Run) -> Any:
        return self._result(run).error

    def get_output_pending(self, run: Run) -> bool:
        return self._result(run).pending


class RunInputsOut(serializers.Serializer):
    """``GET /runs/{id}/inputs``: the run's inputs whole, where the markers of its answers lead."""

    run_id = serializers.UUIDField()
    inputs = serializers.JSONField(help_text="a JSON object")


class RunOutputOut(serializers.Serializer):
    """``GET /runs/{id}/output``: the run's output whole, where the markers of ``GET /runs/{id}``
    and details lead (null until the run completes), or why it could not be computed. Terminal
    nodes' outputs go in smallest first while their sum fits ``AOB_MAX_NODE_OUTPUT_BYTES``; the
    rest are the same markers, linking to their artifacts."""

    run_id = serializers.UUIDField()
    output = serializers.JSONField(allow_null=True, help_text="any JSON value")
    output_error = serializers.JSONField(allow_null=True, help_text="{error_type, rule, message}")
    output_pending = serializers.BooleanField(help_text="metadata.output is still being computed: null until then")


class NodeDetailOut(serializers.Serializer):
    node_id = serializers.CharField()
    type = serializers.CharField()
    added_by_patch = serializers.BooleanField()
    status = serializers.CharField()
    input = serializers.JSONField(allow_null=True)
    output = serializers.JSONField(allow_null=True)
    output_artifact_id = serializers.CharField(allow_null=True)
    error = serializers.JSONField(allow_null=True)
    attempts = serializers.IntegerField()
    attempt_log = serializers.JSONField()
    iterations = serializers.IntegerField()
    reused = serializers.BooleanField()
    queued_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    queue_time_ms = serializers.IntegerField(allow_null=True)
    execution_time_ms = serializers.IntegerField(allow_null=True)
    total_duration_ms = serializers.IntegerField(allow_null=True)
    usage = serializers.JSONField()
    wait_reason = serializers.CharField(allow_blank=True, help_text=(
        "why a waiting node waits: approval, budget or workflow (a child run); why a queued node waits: worker "
        "(no running worker consumes its queue: its node_unserved event names the queue) or slot (its owner runs "
        "as many nodes of its type as AOB_OWNER_MAX_RUNNING allows; it starts when one of them ends) or unclaimed "
        "(a running worker consumes its queue and none claimed it for AOB_UNCLAIMED_AFTER_S: its node_unclaimed "
        "event says why that may be; it is sent again under a new id)"))
    waiting_for = serializers.CharField(allow_blank=True, help_text=(
        "what a queued or waiting node waits for, in words (from its wait_reason); empty when nothing is named"))


class PatchSummaryOut(serializers.Serializer):
    id = serializers.IntegerField()
    seq = serializers.IntegerField()
    status = serializers.CharField()
    description = listed_text("the patch (GET /runs/{id}/patches/{seq})")
    node_id = serializers.CharField(allow_blank=True)
    op_count = serializers.IntegerField()
    operations = serializers.JSONField(help_text=(
        'while the answer has room, else {"truncated": true, "bytes", "href"} linking to the patch'))
    artifact_id = serializers.CharField()
    created_at = serializers.DateTimeField()


class PatchRefusalOut(serializers.Serializer):
    """A patch the policy refused; nothing of it reached the run."""

    id = serializers.IntegerField()
    node_id = serializers.CharField(allow_blank=True)
    agent = serializers.BooleanField()
    proposed_by = serializers.CharField(source="proposed_by.username", allow_null=True, default=None)
    rule = serializers.CharField()
    op = serializers.IntegerField(allow_null=True)
    path = serializers.CharField(allow_blank=True)
    message = serializers.CharField()
    operations = serializers.JSONField(help_text=(
        "as proposed (kept up to 64 KiB, else {truncated, bytes}); in details while they fit its byte budget, "
        'else {"truncated": true, "bytes", "href"} linking to GET /runs/{id}/refusals/{refusal_id}'))
    created_at = serializers.DateTimeField()


class RunDetailsOut(serializers.Serializer):
    run = RunResultOut()
    base_definition = serializers.JSONField()
    current_definition = serializers.JSONField()
    nodes = NodeDetailOut(many=True)
    patches = PatchSummaryOut(many=True, help_text="the latest 100 patches, in order (GET /runs/{id}/patches: all)")
    patches_count = serializers.IntegerField(help_text="how many patches the run has")
    # the run's inputs or output, a node field or a patch's operations is a {"truncated": true, "bytes", "href"} marker
    truncated = serializers.BooleanField()
    inputs_truncated = serializers.BooleanField(help_text="run.inputs is the marker: they passed the answer's "
                                                "byte budget (GET /runs/{id}/inputs answers them whole)")
    patch_refusals = PatchRefusalOut(many=True, help_text="the latest 50 refused patches, newest first")


class NodeIterationOut(NodeDetailOut):
    node_id = None
    type = None
    added_by_patch = None
    iterations = None
    iteration = serializers.IntegerField()


class NodeIterationsOut(serializers.Serializer):
    node_id = serializers.CharField()
    count = serializers.IntegerField()
    offset = serializers.IntegerField()
    next = serializers.CharField(allow_null=True)
    results = NodeIterationOut(many=True)


class NodeFieldOut(serializers.Serializer):
    """``GET /runs/{id}/nodes/{node_id}/iterations/{iteration}/{field}``: one field of one node run
    whole, where the markers of details and iterations lead once it passes their byte budget."""

    run_id = serializers.UUIDField()
    node_id = serializers.CharField()
    iteration = serializers.IntegerField()
    field = serializers.ChoiceField(choices=HEAVY_FIELDS)
    value = serializers.JSONField(allow_null=True, help_text="any JSON value, whole")


class ReplayIn(StrictSerializer):
    reuse_llm = serializers.BooleanField(
        required=False, default=False,
        help_text="Agent nodes reuse the source run's recorded model responses while their conversation matches "
                  "it: no call, no cost")

    def validate_reuse_llm(self, value: bool) -> bool:
        if not isinstance(self.initial_data.get("reuse_llm", False), bool):
            raise serializers.ValidationError("must be true or false", code="type")
        return value


class RunBudgetIn(StrictSerializer):
    min_properties = 1

    max_tokens = serializers.IntegerField(min_value=0, max_value=BUDGET_MAX_TOKENS, required=False)
    max_cost_usd = serializers.FloatField(min_value=0, max_value=BUDGET_MAX_COST_USD, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:  # named by the first field (it was non_field_errors, rule invalid)
            raise serializers.ValidationError({"max_tokens": [serializers.ErrorDetail(
                "give max_tokens, max_cost_usd or both", code="required")]})
        return attrs


class EventOut(FieldsBuiltOnce):
    run_id = serializers.UUIDField()
    node_id = serializers.CharField(allow_blank=True)

    class Meta:
        model = Event
        fields = ["run_id", "seq", "type", "node_id", "data", "created_at"]


class ArtifactOut(serializers.Serializer):
    id = serializers.CharField()
    kind = serializers.CharField()
    content = serializers.JSONField()
    size_bytes = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class ErrorOut(serializers.Serializer):
    error = serializers.CharField()
    message = serializers.CharField()
    details = serializers.DictField()


class RunPatchIn(StrictSerializer):
    # An empty list is a valid no-op (RFC 6902); the policy's bound, whoever proposes
    # (services.patches.MAX_OPERATIONS), stated in the schema (it said 1,000 and the policy refused past 100)
    operations = serializers.ListField(child=JSONObjectField(), min_length=0, max_length=MAX_OPERATIONS)
    # the service's bound, whoever proposes (services.patches.DESCRIPTION_MAX_CHARS), stated in the schema
    description = serializers.CharField(required=False, allow_blank=True, max_length=DESCRIPTION_MAX_CHARS, default="")
    # No default "": it would contradict this field's pattern and make the OpenAPI document invalid.
    node_id = serializers.RegexField(r"^[a-zA-Z0-9_-]+$", max_length=200, required=False)
    # as sent (not trimmed first), 71 characters exactly: ``$`` would take a final line break
    base_artifact_id = serializers.RegexField(
        r"^sha256:[0-9a-f]{64}$", min_length=71, max_length=71, trim_whitespace=False, required=False,
        help_text="the definition these operations were written against (current_artifact_id of GET /runs/{id}): "
                  "when the run has another now (a patch, an agent's too, changed it since), the patch is refused "
                  "with 409 `stale_base` naming the current one, since its array positions may name other nodes. "
                  "Absent: they apply to whatever is current.")


class RunPatchOut(serializers.Serializer):
    id = serializers.IntegerField(allow_null=True, help_text="null for an empty patch (status noop): nothing stored")
    run_id = serializers.UUIDField()
    seq = serializers.IntegerField(allow_null=True)
    artifact_id = serializers.CharField(source="after_artifact_id")
    patch_artifact_id = serializers.CharField(allow_null=True)
    before_artifact_id = serializers.CharField()
    op_count = serializers.SerializerMethodField()
    operations = serializers.JSONField(help_text=(
        'in a list, while the page has room (AOB_DETAILS_MAX_BYTES), else {"truncated": true, "bytes", "href"} '
        "linking to the patch"))
    description = listed_text("the patch (GET /runs/{id}/patches/{seq})")
    node_id = serializers.CharField(allow_blank=True)
    status = serializers.CharField()
    reason = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    applied_at = serializers.DateTimeField(allow_null=True)

    def get_op_count(self, obj: Any) -> int:
        # kept when the patch was written; a list's reads it, or counts one written before it was
        counted = getattr(obj, "op_count_listed", None)
        if counted is None:
            counted = obj.op_count
        return counted if counted is not None else len(obj.operations)


class TimelineAttemptOut(serializers.Serializer):
    attempt = serializers.IntegerField()
    status = serializers.CharField()
    started_at = serializers.DateTimeField(allow_null=True)
    start_ms = serializers.IntegerField(allow_null=True, help_text="offset from the run's creation")
    duration_ms = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(allow_null=True, help_text="the start of its message (200 characters), and its length")


class TimelineItemOut(serializers.Serializer):
    node_id = serializers.CharField()
    type = serializers.CharField()
    iteration = serializers.IntegerField()
    status = serializers.CharField()
    wait_reason = serializers.CharField(allow_blank=True)
    waiting_for = serializers.CharField(allow_blank=True, help_text="what it waits for, in words (as NodeOut's)")
    attempts = serializers.IntegerField()
    queued_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    queued_ms = serializers.IntegerField(allow_null=True, help_text="offsets from the run's creation")
    started_ms = serializers.IntegerField(allow_null=True)
    finished_ms = serializers.IntegerField(allow_null=True)
    queue_wait_ms = serializers.IntegerField(allow_null=True)
    run_ms = serializers.IntegerField(allow_null=True, help_text="so far, for a node run still active")
    attempt_log = TimelineAttemptOut(many=True)


class TimelineOut(serializers.Serializer):
    run_id = serializers.UUIDField()
    status = serializers.CharField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    duration_ms = serializers.IntegerField(allow_null=True)
    span_ms = serializers.IntegerField(allow_null=True, help_text="from creation to the end, or to now")
    items = TimelineItemOut(many=True, help_text=(
        "node runs, iterations included, in queue order: at most 2,000 and four answers' byte budgets "
        "(AOB_DETAILS_MAX_BYTES); an attempt's error is the start of its message (the whole error is in the "
        "node run's attempt log)"))
    truncated = serializers.BooleanField(help_text="more node runs than the timeline lists")
