"""Admin: every model readable; actions go through the same services as the API."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers, widgets
from django.contrib.admin.utils import display_for_field
from django.contrib.admin.views.main import ORDER_VAR, ChangeList
from django.contrib.auth.models import Group
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.core.paginator import Paginator
from django.db.models import F, Field, Func, JSONField, Model, Q, QuerySet, TextField
from django.db.models.constants import LOOKUP_SEP
from django.db.models.functions import Cast, Left
from django.forms.fields import InvalidJSONInput, JSONString
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.text import smart_split
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from aob.text import shown
from aob_project.exceptions import AobError
from workflows import registry, visibility
from workflows.answers import node_value_href, run_inputs_href
from workflows.api.parsers import BodyRejected, loads_strict
from workflows.models import Artifact, Event, NodeRun, PatchRefusal, Run, RunPatch, Workflow, WorkflowVersion
from workflows.selectors import artifact_seen, artifacts_referenced, refusal_href
from workflows.services import runs
from workflows.services.patches import Rule

PRETTY_CHARS = 64 * 1024  # a stored JSON value a page shows is cut here, by the database


def pretty_head(queryset: QuerySet, field: str, *, whole: str) -> str:
    """The JSON column ``field`` of the one row of ``queryset``, pretty-printed and cut at
    ``PRETTY_CHARS`` by the database, so the page never reads the whole value (an artifact, or an
    approval's context of every upstream output, may be hundreds of megabytes; the admin defers
    the column). ``whole`` says where the whole value is. Its bidirectional controls and invisible
    characters are drawn as escapes (``aob.text``): it is often someone else's words."""
    text = queryset.values_list(Left(Func(F(field), function="jsonb_pretty", output_field=TextField()),
                                     PRETTY_CHARS + 1), flat=True).first() or ""
    if len(text) <= PRETTY_CHARS:  # cut, then escaped: an escape is longer than what it shows
        return format_html("<pre style='white-space:pre-wrap;max-width:70em'>{}</pre>", shown(text))
    return format_html("<pre style='white-space:pre-wrap;max-width:70em'>{}</pre><p>Cut at {} characters: the "
                       "whole value is at {}.</p>", shown(text[:PRETTY_CHARS]), PRETTY_CHARS, whole)


# A page shows this many of a run's (a workflow's, a hook's, a schedule's) rows, newest first; the
# model's changelist, filtered to the one parent and paged, has the rest. An inline would read and
# render every row: a run at the node-run cap took a minute and 50 MB for one page.
LATEST_ROWS = 50
CELL_CHARS = 300  # a cell's text past this is cut (an error, an event's data)


def latest_rows(queryset: QuerySet, fields: list[str], *, rest: dict[str, Any]) -> str:
    """The first ``LATEST_ROWS`` rows of ``queryset`` (ordered newest first) as a read-only table
    of ``fields``, and when there are more, a link to all of them: the model's changelist filtered
    by ``rest`` (e.g. ``{"run": run.pk}``)."""
    opts = queryset.model._meta
    columns = [opts.get_field(name) for name in fields]
    # a JSON cell (an event's data, an error) is cut by the database: a row never reads it whole
    cut = {c.name: Left(Cast(c.name, TextField()), CELL_CHARS + 1) for c in columns if isinstance(c, JSONField)}
    plain = [name for name in fields if name not in cut]
    rows = list(queryset.only(*plain).annotate(**{f"{name}{_CUT}": text for name, text in cut.items()})
                [:LATEST_ROWS + 1])
    if not rows:
        return "—"
    head = format_html_join("", "<th>{}</th>", ((c.verbose_name,) for c in columns))
    body = format_html_join("", "<tr>{}</tr>", (
        (format_html_join("", "<td>{}</td>", ((_cell(row, c),) for c in columns)),) for row in rows[:LATEST_ROWS]))
    table = format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", head, body)
    if len(rows) <= LATEST_ROWS:
        return table
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist") + "?" + urlencode(rest)
    return format_html('{}<p>The latest {} are shown. <a href="{}">All {} →</a></p>', table, LATEST_ROWS, url,
                       opts.verbose_name_plural)


_CUT = "_shown_cut"


def _cell(row: Model, field: Field) -> str:
    if hasattr(row, f"{field.name}{_CUT}"):  # the start of its JSON text (``latest_rows``)
        text = getattr(row, f"{field.name}{_CUT}")
        return "—" if text is None else shown(text if len(text) <= CELL_CHARS else text[:CELL_CHARS] + "…")
    value = getattr(row, field.attname)
    # a status or an event type as the API, the logs and the filters name it (not its label)
    text = str(value) if field.choices and value is not None else display_for_field(value, field, "—")
    if isinstance(text, SafeString):  # a boolean's icon
        return text
    return shown(str(text) if len(str(text)) <= CELL_CHARS else str(text)[:CELL_CHARS] + "…")


