"""Prometheus metrics. Counters and histograms are observed where the work happens (web and
worker processes); with ``PROMETHEUS_MULTIPROC_DIR`` set (``make up`` and the tests set it) every
process on a host writes there and ``/metrics`` aggregates them. Gauges of state (runs by status,
node runs by type and status, pending approvals, patches) are read from PostgreSQL at scrape
time, so they are right whichever host did the work. See docs/OPERATIONS.md."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

NODE_DURATION = Histogram("aob_node_duration_seconds", "Execution time of a node run (started → finished)",
                          ["type", "status"], buckets=BUCKETS)
NODE_QUEUE = Histogram("aob_node_queue_seconds", "Time a node run waited in the queue (queued → started)",
                       ["type"], buckets=BUCKETS)
DECISION = Histogram("aob_coordinator_decision_seconds",
                     "Coordinator decision latency, by step: plain (one statement) or full (run locked, graph read)",
                     ["step"], buckets=BUCKETS)
RATE_LIMITED = Counter("aob_rate_limit_rejections_total", "Requests refused by a rate limit", ["error", "tier"])
LLM_TOKENS = Counter("aob_llm_tokens_total", "LLM tokens used", ["model", "kind"])
LLM_COST = Counter("aob_llm_cost_usd_total", "LLM cost in USD (price table in settings)", ["model"])
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
        for row in NodeRun.objects.values("node_type", "status").annotate(n=Count("id")):
            nodes.add_metric([row["node_type"], row["status"]], row["n"])
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


def metrics_view(request: object) -> object:
    from django.http import HttpResponse

    payload, content_type = render()
    return HttpResponse(payload, content_type=content_type)
