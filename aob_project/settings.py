"""AOB settings: one module, every value from the environment (see .env.example), which a ``.env``
file in the project (or at ``AOB_ENV_FILE``) fills in when present.

When DATABASE_URL / REDIS_URL are unset, the values the launcher wrote to
``.aob/runtime.env`` for the embedded services are used, so ``manage.py`` in a second shell
talks to the stack ``make up`` started.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.conf import global_settings

from aob_project.development import DEV_SECRET_KEY
from aob_project.dotenv import load_dotenv

BASE_DIR = Path(__file__).resolve().parent.parent
ENV_FILE = load_dotenv()  # .env, when present (never overrides the environment)


def _load_runtime_env() -> None:
    runtime = Path(os.environ.get("AOB_DATA_DIR") or BASE_DIR / ".aob") / "runtime.env"
    if not runtime.exists():
        return
    for line in runtime.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and key.strip() not in os.environ:
            os.environ[key.strip()] = value.strip()


if not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")):
    _load_runtime_env()


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name)
    if value is None or value == "":
        if default is None:
            raise RuntimeError(f"environment variable {name} is required")
        return default
    return value


TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def env_bool(name: str, default: bool) -> bool:
    """The variable as a switch; a value that is neither word refuses start-up (read as false, a typo
    in AOB_PRODUCTION ran production in development mode)."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    word = value.strip().lower()
    if word not in TRUE_WORDS | FALSE_WORDS:
        raise RuntimeError(f"environment variable {name} must be true or false (1/0, yes/no, on/off), not {value!r}")
    return word in TRUE_WORDS


def env_int(name: str, default: int, *, within: tuple[int, int] = (0, 2**63 - 1)) -> int:
    """The variable as an integer; one outside ``within`` (low, high; by default no negative: every
    count, size, limit and duration here) refuses start-up."""
    value = os.environ.get(name)
    try:
        number = int(value) if value not in (None, "") else default
    except ValueError:
        raise RuntimeError(f"environment variable {name} must be an integer, not {value!r}") from None
    if not within[0] <= number <= within[1]:
        raise RuntimeError(f"environment variable {name} must be from {within[0]} to {within[1]}, not {number}")
    return number


def env_float(name: str, default: float, *, within: tuple[float, float] = (0.0, math.inf),
              positive: bool = False) -> float:
    """The variable as a finite number within ``within`` (by default 0 or more); ``positive``: more
    than 0 too (an interval, a lease, a timeout: 0 would fire without pause or expire at once)."""
    value = os.environ.get(name)
    try:
        number = float(value) if value not in (None, "") else default
    except ValueError:
        raise RuntimeError(f"environment variable {name} must be a number, not {value!r}") from None
    if not math.isfinite(number) or not within[0] <= number <= within[1] or (positive and number <= 0):
        low = f"more than {within[0]:.15g}" if positive else f"at least {within[0]:.15g}"
        high = "" if within[1] == math.inf else f" and at most {within[1]:.15g}"
        raise RuntimeError(f"environment variable {name} must be a number {low}{high}, not {value!r}")
    return number


def env_seconds(name: str, default: float) -> float:
    """A duration or interval in seconds: a finite number more than 0."""
    return env_float(name, default, positive=True)


def env_json(name: str, default: object) -> object:
    """The variable as a JSON document (the default when unset or empty)."""
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return json.loads(value)
    except ValueError as exc:
        raise RuntimeError(f"environment variable {name} must be JSON ({exc}), not {value!r}") from None


# PostgreSQL's URL may leave its host out (the local socket, or ?host=/run/postgresql), Redis's unix:// has none
LOCAL_SOCKET_SCHEMES = frozenset({"unix", "postgresql", "postgres", "pgsql"})
SERVER_URL_HINT = "percent-encode any of : / @ # ? % in its user name or password (%3A %2F %40 %23 %3F %25)"


def env_url(name: str, default: str, *, schemes: tuple[str, ...], several: bool = False) -> str:
    """The variable as a server's URL with one of ``schemes``, a host (or a unix socket's path) and a
    numeric port; refused naming the variable, never showing the value (it may hold a password).
    ``several``: URLs separated by ``;`` (a broker's fail-over hosts, Sentinel's), each judged."""
    urls = env_str(name, default)
    for value in urls.split(";") if several else [urls]:
        _server_url(name, value, schemes)
    return urls


def _server_url(name: str, value: str, schemes: tuple[str, ...]) -> None:
    scheme = value.partition("://")[0].lower() if "://" in value else ""
    if scheme not in schemes:
        raise RuntimeError(f"environment variable {name} must be a URL beginning "
                           f"{' or '.join(f'{s}://' for s in schemes)} (scheme {scheme or 'missing'})")
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        raise RuntimeError(f"environment variable {name} has a port that is not a number from 0 to 65535; "
                           f"{SERVER_URL_HINT}") from None
    if parts.fragment or "#" in value:
        raise RuntimeError(f"environment variable {name} holds a '#', which ends a URL; {SERVER_URL_HINT}")
    if scheme not in LOCAL_SOCKET_SCHEMES and not parts.hostname:
        raise RuntimeError(f"environment variable {name} names no host; {SERVER_URL_HINT}")


def redis_db_ok(url: str) -> bool:
    """A Redis URL's path is empty or a database number, as redis-py reads it."""
    path = urlsplit(url).path.strip("/")
    return urlsplit(url).scheme == "unix" or path == "" or path.isdigit()


LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


def env_log_level(name: str, default: str) -> str:
    """A logging level's name, in any case (logging itself takes upper case only)."""
    level = env_str(name, default).strip().upper()
    if level not in LOG_LEVELS:
        raise RuntimeError(f"environment variable {name} must be one of {', '.join(LOG_LEVELS)}, not {level.lower()!r}")
    return level


def env_prices(name: str, default: dict) -> dict:
    """{"model": {"input": usd_per_1M, "output": ..., "cached_input"?: ...}}, each a finite number, 0 or more:
    a NaN or a negative price would pass or refill the LLM budgets."""
    prices = env_json(name, default)
    if not isinstance(prices, dict):
        raise RuntimeError(f'environment variable {name} must be a JSON object {{"model": {{"input": 0.15, '
                           f'"output": 0.6}}}}, not a {type(prices).__name__}')
    for model, price in prices.items():
        fields = price if isinstance(price, dict) else {}
        numbers = {k: v for k, v in fields.items() if k in ("input", "output", "cached_input")}
        if ("input" not in numbers or "output" not in numbers or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                for v in numbers.values())):
            raise RuntimeError(f"environment variable {name}: model {model!r} must have input and output prices "
                               "(cached_input may be added), each a number of USD per 1M tokens, 0 or more")
    return prices


def env_specs(name: str) -> dict:
    """{"name": {"spec": "<path or https URL>", "base_url": "https://..."}}."""
    specs = env_json(name, {})
    if not isinstance(specs, dict) or not all(
            isinstance(spec, dict) and isinstance(spec.get("spec"), str) and isinstance(spec.get("base_url"), str)
            for spec in specs.values()):
        raise RuntimeError(f'environment variable {name} must be a JSON object {{"name": {{"spec": "path or https '
                           'URL", "base_url": "https://api.example.com"}}}}')
    return specs