# A changelist counts at most this many rows: past it, it says "10000+ events" and pages that far
# (filters and the search narrow the rest). Django counted every row twice per page (the filtered
# count and the full count), a scan of a whole table of events or node runs for each visitor, and
# let ?p= ask for an OFFSET as deep as the table.
COUNT_CAP = 10_000


class AtLeast(int):
    """A count that stopped at the cap: the cap in comparisons and page arithmetic, "10000+" on
    the page (the changelist's templates print it in the result count and "Select all")."""

    def __str__(self) -> str:
        return f"{int(self)}+"


class CappedPaginator(Paginator):
    @cached_property
    def count(self) -> int:
        # one COUNT over a LIMITed subquery of ids; no ordering, which would sort every match
        rows = self.object_list.order_by().values("pk")[:COUNT_CAP + 1].count()
        return AtLeast(COUNT_CAP) if rows > COUNT_CAP else rows


class ColumnsChangeList(ChangeList):
    """A changelist page that reads of its rows only its admin's ``list_columns``, sorted only by the
    columns its admin sorts by (``get_sortable_by``): a column header's ``?o=`` naming another is
    ignored, as Django ignores one naming no column (Django only hid the header)."""

    def get_ordering(self, request: HttpRequest, queryset: QuerySet) -> list[Any]:
        if ORDER_VAR in self.params:
            kept = [p for p in str(self.params[ORDER_VAR]).split(".") if self._sortable(p)]
            if kept:
                self.params[ORDER_VAR] = ".".join(kept)
            else:
                del self.params[ORDER_VAR]
        return super().get_ordering(request, queryset)

    def _sortable(self, part: str) -> bool:
        try:
            return self.list_display[int(part.rpartition("-")[2])] in self.sortable_by
        except (IndexError, ValueError):
            return False

    def get_results(self, request: HttpRequest) -> None:
        columns = self.model_admin.list_columns
        if columns:
            self.queryset = self.queryset.select_related(None).only(*columns)
            if related := self.model_admin.get_list_select_related(request):
                self.queryset = self.queryset.select_related(*related)
        super().get_results(request)


