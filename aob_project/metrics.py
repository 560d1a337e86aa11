"""Prometheus metrics. Counters and histograms are observed where the work happens (web and
worker processes); with ``PROMETHEUS_MULTIPROC_DIR`` set (``make up``, docker-compose.yml and the
tests set it) every process of the stack writes there and ``/metrics`` (aob_project/scrape.py)
aggregates them, with gauges of state read from PostgreSQL at scrape time. See docs/OPERATIONS.md."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    Counter,
    Histogram,
    values,
)

OTHER = "other"

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # A process's files are named by its host and pid (``counter_<host>-<pid>.db``), not its pid
    # alone: compose's containers share the directory and each numbers its processes from 1, so two
    # wrote one file and each overwrote the other's counts. Set before any metric below is made; a
    # live gauge's mark_process_dead would take this identifier too (there is none).
    _HOST = socket.gethostname().replace("_", "-")  # "_" separates the file name's parts
    values.ValueClass = values.MultiProcessValue(lambda: f"{_HOST}-{os.getpid()}")


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
NODE_HELD = Bucketed(Counter("aob_node_held_total",
                             "Claims of a node run held for a slot of its owner (AOB_OWNER_MAX_RUNNING)", ["type"]),
                     ["type"], type=node_type_label)
RUN_INPUTS_READ = Counter("aob_run_inputs_read_total",
                          "Run inputs past 64 KiB read from the database by the engine (a process's first need "
                          "of them, or again once it let them go: workflows/engine/run_inputs.py)")
DECISION = Histogram("aob_coordinator_decision_seconds",
                     "Coordinator decision latency, by step: plain (one statement) or full (run locked, graph read)",
                     ["step"], buckets=BUCKETS)
RATE_LIMITED = Counter("aob_rate_limit_rejections_total", "Requests refused by a rate limit", ["error", "tier"])
LLM_TOKENS = Bucketed(Counter("aob_llm_tokens_total", "LLM tokens used", ["model", "kind"]), ["model", "kind"],
                      model=model_label)
LLM_COST = Bucketed(Counter("aob_llm_cost_usd_total", "LLM cost in USD (price table in settings)", ["model"]),
                    ["model"], model=model_label)
PATCHES = Counter("aob_patches_total", "Run patches proposed, by outcome", ["status"])
RUNS_FINISHED = Counter("aob_runs_finished_total", "Runs that ended, by status (counted after the commit that "
                        "ended them, by whichever process did)", ["status"])
