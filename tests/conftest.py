"""Shared fixtures: users and API clients, a loopback HTTP server, and the real worker stack."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.test import TransactionTestCase
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.support import stack
from tests.support.fake_llm import FakeLLM
from tests.support.remote import RemoteServer
from tests.support.smtp import SmtpServer
from workflows.models import Run

TERMINAL = {"completed", "failed", "cancelled"}
OPENAPI_SPEC = str(Path(__file__).parent / "support" / "openapi_remote.json")
# A model whose worst case ($1.99 for 1,000 completion tokens) fits a run's default ceiling ($2) once.
PRICEY_MODEL = "pricey-test-model"
TEST_PRICES = {**settings.AOB_LLM_PRICES, PRICEY_MODEL: {"input": 0.0, "output": 1990.0}}


RELAXED_LIMITS = {"AOB_RATE_GLOBAL_PER_MIN": 10**6, "AOB_RATE_USER_RUNS_PER_MIN": 10**6,
                  "AOB_RATE_USER_WRITES_PER_MIN": 10**6, "AOB_RATE_USER_WHOLE_READS_PER_MIN": 10**6,
                  "AOB_RATE_TIER_SIMPLE_PER_MIN": 10**6, "AOB_RATE_TIER_STANDARD_PER_MIN": 10**6,
                  "AOB_RATE_TIER_HEAVY_PER_MIN": 10**6, "AOB_RATE_ANON_PER_MIN": 10**6,
                  "AOB_RATE_LOGIN_PER_ADDRESS_PER_MIN": 10**6, "AOB_RATE_LOGIN_PER_USERNAME_PER_MIN": 10**6}


DEADLOCK = "40P01"  # PostgreSQL's SQLSTATE for a deadlock victim
FLUSH_ATTEMPTS = 5
T = TypeVar("T")
DJANGO_FLUSH = TransactionTestCase._fixture_teardown


# The files that take longest in `make test` (its durations on this machine), handed out first when
# the suite runs in several processes (pytest-xdist hands out a file at a time, in this order), so
# the processes end together: mypy and the join stress test last took a process alone for minutes.
LONGEST_FILES = ("tests/test_typecheck.py", "tests/engine/test_joins.py", "tests/engine/test_differential.py",
                 "tests/test_settings.py", "tests/workers/test_node_types.py", "tests/test_dotenv.py",
                 "tests/security/test_bounds.py", "tests/engine/test_lock_order.py", "tests/test_embedded.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``make test`` runs the fault suite's lean subset: the slow faults (``faults_full``: in
    tests/faults, and a few with their controls elsewhere) run in ``make test-faults``."""
    from tests.faults import harness

    if os.environ.get("PYTEST_XDIST_WORKER"):
        first = {path: rank for rank, path in enumerate(LONGEST_FILES)}
        items.sort(key=lambda item: first.get(item.nodeid.partition("::")[0], len(first)))  # stable
    if not harness.lean():
        return
    heavy = [item for item in items if item.get_closest_marker("faults_full")]
    if heavy:
        config.hook.pytest_deselected(items=heavy)
        items[:] = [item for item in items if not item.get_closest_marker("faults_full")]


