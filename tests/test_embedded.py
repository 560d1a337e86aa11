"""The embedded PostgreSQL and Redis (``make up``'s, and the test session's) answer no one without
their password: 127.0.0.1 is every account's on a shared machine, and a server that trusted it
would give any of them every user's runs and tokens (and, PostgreSQL's superuser, programs run as
the stack's account)."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
import redis

from aob.embedded import HOST, EmbeddedPostgres, EmbeddedRedis

ROOT = Path(__file__).resolve().parents[1]
_started: list[Any] = []


@pytest.fixture
def root() -> Iterator[Path]:
    # Not tmp_path: pytest's temp root is 0700, and the embedded PostgreSQL runs as another user as root.
    folder = Path(tempfile.mkdtemp(prefix="aob-embedded-"))
    yield folder / "aob"
    while _started:
        _started.pop().stop()
    shutil.rmtree(folder, ignore_errors=True)


def start(server: Any) -> str:
    _started.append(server)
    return server.start()


def private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def test_postgres_refuses_a_connection_without_its_password(root: Path) -> None:
    postgres = EmbeddedPostgres(root, fast=True)
    url = start(postgres)

    with psycopg.connect(url, connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(f"postgresql://postgres@{HOST}:{postgres.port}/aob", connect_timeout=10).close()
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(f"postgresql://postgres:guess@{HOST}:{postgres.port}/aob", connect_timeout=10).close()
    assert private(postgres.password_path) and private(postgres.home)


def test_a_postgres_data_folder_made_trusting_gets_its_password_at_its_next_start(root: Path) -> None:
    """Data folders made before the password (``initdb --auth=trust``) are asked for one from then on."""
    postgres = EmbeddedPostgres(root, fast=True)
    start(postgres)
    postgres.stop()
    hba = postgres.pgdata / "pg_hba.conf"
    hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))
    postgres.password_path.unlink()  # as such a folder has none

    url = postgres.start()

    with psycopg.connect(url, connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(f"postgresql://postgres@{HOST}:{postgres.port}/aob", connect_timeout=10).close()
    assert "trust" not in [line.split()[-1] for line in hba.read_text().splitlines()
                           if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("lost", ["removed", "left empty"])
def test_a_postgres_whose_password_file_was_lost_is_given_a_new_one_at_its_next_start(root: Path, lost: str) -> None:
    """A password file lost (or left empty by a crash) with its data folder kept: the next start
    makes a new one and gives the cluster that, before it listens, instead of failing to connect."""
    postgres = EmbeddedPostgres(root, fast=True)
    start(postgres)
    postgres.stop()
    old = postgres.password_path.read_text().strip()
    if lost == "removed":
        postgres.password_path.unlink()
    else:
        postgres.password_path.write_text("")

    url = postgres.start()

    assert postgres.password_path.read_text().strip() not in ("", old) and private(postgres.password_path)
    with psycopg.connect(url, connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(f"postgresql://postgres:{old}@{HOST}:{postgres.port}/aob", connect_timeout=10).close()


def test_redis_refuses_a_client_without_its_password_and_no_command_line_shows_it(root: Path) -> None:
    server = EmbeddedRedis(root)
    url = start(server)
    password = server.password_path.read_text().strip()

    assert redis.Redis.from_url(url).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=HOST, port=server.port).ping()
    assert private(server.password_path) and private(server.config_path) and private(server.home)
    assert password not in " ".join(psutil.Process(server.pid).cmdline())


@pytest.mark.timeout(120)
def test_make_services_prints_the_urls_without_their_passwords(root: Path) -> None:
    """`make services` is for a terminal (scrollback, a shared screen, a CI log): its URLs show
    ``***``; the passwords are in the owner's 0600 ``runtime.env``."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "AOB_DATA_DIR"}}
    launcher = subprocess.Popen([sys.executable, "-m", "aob.launcher", "services", "--data-dir", str(root)],
                                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in launcher.stdout:
            lines.append(line)
            if line.startswith("REDIS_URL="):
                break
        printed = "".join(lines)
        assert "DATABASE_URL=postgresql://postgres:***@" in printed and "REDIS_URL=redis://:***@" in printed, printed
        runtime = (root / "runtime.env").read_text()
        for name in ("postgres", "redis"):
            password = (root / name / "password").read_text().strip()
            assert password not in printed and f":{password}@" in runtime
        assert private(root / "runtime.env")
    finally:
        launcher.send_signal(signal.SIGINT)
        launcher.wait(timeout=30)


@pytest.mark.timeout(180)
def test_a_second_launcher_on_a_data_dir_in_use_leaves_the_first_ones_runtime_env(root: Path) -> None:
    """`make up` run again on a data dir whose servers another launcher owns is refused ("in use by
    process ..."); on its way out it deleted ``runtime.env``, the file ``manage.py`` in another shell
    reads the running servers' URLs (and passwords) from: the operator's next ``aob_create_user`` or
    ``aob_rotate_secrets`` then talked to the default 127.0.0.1:5432 instead of the running stack."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "AOB_DATA_DIR"}}
    first = subprocess.Popen([sys.executable, "-m", "aob.launcher", "services", "--data-dir", str(root)],
                             cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        for line in first.stdout:
            if line.startswith("REDIS_URL="):
                break
        kept = (root / "runtime.env").read_text()

        second = subprocess.run([sys.executable, "-m", "aob.launcher", "services", "--data-dir", str(root)],
                                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=120)

        assert second.returncode == 1 and "in use by process" in second.stdout, second.stdout + second.stderr
        assert (root / "runtime.env").exists() and (root / "runtime.env").read_text() == kept
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=30)


@pytest.mark.timeout(240)
def test_a_first_start_killed_during_initdb_is_started_afresh_the_next_time(root: Path) -> None:
    """``make up``'s first start killed while initdb ran (Ctrl-\\, the OOM killer, a power cut) left a
    data folder with PG_VERSION and the bootstrap backend's postmaster.pid, whose pid is written
    negative: every later start ended in psutil's "ValueError: pid must be a positive integer"
    traceback, and past that would have tried to run the half-made cluster. A cluster that never
    finished initdb holds nothing: it is made again."""
    code = ("import sys; from pathlib import Path; from aob.embedded import EmbeddedPostgres; "
            "EmbeddedPostgres(Path(sys.argv[1]), fast=True).start()")
    first = subprocess.Popen([sys.executable, "-c", code, str(root)], cwd=ROOT, start_new_session=True,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid_file = root / "postgres" / "data" / "postmaster.pid"
    try:
        while not pid_file.exists():  # initdb's bootstrap backend is running
            assert first.poll() is None, "initdb finished before it could be interrupted"
            time.sleep(0.005)
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        first.wait(30)
    assert (root / "postgres" / "data" / "PG_VERSION").exists()

    postgres = EmbeddedPostgres(root, fast=True)
    url = start(postgres)

    with psycopg.connect(url, connect_timeout=10) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("aob",)


@pytest.mark.timeout(180)
def test_make_services_keeps_its_data_where_aob_data_dir_says(root: Path) -> None:
    """.env.example: ``AOB_DATA_DIR`` is "where `make up` keeps embedded data and runtime.env", and
    settings.py reads runtime.env there; the launcher ignored it and used the project's ``.aob``,
    so ``manage.py`` in another shell found no runtime.env and talked to 127.0.0.1:5432."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    launcher = subprocess.Popen([sys.executable, "-m", "aob.launcher", "services"],
                                cwd=ROOT, env={**env, "AOB_DATA_DIR": str(root)}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        printed = []
        for line in launcher.stdout:
            printed.append(line)
            if line.startswith("REDIS_URL=") or "error" in line:
                break
        assert (root / "runtime.env").exists() and (root / "postgres" / "data").is_dir(), "".join(printed)
    finally:
        launcher.send_signal(signal.SIGINT)
        launcher.wait(timeout=30)