class BoundedListAdmin(admin.ModelAdmin):
    """A changelist whose reads are bounded whatever the table holds: one capped count, no count
    of the unfiltered table, no per-choice filter counts (facets), and of each row only the
    columns it shows (``list_columns``)."""

    paginator = CappedPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    # What a changelist page reads of each row: the columns it shows, and of a row it names in a
    # column, what that row's name needs (``run__tag``: a run is named by its id and tag); the
    # rows those names reach are joined, no others. Unset, a page read every column of its 100
    # rows (a node run's input, output and attempt log, an event's data) and, for a list naming
    # any row by key, that row and every row it refers to in turn (a run's owner and both its
    # definitions' artifacts, contents and all). Only the page: a change page and an action read
    # whole rows (one, or the ones selected).
    list_columns: Sequence[str] = ()

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if "widget" not in kwargs and db_field.name in self.get_autocomplete_fields(request):
            kwargs["widget"] = KeyedAutocomplete(db_field, self.admin_site, using=kwargs.get("using"))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def lookup_allowed(self, lookup: str, value: Any, request: HttpRequest | None = None) -> bool:
        """A changelist filters by its declared filters (``list_filter``) and by the row it belongs
        to, a key's exact value (``?run=``: the links ``latest_rows`` makes); any other lookup is
        Django's 400. Django let an address filter by any column of the table (``?output__icontains=``
        on node runs read every output, megabytes each, in one statement: 2.7 s for 40 of 4 MB,
        growing with the table), around the bounded search (``get_search_results``)."""
        name, _, rest = lookup.partition(LOOKUP_SEP)
        declared = {item if isinstance(item, str) else item[0] if isinstance(item, list | tuple)
                    else item.parameter_name for item in self.get_list_filter(request)}
        if name not in declared:
            try:
                field = self.model._meta.get_field(name)
            except FieldDoesNotExist:
                return super().lookup_allowed(lookup, value, request)  # no such column: Django's ?e=1
            if not (field.many_to_one and rest in PARENT_LOOKUPS):
                return False
        return super().lookup_allowed(lookup, value, request)

    def get_ordering(self, request: HttpRequest) -> Sequence[Any]:
        """A page reads its rows in an index's order and stops at its 100: the admin's ``ordering``
        (declared where an index gives it), else newest first by key (ids grow with creation; a key
        that is no sequence still has its index). The models' own orders (by time, pending first,
        by a vote's time) are in no index: each visit sorted every row of the table, 1M artifacts
        or runs, for one page."""
        return self.ordering or ["-pk"]

    def get_sortable_by(self, request: HttpRequest) -> Sequence[str]:
        """The columns a header sorts by: its key's and a unique column's, whose order an index gives
        whole (no tie for Django's ``-pk`` to break), either way. Another (an event's node id, a
        run's tag) sorted every row of the table, every tenant's, for one page of 100."""
        if self.sortable_by is not None:
            return self.sortable_by
        return [name for name in self.get_list_display(request) if self._unique_column(name)]

    def _unique_column(self, name: Any) -> bool:
        if not isinstance(name, str):
            return False
        if not hasattr(self, name):  # a model field's name, else an admin method's admin_order_field
            name = getattr(getattr(self.model, name, None), "admin_order_field", name)
        elif not isinstance(name := getattr(getattr(self, name), "admin_order_field", None), str):
            return False
        try:
            field = self.model._meta.get_field(name)
        except FieldDoesNotExist:
            return False
        return field.unique and not field.is_relation  # a key orders by its row's own order, a join

    def get_list_select_related(self, request: HttpRequest) -> Any:
        if not self.list_columns:
            return super().get_list_select_related(request)
        return sorted({c.rsplit("__", 1)[0] for c in self.list_columns if "__" in c})

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return ColumnsChangeList

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Any], search_term: str) -> Any:
        """A search of its first ``SEARCH_MAX_TERMS`` words (the page says so): Django ANDs one
        ``LIKE`` a word and search field, with no cap, and each scans every row (1,000 words over
        20,000 node runs: 2,002 comparisons in one statement, 1.1 s, growing with the table)."""
        terms = list(smart_split(search_term))
        if len(terms) > SEARCH_MAX_TERMS:
            self.message_user(request, f"Searched for the first {SEARCH_MAX_TERMS} of {len(terms)} words.",
                              level=messages.WARNING)
            search_term = " ".join(terms[:SEARCH_MAX_TERMS])
        return super().get_search_results(request, queryset, search_term)

    def response_action(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        """An action's selection is the rows' keys as the page's boxes carry them; one that is no key
        of this model (a hand-made or stale post) refuses the action with nothing done. Django
        filtered by it as it came: a run's key that is no UUID, or a number's that is no number,
        raised, and a NUL reached PostgreSQL (each a 500)."""
        key = self.model._meta.pk
        try:
            for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
                if "\x00" in value:
                    raise ValidationError("NUL")
                key.to_python(value)
        except ValidationError:
            self.message_user(request, "The selection names rows that do not exist; nothing was done: select them "
                              "again", level=messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
        return super().response_action(request, queryset)


SEARCH_MAX_TERMS = 10
PARENT_LOOKUPS = ("", "exact", "id", "id__exact")  # a changelist filtered by the row its rows belong to


# The rows an admin action takes at once: "Select all" hands it every match, and it calls a service
# for each (the approvals' and the runs' own rules) in the one request (10,000 runs: 10,000 calls
# and as many messages for one click, a red-team helper's finding).
ACTION_MAX_ROWS = 100


def act_on_each(model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Any], done_as: str,
                act: Callable[[Any], Any]) -> None:
    """``act`` on each selected row through its service, at most ``ACTION_MAX_ROWS`` (past it nothing
    is done and the page says so), then one message naming those done and one for each distinct
    refusal naming its rows (at most ten each, and how many more)."""
    rows = list(queryset[:ACTION_MAX_ROWS + 1])
    if len(rows) > ACTION_MAX_ROWS:
        model_admin.message_user(request, f"An action takes at most {ACTION_MAX_ROWS} rows at once; nothing was "
                                 "done: narrow the selection with the filters", level=messages.ERROR)
        return
    done: list[str] = []
    refused: dict[str, list[str]] = {}
    for row in rows:
        try:
            act(row)
            done.append(str(row.pk))
        except AobError as exc:
            refused.setdefault(exc.message, []).append(str(row.pk))
    meta = model_admin.model._meta

    def named(pks: list[str]) -> str:
        shown = ", ".join(pks[:10]) + (f" and {len(pks) - 10} more" if len(pks) > 10 else "")
        return f"{meta.verbose_name if len(pks) == 1 else meta.verbose_name_plural} {shown}"

    if done:
        model_admin.message_user(request, f"{named(done)}: {done_as}")
    for message, pks in refused.items():
        model_admin.message_user(request, f"{named(pks)}: {message}", level=messages.WARNING)


class ReadOnlyAdmin(BoundedListAdmin):
    """History: no add, change or delete by hand; what may change goes through a service (actions)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class OwnersRowsAdmin(BoundedListAdmin):
    """Rows of someone's runs (a run, its node runs, events, patches, approvals) or workflows, shown
    in the admin by the rule every other surface reads (``workflows.visibility``): another owner's
    only to staff who read every owner's (``reads_every_run``, ``workflows.view_run``; for workflows
    ``reads_every_workflow``, ``workflows.view_workflow``), and to everyone else their own. The
    permission on the row's own model lets a staff member into its pages, and says nothing of whose
    rows they read there: Django's admin takes a change permission as a view one, so staff given
    ``workflows.change_run`` to cancel their own runs read every tenant's runs, inputs, node runs and
    events, which the API answers them with a 404. ``owner``: the lookup from a row to its owner."""

    owner = "run__owner"
    reads_every: Callable[[Any], bool] = staticmethod(visibility.reads_every_run)

    def get_queryset(self, request):
        rows = super().get_queryset(request)
        return rows if self.reads_every(request.user) else rows.filter(self.own(request.user))

    def own(self, user: Any) -> Q:
        """The rows ``user`` reads without reading every owner's."""
        return Q(**{self.owner: user})