def env_email_backend(name: str, default: str) -> str:
    """Django's email backend: a dotted path, or one of Django's by its short name (``smtp``, ``console``...);
    its module must be there, or every notification would fail one at a time after start."""
    backend = env_str(name, default).strip()
    if "." not in backend:
        backend = f"django.core.mail.backends.{backend.lower()}.EmailBackend"
    module = backend.rpartition(".")[0]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise RuntimeError(f"environment variable {name} names no email backend Python can import: {module!r} "
                           "(smtp, console, or a dotted path to an EmailBackend class)")
    return backend


def env_ports(name: str, default: str) -> list[int]:
    """A comma-separated list of TCP ports, each from 1 to 65535."""
    ports = []
    for item in env_list(name, default):
        if not item.isdigit() or not 1 <= int(item) <= 65535:
            raise RuntimeError(f"environment variable {name} must list ports from 1 to 65535, not {item!r}")
        ports.append(int(item))
    return ports


def env_list(name: str, default: str = "") -> list[str]:
    """Comma-separated items; unset or empty, the default's (as every variable's empty value)."""
    raw = os.environ.get(name) or default
    return [item.strip() for item in raw.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
PRODUCTION = env_bool("AOB_PRODUCTION", False)
# Development may run without a secret; production must set one, whatever DEBUG says (check
# --deploy enforces its quality), and never the development one (public: `make up` makes its own).
SECRET_KEY = env_str("SECRET_KEY", None if PRODUCTION else DEV_SECRET_KEY)
if PRODUCTION and SECRET_KEY == DEV_SECRET_KEY:
    raise RuntimeError("SECRET_KEY is the development key; production (AOB_PRODUCTION) needs its own")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
# The run streams' origin check (channels' AllowedHostsOriginValidator) reads ALLOWED_HOSTS: with "*"
# any site's page could open a signed-in person's run stream (cross-site WebSocket hijacking).
if PRODUCTION and "*" in ALLOWED_HOSTS:
    raise RuntimeError("ALLOWED_HOSTS must name this server's hosts in production (AOB_PRODUCTION), not '*': "
                       "the WebSocket origin check reads it")
CSRF_TRUSTED_ORIGINS = env_list("AOB_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",
    "channels",
    "csp",
    "workflows",
    "workers",
    "agents",
    "approvals",
    # issue 18: schedules and webhooks, secrets, sub-workflows, retention
    "django_celery_beat",
    "vault",
    "triggers",
    "subflows",
    "retention",
]
# A deployment's own apps, appended: a node type of its own is one ``nodetypes`` module in one of them
# (docs/ARCHITECTURE.md, "Writing a node type").
INSTALLED_APPS += env_list("AOB_EXTRA_APPS")

MIDDLEWARE = [
    "aob_project.context.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "aob_project.content_policy.ContentPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "workflows.middleware.NulRefusedMiddleware",
    "workflows.middleware.QueryParametersMiddleware",
    "workflows.middleware.LoginRateLimitMiddleware",
    "workflows.middleware.DatabaseErrorMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "aob_project.urls"
WSGI_APPLICATION = None
ASGI_APPLICATION = "aob_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env_url("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/aob",
                       schemes=("postgresql", "postgres", "pgsql"))  # the engine's locks and triggers are PostgreSQL's
try:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("AOB_DB_CONN_MAX_AGE", 600))}
except (ValueError, dj_database_url.ParseError):
    raise RuntimeError(f"environment variable DATABASE_URL is not a URL dj_database_url reads; {SERVER_URL_HINT}") from None
# A broken connection is marked unusable by its error and replaced on the next task or request;
# a health-check query before every use would cost a round trip on the engine's hot path.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env_bool("AOB_DB_HEALTH_CHECKS", False)
# Server-side parameter binding lets psycopg prepare a statement after its fifth use, so the
# engine's per-hop statements are parsed and planned once per connection.
if env_bool("AOB_DB_PREPARE", True):
    DATABASES["default"].setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=5)
