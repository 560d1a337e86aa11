"""Operations hygiene: /metrics only for the scraper (a bearer token) or staff; metric labels drawn
from user input are bucketed; production mode never gets the demo user, the development secret
key or an open Flower."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client

from aob.launcher import production_mode
from aob_project.metrics import LLM_TOKENS, NODE_DURATION
from tests.conftest import stored_run
from workflows.models import NodeRun

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "scraper-" + "x" * 32


@pytest.fixture
def scraper_token(settings):
    settings.AOB_METRICS_TOKEN = TOKEN
    return TOKEN


@pytest.mark.django_db
def test_metrics_are_refused_without_the_token(scraper_token, make_user):
    for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": scraper_token},
                    {"HTTP_AUTHORIZATION": f"Token {scraper_token}"}):
        response = Client().get("/metrics", **headers)
        assert response.status_code == 401, headers
        assert response.json()["details"] == {"rule": "metrics_token"}
        assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert b"aob_runs" not in response.content
    someone = Client()
    someone.force_login(make_user("someone"))
    assert someone.get("/metrics").status_code == 401

    scraped = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {scraper_token}")
    assert scraped.status_code == 200 and b"aob_runs" in scraped.content
    staff = Client()
    staff.force_login(make_user("operator", is_staff=True))
    assert staff.get("/metrics").status_code == 200


@pytest.mark.django_db
def test_metrics_are_refused_when_no_token_is_configured(settings):
    settings.AOB_METRICS_TOKEN = ""
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401


@pytest.mark.django_db
def test_metrics_tokens_cannot_be_guessed_without_end(scraper_token, settings):
    """/metrics judged every token offered, as fast as they came: nothing counted one address's
    guesses (the API's, the sockets' and the hooks' anonymous limit never met it; a red-team helper
    had 2,000 guesses answered 401 in a row). A scrape now counts against its address's anonymous
    limit before its token is judged, and one that proves itself is taken out again; past the limit
    the answer is a 429 whatever the token, so a right guess cannot be told from a wrong one."""
    settings.AOB_RATE_ANON_PER_MIN = 5
    address = "198.51.100.23"
    for _ in range(8):  # the scraper's own scrapes never count
        assert Client(REMOTE_ADDR=address).get("/metrics", HTTP_AUTHORIZATION=f"Bearer {scraper_token}").status_code == 200
    answers = [Client(REMOTE_ADDR=address).get("/metrics", HTTP_AUTHORIZATION=f"Bearer guess-{i}")
               for i in range(8)]
    assert [answer.status_code for answer in answers] == [401] * 5 + [429] * 3
    assert answers[-1].json()["error"] == "anonymous_rate_limit_exceeded"
    right = Client(REMOTE_ADDR=address).get("/metrics", HTTP_AUTHORIZATION=f"Bearer {scraper_token}")
    assert right.status_code == 429 and b"aob_runs" not in right.content


@pytest.mark.django_db
def test_labels_from_user_input_are_bucketed(scraper_token, make_user):
    model, node_type = f"model-{uuid.uuid4().hex}", f"type-{uuid.uuid4().hex}"
    LLM_TOKENS.labels(model, "prompt").inc(7)
    LLM_TOKENS.labels(django_settings.AOB_LLM_MODEL, "prompt").inc(1)
    NODE_DURATION.labels(node_type, "completed").observe(0.01)
    run = stored_run(make_user("tenant"))
    NodeRun.objects.create(run=run, node_id="x", iteration=0, node_type=node_type, status=NodeRun.Status.QUEUED)

    text = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {scraper_token}").content.decode()

    assert model not in text and node_type not in text
    assert 'aob_llm_tokens_total{kind="prompt",model="other"}' in text
    assert f'model="{django_settings.AOB_LLM_MODEL}"' in text
    assert 'aob_node_duration_seconds_count{status="completed",type="other"}' in text
    assert 'aob_node_runs{status="queued",type="other"} 1.0' in text


@pytest.mark.django_db
def test_a_scrape_reads_a_row_per_known_type_not_per_name_a_tenant_wrote(scraper_token, make_user):
    """A definition may name any node type (an unknown one is skipped), and the scrape's gauge of
    node runs grouped them by name in the database and bucketed them after: every scrape read one
    row per distinct name a tenant had ever run (a red-team helper's finding: 20,000 names, 20,000
    rows each scrape, kept for the retention's 30 days). Bucketed in the statement, a scrape reads
    at most a row per registered type (and ``other``) and status, however many names were written."""
    from django.db import connection

    from workflows import registry

    run = stored_run(make_user("tenant"))
    NodeRun.objects.bulk_create([NodeRun(run=run, node_id=f"n{i}", iteration=0, node_type=f"made-up-{i}",
                                         status=NodeRun.Status.QUEUED) for i in range(2000)])
    rows: list[tuple[int, str]] = []

    def count_rows(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        rows.append((context["cursor"].rowcount, sql))
        return result

    with connection.execute_wrapper(count_rows):
        text = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {scraper_token}").content.decode()

    assert 'aob_node_runs{status="queued",type="other"} 2000.0' in text
    most = (len(registry.catalogue()) + 1) * len(NodeRun.Status)
    assert rows and max(rows)[0] <= most, max(rows)


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "AOB_PRODUCTION")}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**base, **env}, capture_output=True,
                          text=True, timeout=120)


def test_debug_does_not_let_production_start_with_the_development_secret():
    without = run_manage("check", AOB_PRODUCTION="true", DEBUG="true")
    assert without.returncode != 0 and "SECRET_KEY is required" in without.stderr
    development = run_manage("check", AOB_PRODUCTION="true", DEBUG="true",
                             SECRET_KEY=django_settings.DEV_SECRET_KEY)
    assert development.returncode != 0 and "development key" in development.stderr


@pytest.mark.django_db(transaction=True)
def test_production_mode_never_creates_the_demo_user():
    assert production_mode({"AOB_PRODUCTION": "true"}) and production_mode({"AOB_PRODUCTION": " On "})
    assert not production_mode({}) and not production_mode({"AOB_PRODUCTION": "false"})
    from cryptography.fernet import Fernet

    result = run_manage("aob_demo", AOB_PRODUCTION="true", SECRET_KEY=secrets.token_urlsafe(64),
                        ALLOWED_HOSTS="aob.example.com", AOB_PUBLIC_URL="https://aob.example.com",
                        AOB_SECRETS_KEYS=Fernet.generate_key().decode(),
                        AOB_TEST_DATABASE_NAME=django_settings.DATABASES["default"]["NAME"])
    assert result.returncode != 0 and "production mode" in result.stderr
    assert not User.objects.filter(username="demo").exists()


def test_compose_requires_its_own_secret_key_and_secrets_keys():
    """The compose web app listens on every interface: with ``.env.example`` copied as it is, it ran
    on settings.py's public development key, from which the Fernet key of every stored secret was
    derived (a red-team helper's finding): a dump of the database was as good as plaintext."""
    app_env = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["x-app"]["environment"]
    assert app_env["SECRET_KEY"].startswith("${SECRET_KEY:?"), app_env
    assert app_env["AOB_SECRETS_KEYS"].startswith("${AOB_SECRETS_KEYS:?"), app_env
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    apps = [name for name, service in services.items() if service.get("image") == "aob:latest"]
    assert "web" in apps and all(services[name]["environment"]["SECRET_KEY"] == app_env["SECRET_KEY"]
                                 for name in apps)  # every process of the app, the web's first
    assert "SECRET_KEY=" in (ROOT / ".env.example").read_text()


def test_compose_flower_requires_basic_auth():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    command = services["flower"]["command"]
    assert command[:3] == ["python", "-m", "aob.flower"], command  # the logins judged (next test)
    environment = services["flower"]["environment"]
    assert environment["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?"), environment
    assert environment["DATABASE_URL"] == services["web"]["environment"]["DATABASE_URL"]  # the app's, merged
    assert "FLOWER_BASIC_AUTH=" in (ROOT / ".env.example").read_text()
    # its login crosses the wire in the clear (Basic over http) and Flower never slows a guesser:
    # published on the host's loopback only, as `make up` binds it
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555"], services["flower"]["ports"]


@pytest.mark.parametrize(("logins", "args", "named"), [
    ("", [], "FLOWER_BASIC_AUTH is empty"),  # Flower would ask no login
    ("ops:s3cret,", [], "every login is user:password"),  # the empty entry lets the header "Basic !" in
    ("ops:", [], "every login is user:password"),
    ("ops:s3cret", ["--basic-auth=:"], "from FLOWER_BASIC_AUTH only"),
    ("ops:s3cret", ["-basic_auth=:"], "from FLOWER_BASIC_AUTH only"),  # tornado reads any dashes, _ as -
    # what Flower itself reads after the variable: another spelling of it, a config file
    ("ops:s3cret", ["FLOWER_basic_auth="], "FLOWER_BASIC_AUTH is empty"),
    ("ops:s3cret", ["--conf={conf}"], "FLOWER_BASIC_AUTH is empty"),
])
def test_flower_never_starts_with_logins_that_let_anyone_in(logins: str, args: list[str], named: str,
                                                            tmp_path: Path) -> None:
    """docker-compose could check only that FLOWER_BASIC_AUTH was set (a trailing comma opened
    Flower to ``Basic !``); ``python -m aob.flower``, which compose and `make up` start, judges it with
    `make up`'s rule before Flower starts, and what Flower read once it has (`make up` with its own
    login: tests/test_quickstart.py)."""
    conf = tmp_path / "flowerconfig.py"
    conf.write_text("basic_auth = ['']\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")} | {"FLOWER_BASIC_AUTH": logins}
    env |= dict(arg.split("=", 1) for arg in args if arg.startswith("FLOWER_"))
    argv = [arg.format(conf=conf) for arg in args if not arg.startswith("FLOWER_")]
    result = subprocess.run([sys.executable, "-m", "aob.flower", "--port=1", *argv], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and named in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_flowers_login_may_come_from_the_env_file(tmp_path: Path) -> None:
    """As every setting may: the check reads ``.env`` (the environment wins), then hands over to
    Flower, which here stops at its own parse of a port that is not one."""
    (tmp_path / ".env").write_text("FLOWER_BASIC_AUTH=ops:s3cret\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")} | {
        "AOB_ENV_FILE": str(tmp_path / ".env")}
    result = subprocess.run([sys.executable, "-m", "aob.flower", "--port=not-a-port"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert "FLOWER_BASIC_AUTH" not in result.stderr, result.stderr  # judged and passed
    assert result.returncode != 0 and "port" in (result.stderr + result.stdout).lower(), result.stderr


@pytest.mark.django_db
def test_the_demo_superuser_never_answers_to_a_published_password(monkeypatch):
    """``aob_demo`` (run by every ``make up``) made ``demo`` a superuser with the README's password
    ``demo-password``, set again at each start, on a port every account of the machine reaches (a
    red-team helper logged in to /admin/ with it). Now ``make up`` passes a password it made once
    and keeps in a 0600 file (tests/test_quickstart.py); run by itself, a new user gets a new one,
    shown once, and a later run leaves it alone."""
    import io

    from django.core.management import call_command
    from django.test import Client

    monkeypatch.delenv("AOB_DEMO_PASSWORD", raising=False)
    monkeypatch.delenv("AOB_DEMO_USER", raising=False)
    out = io.StringIO()
    call_command("aob_demo", stdout=out)
    shown = out.getvalue().split("Demo login: demo / ", 1)[1].split()[0]
    demo = User.objects.get(username="demo")
    assert demo.is_superuser and demo.check_password(shown) and not demo.check_password("demo-password")
    again = io.StringIO()
    call_command("aob_demo", stdout=again)  # the next start: the password stays, and is not shown
    assert User.objects.get(username="demo").check_password(shown) and shown not in again.getvalue()
    refused = Client().post("/admin/login/?next=/admin/", {"username": "demo", "password": "demo-password"})
    assert refused.status_code == 200  # the form again: no session
    monkeypatch.setenv("AOB_DEMO_PASSWORD", "chosen-by-its-owner-42")  # as make up passes the kept one
    call_command("aob_demo", stdout=io.StringIO())
    assert User.objects.get(username="demo").check_password("chosen-by-its-owner-42")


def dockerignored(path: str) -> bool:
    """Whether ``docker build`` leaves ``path`` (relative to the project) out of its context, by
    .dockerignore's rules as Docker reads them: the last pattern matching it or a folder above it wins."""
    from fnmatch import fnmatchcase

    ignore = ROOT / ".dockerignore"
    lines = [line.strip() for line in ignore.read_text().splitlines()] if ignore.exists() else []
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for line in lines:
        if not line or line.startswith("#"):
            continue
        negated, pattern = line.startswith("!"), line.lstrip("!").strip("/")
        if any(fnmatchcase(prefix, pattern) or fnmatchcase(prefix, pattern.replace("**/", "")) for prefix in prefixes):
            excluded = not negated
    return excluded


@pytest.mark.parametrize("path", [".env", ".env.production", ".aob/runtime.env", ".aob/postgres/password",
                                  ".aob/demo/password", ".git/config", ".venv/bin/python"])
def test_the_image_never_takes_the_operators_secrets_or_data(path: str):
    """The Dockerfile copies the project whole (``COPY . .``) and there was no .dockerignore:
    ``docker compose build`` put the operator's .env (SECRET_KEY, AOB_SECRETS_KEYS, OPENAI_API_KEY,
    EMAIL_HOST_PASSWORD, FLOWER_BASIC_AUTH; compose requires the file) and `make up`'s .aob (the
    embedded PostgreSQL's data and password, runtime.env, the demo superuser's password) into a
    layer of every image, for anyone who pulls it to read."""
    assert dockerignored(path), path
    assert not dockerignored("aob_project/settings.py") and not dockerignored("requirements.txt")
