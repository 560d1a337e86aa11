"""`make up` from a clean state: every part answers healthy, the terminal shows a few lines and then
the banner, last; the README's curl examples run against it exactly as written; Ctrl-C leaves no
process behind."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from aob.embedded import free_port

ROOT = Path(__file__).resolve().parents[1]
UP_TIMEOUT_S = 150
STOP_TIMEOUT_S = 20


def _get_health(port: int) -> tuple[int, dict] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except (OSError, ValueError):
        return None


def _flower_status(port: int, path: str, login: tuple[str, str] | str | None, timeout: float = 60.0) -> int:
    """The status of a Flower page, once Flower answers (it starts after the banner); ``login`` a
    user and password, or an ``Authorization`` header as it is sent."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if isinstance(login, str):
        request.add_header("Authorization", login)
    elif login:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(login).encode()).decode())
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - a loopback http URL of ours
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:  # gone, or a zombie
        return ""


def _alive(processes: list[psutil.Process]) -> list[str]:
    left = []
    for proc in processes:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{proc.pid} {_cmdline(proc)[:120]}")
        except psutil.NoSuchProcess:
            pass
    return left


@pytest.mark.system
@pytest.mark.timeout(180)
def test_launcher_brings_up_a_healthy_stack_and_ctrl_c_stops_all_of_it():
    # Not tmp_path: pytest's temp root is 0700, and the embedded PostgreSQL runs as another user.
    data_dir = Path(tempfile.mkdtemp(prefix="aob-quickstart-"))
    port, flower_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "AOB_DATA_DIR"}}
    env["FLOWER_BASIC_AUTH"] = ""  # as a .env copied from .env.example sets it: no login of the operator's
    output = data_dir / "launcher.log"
    with open(output, "wb") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "aob.launcher", "up", "--port", str(port),
             "--flower-port", str(flower_port), "--data-dir", str(data_dir)],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )

    def log_tail() -> str:
        return "\n".join(output.read_text(errors="replace").splitlines()[-60:])

    descendants: dict[int, psutil.Process] = {}
    try:
        deadline = time.monotonic() + UP_TIMEOUT_S
        health = None
        while time.monotonic() < deadline:
            assert launcher.poll() is None, f"launcher exited with {launcher.returncode}:\n{log_tail()}"
            for proc in psutil.Process(launcher.pid).children(recursive=True):
                descendants.setdefault(proc.pid, proc)
            health = _get_health(port)
            if health is not None and health[0] == 200 and health[1].get("status") == "ok":
                break  # the sweeper ok too: beat and the worker run
            time.sleep(1)
        assert health is not None and health[0] == 200, f"no healthy answer, last {health}:\n{log_tail()}"
        body = health[1]
        assert body["status"] == "ok", body
        assert {"db", "redis", "broker", "sweeper", "queues"} <= body["checks"].keys(), body
        # the service queues are checked every minute, twice before anything is said of them
        queues = body["checks"].pop("queues")
        assert queues == "ok" or queues.startswith("unknown: not checked lately"), body
        assert all(state == "ok" for state in body["checks"].values()), body
        assert (data_dir / "runtime.env").exists()
        # its URLs carry the embedded servers' passwords: its owner's only, and never in the output
        assert stat.S_IMODE((data_dir / "runtime.env").stat().st_mode) == 0o600
        assert stat.S_IMODE((data_dir / "aob.log").stat().st_mode) == 0o600
        # its own secret key and vault key, never the public development ones: made once, its owner's
        # only, and what the vault held under the earlier key re-encrypted
        for kept in ("django/secret_key", "vault/key"):
            assert stat.S_IMODE((data_dir / kept).stat().st_mode) == 0o600
        assert (data_dir / "vault" / "rotated").exists()
        passwords = [(data_dir / name / "password").read_text().strip() for name in ("postgres", "redis")]
        assert not any(password in output.read_text() for password in passwords)

        banner = _wait_for_banner(output)
        assert f"API base  http://127.0.0.1:{port}/api/v1/" in banner and "Token     " in banner, banner
        before = output.read_text().split("AOB is up.")[0].splitlines()
        assert len(before) <= 8, "\n".join(before)  # install and process noise goes to the log file
        assert (data_dir / "aob.log").stat().st_size > 0

        token = re.search(r"Token     (\w+)", banner).group(1)
        # the demo superuser's password: made once, its owner's only, never printed or published
        demo_password = (data_dir / "demo" / "password").read_text().strip()
        assert stat.S_IMODE((data_dir / "demo" / "password").stat().st_mode) == 0o600
        assert demo_password not in output.read_text() and "demo-password" not in (ROOT / "README.md").read_text()
        assert f"Login     demo, password in {data_dir}/demo/password" in banner, banner
        readme = run_readme_examples(port, data_dir)
        assert '"username":"demo"' not in readme  # (the token call prints only through python)
        assert '"output":{"text":"hello Ada!"}' in readme, readme[-3000:]
        assert '"status":"cancelled"' in readme and '"replay_of":' in readme, readme[-3000:]
        assert '"valid":false' in readme and '"error":"' not in readme, readme[-3000:]
        assert token and output.read_text().rstrip().endswith(banner.rstrip()), "something printed after the banner"

        for proc in psutil.Process(launcher.pid).children(recursive=True):
            descendants.setdefault(proc.pid, proc)
        cmdlines = " ".join(_cmdline(proc) for proc in descendants.values())
        for part in ("postgres", "redis-server", "aob.web", "celery -A aob_project worker", "beat", "flower"):
            assert part in cmdlines, f"{part} is not running under the launcher"
        # Flower shows every task (and, logged in, revokes them): it asks for the login kept in the
        # owner's file, never on a command line; its API answers only with it
        flower_login = ("aob", (data_dir / "flower" / "password").read_text().strip())
        assert stat.S_IMODE((data_dir / "flower" / "password").stat().st_mode) == 0o600
        assert _flower_status(flower_port, "/tasks", None) == 401
        # Flower takes an empty login as one whose header decodes to nothing ("Basic !")
        assert _flower_status(flower_port, "/api/workers", "Basic !") == 401
        assert _flower_status(flower_port, "/tasks", flower_login) == 200
        assert _flower_status(flower_port, "/api/workers", flower_login) == 200
        # its /metrics (task names, workers' hosts and load) was the one page Flower served to anyone
        assert _flower_status(flower_port, "/metrics", None) == 401
        assert _flower_status(flower_port, "/metrics", flower_login) == 200
        assert flower_login[1] not in cmdlines and flower_login[1] not in output.read_text()
        assert f"Flower    http://127.0.0.1:{flower_port}/  (user aob, password in " in banner

        launcher.send_signal(signal.SIGINT)
        try:
            code = launcher.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"launcher still running {STOP_TIMEOUT_S}s after SIGINT:\n{log_tail()}")
        assert code == 0, log_tail()
        psutil.wait_procs(list(descendants.values()), timeout=5)
        assert _alive(list(descendants.values())) == [], log_tail()
        assert not (data_dir / "runtime.env").exists()
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        for proc in descendants.values():
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        shutil.rmtree(data_dir, ignore_errors=True)


def _wait_for_banner(output: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = output.read_text(errors="replace")
        if "AOB is up." in text and "Token     " in text:
            return "[aob] AOB is up." + text.split("AOB is up.", 1)[1]
        time.sleep(0.2)
    raise AssertionError(f"no banner:\n{output.read_text(errors='replace')[-3000:]}")


def readme_block() -> str:
    """The shell block of the README's "Using the API" section, as written."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Using the API", 1)[1]
    return section.split("```sh\n", 1)[1].split("\n```", 1)[0]


def run_readme_examples(port: int, data_dir: Path) -> str:
    """Run the block with bash from the project folder, against this stack's port and data folder;
    curl fails on an HTTP error (its body still printed), so every example must succeed."""
    script = readme_block().replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}").replace(
        ".aob/", f"{data_dir}/")
    prelude = 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; echo; }\n'
    done = subprocess.run(["bash", "-c", prelude + script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"README examples failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
    return done.stdout
