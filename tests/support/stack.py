"""Real processes for integration tests: Celery workers and beat against the test database.

Nothing here is mocked: the processes are the production entry points (``celery -A aob_project
worker`` / ``beat``) with test timings (a fast sweeper and short leases) in their environment.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aob.embedded import free_port
from aob.launcher import web_command
from workflows import registry

ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))


def test_env(db_name: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "AOB_TEST_DATABASE_NAME": db_name,
        "AOB_TEST_HOOKS": "1",
        "AOB_SWEEP_INTERVAL_S": "1",
        "AOB_SWEEP_FAILED_AFTER_S": "2",  # a poison row's run fails within seconds, not ten minutes
        "AOB_APPROVAL_SWEEP_INTERVAL_S": "1",
        "AOB_REPUBLISH_AFTER_S": "3",
        "AOB_LEASE_S": "3",
        "AOB_OUTPUT_TIME_LIMIT_S": "3",
        "AOB_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        # live servers started by tests must not throttle the suite (see tests/conftest.py)
        "AOB_RATE_GLOBAL_PER_MIN": "1000000",
        "AOB_RATE_USER_RUNS_PER_MIN": "1000000",
        "AOB_RATE_USER_WRITES_PER_MIN": "1000000",
        "AOB_RATE_USER_WHOLE_READS_PER_MIN": "1000000",
        "AOB_RATE_TIER_SIMPLE_PER_MIN": "1000000",
        "AOB_RATE_TIER_STANDARD_PER_MIN": "1000000",
        "AOB_RATE_TIER_HEAVY_PER_MIN": "1000000",
        "AOB_RATE_ANON_PER_MIN": "1000000",
        "AOB_RATE_LOGIN_PER_ADDRESS_PER_MIN": "1000000",
        "AOB_RATE_LOGIN_PER_USERNAME_PER_MIN": "1000000",
        # the coordinator's share is off but where a test turns it on (tests/conftest.py says why)
        "AOB_DECISION_OWNER_MS_PER_S": "0",
    })
    env.update(extra)
    return env


class Proc:
    """A child process in its own process group, so a kill takes its pool children too."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], ready_line: str | None = None) -> None:
        self.name = name
        self.log = Path(tempfile.mkstemp(prefix=f"aob-{name}-", suffix=".log")[1])
        self._fh = self.log.open("wb")
        self.popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self._fh, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        if ready_line:
            try:
                self.wait_for(ready_line)
            except BaseException:  # never ready: no one else holds it to stop it
                self.kill()
                raise

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log.read_text(errors="replace"):
                return
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.tail()}")
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not print {text!r} in {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            self.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill()
        self._fh.close()


# The test stack's example type runs only on a worker of its own (tests/workers/test_node_types.py).
EXAMPLE_QUEUE = "wf.tasks.shout"


def stack_queues() -> list[str]:
    """Every queue of the stack, from the registry, but the example type's."""
    return [q for q in registry.all_queues() if q != EXAMPLE_QUEUE]


def start_worker(env: dict[str, str], name: str, queues: list[str] | None = None, concurrency: int = 2,
                 node_types: list[str] | None = None) -> Proc:
    """A worker of every queue of the stack (``stack_queues``), or of ``queues``, or of the queues of
    ``node_types`` (``--node-types``, as an operator splits workers by type) plus ``queues``."""
    selection = ["--node-types", ",".join(node_types)] if node_types else []
    if queues or not node_types:
        selection += ["-Q", ",".join(queues or stack_queues())]
    argv = [CELERY, "-A", "aob_project", "worker", *selection, "-c", str(concurrency),
            # fault injection for the durability tests and the kill points of the fault suite (AOB_TEST_HOOKS)
            "--include", "tests.support.faults,tests.support.fault_points",
            "-n", f"{name}@%h", "-l", "info", "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-P", "prefork"]
    proc = Proc(name, argv, env, ready_line="ready.")
    proc.node_name = f"{name}@{socket.gethostname()}"  # for remote control (app.control ... destination)
    return proc


def start_web(env: dict[str, str], name: str = "web", *options: str) -> Proc:
    """The web process as `make up` starts it (``aob.launcher.web_command``: ``python -m aob.web``,
    uvicorn with the bounds of aob/web.py), in one process (it serves in the one it started in), on a
    free loopback port: ``proc.port``, ``proc.url``."""
    port = free_port()
    proc = Proc(name, [*web_command(sys.executable, port=port, workers="1"), *options], env,
                ready_line="Uvicorn running on")
    proc.port, proc.url = port, f"http://127.0.0.1:{port}"
    return proc


def start_beat(env: dict[str, str]) -> Proc:
    """Beat as `make up` runs it: django-celery-beat's database scheduler (aob_project.beat)."""
    argv = [CELERY, "-A", "aob_project", "beat", "-l", "info", "--scheduler", "aob_project.beat:Scheduler",
            "--max-interval", "1"]
    return Proc("beat", argv, env, ready_line="beat: Starting")
