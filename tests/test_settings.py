"""A misconfigured variable stops start-up with one line naming it and what it wants: never a
library's traceback, and never a process that starts half-working on a value it misread."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# valid, unreachable servers: ``manage.py check`` connects to neither, and no runtime.env is read
SERVERS = {"DATABASE_URL": "postgresql://aob:pw@127.0.0.1:1/aob", "REDIS_URL": "redis://:pw@127.0.0.1:1/0"}


def start(**env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AOB_", "DATABASE_URL", "REDIS_URL"))
            and k not in ("SECRET_KEY", "DEBUG")}
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
                          env={**base, **SERVERS, "AOB_ENV_FILE": os.devnull, **env}, timeout=120)


def refused(result: subprocess.CompletedProcess, name: str) -> str:
    """The line start-up ended with, checked to name ``name``."""
    assert result.returncode != 0, f"started with {name} misread:\n{result.stdout}{result.stderr}"
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError: ") and name in last, result.stderr[-3000:]
    return last


# settings.py run again for each case in one process (its refusals are raised while it runs, before
# any system check): a process a case cost about 0.4 s, a check a start 1.3 s, 50 of them half a minute
PROBE = """
import json, os, runpy, sys, traceback
cases, base = json.loads(sys.stdin.read()), dict(os.environ)
answers = []
for env in cases:
    os.environ.clear(); os.environ.update(base); os.environ.update(env)
    try:
        runpy.run_path("aob_project/settings.py", run_name="aob_settings_probe")
        answers.append({"returncode": 0, "stderr": ""})
    except Exception as exc:  # what start-up would end with
        answers.append({"returncode": 1, "stderr": "".join(traceback.format_exception(exc))})
