"""Keeps `make bench` from rotting: its measurement code on the real test stack, no timing asserted."""

from __future__ import annotations

import math

from bench import aob
from bench.report import headline, markdown
from bench.stats import percentile, sane, summary


def test_chain_measurement_yields_positive_finite_figures(engine, user):
    out = aob.run_chains(user, length=3, count=1, timeout=60)
    assert len(out["hop_ms"]) == 2
    assert len(out["e2e_ms"]) == 1
    hops = summary(out["hop_ms"])
    assert all(sane(hops[q]) for q in ("p50", "p95", "p99", "min", "max"))
    assert sane(out["e2e_ms"][0])
    assert out["e2e_ms"][0] >= sum(out["hop_ms"])  # end to end spans every hop


def test_percentiles_and_report_from_synthetic_results():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert math.isnan(percentile([], 50))
    rep = {"hop_ms": summary([5.0, 6.0, 7.0]), "e2e_ms": summary([100.0])}
    base = {"hop_ms": summary([4.0, 5.0, 6.0]), "e2e_ms": summary([80.0])}
    results = {
        "meta": {"timestamp": "t", "quick": True, "repetitions": 2, "concurrency": 2,
                 "git": {"commit": "abc", "dirty": False}, "machine": {"cpus": 2, "cpu_model": "x"},
                 "versions": {"celery": "5"}, "load": [{"loadavg_1min": 1.0}], "duration_s": 1.0},
        "scenarios": {"chain": {"aob": [rep, rep], "baseline": [base, base]}},
        "memory": {"scenario 3 (aob half)": {"web (main)": 90.0}},
    }
    rows = headline(results)
    hop = next(r for r in rows if r["metric"] == "node→node hop p50")
    assert hop["ratio"] == 6.0 / 5.0
    assert hop["met"] is True
    results["headline"] = rows
    text = markdown(results)
    assert "| 1 chain | node→node hop p50 (ms) | 6.0 (6.0–6.0) | 5.0 (5.0–5.0) | 1.20× |" in text


def test_pure_chain_measurement_yields_positive_finite_figures(engine, user):
    """Issue 20's scenario: a chain of pure transforms, the first on a worker, the rest in one decision."""
    out = aob.run_chains(user, length=3, count=1, timeout=60, pure=True)
    assert len(out["hop_ms"]) == 2 and len(out["e2e_ms"]) == 1
    assert all(math.isfinite(h) for h in out["hop_ms"]) and sane(out["e2e_ms"][0])