class OwnedRowsAdmin(BoundedListAdmin):
    """Rows that act as the person they belong to: a schedule starts runs as its owner, a secret is
    sent as theirs, a hook's mapping makes their runs' inputs, a notification target receives what
    they are asked. Staff who are not superusers may be given these models' permissions to look
    after their own (an operator grants them); they add, change and delete only their own rows,
    and add them for themselves only, as on the API: another's row, where they may see it
    (``others_visible``), is read-only to them, and its delete, alone or in a bulk delete, refused
    with nothing deleted. The row's person is ``owner_field``; a row with none (a group's
    notification target) is a superuser's."""

    owner_field = "owner"
    # which staff who are not superusers see others' rows at all (read-only): every one given the
    # model's permissions where a row shows names only (a secret's); no one where a row holds a
    # credential (a notification target's webhook URL is all one needs to post as its person); and
    # where a row shows its owner's workflow and their runs' inputs (a schedule's inputs are every
    # run's it starts), those who read every owner's runs and workflows (``OwnersRowsAdmin``'s rule)
    others_visible: Callable[[Any], bool] = staticmethod(lambda user: True)

    def get_queryset(self, request):
        rows = super().get_queryset(request)
        if self.others_visible(request.user) or request.user.is_superuser:
            return rows
        return rows.filter(**{self.owner_field: request.user})

    def owns(self, request: HttpRequest, obj: Any) -> bool:
        user = request.user
        return obj is None or user.is_superuser or getattr(obj, f"{self.owner_field}_id") == user.pk

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and self.owns(request, obj)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and self.owns(request, obj)

    def get_changeform_initial_data(self, request):
        # one's own by default (and the only choice for staff who are not superusers, whose
        # autocomplete of users may be closed to them)
        return {self.owner_field: request.user.pk, **super().get_changeform_initial_data(request)}

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        """The rows are saved through their services, whose rules hold on every surface: one broken
        at the save (a schedule's or secret's last slot taken by another save meanwhile, a rule the
        form does not check) is shown as a message, with nothing saved."""
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except AobError as exc:
            self.message_user(request, exc.message, level=messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        related = db_field.related_model
        if not request.user.is_superuser and db_field.name == self.owner_field:
            kwargs["queryset"] = related.objects.filter(pk=request.user.pk)
        elif not request.user.is_superuser and related is Group:
            kwargs["queryset"] = Group.objects.none()
        elif not request.user.is_superuser and any(f.name == "owner" for f in related._meta.fields):
            kwargs["queryset"] = related.objects.filter(owner=request.user)  # a schedule's workflow: one's own
        if db_field.name in self.raw_id_fields and "queryset" in kwargs:
            kwargs["widget"] = OfferedRawIdWidget(db_field.remote_field, self.admin_site, kwargs["queryset"],
                                                  using=kwargs.get("using"))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class OfferedRawIdWidget(widgets.ForeignKeyRawIdWidget):
    """A key typed by hand (``raw_id_fields``) named beside the box only when it is a row the field
    offers: Django's widget names any row of the table by its key, so a form refused with another
    owner's workflow showed that workflow's tag, and counting up the keys listed every owner's tags."""

    def __init__(self, rel: Any, admin_site: Any, offered: QuerySet, using: str | None = None) -> None:
        super().__init__(rel, admin_site, using=using)
        self.offered = offered

    def label_and_url_for_value(self, value: Any) -> tuple[str, str]:
        try:
            offered = self.offered.filter(**{self.rel.get_related_field().name: value}).exists()
        except (ValueError, TypeError, ValidationError):
            return "", ""
        return super().label_and_url_for_value(value) if offered else ("", "")


class KeyedAutocomplete(widgets.AutocompleteSelect):
    """Django's autocomplete box, shown again for a form refused with a value that is no key of its
    table (``owner=abc``): Django's looked the value up as it was and answered a 500 (``ValueError``)
    where the form's own error ("select a valid choice") was due. A value its key field cannot read
    is shown as nothing chosen."""

    def optgroups(self, name: str, value: Any, attr: Any = None) -> Any:
        key = self.field.target_field
        readable = []
        for item in value:
            try:
                key.to_python(item)
            except ValidationError:
                continue
            readable.append(item)
        return super().optgroups(name, readable, attr)


class StrictJSONField(forms.JSONField):
    """A form's JSON parsed as the API parses a body (``loads_strict``): what PostgreSQL or the
    engine cannot hold (NUL, a lone surrogate, NaN and 1e999, a number past 64 bits, nesting past
    ``AOB_MAX_JSON_DEPTH``) is the field's error naming the rule. Django's field took each and the
    save was a 500 (or, for a 65-bit integer, a schedule whose every firing failed)."""

    def to_python(self, value: Any) -> Any:
        if self.disabled or value in self.empty_values or not isinstance(value, str):
            return super().to_python(value)
        try:
            converted = loads_strict(value.encode("utf-8"))
        except BodyRejected as exc:
            raise forms.ValidationError(str(exc.detail), code=exc.rule) from None
        return JSONString(converted) if isinstance(converted, str) else converted

    def bound_data(self, data: Any, initial: Any) -> Any:
        # the form shown again with its error: Django's parse of the text would raise again
        if self.disabled or not isinstance(data, str):
            return super().bound_data(data, initial)
        try:
            return self.to_python(data)
        except forms.ValidationError:
            return InvalidJSONInput(data)


admin.site.unregister(TokenProxy)


class SuperusersOnly:
    """A page for superusers only, whatever permissions a staff member was given: what it shows or
    does acts as anyone (see its admin's docstring)."""

    def has_module_permission(self, request):
        return request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_add_permission(self, request, *args):
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser


@admin.register(TokenProxy)
class ApiTokenAdmin(SuperusersOnly, TokenAdmin):
    """DRF's page of API tokens, where a token is revoked (deleted): it names every key (its list,
    its pages' titles, the admin's history), and a key is its user's password to the API, so a
    staff member given the view permission would hold everyone's."""


# A filter's choices come from where their values are declared: Django's own, for a column without
# choices, were a SELECT DISTINCT over the whole table (every node run, every refusal) on each page.
class NodeTypeFilter(admin.SimpleListFilter):
    """The registered node types (``workflows.registry``); ``?node_type=`` takes any name, a type
    nobody registered too (its node runs were skipped)."""

    title = "node type"
    parameter_name = "node_type"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(name, name) for name in sorted(registry.catalogue())]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(node_type=self.value()) if self.value() else queryset