print(json.dumps(answers))
"""
_probed: dict[str, subprocess.CompletedProcess] = {}


def read(*cases: dict[str, str | None]) -> list[subprocess.CompletedProcess]:
    """settings.py as each of ``cases`` (variables set, or unset where None) leaves it: a start-up's
    answer, as ``start`` gives one, for each; every case of this module is read in one process."""
    import json

    wanted = [case for case in ALL_CASES if json.dumps(case, sort_keys=True) not in _probed]
    if wanted:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AOB_", "DATABASE_URL", "REDIS_URL"))
                and k not in ("SECRET_KEY", "DEBUG")}
        envs = [{**SERVERS, "AOB_ENV_FILE": os.devnull, **{k: v for k, v in case.items() if v is not None}}
                for case in wanted]
        done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env={**base, "DJANGO_SETTINGS_MODULE": "aob_project.settings"}, input=json.dumps(envs))
        assert done.returncode == 0, done.stderr
        for case, answer in zip(wanted, json.loads(done.stdout.strip().splitlines()[-1]), strict=True):
            _probed[json.dumps(case, sort_keys=True)] = subprocess.CompletedProcess(
                [], answer["returncode"], stdout="", stderr=answer["stderr"])
    return [_probed[json.dumps(case, sort_keys=True)] for case in cases]


def test_the_servers_above_start():
    result = start()  # the whole check once: the cases below read settings.py alone
    assert result.returncode == 0, result.stderr


SWITCHES = [("AOB_PRODUCTION", "ture"), ("AOB_PRODUCTION", "production"), ("AOB_SWEEPER_ENABLED", "enabled"),
            ("AOB_RATE_LIMITS_ENABLED", "ja")]


@pytest.mark.parametrize(("name", "value"), SWITCHES)
def test_a_switch_that_is_neither_true_nor_false_is_refused(name: str, value: str):
    """Anything but the four words for true was read as false: ``AOB_PRODUCTION=ture`` started a
    production server in development mode (the public development SECRET_KEY and the secrets' key
    derived from it, cookies without Secure, emails to the console), ``AOB_SWEEPER_ENABLED=enabled``
    turned off the recovery of every lost message and lapsed lease, with nothing said."""
    last = refused(*read({name: value}), name)
    assert repr(value) in last and "true or false" in last


NUMBERS = [
    ("AOB_LEASE_S", "15s"),  # float("15s"): "could not convert string to float: '15s'", no name
    ("AOB_HTTP_TIMEOUT_S", "thirty"),
    ("AOB_RUN_MAX_COST_USD", "$2"),
    ("AOB_LEASE_S", "nan"),  # compares false with everything: no bound it takes part in holds
    ("AOB_LLM_TIMEOUT_S", "inf"),
    ("AOB_LEASE_S", "-5"),  # every claimed node's lease lapsed at once: the sweeper runs it again meanwhile
    ("AOB_SWEEP_INTERVAL_S", "0"),  # beat sends the sweep without pause
    ("AOB_OWNER_DAILY_COST_USD", "-1"),
    ("AOB_RATE_GLOBAL_PER_MIN", "-5"),  # every write refused as over a limit nobody set
    ("AOB_MAX_BODY_BYTES", "-1"),
    ("AOB_MAX_NODES", "1.5"),
    # each of these started, then: a prune that deleted nothing and said it was done, every schedule's
    # firing skipped as missed, a web process dying with a ValueError naming nothing, every socket
    # refused, every mail failing at its send (a helper's, reading as a careless operator)
    ("AOB_RETENTION_BATCH_SIZE", "0"), ("AOB_SCHEDULE_GRACE_S", "0"), ("AOB_WEB_THREADS", "0"),
    ("AOB_WS_MAX_PER_USER", "0"), ("EMAIL_PORT", "70000"),
]


@pytest.mark.parametrize(("name", "value"), NUMBERS)
def test_a_number_that_is_not_one_or_out_of_its_range_is_refused(name: str, value: str):
    """A duration or an amount that does not read as one ended start-up with ``ValueError: could not
    convert string to float`` (which variable?), and one that read as a number nobody means (NaN,
    infinity, a negative, a zero interval) started a stack whose bounds and timers misbehave."""
    last = refused(*read({name: value}), name)
    assert value in last


LISTS = [("AOB_HTTP_ALLOWED_PORTS", "80,https"), ("AOB_HTTP_ALLOWED_PORTS", "443,70000"),
         ("AOB_LLM_PRICES", "{gpt-4o: 1}"), ("AOB_OPENAPI_SPECS", "petstore.json")]


@pytest.mark.parametrize(("name", "value"), LISTS)
def test_a_list_or_a_json_value_that_does_not_parse_is_refused_naming_it(name: str, value: str):
    """``int('https')`` and ``json.loads`` ended start-up with a message that names no variable."""
    refused(*read({name: value}), name)


URLS = [
    ("DATABASE_URL", "aob-db"),  # dj_database_url: "Scheme '://' is unknown"
    ("DATABASE_URL", "postgresql://aob:s3cr#t@db.internal:5432/aob"),  # dj_database_url.ParseError, naming nothing
    ("DATABASE_URL", "postgresql://aob:12#x@db.internal:5432/aob"),  # read as host "aob", port 12: wrong server
    ("DATABASE_URL", "sqlite:///aob.sqlite3"),  # the engine's locks and triggers are PostgreSQL's
    ("REDIS_URL", "redis-host"),  # accepted; the broker then became amqp://guest@redis-host:5672, retried forever
    ("REDIS_URL", "redis://:s3cr#t@redis.internal:6379/0"),
    ("REDIS_URL", "redis://redis.internal:6379/cache"),
    ("AOB_BROKER_URL", "rabbit.internal:5672"),
]


@pytest.mark.parametrize(("name", "value"), URLS)
def test_a_server_url_that_does_not_parse_is_refused_naming_it_and_never_its_password(name: str, value: str):
    """A malformed URL stopped start-up with a library's traceback naming no variable, or not at all:
    REDIS_URL without its scheme started the web app and workers whose broker was an AMQP host of
    that name, each worker retrying its connection forever with nothing saying why."""
    result, = read({name: value})
    last = refused(result, name)
    assert "s3cr" not in result.stdout + result.stderr, last  # the password never reaches a log


PRODUCTION = {"AOB_PRODUCTION": "true", "SECRET_KEY": "k" * 64, "AOB_SECRETS_KEYS": "kNXy1Jw4uGaO0sKhBQq3Vfr7o5Kx3nJ2s8h8m2Jc8Ao=",
              "ALLOWED_HOSTS": "aob.example.com", "AOB_PUBLIC_URL": "https://aob.example.com"}


def test_production_with_its_own_hosts_and_public_url_starts():
    result, = read(PRODUCTION)
    assert result.returncode == 0, result.stderr


DEVELOPMENT_ADDRESSES = [("AOB_PUBLIC_URL", None), ("AOB_PUBLIC_URL", "http://127.0.0.1:8000"),
                         ("AOB_PUBLIC_URL", "http://localhost:8000/"), ("AOB_PUBLIC_URL", "aob.example.com"),
                         ("ALLOWED_HOSTS", None), ("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")]


def _in_production(name: str, value: str | None) -> dict[str, str | None]:
    return {**PRODUCTION, name: value}


@pytest.mark.parametrize(("name", "value"), DEVELOPMENT_ADDRESSES)
def test_production_left_with_the_development_address_is_refused(name: str, value: str | None):
    """Production started with AOB_PUBLIC_URL unset links every approval email and shows every
    webhook's URL at http://127.0.0.1:8000 (each approver's own machine, each sender's own host):
    nobody asked could open a gate, no sender could deliver, and nothing said so. Left with the
    development ALLOWED_HOSTS it answered every request for its real name with a 400."""
    refused(*read(_in_production(name, value)), name)


def check_refused(result: subprocess.CompletedProcess, name: str) -> None:
    """Start-up refused with ``name`` in its message: a settings error or a system check's."""
    assert result.returncode != 0, f"started with {name} misread:\n{result.stdout}{result.stderr}"
    last = result.stderr.strip().splitlines()[-1]
    assert name in last or (f"{name}" in result.stderr and "SystemCheckError" in result.stderr), result.stderr[-3000:]


