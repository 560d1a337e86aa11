"""PostgreSQL and Redis for the test session, so `make test` needs no services installed.

Enabled by ``-p tests.plugins.services`` in pyproject's addopts. Before pytest-django imports the
settings, it starts an embedded PostgreSQL (fast mode: no fsync) and Redis under
``.aob/test-<pid>/`` for whichever of DATABASE_URL / REDIS_URL is unset, and exports the URLs,
which child processes (Celery workers, uvicorn) started by tests inherit. Servers given by the
environment are used as they are. A missing service is an error, never a skip.

Under pytest-xdist (``make test`` runs the suite in two processes) each worker process is a session
of its own: its own embedded servers, metrics folder, Celery workers and beat, so no test sees another
process's runs or queues. The controlling process, which runs no test, starts none. A PostgreSQL
given by the environment serves every worker (pytest-django gives each its own test database); a
Redis given by the environment gives each worker its own database number (the given one plus the
worker's number), so their queues, locks and counters stay apart.

A killed session cannot clean up after itself: its servers die with it (parent-death signal, see
``aob.embedded``) and the next session deletes the ``test-<pid>`` folders of dead pids.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psutil
import pytest

from aob.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedServiceError, in_use, kill_leftovers, masked

AOB_DIR = Path(__file__).resolve().parents[2] / ".aob"
_STALE_AFTER_S = 600  # a folder whose pid is alive but whose servers are unowned: a reused pid

_EMBEDDED = "AOB_TEST_EMBEDDED"  # the services a controlling xdist process left to its workers to start

_started: list[EmbeddedPostgres | EmbeddedRedis] = []
_folder: Path | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    global _folder
    options = early_config.known_args_namespace
    if getattr(options, "help", False) or getattr(options, "version", False):
        return
    # the test stack's own node type (tests/support/nodetypes), in this process and every worker it starts
    os.environ["AOB_EXTRA_APPS"] = ",".join(dict.fromkeys(
        [*filter(None, os.environ.get("AOB_EXTRA_APPS", "").split(",")), "tests.support.example_types"]))
    remove_stale_folders()
    if distributing(options):
        # The controlling process runs no test and starts no server; its workers (which inherit its
        # environment) start their own. What its settings read from .env or runtime.env is not given.
        os.environ[_EMBEDDED] = ",".join(name for name in ("DATABASE_URL", "REDIS_URL") if not os.environ.get(name))
        _folder = AOB_DIR / f"test-{os.getpid()}"
        _folder.mkdir(parents=True, exist_ok=True)
        os.environ["AOB_DATA_DIR"] = str(_folder)
        return
    if worker := os.environ.get("PYTEST_XDIST_WORKER"):
        for name in filter(None, os.environ.pop(_EMBEDDED, "").split(",")):
            os.environ.pop(name, None)
        if os.environ.get("REDIS_URL"):
            os.environ["REDIS_URL"] = redis_database_for(os.environ["REDIS_URL"], int(worker.removeprefix("gw")))
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # every process of the test stack (this one, workers, live servers) writes metrics here
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="aob-metrics-")
    wanted = [name for name in ("DATABASE_URL", "REDIS_URL") if not os.environ.get(name)]
    if not wanted:
        return
    _folder = AOB_DIR / f"test-{os.getpid()}"
    _folder.mkdir(parents=True, exist_ok=True)
    atexit.register(stop_services)
    try:
        if "DATABASE_URL" in wanted:
            _started.append(postgres := EmbeddedPostgres(_folder, fast=True))
            os.environ["DATABASE_URL"] = postgres.start()
        if "REDIS_URL" in wanted:
            _started.append(redis := EmbeddedRedis(_folder))
            os.environ["REDIS_URL"] = redis.start()
    except EmbeddedServiceError as exc:
        stop_services()
        raise pytest.UsageError(f"could not start the embedded test services: {exc}") from exc
    os.environ["AOB_DATA_DIR"] = str(_folder)  # never the developer's .aob/runtime.env


def distributing(options: object) -> bool:
    """This process hands the tests to pytest-xdist's workers (``-n N`` with N > 0, or ``--tx``)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return False
    processes = getattr(options, "numprocesses", None)
    return bool(processes) or bool(getattr(options, "tx", None))


def redis_database_for(url: str, worker: int) -> str:
    """The Redis URL of xdist worker ``worker``: the given database number plus the worker's."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = dict(parse_qsl(parts.query))
        query["db"] = str(int(query.get("db") or 0) + worker)
        return urlunsplit(parts._replace(query=urlencode(query)))
    base = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{base + worker}"))


def pytest_report_header(config: pytest.Config) -> str:
    if distributing(config.option):
        embedded = os.environ.get(_EMBEDDED) or "none"
        return f"services: each worker process starts its own (embedded: {embedded.replace(',', ', ')})"
    return f"services: DATABASE_URL={masked(os.environ.get('DATABASE_URL', ''))} REDIS_URL={masked(os.environ.get('REDIS_URL', ''))}"


def pytest_unconfigure(config: pytest.Config) -> None:
    stop_services()


def stop_services() -> None:
    """Stop what this session started and delete its folder; safe to call twice."""
    global _folder
    while _started:
        _started.pop().stop()
    if _folder is not None:
        shutil.rmtree(_folder, ignore_errors=True)
        _folder = None


def remove_stale_folders() -> None:
    for folder in AOB_DIR.glob("test-*"):
        try:
            pid = int(folder.name.removeprefix("test-"))
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        reused_pid = time.time() - folder.stat().st_mtime > _STALE_AFTER_S and not in_use(folder)
        if psutil.pid_exists(pid) and not reused_pid:
            continue
        kill_leftovers(folder)
        shutil.rmtree(folder, ignore_errors=True)