# A session idle inside a transaction this long is ended by PostgreSQL (its transaction rolled back,
# its locks released): a process frozen while it holds a run's lock (a paused VM or container, a
# SIGSTOP) would otherwise stall every transaction that needs that run, the sweeper's included, for
# as long as it stays frozen. Set per connection (workflows/engine/locks.py); 0: not set.
# PostgreSQL takes at most 2^31 - 1 ms: past it every connection's SET failed.
AOB_DB_IDLE_IN_TRANSACTION_S = env_float("AOB_DB_IDLE_IN_TRANSACTION_S", 120.0, within=(0.0, 2147483.0))
# Threads per web process that run HTTP requests (aob_project/http_handler.py), each keeping its
# database connection across requests: at most this many requests per process at once.
AOB_WEB_THREADS = env_int("AOB_WEB_THREADS", 8, within=(1, 1000))
# Of those, at most this many run one client's requests at once (an API request's token, else its
# address; all of an address's together take at most all threads but one: aob_project/http_handler.py
# ``Turns``), and waiting clients take the threads in turn:
# one user's forty slow reads held every thread, and another's simple request waited behind all
# forty (14 s, a red team's measure). Default: half the threads.
AOB_WEB_THREADS_PER_CLIENT = env_int("AOB_WEB_THREADS_PER_CLIENT", max(1, AOB_WEB_THREADS // 2),
                                     within=(1, AOB_WEB_THREADS))
# The web checks a kept connection before each request reuses it (Django's CONN_HEALTH_CHECKS,
# one `SELECT 1`), so a PostgreSQL restart or a dropped idle connection costs no failed request:
# a worker's task is asked again by the sweeper, an HTTP client's request would not be.
AOB_WEB_DB_HEALTH_CHECKS = env_bool("AOB_WEB_DB_HEALTH_CHECKS", True)
if os.environ.get("AOB_TEST_DATABASE_NAME"):
    # Worker processes started by the test suite talk to pytest-django's test database.
    DATABASES["default"]["NAME"] = os.environ["AOB_TEST_DATABASE_NAME"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_url("REDIS_URL", "redis://127.0.0.1:6379/0", schemes=("redis", "rediss", "unix"))
if not redis_db_ok(REDIS_URL):
    raise RuntimeError("environment variable REDIS_URL must end in a database number (/0), or nothing")

# Django's hashers, and the wrapper a deactivation rewrites a password's hash under (its sessions end:
# ``aob_project/passwords.py``), which checks the password it wraps
PASSWORD_HASHERS = [*global_settings.PASSWORD_HASHERS, "aob_project.passwords.SignedOutHasher"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
FORMAT_MODULE_PATH = ["aob_project.formats"]  # times to the second (aob_project/formats/en/formats.py)

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".aob" / "static"
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
# Linked from the web UI; `make up` starts Flower on AOB_FLOWER_PORT.
AOB_FLOWER_URL = env_str("AOB_FLOWER_URL", "http://127.0.0.1:5555/")

# --- Security -------------------------------------------------------------------------------
# A request body over this is refused: by its declared Content-Length before it is read
# (aob_project/asgi.py), else while it streams in.
AOB_MAX_BODY_BYTES = env_int("AOB_MAX_BODY_BYTES", 1024 * 1024)
# A request's body not whole within this many seconds is answered 408 and let go (aob_project/
# http_handler.py): 150 connections that each sent all but a byte held 165 MiB of the web process.
AOB_BODY_READ_S = env_seconds("AOB_BODY_READ_S", 30.0)
# A request's head (request line and headers, WebSocket handshakes too) past these is answered 431,
# and one not whole within AOB_WEB_HEAD_READ_S of its first byte (or of the connection's start) 408,
# before any of our code sees it (aob_project/http_head.py): uvicorn's parser kept an unended header
# whole (eight of 64 MiB took a web process to 606 MB) and a head sent a byte at a time was never cut off.
AOB_WEB_HEAD_MAX_BYTES = env_int("AOB_WEB_HEAD_MAX_BYTES", 64 * 1024, within=(8 * 1024, 1024 * 1024))
AOB_WEB_HEADERS_MAX = env_int("AOB_WEB_HEADERS_MAX", 100, within=(20, 1000))
AOB_WEB_HEAD_READ_S = env_float("AOB_WEB_HEAD_READ_S", 10.0, within=(0.0, 300.0), positive=True)
DATA_UPLOAD_MAX_MEMORY_SIZE = AOB_MAX_BODY_BYTES
# A workflow definition (saved, or a run's patched version) as compact JSON; JSON Patch
# application stops as soon as a document would pass it (workflows/services/definitions.py).
AOB_MAX_DEFINITION_BYTES = env_int("AOB_MAX_DEFINITION_BYTES", 1024 * 1024)
# What one owner's workflow versions keep of their definitions together (each kept as long as its
# tag lives: workflows/services/definitions.py); past it a save is refused.
AOB_MAX_DEFINITIONS_BYTES_PER_OWNER = env_int("AOB_MAX_DEFINITIONS_BYTES_PER_OWNER", 1024**3,
                                              within=(1024 * 1024, 1024**4))
# What the workflow graphs a process keeps compiled (workflows/definition/ir.py, at most 512 of
# them) may weigh together, counted as their definitions' stored bytes: a graph keeps its nodes'
# configs parsed, in the heap up to ~25 times their stored size (a 1 MiB definition of small
# objects, ~25 MB), so the default keeps at most ~200 MB; 512 definitions of 10 KB weigh 5 MiB.
# One heavier than this alone is compiled again each time it is needed.
AOB_COMPILED_GRAPHS_BYTES = env_int("AOB_COMPILED_GRAPHS_BYTES", 8 * 1024 * 1024, within=(0, 1024**4))
# Steps one approval decision may spend checking data against a hitl form (workflows/definition/
# forms.py: a step per keyword evaluated, more where its work grows with the form or the data);
# 50,000 is under 0.2 s for the costliest forms measured, and 400 line items of an ordinary form
# need 10,000.
AOB_FORM_EVAL_BUDGET = env_int("AOB_FORM_EVAL_BUDGET", 50_000)
# /metrics answers only `Authorization: Bearer <this>` (or a staff session); empty: staff only.
AOB_METRICS_TOKEN = os.environ.get("AOB_METRICS_TOKEN", "")
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
SECURE_SSL_REDIRECT = env_bool("AOB_SECURE_SSL_REDIRECT", PRODUCTION)
SECURE_HSTS_SECONDS = env_int("AOB_HSTS_SECONDS", 31536000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = PRODUCTION
SECURE_HSTS_PRELOAD = PRODUCTION
# Behind a reverse proxy, the client address is the last X-Forwarded-For entry (the proxy's own).
AOB_BEHIND_PROXY = env_bool("AOB_BEHIND_PROXY", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if AOB_BEHIND_PROXY else None
# Connections one client address may hold open at once in a web process (WebSockets included); one
# more is answered 429 and closed (aob_project/http_head.py): each holds a file descriptor, and one
# address opening thousands left the process none to accept anyone else's. 0: no bound, the default
# behind a proxy (every connection comes from its address: bound them there, nginx's limit_conn).
AOB_WEB_CONNECTIONS_PER_ADDRESS = env_int("AOB_WEB_CONNECTIONS_PER_ADDRESS", 0 if AOB_BEHIND_PROXY else 256,
                                          within=(0, 100_000))
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Every page's Content-Security-Policy (django-csp; aob_project/content_policy.py adds the page's
# WebSocket origin to connect-src). Whatever an agent or another user writes is shown as text by the
# pages' scripts; should a mistake ever let it become markup, it still runs no script, loads
# nothing from elsewhere, sends nothing elsewhere, and cannot rebase the page's links or be framed.
# Styles may be inline: the editor (CodeMirror) writes <style> elements and the timeline and graph
# set style attributes. The API docs loosen script, image, font and worker sources for their own
# pages only (workflows/api/docs.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    },
}

# --- REST API ---------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "workflows.api.authentication.TokenOrBearerAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["workflows.api.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "workflows.api.errors.exception_handler",
    # After authentication (workflows/api/throttles.py); limits in AOB_RATE_* below.
    "DEFAULT_THROTTLE_CLASSES": ["workflows.api.throttles.AnonymousThrottle",
                                 "workflows.api.throttles.GlobalWriteThrottle"],
    "DEFAULT_PAGINATION_CLASS": "workflows.api.pagination.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "AOB API",
    "DESCRIPTION": "Agentic workflows on Django and Celery",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # The docs pages load Swagger UI / ReDoc from our static files, never a CDN, and Swagger UI
    # sends the document to no online validator: the docs work offline.
    "ENUM_NAME_OVERRIDES": {"RunStatusEnum": "workflows.models.run.Run.Status",
                            "ApprovalStatusEnum": "approvals.models.Approval.Status"},
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "workflows.api.openapi.add_links",
                             "workflows.api.openapi.require_bodies", "workflows.api.openapi.declare_edges"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None, "persistAuthorization": True},
}

# --- Channels ---------------------------------------------------------------------------------
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "aob_project.channel_layer.RedisChannelLayer",
        # capacity: the frames a socket may have waiting, in Redis and in the web process (where
        # nothing expires them); past it a push is dropped and the socket reads the hole from the
        # database. A pushed frame is at most ~4 KiB (workflows.engine.events.live_frame).
        "CONFIG": {"hosts": [REDIS_URL], "capacity": 100, "expiry": 30},
    }
}

# --- Celery -----------------------------------------------------------------------------------
CELERY_BROKER_URL = env_url("AOB_BROKER_URL", REDIS_URL,
                            schemes=("redis", "rediss", "unix", "sentinel", "amqp", "amqps", "pyamqp"), several=True)
if not all(url.startswith(("amqp", "pyamqp")) or redis_db_ok(url) for url in CELERY_BROKER_URL.split(";")):
    raise RuntimeError("environment variable AOB_BROKER_URL must end in a database number (/0), or nothing")
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A pool process whose resident memory passed this (KiB) after a task is replaced by a fresh one, so
# what one run's large documents left behind is not kept for every later task (0: never).
CELERY_WORKER_MAX_MEMORY_PER_CHILD = env_int("AOB_WORKER_MAX_MEMORY_PER_CHILD_KB", 1024 * 1024,
                                            within=(0, 2**40)) or None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("AOB_BROKER_VISIBILITY_TIMEOUT_S", 3600)}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = True
