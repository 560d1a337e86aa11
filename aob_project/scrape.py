"""``/metrics``: the processes' counters and histograms (aob_project/metrics.py) plus gauges of
state read from PostgreSQL at scrape time (runs by status, node runs by type and status, pending
approvals, patches), so they are right whichever host did the work. Apart from metrics.py because
it reads every app's models, and the engine, which observes metrics, must not import those apps."""

from __future__ import annotations

import hmac
import os
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from aob_project.metrics import OTHER


class StateCollector:
    """Gauges computed from the database at scrape time."""

    def collect(self):
        from django.db.models import Case, CharField, Count, F, Value, When

        from approvals.models import Approval
        from workflows import registry
        from workflows.models import NodeRun, Run, RunPatch

        runs = GaugeMetricFamily("aob_runs", "Runs by status", labels=["status"])
        for row in Run.objects.values("status").annotate(n=Count("id")):
            runs.add_metric([row["status"]], row["n"])
        yield runs
        nodes = GaugeMetricFamily("aob_node_runs", "Node runs by type and status", labels=["type", "status"])
        # Bucketed in the statement as metrics.node_type_label buckets (the registry's types, else
        # "other"): a definition may name any type, and grouping by the names read a row per name
        # a tenant ever ran, every scrape.
        label = Case(When(node_type__in=list(registry.catalogue()), then=F("node_type")), default=Value(OTHER),
                     output_field=CharField())
        for row in (NodeRun.objects.annotate(label=label).values("label", "status").annotate(n=Count("id"))
                    .order_by("label", "status")):
            nodes.add_metric([row["label"], row["status"]], row["n"])
        yield nodes
        pending = GaugeMetricFamily("aob_approvals_pending", "Approvals waiting for a decision")
        pending.add_metric([], Approval.objects.filter(status=Approval.Status.PENDING).count())
        yield pending
        patches = GaugeMetricFamily("aob_run_patches", "Run patches by status", labels=["status"])
        for row in RunPatch.objects.values("status").annotate(n=Count("id")):
            patches.add_metric([row["status"]], row["n"])
        yield patches


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