class RefusalRuleFilter(admin.SimpleListFilter):
    """The policy's rules (``Rule``), in the order it judges them, and the rest: the rules of the
    validator that a patched definition broke (``schema.*``, ``config.*``, …; ``?rule=`` takes one)."""

    title = "rule"
    parameter_name = "rule"
    OTHER = "other"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [*((rule.value, rule.value) for rule in Rule),
                (self.OTHER, "another: the patched definition's validation (schema.*, config.*, …)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == self.OTHER:
            return queryset.exclude(rule__in=[rule.value for rule in Rule])
        return queryset.filter(rule=self.value()) if self.value() else queryset


@admin.register(Artifact)
class ArtifactAdmin(OwnersRowsAdmin, ReadOnlyAdmin):
    """Artifacts are shared by content: one is shown as the API shows it (``selectors.artifact_get``),
    through what refers to it, a version of a workflow or a run (definitions, outputs, patches) the
    reader may read; all of them to staff who read every owner's workflows and runs.

    Same content, same row: the row's own kind and time are its first storer's, maybe another
    user's. To everyone else an artifact's page shows the kind and time of the reader's own
    reference (``selectors.artifact_seen``, as the API answers), and the list neither shows nor
    filters by them (a row's own, or a reference's each, for 100 rows)."""

    reads_every = staticmethod(visibility.reads_every_run_and_workflow)

    def own(self, user: Any) -> Q:
        versions = WorkflowVersion.objects.all()
        runs = Run.objects.all()
        return artifacts_referenced(
            versions=versions if visibility.reads_every_workflow(user) else versions.filter(workflow__owner=user),
            runs=runs if visibility.reads_every_run(user) else runs.filter(owner=user))
    list_display = ["id", "kind", "size_bytes", "created_at"]
    list_filter = ["kind"]
    search_fields = ["id"]
    readonly_fields = ["id", "kind", "size_bytes", "created_at", "content_pretty"]
    exclude = ["content"]

    def get_queryset(self, request):
        return super().get_queryset(request).defer("content")

    def get_list_display(self, request):
        shown = super().get_list_display(request)
        return shown if self.reads_every(request.user) else [f for f in shown if f not in ("kind", "created_at")]

    def get_list_filter(self, request):
        return super().get_list_filter(request) if self.reads_every(request.user) else []

    def get_object(self, request, object_id, from_field=None):
        artifact = super().get_object(request, object_id, from_field)
        if artifact is None or self.reads_every(request.user):
            return artifact
        seen = artifact_seen(user=request.user, artifact_id=artifact.pk)
        if seen is None:  # its last reference the reader reads went meanwhile
            return None
        artifact.kind, artifact.created_at = seen  # for showing, never for saving (the admin saves none)
        return artifact

    @admin.display(description="content")
    def content_pretty(self, obj: Artifact) -> str:
        return pretty_head(Artifact.objects.filter(pk=obj.pk), "content", whole=f"GET /api/v1/artifacts/{obj.pk}")


@admin.register(Workflow)
class WorkflowAdmin(OwnersRowsAdmin, ReadOnlyAdmin):
    """Read only: a tag is made, and moved to a new version, by ``workflow_save`` (API, UI, CLI),
    which validates the definition; an owner or a tag changed here would bypass it (and move the
    schedules and hooks that run the tag as its owner's). Deleting is ``workflow_delete`` (API,
    CLI); the admin never could (the versions it would cascade to are history, not deletable)."""

    owner = "owner"
    reads_every = staticmethod(visibility.reads_every_workflow)

    list_display = ["tag", "owner", "current_version", "updated_at"]
    list_columns = ["tag", "owner__username", "current_version__seq", "current_version__workflow__tag", "updated_at"]
    search_fields = ["tag", "owner__username"]
    readonly_fields = ["tag", "owner", "current_version", "created_at", "updated_at", "versions"]

    @admin.display(description="versions (newest first)")
    def versions(self, obj: Workflow) -> str:
        return latest_rows(WorkflowVersion.objects.filter(workflow=obj).order_by("-seq"),
                           ["seq", "artifact", "description", "created_at"], rest={"workflow": obj.pk})


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(OwnersRowsAdmin, ReadOnlyAdmin):
    owner = "workflow__owner"
    reads_every = staticmethod(visibility.reads_every_workflow)
    list_display = ["workflow", "seq", "artifact", "created_at"]
    list_columns = ["workflow__tag", "seq", "artifact__id", "created_at"]
    readonly_fields = ["workflow", "seq", "artifact", "parent", "description", "created_at", "definition"]

    def get_queryset(self, request):
        # the artifact is named on the page; its content is read only cut, by definition()
        return super().get_queryset(request).select_related("artifact").defer("artifact__content")

    @admin.display(description="definition")
    def definition(self, obj: WorkflowVersion) -> str:
        return pretty_head(Artifact.objects.filter(pk=obj.artifact_id), "content",
                           whole=f"GET /api/v1/artifacts/{obj.artifact_id}")


# A run's keys to rows with large columns, and those columns: a change page shows each key by the
# row's name, which Django reads whole (an artifact's content, a replayed run's inputs).
_RUN_KEYS = ("base_artifact", "current_artifact", "output_artifact", "replay_of", "owner", "workflow")
_RUN_KEYS_LARGE = ("base_artifact__content", "current_artifact__content", "output_artifact__content",
                   "replay_of__inputs")


@admin.register(Run)
class RunAdmin(OwnersRowsAdmin, ReadOnlyAdmin):
    owner = "owner"
    ordering = ["-created_at"]  # its created_at index (a key, a UUID, is in no order of time)
    list_display = ["id", "tag", "owner", "status", "created_at", "finished_at"]
    list_columns = ["tag", "owner__username", "status", "created_at", "finished_at"]
    list_filter = ["status"]
    search_fields = ["id", "tag", "owner__username"]
    # the inputs (up to AOB_MAX_RUN_INPUTS_BYTES) are left in the database and shown cut, by inputs_pretty
    readonly_fields = [*(f.name for f in Run._meta.fields if f.name != "inputs"), "inputs_pretty", "node_runs",
                       "patch_refusals", "events"]
    fieldsets = [
        (None, {"fields": [f.name if f.name != "inputs" else "inputs_pretty" for f in Run._meta.fields]}),
        ("Node runs", {"fields": ["node_runs"]}),
        ("Refused patches (nothing of them reached the run)", {"fields": ["patch_refusals"]}),
        ("Events", {"fields": ["events"]}),
    ]
    actions = ["cancel_runs"]

    def get_queryset(self, request):
        # the rows its keys name, read without their large columns: the page shows each by its name
        return super().get_queryset(request).select_related(*_RUN_KEYS).defer("inputs", *_RUN_KEYS_LARGE)

    @admin.display(description="inputs")
    def inputs_pretty(self, obj: Run) -> str:
        return pretty_head(Run.objects.filter(pk=obj.pk), "inputs", whole=run_inputs_href(run_id=obj.pk))

    @admin.display(description="latest first")
    def node_runs(self, obj: Run) -> str:
        return latest_rows(NodeRun.objects.filter(run=obj).order_by("-queued_at", "-id"),
                           ["node_id", "iteration", "node_type", "status", "wait_reason", "attempts", "queued_at",
                            "started_at", "finished_at", "error"], rest={"run": obj.pk})

    @admin.display(description="latest first")
    def patch_refusals(self, obj: Run) -> str:
        return latest_rows(PatchRefusal.objects.filter(run=obj).order_by("-created_at", "-id"),
                           ["created_at", "agent", "node_id", "proposed_by", "rule", "op", "path", "message"],
                           rest={"run": obj.pk})

    @admin.display(description="latest first")
    def events(self, obj: Run) -> str:
        return latest_rows(Event.objects.filter(run=obj).order_by("-seq"),
                           ["seq", "type", "node_id", "data", "created_at"], rest={"run": obj.pk})

    def has_cancel_permission(self, request) -> bool:
        """Who sees the action: a user with the permission to change runs (not view-only staff);
        whose runs it cancels is run_cancel's rule (the owner's only, as on the API)."""
        return request.user.has_perm("workflows.change_run")

    @admin.action(description="Cancel selected runs", permissions=["cancel"])
    def cancel_runs(self, request, queryset):
        act_on_each(self, request, queryset, "cancelled",
                    lambda run: runs.run_cancel(run=run, user=request.user, reason="cancelled in the admin"))


_NODE_RUN_LARGE = ("input", "output", "attempt_log")


@admin.register(NodeRun)
class NodeRunAdmin(OwnersRowsAdmin, ReadOnlyAdmin):
    list_display = ["run", "node_id", "iteration", "node_type", "status", "attempts", "started_at"]
    list_columns = ["run__tag", "node_id", "iteration", "node_type", "status", "attempts", "started_at"]
    list_filter = ["status", NodeTypeFilter]
    search_fields = ["node_id", "run__id"]
    # a node run's input, output and attempt log (each up to megabytes) are left in the database
    # and shown cut (``pretty_head``), with where each is read whole
    fields = [f"{f.name}_pretty" if f.name in _NODE_RUN_LARGE else f.name for f in NodeRun._meta.fields]
    readonly_fields = fields

    def get_queryset(self, request):
        # the run it names is read without its inputs
        return super().get_queryset(request).select_related("run", "output_artifact").defer(
            *_NODE_RUN_LARGE, "run__inputs", "output_artifact__content")

    def _pretty(self, obj: NodeRun, field: str) -> str:
        return pretty_head(NodeRun.objects.filter(pk=obj.pk), field, whole=node_value_href(
            run_id=obj.run_id, node_id=obj.node_id, iteration=obj.iteration, field=field,
            artifact_id=obj.output_artifact_id))

    @admin.display(description="input")
    def input_pretty(self, obj: NodeRun) -> str:
        return self._pretty(obj, "input")

    @admin.display(description="output")
    def output_pretty(self, obj: NodeRun) -> str:
        return self._pretty(obj, "output")

    @admin.display(description="attempt log")
    def attempt_log_pretty(self, obj: NodeRun) -> str:
        return self._pretty(obj, "attempt_log")


def graph_diff(before: dict, after: dict) -> dict[str, list]:
    """Nodes and edges a patch added or removed (edges as ``from → to``)."""
    def nodes(d: dict) -> dict[str, str]:
        return {n["id"]: n.get("type", "?") for n in d.get("nodes", [])}

    def edges(d: dict) -> set[str]:
        return {f"{e['from']} → {e['to']}" + (f" [{e['condition']}]" if e.get("condition") else "")
                for e in d.get("edges", [])}

    b, a = nodes(before), nodes(after)
    return {"nodes added": [f"{k} ({a[k]})" for k in a if k not in b],
            "nodes removed": [f"{k} ({b[k]})" for k in b if k not in a],
            "nodes changed": [k for k in a if k in b and _node(after, k) != _node(before, k)],
            "edges added": sorted(edges(after) - edges(before)), "edges removed": sorted(edges(before) - edges(after))}


def _node(definition: dict, node_id: str) -> dict | None:
    return next((n for n in definition.get("nodes", []) if n.get("id") == node_id), None)


@admin.register(RunPatch)
class RunPatchAdmin(OwnersRowsAdmin, ReadOnlyAdmin):
    list_display = ["run", "seq", "status", "node_id", "description_shown", "created_at"]
    list_columns = ["run__tag", "seq", "status", "node_id", "description", "created_at"]
    list_filter = ["status"]
    readonly_fields = ["run", "seq", "status", "node_id", "description_shown", "operations_pretty", "graph_diff",
                       "reason", "created_at", "applied_at"]
    exclude = ["operations", "description"]
    # approve / reject of held patches: added by approvals/admin.py (the approvals app decides)

    def get_queryset(self, request):
        # read only cut, by operations_pretty; the run and the operations' artifact it names, without
        # their large columns (graph_diff reads the two definitions, bounded at save)
        return super().get_queryset(request).select_related("run", "patch_artifact").defer(
            "operations", "run__inputs", "patch_artifact__content")

    @admin.display(description="description", ordering="description")
    def description_shown(self, obj: RunPatch) -> str:
        return shown(obj.description)  # an agent's words (``aob.text``)

    @admin.display(description="operations")
    def operations_pretty(self, obj: RunPatch) -> str:
        return pretty_head(RunPatch.objects.filter(pk=obj.pk), "operations",
                           whole=f"GET /api/v1/runs/{obj.run_id}/patches/{obj.seq}")

    @admin.display(description="graph diff (before → after)")
    def graph_diff(self, obj: RunPatch) -> str:
        diff = graph_diff(obj.before_artifact.content, obj.after_artifact.content)
        rows = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>",  # an agent's ids and conditions
                                ((k, shown(", ".join(v)) or "—") for k, v in diff.items()))
        return format_html("<table>{}</table>", rows)


@admin.register(Event)
class EventAdmin(OwnersRowsAdmin, ReadOnlyAdmin):
    ordering = ["run_id", "seq"]  # their (run, seq) key's: a run's own, as its page's link asks for them
    list_display = ["run", "seq", "type", "node_id", "created_at"]
    list_columns = ["run__tag", "seq", "type", "node_id", "created_at"]
    list_filter = ["type"]
    # an event's data, shown cut as the other JSON values are (those stored before events were bounded)
    fields = ["run", "seq", "type", "node_id", "data_pretty", "request_id", "created_at"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("run").defer("data", "run__inputs")

    @admin.display(description="data")
    def data_pretty(self, obj: Event) -> str:
        return pretty_head(Event.objects.filter(pk=obj.pk), "data",
                           whole=f"GET /api/v1/runs/{obj.run_id}/events?after={obj.seq - 1} (the first)")


@admin.register(PatchRefusal)
class PatchRefusalAdmin(OwnersRowsAdmin, ReadOnlyAdmin):
    """Patches the policy refused, with the operation and the rule: who tried what."""

    list_display = ["run", "created_at", "agent", "node_id", "proposed_by", "rule", "op", "path"]
    list_columns = ["run__tag", "created_at", "agent", "node_id", "proposed_by__username", "rule", "op", "path"]
    list_filter = [RefusalRuleFilter, "agent"]
    search_fields = ["run__id", "node_id", "rule"]
    readonly_fields = ["run", "created_at", "agent", "node_id", "proposed_by", "rule", "op", "path", "message",
                       "operations_pretty"]
    exclude = ["operations"]

    def get_queryset(self, request):
        # read only cut, by operations_pretty; the run it names without its inputs
        return super().get_queryset(request).select_related("run").defer("operations", "run__inputs")

    @admin.display(description="operations")
    def operations_pretty(self, obj: PatchRefusal) -> str:
        # kept up to 64 KiB (services.patches), which pretty-printed may pass the cut
        return pretty_head(PatchRefusal.objects.filter(pk=obj.pk), "operations",
                           whole=f"GET {refusal_href(run_id=obj.run_id, refusal_id=obj.pk)}")
