"""From per-repetition measurements to headline rows, ratios, verdicts, and the markdown report."""

from __future__ import annotations

import math
import statistics
from typing import Any

from bench.stats import ratio, spread

# The targets of issue 10 (docs/PERFORMANCE.md quotes them).
HOP_P50_MAX_RATIO = 1.3
HOP_P99_MAX_RATIO = 1.5
THROUGHPUT_MIN_RATIO = 0.7
EXECUTE_P50_MAX_MS = 25.0


def _per_rep(reps: list[dict[str, Any]], *path: str) -> list[float]:
    out = []
    for rep in reps:
        value: Any = rep
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float):
            out.append(float(value))
    return out


def _row(scenario: str, metric: str, unit: str, aob: list[float], base: list[float] | None = None,
         target: str = "", met: bool | None = None, better: str = "lower") -> dict[str, Any]:
    a = spread(aob)
    b = spread(base) if base is not None else None
    return {"scenario": scenario, "metric": metric, "unit": unit, "aob": a, "baseline": b,
            "ratio": ratio(a["median"], b["median"]) if b else math.nan, "target": target, "met": met,
            "better": better}


def headline(results: dict[str, Any]) -> list[dict[str, Any]]:
    s = results["scenarios"]
    rows: list[dict[str, Any]] = []
    hop_p50 = math.nan
    if "chain" in s:
        aob, base = s["chain"]["aob"], s["chain"]["baseline"]
        for q, limit in (("p50", HOP_P50_MAX_RATIO), ("p95", None), ("p99", HOP_P99_MAX_RATIO)):
            row = _row("1 chain", f"node→node hop {q}", "ms", _per_rep(aob, "hop_ms", q),
                       _per_rep(base, "hop_ms", q))
            if limit:
                row["target"] = f"ratio ≤ {limit}"
                row["met"] = row["ratio"] <= limit if not math.isnan(row["ratio"]) else None
            rows.append(row)
        rows.append(_row("1 chain", "end-to-end (median chain)", "ms", _per_rep(aob, "e2e_ms", "p50"),
                         _per_rep(base, "e2e_ms", "p50")))
        hop_p50 = spread(_per_rep(aob, "hop_ms", "p50"))["median"]
    if "fanout" in s:
        f = s["fanout"]
        delay = _per_rep(f["aob"], "join_delay_ms", "p50")
        for name in ("chord", "counted"):
            row = _row("2 fan-out/join", f"join delay p50 (vs {name})", "ms", delay,
                       _per_rep(f[f"baseline_{name}"], "join_delay_ms", "p50"))
            if name == "chord":
                row["target"] = f"≤ 1 AOB hop p50 ({hop_p50:.1f} ms)" if not math.isnan(hop_p50) else "≤ 1 hop"
                row["met"] = row["aob"]["median"] <= hop_p50 if not math.isnan(hop_p50) else None
            rows.append(row)
        rows.append(_row("2 fan-out/join", "join delay max", "ms", _per_rep(f["aob"], "join_delay_ms", "max"),
                         _per_rep(f["baseline_counted"], "join_delay_ms", "max")))
        for name in ("chord", "counted"):
            rows.append(_row("2 fan-out/join", f"end-to-end p50 (vs {name})", "ms",
                             _per_rep(f["aob"], "e2e_ms", "p50"), _per_rep(f[f"baseline_{name}"], "e2e_ms", "p50")))
    if "throughput" in s:
        t = s["throughput"]
        row = _row("3 throughput", "node transitions/s", "1/s", _per_rep(t["aob"], "nodes_per_s"),
                   _per_rep(t["baseline"], "nodes_per_s"), target=f"ratio ≥ {THROUGHPUT_MIN_RATIO}",
                   better="higher")
        row["met"] = row["ratio"] >= THROUGHPUT_MIN_RATIO if not math.isnan(row["ratio"]) else None
        rows.append(row)
        rows.append(_row("3 throughput", "wall time, submit → last node", "s", _per_rep(t["aob"], "seconds"),
                         _per_rep(t["baseline"], "seconds")))
        rows.append(_row("3 throughput", "submitting the runs", "s", _per_rep(t["aob"], "submit_s"),
                         _per_rep(t["baseline"], "submit_s")))
        for q in ("p50", "p99"):
            rows.append(_row("3 throughput", f"hop under load {q}", "ms", _per_rep(t["aob"], "hop_ms", q),
                             _per_rep(t["baseline"], "hop_ms", q)))
    if "pure" in s:
        aob, base = s["pure"]["aob"], s["pure"]["baseline"]
        for q in ("p50", "p99"):
            rows.append(_row("1b pure chain", f"node→node hop {q}", "ms", _per_rep(aob, "hop_ms", q),
                             _per_rep(base, "hop_ms", q)))
        rows.append(_row("1b pure chain", "end-to-end (median chain)", "ms", _per_rep(aob, "e2e_ms", "p50"),
                         _per_rep(base, "e2e_ms", "p50")))
    if "pure_throughput" in s:
        t = s["pure_throughput"]
        for kind, label in (("aob", "worker nodes"), ("aob_pure", "pure nodes")):
            rows.append(_row("3b throughput 50×10", f"node transitions/s, {label}", "1/s", _per_rep(t[kind], "nodes_per_s"),
                             _per_rep(t["baseline"], "nodes_per_s"), better="higher"))
            rows.append(_row("3b throughput 50×10", f"wall time, {label}", "s", _per_rep(t[kind], "seconds"),
                             _per_rep(t["baseline"], "seconds")))
    if "api" in s:
        a = s["api"]["aob"]
        for q in ("p50", "p95", "p99"):
            row = _row("4 API", f"POST …/execute {q}", "ms", _per_rep(a, "execute", "latency_ms", q))
            if q == "p50":
                row["target"] = f"≤ {EXECUTE_P50_MAX_MS:.0f} ms"
                row["met"] = row["aob"]["median"] <= EXECUTE_P50_MAX_MS
            rows.append(row)
        rows.append(_row("4 API", "POST …/execute throughput", "req/s", _per_rep(a, "execute", "requests_per_s"),
                         better="higher"))
        for q in ("p50", "p95", "p99"):
            rows.append(_row("4 API", f"GET /runs/{{id}}/details {q}", "ms", _per_rep(a, "details", "latency_ms", q)))
        rows.append(_row("4 API", "GET …/details throughput", "req/s", _per_rep(a, "details", "requests_per_s"),
                         better="higher"))
    return rows


