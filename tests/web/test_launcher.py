"""What `make up` prints once the web app answers: the UI, API base, docs, admin and Flower URLs,
the demo login and its token; and how it supervises its processes."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from aob import launcher


class NoDeaths:
    def first_dead(self) -> None:
        return None


class StopAfterOneLook:
    def wait(self, seconds: float) -> None:
        raise launcher.Stop


def test_up_prints_every_url_and_the_demo_login(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setattr(launcher, "port_open", lambda port: True)
    args = argparse.Namespace(port=8123, flower_port=5566, no_flower=False, demo_login=("demo", "password in /srv/aob-data/demo/password"),
                              demo_token="abc123", data_dir=Path("/srv/aob-data"))
    with pytest.raises(launcher.Stop):
        launcher.supervise(NoDeaths(), StopAfterOneLook(), args)
    out = capsys.readouterr().out
    for line in ("UI        http://127.0.0.1:8123/", "Admin     http://127.0.0.1:8123/admin/",
                 "API base  http://127.0.0.1:8123/api/v1/", "API docs  http://127.0.0.1:8123/api/v1/docs/",
                 "Flower    http://127.0.0.1:5566/  (user aob, password in /srv/aob-data/flower/password)",
                 "Login     demo, password in /srv/aob-data/demo/password", "Logs: /srv/aob-data/aob.log",
                 "Token     abc123  (header: Authorization: Token abc123)"):
        assert line in out, out


class StopAfter:
    """Lets the launcher's loop run for ``looks`` rounds (without the 0.5 s waits), then stops it."""

    def __init__(self, looks: int) -> None:
        self.looks = looks

    def wait(self, seconds: float) -> None:
        self.looks -= 1
        if self.looks <= 0:
            raise launcher.Stop
        time.sleep(0.05)


def test_a_worker_or_beat_that_exits_is_started_again_and_one_that_keeps_exiting_stops_everything(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: Any) -> None:
    monkeypatch.setattr(launcher, "port_open", lambda port: False)
    args = argparse.Namespace(port=8123)
    children = launcher.Children(dict(os.environ), tmp_path / "aob.log")
    try:
        started = tmp_path / "started"
        # beat exits once (its first start finds no marker), then stays up, as after an outage
        once = (f"import pathlib, sys, time; p = pathlib.Path({str(started)!r}); first = not p.exists(); "
                "p.touch(); sys.exit(3) if first else time.sleep(60)")
        children.spawn("beat", [sys.executable, "-c", once])
        children.spawn("web", [sys.executable, "-c", "import time; time.sleep(60)"])
        with pytest.raises(launcher.Stop):
            launcher.supervise(children, StopAfter(60), args)
        beat = next(c for c in children.running if c.name == "beat")
        assert beat.proc.poll() is None and len(beat.restarts) == 1

        children.spawn("worker", [sys.executable, "-c", "import sys; sys.exit(4)"])  # dies on every start
        assert launcher.supervise(children, StopAfter(10_000), args) == 1
        worker = next(c for c in children.running if c.name == "worker")
        assert len(worker.restarts) == launcher.RESTART_LIMIT
        out = capsys.readouterr().out
        assert "beat exited (code 3); started it again" in out
        assert "worker exited unexpectedly (code 4); stopping everything" in out
    finally:
        children.stop_all()


@pytest.mark.timeout(180)
def test_up_on_a_port_another_process_listens_on_stops_at_once_saying_so(tmp_path: Path) -> None:
    """With the port taken (another stack, another account's server), the launcher started its
    servers, migrated, then printed "AOB is up" with the other process's URL and the demo user's
    token beside it (it only asks whether something answers on the port), and then stopped with
    "web exited unexpectedly (code 3)" and a log tail in which uvicorn's "Address already in use"
    was one line among many."""
    import socket
    import subprocess

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "AOB_DATA_DIR"}}
        result = subprocess.run([sys.executable, "-m", "aob.launcher", "up", "--port", str(port), "--no-flower",
                                 "--data-dir", str(tmp_path / "data")], cwd=launcher.BASE_DIR, env=env,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=170)

    assert result.returncode == 1, result.stdout
    assert "AOB is up" not in result.stdout and "Token" not in result.stdout, result.stdout
    assert f"[aob] error: port {port} is in use" in result.stdout, result.stdout
    assert not (tmp_path / "data" / "postgres").exists()  # nothing started before the refusal