UNUSABLE = [
    ("AOB_LOG_LEVEL", "verbose"),  # "ValueError: Unable to configure root logger"
    ("AOB_CELERY_TASK_LOG_LEVEL", "quiet"),
    ("AOB_LLM_PRICES", "[0.15, 0.6]"),  # every agent node and the metrics then fail on .get of a list
    ("AOB_LLM_PRICES", '{"gpt-4o-mini": {"input": NaN, "output": NaN}}'),  # NaN: the daily check passes, the run ceiling refuses every call
    ("AOB_LLM_PRICES", '{"gpt-4o-mini": {"input": -0.15, "output": -0.6}}'),  # spending refills the budget
    ("AOB_OPENAPI_SPECS", '["petstore.json"]'),
    ("AOB_EMAIL_BACKEND", "smpt"),  # every approval email failed, one at a time, after start
]


@pytest.mark.parametrize(("name", "value"), [*UNUSABLE, ("AOB_HTTP_ALLOWLIST", "https://api.example.com/v1")])
def test_a_setting_that_names_nothing_usable_is_refused_at_start(name: str, value: str):
    """Values that parse but name nothing usable started a stack that failed later, each time it
    reached them: a log level logging cannot configure, a price table that is not one (or prices that
    are NaN, which budgets misread, or negative, which refill them as they are spent), an email
    backend that does not import, an allowlist entry that is a URL."""
    # the allowlist is judged by a system check (workers.E004, a URL is not a host): the whole check
    check_refused(start(**{name: value}) if name == "AOB_HTTP_ALLOWLIST" else read({name: value})[0], name)


SPELLINGS = [("AOB_EMAIL_BACKEND", "smtp"), ("AOB_EMAIL_BACKEND", "console"), ("AOB_LOG_LEVEL", "debug")]


@pytest.mark.parametrize(("name", "value"), [*SPELLINGS, ("AOB_HTTP_ALLOWLIST", "*.example.com:8443")])
def test_the_short_and_lower_case_spellings_start(name: str, value: str):
    """.env.example offers ``console`` or ``smtp`` for AOB_EMAIL_BACKEND: both start, as Django's backends."""
    result = start(**{name: value}) if name == "AOB_HTTP_ALLOWLIST" else read({name: value})[0]
    assert result.returncode == 0, result.stderr


def setting(name: str, **env: str) -> object:
    """The value settings.py gives ``name`` in a process started with ``env``."""
    import json

    code = f"import json, django; django.setup(); from django.conf import settings; print(json.dumps(settings.{name}))"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AOB_", "DATABASE_URL", "REDIS_URL"))
            and k not in ("SECRET_KEY", "DEBUG", "ALLOWED_HOSTS")}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**base, **SERVERS, "AOB_ENV_FILE": os.devnull,
                                 "DJANGO_SETTINGS_MODULE": "aob_project.settings", **env})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["ALLOWED_HOSTS", "AOB_HTTP_ALLOWED_PORTS"])
def test_an_empty_list_means_its_default_as_every_other_empty_value(name: str):
    """.env.example: "An empty value means the default". A list left empty was read as no items:
    ``ALLOWED_HOSTS=`` answered every request with a 400 (no host allowed)."""
    assert setting(name, **{name: ""}) == setting(name)


LOCAL_URLS = ["postgresql:///aob", "postgres://aob@/aob?host=/run/postgresql", "postgresql://%2Frun%2Fpostgresql/aob",
              "postgresql://aob:p%23ss%40w0rd@db.internal/aob"]


@pytest.mark.parametrize("url", LOCAL_URLS)
def test_a_database_url_on_the_local_socket_or_with_an_encoded_password_starts(url: str):
    result, = read({"DATABASE_URL": url})
    assert result.returncode == 0, result.stderr


# Pairs each valid alone: (the variables set, the one the refusal names first, the one it is measured against)
CONTRADICTIONS = [
    ({"AOB_DECISION_SOFT_TIME_LIMIT_S": "90"}, "AOB_DECISION_TIME_LIMIT_S", "AOB_DECISION_SOFT_TIME_LIMIT_S"),
    ({"AOB_CEL_TIMEOUT_MS": "20000"}, "AOB_DECISION_SOFT_TIME_LIMIT_S", "AOB_CEL_TIMEOUT_MS"),
    ({"AOB_SWEEP_INTERVAL_S": "60", "AOB_SWEEP_STALE_S": "30"}, "AOB_SWEEP_STALE_S", "AOB_SWEEP_INTERVAL_S"),
    ({"AOB_UNCLAIMED_AFTER_S": "5"}, "AOB_UNCLAIMED_AFTER_S", "AOB_REPUBLISH_AFTER_S"),
]