def pytest_collection_finish(session: pytest.Session) -> None:
    """mypy runs beside the suite when its test is selected (``tests/test_typecheck.py``), unless the
    suite runs in several processes (pytest-xdist), which keep every core busy: then its test runs it."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if any(item.nodeid.startswith("tests/test_typecheck.py::") for item in session.items):
        from tests import test_typecheck

        test_typecheck.start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests import test_typecheck

    test_typecheck.stop()


def _is_deadlock(exc: BaseException | None) -> bool:
    while exc is not None:
        if getattr(exc, "sqlstate", None) == DEADLOCK:
            return True
        exc = exc.__cause__
    return False


def again_after_a_deadlock(action: Callable[[], T]) -> T:
    """``action()``, tried again when PostgreSQL made it a deadlock's victim (up to FLUSH_ATTEMPTS
    times): a session worker still finishing a run a test left behind goes first, then it works."""
    for attempt in range(1, FLUSH_ATTEMPTS + 1):
        try:
            return action()
        except Exception as exc:
            if attempt == FLUSH_ATTEMPTS or not _is_deadlock(exc):
                raise
    raise AssertionError("unreachable")


# What a flush leaves: rows migrations made, which no test changes (Django's flush truncates them
# and its post_migrate signal makes them again, under new ids).
KEPT_TABLES = {"django_content_type", "auth_permission"}


def emptied(self: TransactionTestCase) -> None:
    """A transactional test's flush: each table with rows emptied in one transaction, once every
    table is locked against writers. Django's flush truncates every table (42) and makes the content
    types and permissions again (about 220 ms a test here, some 100 s of the suite's 480 transactional
    tests); this takes about 20. It waits, as TRUNCATE does, for a session worker still writing rows
    of a run the test left behind (the lock: ``EXCLUSIVE`` waits for writers, not readers), so none of
    them outlives it; the foreign keys Django makes are deferred to the commit, when every row that
    referred to a deleted one is deleted too. A test that asks for more (reset sequences, serialized
    rollback, a subset of apps) gets Django's own flush."""
    from django.db import connections, transaction

    if self.reset_sequences or self.serialized_rollback or self.available_apps is not None:
        return DJANGO_FLUSH(self)
    for name in self._databases_names(include_mirrors=False):
        connection = connections[name]
        tables = sorted(set(connection.introspection.django_table_names(only_existing=True, include_views=False))
                        - KEPT_TABLES)
        quoted = [connection.ops.quote_name(table) for table in tables]
        with transaction.atomic(using=name), connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")
            cursor.execute(f"LOCK TABLE {', '.join(quoted)} IN EXCLUSIVE MODE")
            cursor.execute(" UNION ALL ".join(f"SELECT {i} WHERE EXISTS (SELECT 1 FROM {table})"  # noqa: S608
                                              for i, table in enumerate(quoted)))
            for (i,) in cursor.fetchall():
                cursor.execute(f"DELETE FROM {quoted[i]}")  # noqa: S608 - a table name of ours
    return None


@pytest.fixture(scope="session", autouse=True)
def _flush_outlives_a_deadlock() -> Iterator[None]:
    """A transactional test ends by emptying every table (``emptied``), which PostgreSQL locks one
    table after another. A session worker still finishing a run the test left behind can then
    deadlock with it; when the flush is the victim its rows would stay and break the next test's
    setup. The flush is tried again instead (the victim's locks are gone; the worker's transaction
    finishes first). Tests still wait for the runs they start; this covers the ones a test cannot see."""
    def flush_again_after_a_deadlock(self: TransactionTestCase) -> None:  # tests/test_flush.py
        return again_after_a_deadlock(lambda: emptied(self))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TransactionTestCase, "_fixture_teardown", flush_again_after_a_deadlock)
        yield


@pytest.fixture(autouse=True)
def _rate_limits(request: pytest.FixtureRequest, settings: Any) -> None:
    """Rate limits stay on in every test, but only tests marked ``ratelimit`` run at the real
    defaults (on clean counters); the rest of the suite must not throttle itself."""
    if request.node.get_closest_marker("ratelimit"):
        client = redis.Redis.from_url(settings.REDIS_URL)
        for key in client.scan_iter("aob:rl:*"):
            client.delete(key)
        return
    for name, value in RELAXED_LIMITS.items():
        setattr(settings, name, value)


@pytest.fixture(autouse=True)
def _no_coordinator_share(settings: Any) -> None:
    """The coordinator's share per owner (``workflows/engine/shares.py``) is off in the suite, in
    this process as in the stack's (``stack.test_env``), but where a test turns it on
    (``aob:test:share``, ``tests/engine/test_coordinator_shares.py``): the suite's users reuse ids
    from test to test, so one test's charges would put the next test's decisions last."""
    settings.AOB_DECISION_OWNER_MS_PER_S = 0


@pytest.fixture(autouse=True)
def _web_allowlist(settings: Any, remote: RemoteServer) -> None:
    """The web tier judges literal URLs at save with the workers' allowlist, as a deployment
    configures both alike: the loopback remote is open, nothing else."""
    settings.AOB_HTTP_ALLOWLIST = [f"127.0.0.1:{remote.port}"]


@pytest.fixture(autouse=True)
def fast_password_hasher(request: pytest.FixtureRequest, settings: Any) -> None:
    """Django's default PBKDF2 (over a million rounds) would be most of the suite's run time, and
    hashing is not under test. Browser tests log in to a uvicorn subprocess, which checks the
    default hashers, so they keep them (as does the CLI login test, for the same reason)."""
    if request.node.get_closest_marker("browser"):
        return
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher",
                                 "aob_project.passwords.SignedOutHasher"]  # a deactivation's (settings)


@pytest.fixture
def make_user(db: Any) -> Any:
    def make(username: str = "alice", password: str = "s3cret-pass!", **extra: Any) -> User:
        user = User.objects.create_user(username=username, password=password, **extra)
        Token.objects.create(user=user)
        return user

    return make


