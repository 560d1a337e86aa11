"""The benchmark's own stack, built like ``make up`` builds it, and torn down whatever happens.

Embedded PostgreSQL with production durability (``fast=False``: fsync and synchronous commit on)
and embedded Redis in ``.aob/bench-<pid>/`` (fresh every run, one folder per bench process),
``manage.py migrate``, then: the AOB worker (``celery -A aob_project worker`` on every queue,
``-c 2 -P prefork``), beat (the sweeper and the approvals sweep at their production intervals),
uvicorn (the API scenario), and the baseline worker (``celery -A bench.baseline worker``, same
pool settings). Each child runs in its own process group with the parent-death signal, so Ctrl-C,
an error or even SIGKILL of the bench leaves nothing running. Child output goes to
``.aob/bench-<pid>/logs/<name>.log``, kept after the run until a later bench finds that pid gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from aob.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    die_with_parent,
    free_port,
    in_use,
    kill_leftovers,
    log_tail,
    port_open,
)

BASE_DIR = Path(__file__).resolve().parent.parent
AOB_DIR = BASE_DIR / ".aob"
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0
# The benchmark's clients must not be throttled; everything else keeps its production value.
UNLIMITED = {name: "1000000000" for name in (
    "AOB_RATE_GLOBAL_PER_MIN", "AOB_RATE_USER_RUNS_PER_MIN", "AOB_RATE_USER_WRITES_PER_MIN",
    "AOB_RATE_USER_WHOLE_READS_PER_MIN",
    "AOB_RATE_TIER_SIMPLE_PER_MIN", "AOB_RATE_TIER_STANDARD_PER_MIN", "AOB_RATE_TIER_HEAVY_PER_MIN")}


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def remove_stale_roots() -> None:
    """Delete the folders of benches that are gone (their pid is dead and nobody owns their servers);
    a bench still running keeps its own."""
    for folder in AOB_DIR.glob("bench-*"):
        try:
            pid = int(folder.name.removeprefix("bench-"))
        except ValueError:
            continue
        if pid == os.getpid() or (psutil.pid_exists(pid) and in_use(folder)):
            continue
        if psutil.pid_exists(pid) and time.time() - folder.stat().st_mtime < 24 * 3600:
            continue  # a live bench still starting its servers
        kill_leftovers(folder)
        shutil.rmtree(folder, ignore_errors=True)


class Child:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.argv = argv
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"{name}.log"
        n = 1
        while self.log_path.exists():  # a restarted child (the profile phase) keeps the earlier log
            n += 1
            self.log_path = logs / f"{name}-{n}.log"
        self._fh = self.log_path.open("wb")
        self.proc = subprocess.Popen(argv, cwd=BASE_DIR, env=env, stdin=subprocess.DEVNULL, stdout=self._fh,  # noqa: S603
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=die_with_parent(signal.SIGTERM))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for_line(self, text: str, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_path.read_text(errors="replace"):
                return
            if not self.alive():
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{log_tail(self.log_path)}")
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not print {text!r} in {timeout:.0f}s:\n{log_tail(self.log_path)}")

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        """SIGTERM to the leader (Celery: a warm shutdown that ends its pool itself), then SIGKILL
        the whole group after a bounded wait."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop in {STOP_TIMEOUT_S:.0f}s; killing it")
        self.signal_group(signal.SIGKILL)  # also reaps pool children left behind
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self._fh.close()