# Worker events feed Flower; a "task-sent" event would double every publish on the hot path.
CELERY_TASK_SEND_SENT_EVENT = env_bool("AOB_TASK_SENT_EVENTS", False)

# --- Engine -----------------------------------------------------------------------------------
# A node run left queued this long is re-published; a running one whose lease lapsed is re-run.
# Leases are renewed by a heartbeat every third of AOB_LEASE_S while the node runs.
AOB_SWEEPER_ENABLED = env_bool("AOB_SWEEPER_ENABLED", True)
AOB_SWEEP_INTERVAL_S = env_seconds("AOB_SWEEP_INTERVAL_S", 5.0)
# How often beat asks which service queues no running worker consumes (a broadcast and a second's
# wait, on the maintenance queue): the health answer's ``queues`` and the runs waiting on one say so.
AOB_QUEUES_CHECK_INTERVAL_S = env_seconds("AOB_QUEUES_CHECK_INTERVAL_S", 60.0)
# The health answer calls the sweeper stale when none finished this long (beat or the worker of
# the maintenance queue down: nothing then recovers a lost message, and nothing else says so).
AOB_SWEEP_STALE_S = env_seconds("AOB_SWEEP_STALE_S", max(30.0, 6 * AOB_SWEEP_INTERVAL_S))
# How often beat applies on_timeout to approvals whose deadline passed.
AOB_APPROVAL_SWEEP_INTERVAL_S = env_seconds("AOB_APPROVAL_SWEEP_INTERVAL_S", 5.0)
AOB_REPUBLISH_AFTER_S = env_seconds("AOB_REPUBLISH_AFTER_S", 10.0)
AOB_LEASE_S = env_seconds("AOB_LEASE_S", 15.0)
AOB_REPUBLISH_BACKLOG_S = env_seconds("AOB_REPUBLISH_BACKLOG_S", 300.0)
# A node run queued this long on a queue a running worker consumes, whose broker list is empty, and
# still unclaimed: its run says so (``node_unclaimed``) and the sweeper sends it again under a new
# task id, which no revoke names (workflows/engine/sweeper.py ``UNCLAIMED``).
AOB_UNCLAIMED_AFTER_S = env_seconds("AOB_UNCLAIMED_AFTER_S", 300.0)
# Fair shares of the workers between owners (workflows/engine/admission.py): at most this many node
# runs of one type run for one owner at once; a worker that takes one more holds it queued
# (``wait_reason`` ``slot``) and the owner's next finish of that type releases it. 0: no limit.
AOB_OWNER_MAX_RUNNING = env_int("AOB_OWNER_MAX_RUNNING", 4, within=(0, 100_000))
# Fair shares of the coordinator between owners (workflows/engine/shares.py): an owner's full
# decisions may take this many ms of coordinator time a second, after a burst of this many ms; past
# it, its decisions are taken only when nobody else's wait (the broker's lowest priority; Redis
# only). 0: no share.
AOB_DECISION_OWNER_MS_PER_S = env_int("AOB_DECISION_OWNER_MS_PER_S", 100, within=(0, 1_000_000))
AOB_DECISION_OWNER_BURST_MS = env_int("AOB_DECISION_OWNER_BURST_MS", 2000, within=(0, 86_400_000))
AOB_MAX_ATTEMPTS_ON_LOST = env_int("AOB_MAX_ATTEMPTS_ON_LOST", 3)
AOB_MAX_NODES = env_int("AOB_MAX_NODES", 1000)
# A definition's edges, judged before anything else reads them (a decision's walk of a join grows
# with its parents' edges: 190 entries feeding 190 joins, 36,100 edges, took 33 s of decisions a run).
AOB_MAX_EDGES = env_int("AOB_MAX_EDGES", 5000, within=(1, 1_000_000))
AOB_MAX_JSON_DEPTH = env_int("AOB_MAX_JSON_DEPTH", 64)
AOB_DEFAULT_NODE_TIMEOUT_MS = env_int("AOB_DEFAULT_NODE_TIMEOUT_MS", 300_000)
# A decision about one node run that raises this many times fails the run (DecisionFailed);
# workflows.coordinate's soft and hard time limits (workflows/tasks.py).
AOB_MAX_DECISION_FAILURES = env_int("AOB_MAX_DECISION_FAILURES", 3)
# Sweeps that failed on one row of a run (poison rows), over at least AOB_SWEEP_FAILED_AFTER_S,
# before that run fails with SweepFailed (workflows/engine/poison.py); the failures say so on the
# run (sweep_failed events, one each AOB_SWEEP_FAILED_AFTER_S / AOB_MAX_SWEEP_FAILURES seconds).
AOB_MAX_SWEEP_FAILURES = env_int("AOB_MAX_SWEEP_FAILURES", 5, within=(1, 1000))
AOB_SWEEP_FAILED_AFTER_S = env_seconds("AOB_SWEEP_FAILED_AFTER_S", 600.0)
AOB_DECISION_SOFT_TIME_LIMIT_S = env_seconds("AOB_DECISION_SOFT_TIME_LIMIT_S", 30.0)
AOB_DECISION_TIME_LIMIT_S = env_seconds("AOB_DECISION_TIME_LIMIT_S", 60.0)
# The plain step (workflows/engine/steps.py): a plan made in advance, applied in one statement once
# SQL has checked its premises. Off, every decision is the full one (same outcome, more queries).
AOB_PLAIN_STEPS = env_bool("AOB_PLAIN_STEPS", True)
# Pure nodes (``transform``) evaluated inside the decision that reaches them, no worker hop.
AOB_PURE_NODES = env_bool("AOB_PURE_NODES", True)
# What one decision evaluates in place (pure, conditional and loop nodes; edge and loop conditions):
# at most this many nodes, for this long. Past it, pure nodes go through the queue and the rest of
# the decision continues in a decision of its own (workflows/engine/pure.py). ``AOB_PURE_MAX_*``
# are these settings' earlier names.
AOB_DECISION_MAX_NODES = env_int("AOB_DECISION_MAX_NODES", env_int("AOB_PURE_MAX_NODES", 50))
AOB_DECISION_MAX_MS = env_int("AOB_DECISION_MAX_MS", env_int("AOB_PURE_MAX_MS", 50))
# Per run: node runs (loops multiply them) and bytes of stored outputs; past either the run fails.
AOB_MAX_NODE_RUNS_PER_RUN = env_int("AOB_MAX_NODE_RUNS_PER_RUN", 10000)
AOB_MAX_RUN_OUTPUT_BYTES = env_int("AOB_MAX_RUN_OUTPUT_BYTES", 256 * 1024 * 1024)
# One node's output, as stored (canonical JSON in UTF-8): past it the node fails (OutputTooLarge,
# workflows/engine/outputs.py), and GET /runs/{id}/output answers at most this much of node outputs
# (the rest as links to their artifacts). 32 MiB holds an http node's output of a body at
# AOB_HTTP_MAX_RESPONSE_BYTES (10 MiB) as text or JSON (1-1.2x) or binary decoded as text (random
# bytes 2.4x, 0xff or NUL 3x); a body of control characters (6x) does not. Raise it with that cap.
AOB_MAX_NODE_OUTPUT_BYTES = env_int("AOB_MAX_NODE_OUTPUT_BYTES", 32 * 1024 * 1024, within=(1024, 256 * 1024 * 1024))
# What one owner's runs may keep together, inputs and node outputs as stored, finished or not
# (workflows/storage.py); past it a run's start is refused 409 owner_storage_full. 0: no bound.
AOB_OWNER_STORAGE_BYTES = env_int("AOB_OWNER_STORAGE_BYTES", 20 * 1024**3, within=(0, 1024**5))
# A run's inputs, however it starts (a hook's mapping and a parent's sub-workflow node can build more
# than the API's body cap): refused at the start past it
AOB_MAX_RUN_INPUTS_BYTES = env_int("AOB_MAX_RUN_INPUTS_BYTES", 16 * 1024 * 1024, within=(1024, 256 * 1024 * 1024))
# Run inputs past 64 KiB are read once in an engine process and kept (workflows/engine/run_inputs.py),
# at most this much of their stored size per process (0: never kept, read at every claim and decision).
AOB_RUN_INPUTS_KEPT_BYTES = env_int("AOB_RUN_INPUTS_KEPT_BYTES", 16 * 1024 * 1024, within=(0, 1024 * 1024 * 1024))
# A run's metadata.output is computed once after it completes, by a worker on its own queue (wf.output)
# (workflows/services/runs.py run_output_store), within this many seconds (the task's soft time limit).
AOB_OUTPUT_TIME_LIMIT_S = env_int("AOB_OUTPUT_TIME_LIMIT_S", 60, within=(1, 3600))
# The runs list's text search (?q=, API and web; workflows/search.py): it looks at the latest
# AOB_RUN_SEARCH_MAX_RUNS runs the other filters leave, reads a run's inputs only when they are at
# most AOB_RUN_SEARCH_INPUTS_MAX_BYTES (Run.inputs_bytes; 0: errors only), and its statement stops
# after AOB_RUN_SEARCH_TIMEOUT_MS (a 400 naming q). One search reads at most MAX_RUNS x INPUTS_MAX_BYTES.
AOB_RUN_SEARCH_MAX_RUNS = env_int("AOB_RUN_SEARCH_MAX_RUNS", 1000, within=(1, 100_000))
AOB_RUN_SEARCH_INPUTS_MAX_BYTES = env_int("AOB_RUN_SEARCH_INPUTS_MAX_BYTES", 16 * 1024, within=(0, 1024 * 1024))
AOB_RUN_SEARCH_TIMEOUT_MS = env_int("AOB_RUN_SEARCH_TIMEOUT_MS", 1000, within=(10, 60_000))
# GET /runs/{id}/details and a node's iterations page: larger fields become links (workflows/selectors.py).
AOB_DETAILS_MAX_BYTES = env_int("AOB_DETAILS_MAX_BYTES", 1024 * 1024)
# An open event stream judges its user again (token, session, active, the run visible) before it
# streams on, at most this often: a revoked token or a logout ends it within this many seconds. A
# run's stream quiet this long reads the run's events it has not sent (a live message lost on the way).
AOB_WS_RECHECK_S = env_seconds("AOB_WS_RECHECK_S", 30.0)
# Open event streams (WebSockets) per user in one web process; past it a socket is closed with 4429.
AOB_WS_MAX_PER_USER = env_int("AOB_WS_MAX_PER_USER", 50, within=(1, 100_000))
# Page reads of one user's event streams at once in a web process (workflows.consumers.turns): the
# streams' reads share one thread, so one user's replays wait on each other, not on everyone.
AOB_WS_READS_PER_USER = env_int("AOB_WS_READS_PER_USER", 2, within=(1, 1000))
# An open inbox stream tells its client of changes to approvals naming its user at most this often
# (workflows.consumers.UserEventsConsumer.inbox_changed); changes meanwhile make one nudge at the end.
AOB_WS_INBOX_NUDGE_MIN_S = env_seconds("AOB_WS_INBOX_NUDGE_MIN_S", 3.0)