@pytest.mark.parametrize(("env", "name", "other"), CONTRADICTIONS)
def test_two_settings_that_contradict_each_other_are_refused_naming_both(env: dict[str, str], name: str, other: str):
    """Each value was valid alone, and together they started a stack that misbehaved later with
    nothing said: a decision's soft time limit past its hard one was never reached (the hard kill
    lost the decision's failure), a CEL deadline longer than a decision may take failed every
    decision that evaluated one slow condition (and its run: DecisionFailed), a sweep interval
    longer than ``AOB_SWEEP_STALE_S`` made the health answer call a working sweeper stale, and an
    unclaimed deadline shorter than the re-publish one said a node only waiting its turn was lost."""
    last = refused(*read(env), name)
    assert other in last and "must be above" in last


def test_a_default_model_without_a_price_is_refused_naming_both():
    """``AOB_LLM_MODEL=gpt-4.1`` (no price) started cleanly, a definition whose agent names no model
    validated, and every such agent node failed ModelNotPriced at its first call."""
    last = refused(*read({"AOB_LLM_MODEL": "gpt-4.1"}), "AOB_LLM_MODEL")
    assert "AOB_LLM_PRICES" in last and "'gpt-4.1'" in last
    priced, = read({"AOB_LLM_MODEL": "gpt-4.1", "AOB_LLM_PRICES": '{"gpt-4.1": {"input": 2, "output": 8}}'})
    assert priced.returncode == 0, priced.stderr


# .env.example's values of the settings above, which an operator copies and edits one at a time
SHIPPED = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
               if line.startswith(("AOB_DECISION", "AOB_CEL_TIMEOUT", "AOB_SWEEP", "AOB_REPUBLISH", "AOB_UNCLAIMED")))


def test_the_shipped_values_of_the_related_settings_start():
    assert {"AOB_DECISION_SOFT_TIME_LIMIT_S", "AOB_SWEEP_STALE_S", "AOB_CEL_TIMEOUT_MS"} <= set(SHIPPED)
    result, = read(SHIPPED)
    assert result.returncode == 0, result.stderr


# read by the code but not settings an operator puts in .env: the file's own name; `make up -v`'s switch;
# the older names of AOB_DECISION_MAX_* (read only when those are unset); prometheus_client's, set by make up
NOT_IN_ENV_EXAMPLE = {"AOB_ENV_FILE", "AOB_UP_VERBOSE", "AOB_PURE_MAX_NODES", "AOB_PURE_MAX_MS",
                      "PROMETHEUS_MULTIPROC_DIR"}


def test_env_example_lists_every_variable_the_server_reads():
    """README, docs/OPERATIONS.md and its own first line say ``.env.example`` lists every variable;
    five read by settings.py and celery.py were missing (``AOB_UNCLAIMED_AFTER_S``, ...). The names are
    taken from the code: settings.py's ``env_*`` readers and any ``os.environ`` lookup in the server's
    packages (pyproject's import-linter roots), so a new one cannot be left out."""
    import re
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"]
    reads = re.compile(r"""(?:\benv_[a-z_]+\(|environ\.get\(|environ\[|getenv\()\s*["']([A-Z][A-Z0-9_]*)["']""")
    read = {name for package in packages for path in (ROOT / package).rglob("*.py") if "migrations" not in path.parts
            for name in reads.findall(path.read_text())}
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M))
    assert {"AOB_LEASE_S", "SECRET_KEY", "AOB_FLOWER_SHOW_MAINTENANCE"} <= read  # the patterns find them
    missing = sorted(read - listed - NOT_IN_ENV_EXAMPLE)
    assert not missing, f"read by the server, absent from .env.example: {missing}"
    assert NOT_IN_ENV_EXAMPLE <= read, "an exception no longer read: drop it"


ALL_CASES: list[dict[str, str | None]] = [
    *({name: value} for name, value in [*SWITCHES, *NUMBERS, *LISTS, *URLS, *UNUSABLE, *SPELLINGS]),
    PRODUCTION,
    *(_in_production(name, value) for name, value in DEVELOPMENT_ADDRESSES),
    *({"DATABASE_URL": url} for url in LOCAL_URLS),
    *(env for env, _, _ in CONTRADICTIONS), SHIPPED, {"AOB_LLM_MODEL": "gpt-4.1"},
    {"AOB_LLM_MODEL": "gpt-4.1", "AOB_LLM_PRICES": '{"gpt-4.1": {"input": 2, "output": 8}}'}]
