"""``/metrics``: the processes' counters and histograms (aob_project/metrics.py) plus gauges of
what is in flight read from PostgreSQL at scrape time (runs and node runs still going, approvals and
patches waiting), so they are right whichever host did the work. Apart from metrics.py because it
reads every app's models, and the engine, which observes metrics, must not import those apps."""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from aob_project.metrics import OTHER

logger = logging.getLogger(__name__)

# Each gauge's statement stops after this long: the gauge is left out of that scrape (and logged),
# never a web thread held while the database is slow.
GAUGE_TIMEOUT_MS = 1000

T = TypeVar("T")


class StateCollector:
    """Gauges of what is in flight, computed from the database at scrape time. Each reads only the
    rows still going, by an index holding them (``run_status``; ``node_run_sweep`` and
    ``node_run_waiting``; ``run_patch_pending``), never the finished ones a retention keeps, so a
    scrape's work grows with what runs now, not with what ran. What finished is counted as it
    finishes: ``aob_runs_finished_total{status}``, ``aob_node_duration_seconds_count{type,status}``,
    ``aob_patches_total{status}``."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from django.db.models import Case, CharField, Count, F, Q, Value, When

        from approvals.models import Approval
        from workflows import registry
        from workflows.models import NodeRun, Run, RunPatch

        going = [status for status in Run.Status if status not in Run.FINISHED]
        rows = gauge_read("aob_runs", lambda: list(Run.objects.filter(status__in=going).values_list("status")
                                                   .annotate(n=Count("id")).order_by()))
        if rows is not None:
            yield gauge("aob_runs", "Runs in flight by status (finished ones: aob_runs_finished_total)",
                        ["status"], {(status,): 0 for status in going} | {(status,): n for status, n in rows})
        # Bucketed in the statement as metrics.node_type_label buckets (the registry's types, else
        # "other"): a definition may name any type. One arm per partial index, so the planner reads both.
        types = list(registry.catalogue())
        label = Case(When(node_type__in=types, then=F("node_type")), default=Value(OTHER), output_field=CharField())
        in_flight = (Q(status__in=[NodeRun.Status.QUEUED, NodeRun.Status.RUNNING])  # node_run_sweep
                     | Q(status=NodeRun.Status.WAITING))  # node_run_waiting
        rows = gauge_read("aob_node_runs", lambda: list(NodeRun.objects.filter(in_flight).annotate(label=label)
                                                        .values_list("label", "status").annotate(n=Count("id"))
                                                        .order_by()))
        if rows is not None:
            zeros = {(name, status): 0 for name in [*types, OTHER] for status in NodeRun.ACTIVE}
            yield gauge("aob_node_runs", "Node runs in flight by type and status (finished ones: "
                        "aob_node_duration_seconds_count)", ["type", "status"],
                        zeros | {(name, status): n for name, status, n in rows})
        count = gauge_read("aob_approvals_pending", Approval.objects.filter(status=Approval.Status.PENDING).count)
        if count is not None:
            yield gauge("aob_approvals_pending", "Approvals waiting for a decision", [], {(): count})
        pending = RunPatch.Status.PENDING_APPROVAL
        count = gauge_read("aob_run_patches", RunPatch.objects.filter(status=pending).count)
        if count is not None:
            yield gauge("aob_run_patches", "Run patches waiting for a person (the others: aob_patches_total)",
                        ["status"], {(pending,): count})


def gauge_read(name: str, read: Callable[[], T]) -> T | None:
    """What ``read`` reads, within ``GAUGE_TIMEOUT_MS``; None (logged) when it did not finish."""
    from django.db import OperationalError

    from workflows.search import QUERY_CANCELED, statement_timeout

    try:
        with statement_timeout(GAUGE_TIMEOUT_MS):
            return read()
    except OperationalError as exc:
        if getattr(exc.__cause__, "sqlstate", None) != QUERY_CANCELED:
            raise
        logger.warning("metrics.gauge_timed_out", extra={"metric": name, "limit_ms": GAUGE_TIMEOUT_MS})
        return None


def gauge(name: str, documentation: str, labels: list[str], values: dict[tuple, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for key, value in values.items():
        family.add_metric(list(key), value)
    return family


def render() -> tuple[bytes, str]:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        for collector in list(REGISTRY._collector_to_names):
            registry.register(collector)
    registry.register(StateCollector())
    return generate_latest(registry), CONTENT_TYPE_LATEST


def scraper_allowed(request: Any) -> bool:
    """``Authorization: Bearer <AOB_METRICS_TOKEN>``, or a staff user's session."""
    from django.conf import settings

    token = settings.AOB_METRICS_TOKEN
    offered = request.META.get("HTTP_AUTHORIZATION", "")
    if token and hmac.compare_digest(offered.encode(), f"Bearer {token}".encode()):
        return True
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


def metrics_view(request: Any) -> Any:
    """A scrape counts against its address's anonymous limit before its token is judged (taken out
    again once it proves itself), so one address cannot guess tokens without end: past the limit
    it is a 429 whatever it offers, and a right guess cannot be told from a wrong one."""
    from django.http import HttpResponse, JsonResponse

    from workflows import ratelimit
    from workflows.api.errors import json_error

    address = ratelimit.client_address(request.META)
    try:
        entry = ratelimit.count_anonymous(address=address)
    except ratelimit.RateLimited as exc:
        return json_error(exc)
    allowed = scraper_allowed(request)
    if allowed and entry is not None:
        ratelimit.uncount_anonymous(address=address, member=entry)
    if not allowed:
        response = JsonResponse({"error": "not_authenticated", "message": "metrics are for the scraper: send "
                                 "Authorization: Bearer <AOB_METRICS_TOKEN>", "details": {"rule": "metrics_token"}},
                                status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    payload, content_type = render()
    return HttpResponse(payload, content_type=content_type)