@pytest.mark.timeout(120)
@pytest.mark.parametrize("where", ["under_a_file", "lock_unwritable"])
def test_up_on_a_data_dir_it_cannot_write_says_so_in_one_line(tmp_path: Path, where: str) -> None:
    """A data dir on a read-only or full disk (or a path through a file) ended ``make up`` in an
    OSError traceback from ``mkdir`` or the embedded servers' lock files, naming no option."""
    import subprocess

    blocker = tmp_path / "blocker"
    blocker.write_text("")
    if where == "under_a_file":
        data_dir = blocker / "data"  # mkdir: NotADirectoryError, as EROFS would fail it
    else:
        data_dir = tmp_path / "data"
        (data_dir / "postgres.lock").mkdir(parents=True)  # opening the lock fails, as on a read-only disk
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "AOB_DATA_DIR"}}
    from aob.embedded import free_port

    result = subprocess.run([sys.executable, "-m", "aob.launcher", "up", "--port", str(free_port()), "--no-flower",
                             "--data-dir", str(data_dir)], cwd=launcher.BASE_DIR, env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=110)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stdout.splitlines() if line.startswith("[aob] error:")]
    assert len(errors) == 1 and str(data_dir) in errors[0] and "--data-dir" in errors[0], result.stdout


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("env", "args", "named"), [
    ({"AOB_PORT": "80a"}, [], "AOB_PORT"),  # int() in argparse's default: a traceback before anything
    ({}, ["--port", "99999"], "--port"),
    ({"AOB_FLOWER_PORT": "-1"}, [], "AOB_FLOWER_PORT"),
    ({"AOB_WEB_WORKERS": "two"}, ["--no-flower"], "AOB_WEB_WORKERS"),  # uvicorn died after migrate and the demo
    ({"FLOWER_BASIC_AUTH": "ops:s3cret,"}, [], "FLOWER_BASIC_AUTH"),  # the empty entry lets "Basic !" in
])
def test_up_refuses_a_port_or_a_count_that_is_not_one_before_starting_anything(
        tmp_path: Path, env: dict[str, str], args: list[str], named: str) -> None:
    import subprocess

    base = {k: v for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "REDIS_URL", "AOB_DATA_DIR", "AOB_PORT", "AOB_FLOWER_PORT", "AOB_WEB_WORKERS",
                         "FLOWER_BASIC_AUTH"}}
    result = subprocess.run([sys.executable, "-m", "aob.launcher", "up", "--data-dir", str(tmp_path / "data"), *args],
                            cwd=launcher.BASE_DIR, env={**base, **env}, stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=110)

    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stdout + result.stderr
    assert named in result.stdout + result.stderr, result.stdout + result.stderr
    assert not (tmp_path / "data" / "postgres").exists()


@pytest.mark.timeout(120)
def test_a_second_launcher_on_a_data_dir_in_use_is_refused_with_servers_of_its_own(tmp_path: Path) -> None:
    """With DATABASE_URL and REDIS_URL set (servers of the operator's own) nothing held the data dir:
    a second `make up` on it (another port) deleted the first's log file (its processes went on
    writing to the deleted file), wiped its metrics, replaced its runtime.env and deleted it on the
    way out, and started a second beat (every periodic task twice)."""
    import subprocess

    env = {**os.environ, "DATABASE_URL": "postgresql://aob:pw@127.0.0.1:1/aob", "REDIS_URL": "redis://:pw@127.0.0.1:1/0"}
    env.pop("AOB_DATA_DIR", None)
    argv = [sys.executable, "-m", "aob.launcher", "services", "--data-dir", str(tmp_path)]
    first = subprocess.Popen(argv, cwd=launcher.BASE_DIR, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    second = None
    try:
        assert first.stdout is not None
        for line in first.stdout:
            if "Ctrl-C stops" in line:
                break
        kept = (tmp_path / "runtime.env").read_text()
        second = subprocess.Popen(argv, cwd=launcher.BASE_DIR, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            out, _ = second.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("the second launcher runs beside the first on one data dir")
        assert second.returncode == 1 and "in use by process" in out, out
        assert (tmp_path / "runtime.env").read_text() == kept and first.poll() is None
    finally:
        for proc in (second, first):
            if proc is not None and proc.poll() is None:
                proc.send_signal(2)
                proc.wait(30)


@pytest.mark.parametrize("given", ["aob:", ":secret", "aob:secret,", "aob:secret, :x"])
def test_a_flower_login_without_a_user_or_a_password_is_refused(given: str) -> None:
    # Flower compares each comma-separated entry with what the header decodes to, which can be nothing
    with pytest.raises(launcher.LaunchError, match="FLOWER_BASIC_AUTH: every login is user:password"):
        launcher.flower_logins({"FLOWER_BASIC_AUTH": given})


def test_an_empty_flower_login_is_none_so_make_up_makes_one_and_the_operators_is_kept() -> None:
    assert launcher.flower_logins({"FLOWER_BASIC_AUTH": " "}) is None
    assert launcher.flower_logins({}) is None
    assert launcher.flower_logins({"FLOWER_BASIC_AUTH": "ops:s3cret,ro:other"}) == "ops:s3cret,ro:other"
