"""`make up` from a clean state: every part answers healthy, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from aob_project.embedded import free_port

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


@pytest.mark.timeout(180)
def test_launcher_brings_up_a_healthy_stack_and_ctrl_c_stops_all_of_it():
    # Not tmp_path: pytest's temp root is 0700, and the embedded PostgreSQL runs as another user.
    data_dir = Path(tempfile.mkdtemp(prefix="aob-quickstart-"))
    port, flower_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "AOB_DATA_DIR"}}
    output = data_dir / "launcher.log"
    with open(output, "wb") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "aob_project.launcher", "up", "--port", str(port),
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
            if health is not None and health[0] == 200:
                break
            time.sleep(1)
        assert health is not None and health[0] == 200, f"no healthy answer, last {health}:\n{log_tail()}"
        body = health[1]
        assert body["status"] == "ok", body
        assert {"db", "redis", "broker"} <= body["checks"].keys(), body
        assert all(state == "ok" for state in body["checks"].values()), body
        assert (data_dir / "runtime.env").exists()

        for proc in psutil.Process(launcher.pid).children(recursive=True):
            descendants.setdefault(proc.pid, proc)
        cmdlines = " ".join(_cmdline(proc) for proc in descendants.values())
        for part in ("postgres", "redis-server", "uvicorn", "celery -A aob_project worker", "beat", "flower"):
            assert part in cmdlines, f"{part} is not running under the launcher"

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