def _fmt(value: float, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if unit in ("s",):
        return f"{value:.2f}"
    return f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def _cell(sp: dict[str, Any] | None, unit: str) -> str:
    if not sp or not sp.get("n"):
        return "–"
    if sp["n"] == 1:
        return _fmt(sp["median"], unit)
    return f"{_fmt(sp['median'], unit)} ({_fmt(sp['min'], unit)}–{_fmt(sp['max'], unit)})"


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [f"# AOB bench {meta['timestamp']}", ""]
    lines.append(f"{meta['repetitions']} repetition(s){' (quick)' if meta['quick'] else ''}; "
                 f"commit `{meta['git']['commit']}`{' (dirty tree)' if meta['git']['dirty'] else ''}; "
                 f"{meta['machine']['cpus']} CPUs ({meta['machine']['cpu_model']}); PostgreSQL "
                 f"{meta['versions'].get('postgresql', '?')} (fsync on), Redis {meta['versions'].get('redis', '?')}, "
                 f"Celery {meta['versions']['celery']}, workers `-c {meta['concurrency']} -P prefork`; "
                 f"total {meta.get('duration_s', 0):.0f} s.")
    if meta.get("variant"):
        lines += ["", f"**What-if variant `{meta['variant']}` applied to the AOB worker** (bench/profiling.py); "
                  "not the production configuration."]
    loads = [entry["loadavg_1min"] for entry in meta.get("load", [])]
    if loads:
        lines += ["", f"1-minute load average on this {meta['machine']['cpus']}-CPU machine during the run: "
                  f"{min(loads):.1f}–{max(loads):.1f} (anything well above {meta['machine']['cpus']} means other "
                  "processes shared the CPUs; trust the ratios more than the absolute figures)."]
    lines += ["", "Each cell: median of the per-repetition figures (min–max across repetitions). Ratio: AOB / plain "
              "Celery of the medians.", ""]
    lines.append("| scenario | metric | AOB | plain Celery | AOB/Celery | target | met |")
    lines.append("|---|---|---|---|---|---|---|")
    for row in results["headline"]:
        met = {True: "yes", False: "**no**", None: ""}[row["met"]]
        r = "–" if math.isnan(row["ratio"]) else f"{row['ratio']:.2f}×"
        lines.append(f"| {row['scenario']} | {row['metric']} ({row['unit']}) | {_cell(row['aob'], row['unit'])} | "
                     f"{_cell(row['baseline'], row['unit'])} | {r} | {row['target']} | {met} |")
    memory = results.get("memory") or {}
    for phase, peaks in memory.items():
        if not peaks:
            continue
        lines += ["", f"Peak RSS during {phase} (MB):", "", "| process | peak RSS (MB) |", "|---|---|"]
        lines += [f"| {name} | {mb:.1f} |" for name, mb in peaks.items()]
    lines += _cpu_lines(results.get("cpu_ms_per_unit") or {})
    profile = results.get("profile")
    if profile:
        lines += _profile_lines(profile)
    return "\n".join(lines) + "\n"


def _cpu_lines(cpu: dict[str, dict[str, list[float]]]) -> list[str]:
    """CPU time per unit of work by process tree: per node transition in scenario 3 (AOB next to
    plain Celery), per API request in scenario 4."""
    lines: list[str] = []

    def med(values: list[float] | None) -> float | None:
        return statistics.median(values) if values else None

    def cell(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f}"

    aob = cpu.get("scenario 3 (aob half)", {})
    base = cpu.get("scenario 3 (baseline half)", {})
    if aob or base:
        lines += ["", "CPU time per node transition during scenario 3, by process tree (ms; median of the repetitions; "
                  "PostgreSQL counts its backends, a worker its pool processes):", "",
                  "| process | AOB | plain Celery |", "|---|---|---|"]
        for name in sorted(set(aob) | set(base)):
            lines.append(f"| {name} | {cell(med(aob.get(name)))} | {cell(med(base.get(name)))} |")
        lines.append(f"| **all** | **{sum(med(v) or 0 for v in aob.values()):.2f}** | "
                     f"**{sum(med(v) or 0 for v in base.values()):.2f}** |")
    api = cpu.get("scenario 4 (aob half)", {})
    if api:
        lines += ["", "CPU time per API request during scenario 4 (the POSTs and the GETs together, and the workers "
                  "running the runs those POSTs started), by process tree (ms):", "", "| process | AOB |", "|---|---|"]
        lines += [f"| {name} | {cell(med(values))} |" for name, values in sorted(api.items())]
        lines.append(f"| **all** | **{sum(med(v) or 0 for v in api.values()):.2f}** |")
    return lines


def _profile_lines(profile: dict[str, Any]) -> list[str]:
    lines = ["", "## Profile of the AOB hop (middle nodes of chains, instrumented worker)", ""]
    modes = [m for m in profile if m == "sql" or m.startswith("sql-")]
    if modes:
        lines += ["Each worker ran the same chains one after the other (what-ifs: bench/profiling.py).", "",
                  "| worker | hop p50 (ms) | hop p95 (ms) | chain end-to-end p50 (ms) | executor / coordinator "
                  "task wall p50 (ms) |", "|---|---|---|---|---|"]
        for mode in modes:
            hop, e2e = profile[mode]["hop_ms"], profile[mode]["e2e_ms"]
            walls = [(profile[mode]["sql"].get(role) or {}).get("wall_ms_median") for role in ("executor", "coordinator")]
            wall = " / ".join("–" if w is None else f"{w:.1f}" for w in walls)
            lines.append(f"| {_title(mode)} | {hop.get('p50', math.nan):.1f} | {hop.get('p95', math.nan):.1f} | "
                         f"{e2e.get('p50', math.nan):.0f} | {wall} |")
    for mode in modes:
        block = profile[mode]
        title = _title(mode)
        anatomy = block.get("anatomy") or {}
        if anatomy.get("hops"):
            lines += ["", f"Hop anatomy, {title} (median of {anatomy['hops']} hops; hop {anatomy['hop_ms']:.1f} ms):",
                      "", "| part | ms |", "|---|---|"]
            lines += [f"| {k} | {v:.1f} |" for k, v in anatomy["parts"].items() if v is not None]
        for role in ("executor", "coordinator"):
            t = block.get("sql", {}).get(role) or {}
            if not t.get("count"):
                continue
            lines += ["", f"**{role} task, {title}**: {t['statements']} SQL statements, {t['transactions']} "
                      f"transaction(s) ({t.get('autocommit_writes', 0)} of them single autocommit statements), "
                      f"{t['round_trips']} round trips counting BEGIN/COMMIT, {t['connects']} new "
                      f"connection(s); task wall "
                      f"{t['wall_ms_median']:.1f} ms (median), DB client time {t['db_ms_median']:.1f} ms; "
                      f"{t['typical_share'] * 100:.0f}% of {t['count']} tasks ran exactly this list:", "",
                      "| # | statement | median ms |", "|---|---|---|"]
            for i, st in enumerate(t["rows"], 1):
                sql = st["sql"].replace("|", "\\|")
                sql = sql if len(sql) <= 160 else sql[:159] + "…"
                mark = " (autocommit)" if st.get("autocommit") and st["kind"] == "sql" else ""
                lines.append(f"| {i} | `{sql}`{mark} | {st['median_ms']:.2f} |")
    if profile.get("cprofile_file"):
        lines += ["", f"cProfile of the pool processes: `{profile['cprofile_file']}`."]
    return lines


def _title(mode: str) -> str:
    return "production settings" if mode == "sql" else f"what-if `{mode.removeprefix('sql-')}`"