# --- Expressions (workflows/definition/expressions.py) --------------------------------------------
# CEL sources: size, comprehension macros (all/exists/exists_one/map/filter) and their nesting are
# refused at save; evaluation stops at the deadline, which converting what it reads is weighed
# against before it starts; chained `+` are estimated against the data.
AOB_CEL_MAX_SOURCE_BYTES = env_int("AOB_CEL_MAX_SOURCE_BYTES", 4096)
# A definition's distinct CEL sources together (conditions, expressions): each is compiled when it is
# validated or saved, in the web request; past it the definition is refused (cel.total_bytes).
AOB_MAX_DEFINITION_CEL_BYTES = env_int("AOB_MAX_DEFINITION_CEL_BYTES", 128 * 1024, within=(4096, 16 * 1024 * 1024))
AOB_CEL_MAX_MACROS = env_int("AOB_CEL_MAX_MACROS", 8)
AOB_CEL_MAX_COMPREHENSION_DEPTH = env_int("AOB_CEL_MAX_COMPREHENSION_DEPTH", 2)
AOB_CEL_TIMEOUT_MS = env_int("AOB_CEL_TIMEOUT_MS", 1000)
# A hook's CEL mapping runs in the web request of each delivery: a projection of the body, with this
# much of the deadline (at most AOB_CEL_TIMEOUT_MS), not a whole second of a web process each time.
AOB_HOOK_MAPPING_TIMEOUT_MS = env_int("AOB_HOOK_MAPPING_TIMEOUT_MS", 100, within=(1, 60_000))
AOB_CEL_MAX_CONCAT_BYTES = env_int("AOB_CEL_MAX_CONCAT_BYTES", 256 * 1024 * 1024)
# What the references of one expression may read in all (outside comprehensions it holds no more).
AOB_CEL_MAX_COPY_BYTES = env_int("AOB_CEL_MAX_COPY_BYTES", 32 * 1024 * 1024)
# A node's config with its $inputs/$nodes references resolved (workflows/definition/references.py).
AOB_MAX_RESOLVED_CONFIG_BYTES = env_int("AOB_MAX_RESOLVED_CONFIG_BYTES", 16 * 1024 * 1024)