class Stack:
    """Start with ``start()``; ``stop()`` is idempotent and always safe to call."""

    def __init__(self, *, root: Path | None = None, concurrency: int = 2, extra_env: dict[str, str] | None = None,
                 variant: str = "") -> None:
        # One folder per bench process, so two benches in one tree (two developers) never share
        # servers or delete each other's data; logs stay in <root>/logs after the run.
        self.root = root or AOB_DIR / f"bench-{os.getpid()}"
        self.logs = self.root / "logs"
        self.variant = variant
        self.concurrency = concurrency
        self.extra_env = extra_env or {}
        self.postgres: EmbeddedPostgres | None = None
        self.redis: EmbeddedRedis | None = None
        self.children: dict[str, Child] = {}
        self.env: dict[str, str] = {}
        self.web_port: int | None = None

    # --- services -----------------------------------------------------------------------------------

    def start_services(self) -> dict[str, str]:
        remove_stale_roots()
        if self.root.exists():
            kill_leftovers(self.root)
            shutil.rmtree(self.root, ignore_errors=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        log(f"starting embedded PostgreSQL (durable: fsync on) and Redis in {self.root}")
        self.postgres = EmbeddedPostgres(self.root, fast=False)
        database_url = self.postgres.start()
        self.redis = EmbeddedRedis(self.root)
        redis_url = self.redis.start()
        metrics = self.root / "metrics"
        metrics.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AOB_TEST", "PYTEST"))}
        env.update({
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "AOB_DATA_DIR": str(self.root),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics),
            "DJANGO_SETTINGS_MODULE": "aob_project.settings",
            "PYTHONUNBUFFERED": "1",
            "DEBUG": "0",
            **UNLIMITED,
            **self.extra_env,
        })
        env.pop("AOB_BROKER_URL", None)
        self.env = env
        return env

    def migrate(self) -> None:
        log("manage.py migrate")
        result = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=BASE_DIR,
                                env=self.env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"migrate failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")

    # --- processes ------------------------------------------------------------------------------------

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        child = Child(name, argv, env or self.env, self.logs)
        self.children[name] = child
        return child

    def aob_worker_argv(self, *, module: list[str] | None = None) -> list[str]:
        from aob_project.celery import STATIC_QUEUES

        entry = module or ["-m", "celery"]
        # every node type's queue (the worker asks its registry) and the coordinator's, default and maintenance
        return [sys.executable, *entry, "-A", "aob_project", "worker", "--node-types", "*", "-Q", ",".join(STATIC_QUEUES),
                "-c", str(self.concurrency), "-P", "prefork", "-n", "aob@%h", "--loglevel", "INFO"]

    def start_aob_worker(self, *, module: list[str] | None = None, env: dict[str, str] | None = None) -> Child:
        """The production worker; with a what-if variant, the same worker through bench.profiling."""
        env = dict(env or self.env)
        if self.variant:
            env["BENCH_VARIANT"] = self.variant
            module = module or ["-m", "bench.profiling"]
        child = self.spawn("aob-worker", self.aob_worker_argv(module=module), env)
        child.wait_for_line("ready.")
        return child

    def start_processes(self) -> None:
        from bench.baseline import QUEUES

        python = sys.executable
        self.web_port = free_port()
        log("starting the AOB worker, beat, uvicorn and the baseline worker")
        web = self.spawn("web", [python, "-m", "aob.web", "--host", "127.0.0.1", "--port", str(self.web_port),
                                 "--timeout-graceful-shutdown", "5", "--no-access-log",
                                 "--workers", os.environ.get("AOB_WEB_WORKERS", "2")])
        beat = self.spawn("beat", [python, "-m", "celery", "-A", "aob_project", "beat", "--loglevel", "INFO",
                                   "--schedule", str(self.root / "celerybeat-schedule")])
        self.start_aob_worker()
        baseline = self.spawn("baseline-worker", [
            python, "-m", "celery", "-A", "bench.baseline", "worker", "-Q", ",".join(QUEUES),
            "-c", str(self.concurrency), "-P", "prefork", "-n", "baseline@%h", "--loglevel", "INFO"])
        baseline.wait_for_line("ready.")
        beat.wait_for_line("beat: Starting")
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not port_open(self.web_port):
            if not web.alive():
                raise RuntimeError(f"uvicorn exited:\n{log_tail(web.log_path)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"uvicorn not listening after {READY_TIMEOUT_S:.0f}s")
            time.sleep(0.1)

    def check_alive(self) -> None:
        for child in self.children.values():
            if not child.alive():
                raise RuntimeError(f"{child.name} died ({child.proc.returncode}):\n{log_tail(child.log_path)}")

    def stop_child(self, name: str) -> None:
        child = self.children.pop(name, None)
        if child is not None:
            child.stop()

    def stop(self) -> None:
        for name in list(self.children):
            self.stop_child(name)
        for server in (self.postgres, self.redis):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()
        self.postgres = self.redis = None
        if self.root.exists():  # everything but the logs
            for path in self.root.iterdir():
                if path != self.logs:
                    if path.is_dir():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