def with_permissions(user: User, *codenames: str) -> User:
    """``user`` given the admin's ``app_label.codename`` permissions, read afresh (Django caches a
    user's permissions on the instance). Staff read every owner's runs with ``workflows.view_run``,
    and every owner's workflows with ``workflows.view_workflow`` (``workflows.visibility``)."""
    from django.contrib.auth.models import Permission

    for name in codenames:
        app_label, codename = name.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return User.objects.get(pk=user.pk)


def client_for(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {user.auth_token.key}")
    return client


@pytest.fixture
def user(make_user: Any) -> User:
    return make_user("alice")


@pytest.fixture
def api(user: User) -> APIClient:
    return client_for(user)


@pytest.fixture(scope="session")
def remote() -> Iterator[RemoteServer]:
    """A stand-in for remote hosts, on loopback; the workers' allowlist opens its port only."""
    server = RemoteServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def llm_server() -> Iterator[FakeLLM]:
    """A stand-in for the LLM provider: a local OpenAI-compatible server, scripted per test."""
    server = FakeLLM()
    yield server
    server.close()


@pytest.fixture
def fake_llm(llm_server: FakeLLM) -> FakeLLM:
    llm_server.reset()
    return llm_server


@pytest.fixture(scope="session")
def smtp() -> Iterator[SmtpServer]:
    """A stand-in for the mail server, on loopback: the workers send approval emails to it."""
    server = SmtpServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def stack_env(django_db_setup: Any, django_db_blocker: Any, remote: RemoteServer, llm_server: FakeLLM,
              smtp: SmtpServer) -> dict[str, str]:
    return stack.test_env(settings.DATABASES["default"]["NAME"],
                          AOB_EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
                          EMAIL_HOST="127.0.0.1", EMAIL_PORT=str(smtp.port), AOB_NOTIFY_RETRY_BACKOFF_S="0.2",
                          AOB_HTTP_ALLOWLIST=f"127.0.0.1:{remote.port}",
                          OPENAI_BASE_URL=llm_server.base_url, OPENAI_API_KEY="test-key",
                          AOB_LLM_RETRY_BACKOFF_S="0.05", AOB_LLM_MODEL="gpt-4o-mini",
                          AOB_LLM_PRICES=json.dumps(TEST_PRICES),
                          AOB_OPENAPI_SPECS=json.dumps({"remote": {"spec": OPENAPI_SPEC, "base_url": remote.base}}))


@pytest.fixture(scope="session")
def workers(stack_env: dict[str, str]) -> Iterator[dict[str, stack.Proc]]:
    """Real Celery worker and beat processes for the whole session."""
    procs = {"worker": stack.start_worker(stack_env, "w1", concurrency=3), "beat": stack.start_beat(stack_env)}
    yield procs
    for proc in procs.values():
        proc.stop()


@pytest.fixture
def engine(workers: dict[str, stack.Proc], transactional_db: Any, remote: RemoteServer) -> dict[str, stack.Proc]:
    """Integration tests: committed data visible to the worker processes; hooks reset."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter("aob:test:*"):
        client.delete(key)
    remote.reset()
    return workers


def stored_run(owner: User, definition: dict[str, Any] | None = None) -> Run:
    """A run row and its version only: no node run is emitted and nothing is published."""
    from workflows.services.artifacts import artifact_store

    definition = definition or {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "1"}}],
                                "edges": []}
    artifact = artifact_store(kind="dag_version", content=definition)
    return Run.objects.create(owner=owner, base_artifact=artifact, current_artifact=artifact, inputs={})


def set_inputs(run: Run, inputs: dict[str, Any], **changes: Any) -> None:
    """Store ``inputs`` on a run row as its start would have: with their size measured as
    ``services.runs.run_start`` measures them (``Run.inputs_bytes``)."""
    from workflows.models import canonical_json, size_of

    Run.objects.filter(pk=run.pk).update(inputs=inputs, inputs_bytes=size_of(canonical_json(inputs)) if inputs else 0,
                                         **changes)


def wait_for_run(run_id: Any, timeout: float = 30.0, statuses: set[str] = TERMINAL) -> Run:
    deadline = time.monotonic() + timeout
    while True:
        run = Run.objects.get(pk=run_id)
        if run.status in statuses and not run.output_pending:  # a metadata.output is stored after
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run.status} after {timeout}s")
        time.sleep(0.05)