# --- Rate limits (workflows/ratelimit.py), per 60-second sliding window ---------------------------
AOB_RATE_LIMITS_ENABLED = env_bool("AOB_RATE_LIMITS_ENABLED", True)
AOB_RATE_GLOBAL_PER_MIN = env_int("AOB_RATE_GLOBAL_PER_MIN", 100)
AOB_RATE_USER_RUNS_PER_MIN = env_int("AOB_RATE_USER_RUNS_PER_MIN", 50)
# One user's other writes (saves, decisions, cancels, patches, ...): with their run starts, less than
# the global limit, so no one user can spend all of it and lock everyone else out.
AOB_RATE_USER_WRITES_PER_MIN = env_int("AOB_RATE_USER_WRITES_PER_MIN", 25)
# One user's reads of a stored value whole past AOB_DETAILS_MAX_BYTES (GET /artifacts/{id},
# /runs/{id}/inputs, a node run's field; /output always): up to 32 MiB each, built in the web
# process; every other read has a byte budget.
AOB_RATE_USER_WHOLE_READS_PER_MIN = env_int("AOB_RATE_USER_WHOLE_READS_PER_MIN", 60)
# And how many of them one user may have in flight (read, built, or still being sent to a client
# that reads slowly), across every web process; 0: no such limit.
AOB_WHOLE_READS_AT_ONCE_PER_USER = env_int("AOB_WHOLE_READS_AT_ONCE_PER_USER", 4, within=(0, 1000))
# A client that has not read such an answer within this many seconds is cut off (32 MiB: about
# 110 KB/s), and its place given back.
AOB_WHOLE_READ_SEND_S = env_int("AOB_WHOLE_READ_SEND_S", 300, within=(1, 3600))
AOB_RATE_TIER_SIMPLE_PER_MIN = env_int("AOB_RATE_TIER_SIMPLE_PER_MIN", 100)
AOB_RATE_TIER_STANDARD_PER_MIN = env_int("AOB_RATE_TIER_STANDARD_PER_MIN", 20)
AOB_RATE_TIER_HEAVY_PER_MIN = env_int("AOB_RATE_TIER_HEAVY_PER_MIN", 5)
# Requests without a valid identity, per client address (an IPv6 client by its /64).
AOB_RATE_ANON_PER_MIN = env_int("AOB_RATE_ANON_PER_MIN", 60)
# Login attempts (API token, /login/, /admin/login/), per client address and per username.
AOB_RATE_LOGIN_PER_ADDRESS_PER_MIN = env_int("AOB_RATE_LOGIN_PER_ADDRESS_PER_MIN", 20)
AOB_RATE_LOGIN_PER_USERNAME_PER_MIN = env_int("AOB_RATE_LOGIN_PER_USERNAME_PER_MIN", 10)

# --- Outbound HTTP (workers/http) ---------------------------------------------------------------
AOB_HTTP_ALLOWLIST = env_list("AOB_HTTP_ALLOWLIST", "")
AOB_HTTP_ALLOWED_PORTS = env_ports("AOB_HTTP_ALLOWED_PORTS", "80,443")
AOB_HTTP_MAX_RESPONSE_BYTES = env_int("AOB_HTTP_MAX_RESPONSE_BYTES", 10 * 1024 * 1024)
AOB_HTTP_MAX_REDIRECTS = env_int("AOB_HTTP_MAX_REDIRECTS", 5)
AOB_HTTP_TIMEOUT_S = env_seconds("AOB_HTTP_TIMEOUT_S", 30.0)

# --- LLM (agents) -----------------------------------------------------------------------------
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "")
OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "")
AOB_LLM_MODEL = env_str("AOB_LLM_MODEL", "gpt-4o-mini")
AOB_LLM_TIMEOUT_S = env_seconds("AOB_LLM_TIMEOUT_S", 60.0)
# The most bytes of one model answer, decoded (agents/llm.py): past it the call fails, charged
AOB_LLM_MAX_RESPONSE_BYTES = env_int("AOB_LLM_MAX_RESPONSE_BYTES", 10 * 1024 * 1024, within=(1024, 2**31))
# The spawn limit's ceiling: agent nodes patches may add to one run (a definition may lower it).
AOB_MAX_AGENT_NODES = env_int("AOB_MAX_AGENT_NODES", 5)
# The most nodes a run may grow to through patches.
AOB_RUN_MAX_NODES = env_int("AOB_RUN_MAX_NODES", 200)
# The most patches a run may have (applied or held: each keeps the whole definition it makes).
AOB_RUN_MAX_PATCHES = env_int("AOB_RUN_MAX_PATCHES", 500, within=(1, 1_000_000))
# Spend ceilings for every agent node (agents/budget.py): per run (its owner may raise a run's),
# and per owner per UTC day. A model call reserves its worst case first (AOB_LLM_MAX_TOKENS
# completion tokens unless the node says fewer, at the model's price in AOB_LLM_PRICES).
AOB_RUN_MAX_TOKENS = env_int("AOB_RUN_MAX_TOKENS", 500_000)
AOB_RUN_MAX_COST_USD = env_float("AOB_RUN_MAX_COST_USD", 2.0)
AOB_OWNER_DAILY_COST_USD = env_float("AOB_OWNER_DAILY_COST_USD", 20.0)
AOB_LLM_MAX_TOKENS = env_int("AOB_LLM_MAX_TOKENS", 4096)
# What one model message's tool calls may cost (agents/loop.py): the most tool calls run from one
# message (the rest are answered with an error, unrun), and the most bytes of JSON one tool result
# may be (past it the model is told to narrow it; nothing larger is kept, journaled or sent back).
AOB_AGENT_MAX_TOOL_CALLS_PER_TURN = env_int("AOB_AGENT_MAX_TOOL_CALLS_PER_TURN", 32, within=(1, 256))
AOB_AGENT_TOOL_RESULT_MAX_BYTES = env_int("AOB_AGENT_TOOL_RESULT_MAX_BYTES", 256 * 1024,
                                          within=(1024, 16 * 1024 * 1024))
# ... and all of one agent node run's tool results: past it, the calls it asks for are answered, unrun.
AOB_AGENT_TOOL_RESULTS_MAX_BYTES = env_int("AOB_AGENT_TOOL_RESULTS_MAX_BYTES", 4 * 1024 * 1024,
                                           within=(1024, 256 * 1024 * 1024))

from aob_project.logs import configure_structlog, formatter  # noqa: E402

