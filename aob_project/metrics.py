"""Prometheus metrics. Counters and histograms are observed where the work happens (web and
worker processes); with ``PROMETHEUS_MULTIPROC_DIR`` set (``make up`` and the tests set it) every
process on a host writes there and ``/metrics`` aggregates them. Gauges of state (runs by status,
node runs by type and status, pending approvals, patches) are read from PostgreSQL at scrape
time, so they are right whichever host did the work. See docs/OPERATIONS.md."""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

OTHER = "other"


def node_type_label(node_type: str) -> str:
    """A registered node type, else "other": a definition may name any type (it is then skipped),
    and each distinct label value is a time series kept for ever."""
    from workflows import registry

    return node_type if registry.get(node_type) is not None else OTHER


def model_label(model: str) -> str:
    """A model the operator configured (the price table or the default model), else "other"."""
    from django.conf import settings

    return model if model == settings.AOB_LLM_MODEL or model in settings.AOB_LLM_PRICES else OTHER


class Bucketed:
    """A labelled metric whose label values drawn from user input are bucketed before they reach
    it, so no call site can forget to: ``Bucketed(Counter(..., ["model", "kind"]), model=model_label)``."""

    def __init__(self, metric: Any, labelnames: list[str], **buckets: Callable[[str], str]) -> None:
        self.metric = metric
        self._buckets = [buckets.get(name) for name in labelnames]

    def labels(self, *values: str) -> Any:
        return self.metric.labels(*(bucket(value) if bucket else value
                                    for bucket, value in zip(self._buckets, values, strict=True)))


BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

NODE_DURATION = Bucketed(Histogram("aob_node_duration_seconds", "Execution time of a node run (started → finished)",
                                   ["type", "status"], buckets=BUCKETS), ["type", "status"], type=node_type_label)
NODE_QUEUE = Bucketed(Histogram("aob_node_queue_seconds", "Time a node run waited in the queue (queued → started)",
                                ["type"], buckets=BUCKETS), ["type"], type=node_type_label)
DECISION = Histogram("aob_coordinator_decision_seconds",
                     "Coordinator decision latency, by step: plain (one statement) or full (run locked, graph read)",
                     ["step"], buckets=BUCKETS)
RATE_LIMITED = Counter("aob_rate_limit_rejections_total", "Requests refused by a rate limit", ["error", "tier"])
LLM_TOKENS = Bucketed(Counter("aob_llm_tokens_total", "LLM tokens used", ["model", "kind"]), ["model", "kind"],
                      model=model_label)
LLM_COST = Bucketed(Counter("aob_llm_cost_usd_total", "LLM cost in USD (price table in settings)", ["model"]),
                    ["model"], model=model_label)
PATCHES = Counter("aob_patches_total", "Run patches proposed, by outcome", ["status"])


class StateCollector:
    """Gauges computed from the database at scrape time."""

    def collect(self):  # noqa: ANN201
        from django.db.models import Count

        from approvals.models import Approval
        from workflows.models import NodeRun, Run, RunPatch

        runs = GaugeMetricFamily("aob_runs", "Runs by status", labels=["status"])
        for row in Run.objects.values("status").annotate(n=Count("id")):
            runs.add_metric([row["status"]], row["n"])
        yield runs
        nodes = GaugeMetricFamily("aob_node_runs", "Node runs by type and status", labels=["type", "status"])
        counts: dict[tuple[str, str], int] = {}
        for row in NodeRun.objects.values("node_type", "status").annotate(n=Count("id")):
            key = (node_type_label(row["node_type"]), row["status"])
            counts[key] = counts.get(key, 0) + row["n"]
        for labels, n in sorted(counts.items()):
            nodes.add_metric(list(labels), n)
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

        for collector in list(REGISTRY._collector_to_names):  # noqa: SLF001 - the process's own metrics
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
    from django.http import HttpResponse, JsonResponse

    if not scraper_allowed(request):
        response = JsonResponse({"error": "not_authenticated", "message": "metrics are for the scraper: send "
                                 "Authorization: Bearer <AOB_METRICS_TOKEN>", "details": {"rule": "metrics_token"}},
                                status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    payload, content_type = render()
    return HttpResponse(payload, content_type=content_type)
