"""Where the WebSocket handshake is refused (an older server, a proxy), `run watch` polls the events
endpoint from where it is, and still exits with the run's outcome."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.stack import ROOT

RUN = "6f1c1f7e-0000-4000-8000-000000000001"


def _event(seq: int, type_: str) -> dict:
    return {"run_id": RUN, "seq": seq, "type": type_, "node_id": "", "data": {}, "created_at": "2026-01-01T00:00:00Z"}


class _Server(BaseHTTPRequestHandler):
    """An API with no WebSocket route: events arrive one poll at a time."""

    seen: list[tuple[str, str | None]] = []
    script: list[list[dict] | int] = []

    def do_GET(self) -> None:  # http.server's name
        self.seen.append((self.path, self.headers.get("Authorization")))
        if self.path.startswith("/ws/"):
            self.send_error(404)
            return
        if "/events" in self.path:
            answer: object = self.script.pop(0) if self.script else []
            if isinstance(answer, int):  # a proxy's answer while the API is away
                self.send_error(answer)
                return
        else:
            answer = {"run_id": RUN, "status": "running"}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def old_server() -> Iterator[str]:
    _Server.seen = []
    _Server.script = [[_event(1, "workflow_started")], [], [_event(2, "run_cancelled")]]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_a_refused_handshake_falls_back_to_polling(old_server, tmp_path):
    done = subprocess.run([sys.executable, "-m", "aob.cli.main", "--api-url", old_server, "--token", "t0k",
                           "run", "watch", RUN], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})

    assert done.returncode == 2, done.stderr
    events = [line.split()[2] for line in done.stdout.splitlines() if line.split()[0].isdigit()]
    assert events == ["workflow_started", "run_cancelled"]
    paths = [(path.split("?")[0], auth) for path, auth in _Server.seen]
    assert (f"/ws/runs/{RUN}/", "Token t0k") in paths  # tried the socket first, with the token
    assert [path for path, _ in _Server.seen if "events" in path][-1].endswith("after=1")  # resumed polling


def _watch(api_url: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aob.cli.main", "--api-url", api_url, "--token", "t0k", "run",
                           "watch", RUN], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})


def test_a_follow_waits_out_a_short_outage_and_says_so_once(old_server, tmp_path):
    """A proxy's 503 (the API restarting) is waited out: the follow goes on from where it was and
    exits with the run's outcome, where it used to end at the first one."""
    _Server.script = [[_event(1, "workflow_started")], 503, 502, [_event(2, "run_cancelled")]]

    done = _watch(old_server, tmp_path)

    assert done.returncode == 2, done.stderr
    events = [line.split()[2] for line in done.stdout.splitlines() if line.split()[0].isdigit()]
    assert events == ["workflow_started", "run_cancelled"]
    assert done.stderr.count("the API does not answer") == 1, done.stderr
    polls = [path for path, _ in _Server.seen if "events" in path]
    assert polls[-1].endswith("after=1") and polls[-2].endswith("after=1")  # asked again from where it was


def test_an_error_that_is_not_an_outage_ends_the_follow_at_once(old_server, tmp_path):
    """A 500 is the server's answer, not its absence: the follow ends (exit 3, not the run's 1)."""
    _Server.script = [[_event(1, "workflow_started")], 500, [_event(2, "run_cancelled")]]

    done = _watch(old_server, tmp_path)

    assert done.returncode == 3, (done.returncode, done.stderr)
    assert "the API does not answer" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith("error: ") and "HTTP 500" in done.stderr, done.stderr