configure_structlog()
AOB_LOG_JSON = env_bool("AOB_LOG_JSON", True)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": formatter(json_output=AOB_LOG_JSON)},
    # secrets an executor is sending are masked in whatever is logged meanwhile (vault/logs.py)
    "filters": {"secrets": {"()": "vault.logs.MaskSecrets"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["secrets"]}},
    "root": {"handlers": ["console"], "level": env_log_level("AOB_LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Celery's per-task "received"/"succeeded" lines duplicate the engine's node_run.* lines
        # (and Flower's events); rendering them costs worker CPU on every hop.
        "celery.app.trace": {"level": env_log_level("AOB_CELERY_TASK_LOG_LEVEL", "WARNING")},
        "celery.worker.strategy": {"level": env_log_level("AOB_CELERY_TASK_LOG_LEVEL", "WARNING")},
        # httpx logs every request's whole URL at INFO; a URL can be a credential (a Slack webhook,
        # a signed link, a token in a query), so only the SSRF client's own line (the host) is logged.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}

# --- LLM prices (USD per 1M tokens) and OpenAPI documents agents may call ------------------------

AOB_LLM_PRICES = env_prices("AOB_LLM_PRICES", {
    "gpt-4o-mini": {"input": 0.15, "cached_input": 0.075, "output": 0.60},
    "gpt-4o": {"input": 2.50, "cached_input": 1.25, "output": 10.00},
    "gpt-4.1-mini": {"input": 0.40, "cached_input": 0.10, "output": 1.60},
})
if not isinstance(AOB_LLM_PRICES.get(AOB_LLM_MODEL), dict):
    raise RuntimeError(f"environment variable AOB_LLM_MODEL ({AOB_LLM_MODEL!r}) has no price in AOB_LLM_PRICES: every "
                       "agent node that names no model of its own would fail (ModelNotPriced); add its prices "
                       f"(USD per 1M tokens) to AOB_LLM_PRICES, or name a priced model ({', '.join(AOB_LLM_PRICES)})")
AOB_LLM_MAX_RETRIES = env_int("AOB_LLM_MAX_RETRIES", 3)
AOB_LLM_RETRY_BACKOFF_S = env_float("AOB_LLM_RETRY_BACKOFF_S", 0.5)
# {"name": {"spec": "<path to an OpenAPI JSON file, or https URL>", "base_url": "https://api.example.com"}}
AOB_OPENAPI_SPECS = env_specs("AOB_OPENAPI_SPECS")


# --- Triggers, secrets, notifications, sub-workflows, retention, broker (issue 18) ---------------
# Beat reads its schedule from the database (django-celery-beat), with the engine's own periodic
# tasks kept from code (aob_project/beat.py).
CELERY_BEAT_SCHEDULER = "aob_project.beat:Scheduler"
DJANGO_CELERY_BEAT_TZ_AWARE = True
# A schedule's firing later than this after its time is a missed one: its catch_up policy decides.
# At least 5 s: beat sends a firing a moment after its time (its tick, a busy process), and under
# 0.03 s every firing was a missed one (the default catch_up, skip, skipped each).
AOB_SCHEDULE_GRACE_S = env_float("AOB_SCHEDULE_GRACE_S", 60.0, within=(5.0, 7 * 86_400.0))
AOB_SCHEDULE_FIRING_RETENTION_DAYS = env_int("AOB_SCHEDULE_FIRING_RETENTION_DAYS", 30, within=(1, 36_500))
# Beat sends every schedule's firings itself (and runs the sweeper): one owner has at most this many.
AOB_MAX_SCHEDULES_PER_OWNER = env_int("AOB_MAX_SCHEDULES_PER_OWNER", 100, within=(1, 100_000))
AOB_MAX_HOOKS_PER_OWNER = env_int("AOB_MAX_HOOKS_PER_OWNER", 100, within=(1, 100_000))
# Secrets, listed whole (GET /api/v1/secrets, the triggers page) like hooks and schedules: one owner has at most this many.
AOB_MAX_SECRETS_PER_OWNER = env_int("AOB_MAX_SECRETS_PER_OWNER", 200, within=(1, 100_000))
# ... and their values' UTF-8 bytes together: a node masks every form of each secret it sends, some 48
# characters a byte at worst, in one worker (vault/services.py); 64 KiB at most about 100 MB there.
AOB_MAX_SECRETS_BYTES_PER_OWNER = env_int("AOB_MAX_SECRETS_BYTES_PER_OWNER", 64 * 1024,
                                          within=(1024, 16 * 1024 * 1024))
# Webhooks: signed timestamps older (or newer) than this are refused; delivery ids are kept this
# long for replay protection, and to answer a sender's late retry with the run it started: 3 days,
# as long as Stripe retries (GitHub never does, Svix for about 27 hours). A timestamp up to the
# tolerance ahead is fresh until twice the tolerance after it arrived: kept less (and a minute's
# slack), a replay of it would start a run again.
AOB_HOOK_TOLERANCE_S = env_int("AOB_HOOK_TOLERANCE_S", 300, within=(1, 86_400))
AOB_HOOK_DELIVERY_RETENTION_S = env_int("AOB_HOOK_DELIVERY_RETENTION_S", 3 * 86400,
                                        within=(2 * AOB_HOOK_TOLERANCE_S + 60, 36_500 * 86_400))  # a century
# A rotated signing secret still signs this long after the rotation (a sender's retries signed before
# it), unless the rotation asks for less (0: cut it now, for a leaked one); never more. Stripe: 24 h.
AOB_HOOK_SECRET_GRACE_S = env_int("AOB_HOOK_SECRET_GRACE_S", 86_400, within=(0, 7 * 86_400))
# Deliveries refused after their signature checked out, each hook's latest this many, for its owner
# (GET /hooks/{id}/deliveries): older ones go as new ones come, however often a sender is refused.
AOB_HOOK_REFUSALS_KEPT = env_int("AOB_HOOK_REFUSALS_KEPT", 50, within=(1, 1000))
# Secrets are encrypted with Fernet; the first key encrypts, every key decrypts (rotation).
# Production refuses to start without one; development derives one from SECRET_KEY.
AOB_SECRETS_KEYS = env_list("AOB_SECRETS_KEYS", "")
if PRODUCTION and not AOB_SECRETS_KEYS:
    raise RuntimeError("environment variable AOB_SECRETS_KEYS is required when AOB_PRODUCTION=true "
                       "(a Fernet key: python -c 'from cryptography.fernet import Fernet; "
                       "print(Fernet.generate_key().decode())')")
# Sub-workflows: how deep `workflow` nodes may nest runs.
AOB_SUBWORKFLOW_MAX_DEPTH = env_int("AOB_SUBWORKFLOW_MAX_DEPTH", 5)
# Retention of finished runs (an owner's own policy may differ), pruned by beat in batches. Days
# run from one (a run then outlives its start's Idempotency-Key, kept 24 h) to a century (``now -
# days`` then stays far inside PostgreSQL's timestamp range); an owner's policy is held to the same
# range (retention/models.py: validators and a check constraint).
AOB_RETENTION_DAYS_RANGE = (1, 36_500)
AOB_RETENTION_DAYS = env_int("AOB_RETENTION_DAYS", 30, within=AOB_RETENTION_DAYS_RANGE)
AOB_RETENTION_BATCH_SIZE = env_int("AOB_RETENTION_BATCH_SIZE", 100, within=(1, 100_000))
# rows of a batch's runs (node runs, events, ...) deleted per transaction before the runs themselves:
# a run may hold AOB_MAX_NODE_RUNS_PER_RUN node runs and more events (retention/services.py)
AOB_RETENTION_CHUNK_ROWS = env_int("AOB_RETENTION_CHUNK_ROWS", 1000, within=(1, 1_000_000))
AOB_RETENTION_INTERVAL_S = env_seconds("AOB_RETENTION_INTERVAL_S", 3600.0)
# POST /api/v1/prune starts no batch after this many seconds
AOB_PRUNE_REQUEST_S = env_int("AOB_PRUNE_REQUEST_S", 10, within=(1, 600))
# nor does the beat's prune task after this many: it sends itself again for the rest, behind the
# sweeps on wf.maintenance (a backlog's prune held a process of the coordinator's worker for as long)
AOB_PRUNE_TASK_S = env_int("AOB_PRUNE_TASK_S", 60, within=(1, 3600))
# a dry run counts each kind of row up to this many (`at_least` names those that reached it)
AOB_PRUNE_PREVIEW_CAP = env_int("AOB_PRUNE_PREVIEW_CAP", 100_000, within=(1, 1_000_000_000))
# An artifact younger than this is never removed, referenced or not (one may be about to be).
# The prune's ages, like the days above, stay within a century: ``now -`` them never overflows.
AOB_ARTIFACT_GRACE_S = env_int("AOB_ARTIFACT_GRACE_S", 86400, within=(0, 36_500 * 86_400))
# Approval notifications: email through Django's backend, Slack-compatible webhooks, signed links.
AOB_PUBLIC_URL = env_str("AOB_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
# Production: every approval email's link and every hook's URL start here, and requests for its real
# name are answered only when ALLOWED_HOSTS names it; the development defaults would send people to
# their own machine and answer the server's own name with 400s.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1", "testserver"})
if PRODUCTION and (not os.environ.get("ALLOWED_HOSTS") or set(ALLOWED_HOSTS) <= LOOPBACK_HOSTS):
    raise RuntimeError("environment variable ALLOWED_HOSTS must name the hosts people reach this server by "
                       "(comma separated) when AOB_PRODUCTION=true, not only this machine's loopback names")
if PRODUCTION and (urlsplit(AOB_PUBLIC_URL).scheme not in ("http", "https") or not urlsplit(AOB_PUBLIC_URL).hostname
                   or urlsplit(AOB_PUBLIC_URL).hostname in LOOPBACK_HOSTS):
    raise RuntimeError("environment variable AOB_PUBLIC_URL must be this server's address as people reach it "
                       "(https://aob.example.com) when AOB_PRODUCTION=true: approval links and webhook URLs start "
                       "with it, not a loopback address")
EMAIL_BACKEND = env_email_backend("AOB_EMAIL_BACKEND", "console" if not PRODUCTION else "smtp")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, within=(1, 65_535))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = env_str("AOB_EMAIL_FROM", "aob@localhost")
AOB_NOTIFY_MAX_RETRIES = env_int("AOB_NOTIFY_MAX_RETRIES", 5)
AOB_NOTIFY_RETRY_BACKOFF_S = env_float("AOB_NOTIFY_RETRY_BACKOFF_S", 10.0)
# A pending notification this long past when its message was due (publish, last attempt, retry) is
# published again (the message was lost); at least 10 s, so a delivery waiting its turn in the queue
# is not published again each sweep. A send's time limits are half of it (soft) and 80 % (hard), so
# one in progress is never published again.
AOB_NOTIFY_REPUBLISH_AFTER_S = env_int("AOB_NOTIFY_REPUBLISH_AFTER_S", 300, within=(10, 7 * 86400))
# Notifications (emails, webhooks; reminders and escalations too) one run may send, whatever its gates
# name (a group of thousands, a gate in a loop, an agent's patch): past it they are not sent, and the
# run says so once (event notifications_capped); its approvals wait in the inbox all the same.
AOB_MAX_NOTIFICATIONS_PER_RUN = env_int("AOB_MAX_NOTIFICATIONS_PER_RUN", 200, within=(1, 100_000))
# Notifications one owner's runs may send one person (or group) in any hour: anyone may name anyone as
# an approver, and the cap above bounds one run only. Past it they are not sent (the same
# notifications_capped, notifications_not_sent); another owner's are counted apart.
AOB_MAX_NOTIFICATIONS_PER_RECIPIENT_PER_HOUR = env_int("AOB_MAX_NOTIFICATIONS_PER_RECIPIENT_PER_HOUR", 60,
                                                       within=(1, 100_000))
# Notifications one owner's runs may send in any hour, to everyone together: every tenant's approval
# mail goes through one queue (wf.notify), and the bound above is per person, so an owner naming a
# thousand people sent 60,000 an hour ahead of everyone else's. Past it, the same as above.
AOB_MAX_NOTIFICATIONS_PER_OWNER_PER_HOUR = env_int("AOB_MAX_NOTIFICATIONS_PER_OWNER_PER_HOUR", 1000,
                                                   within=(1, 1_000_000))
# What a node gate stores and shows of its inputs and upstream outputs (approvals/services.py
# gate_context); the inbox lists up to 200 gates, each with its context.
AOB_APPROVAL_CONTEXT_MAX_BYTES = env_int("AOB_APPROVAL_CONTEXT_MAX_BYTES", 64 * 1024, within=(1024, 16 * 1024 * 1024))
AOB_APPROVAL_LINK_MAX_AGE_S = env_int("AOB_APPROVAL_LINK_MAX_AGE_S", 7 * 86400)
# RabbitMQ (AOB_BROKER_URL=amqp://...): quorum queues and publisher confirms (docs/OPERATIONS.md).
AOB_BROKER_IS_AMQP = CELERY_BROKER_URL.startswith(("amqp://", "amqps://", "pyamqp://"))
AOB_BROKER_QUORUM_QUEUES = env_bool("AOB_BROKER_QUORUM_QUEUES", True)
if AOB_BROKER_IS_AMQP:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": env_bool("AOB_BROKER_CONFIRM_PUBLISH", True)}
    CELERY_WORKER_DETECT_QUORUM_QUEUES = True


def env_below(low: str, low_value: float, high: str, high_value: float, why: str) -> None:
    """Two settings that bound one another, judged once both are read: each valid alone, together
    they start a stack that misbehaves later with nothing said (the refusal names both, and why)."""
    if not low_value < high_value:
        raise RuntimeError(f"environment variable {high} ({high_value:g}) must be above {low} ({low_value:g}): {why}")


env_below("AOB_DECISION_SOFT_TIME_LIMIT_S", AOB_DECISION_SOFT_TIME_LIMIT_S, "AOB_DECISION_TIME_LIMIT_S",
          AOB_DECISION_TIME_LIMIT_S, "past its soft limit a decision records its failure; the hard limit kills it first")
env_below("AOB_DECISION_MAX_MS + 2 x AOB_CEL_TIMEOUT_MS in seconds", (AOB_DECISION_MAX_MS + 2 * AOB_CEL_TIMEOUT_MS) / 1000,
          "AOB_DECISION_SOFT_TIME_LIMIT_S", AOB_DECISION_SOFT_TIME_LIMIT_S,
          "what a decision evaluates in place (its budget, the node it ends on, its conditions' shared deadline) "
          "must end before its time limit, or every such decision fails and its run with it (DecisionFailed)")
env_below("AOB_SWEEP_INTERVAL_S", AOB_SWEEP_INTERVAL_S, "AOB_SWEEP_STALE_S", AOB_SWEEP_STALE_S,
          "the health answer calls the sweeper stale when no sweep finished this long, so it would always say so")
env_below("AOB_REPUBLISH_AFTER_S", AOB_REPUBLISH_AFTER_S, "AOB_UNCLAIMED_AFTER_S", AOB_UNCLAIMED_AFTER_S,
          "a node only slow to be claimed would be said unclaimed and sent again under a new id at its first re-publish")
