"""RabbitMQ for the broker tests: the machine's server, started when it is installed but not
running, and a private virtual host per test session (deleted at the end), so nothing else on the
server sees the session's queues. Without RabbitMQ installed the tests are skipped, saying why."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid

HOST, PORT = "127.0.0.1", int(os.environ.get("AOB_TEST_RABBITMQ_PORT", "5672"))
SBIN = ("/usr/sbin", "/usr/lib/rabbitmq/bin", "/usr/local/sbin")


def _which(name: str) -> str | None:
    return shutil.which(name) or next((f"{d}/{name}" for d in SBIN if os.access(f"{d}/{name}", os.X_OK)), None)


def installed() -> bool:
    return _which("rabbitmq-server") is not None and _which("rabbitmqctl") is not None


def listening() -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((HOST, PORT)) == 0


def ctl(*args: str, timeout: float = 60) -> str:
    done = subprocess.run([_which("rabbitmqctl") or "rabbitmqctl", *args], capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr or done.stdout}")
    return done.stdout


def ensure_running(timeout: float = 90) -> None:
    """Start the installed server (detached) when nothing listens on its port, and wait for it."""
    if listening():
        return
    subprocess.run([_which("rabbitmq-server") or "rabbitmq-server", "-detached"], capture_output=True, timeout=60)
    deadline = time.monotonic() + timeout
    while not listening():
        if time.monotonic() > deadline:
            raise RuntimeError(f"RabbitMQ did not start listening on {HOST}:{PORT} within {timeout}s")
        time.sleep(0.5)
    ctl("await_startup", timeout=timeout)


def private_vhost() -> str:
    vhost = f"aob-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    ctl("add_vhost", vhost)
    ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    return vhost


def drop_vhost(vhost: str) -> None:
    ctl("delete_vhost", vhost)


def queue_types(vhost: str) -> dict[str, str]:
    out = ctl("list_queues", "-p", vhost, "name", "type", "--no-table-headers", "--quiet")
    return dict(line.split("\t", 1) for line in out.strip().splitlines() if "\t" in line)
