"""What a remote's answer can make of a request after its bytes have arrived: a charset decoded in
quadratic time (read as UTF-8 now, ``client.charset``), a body nested past the JSON parser (text
now). Each failed before (a red-team helper's findings). Real loopback servers, opened by their own
port only."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from workers.http import HTTPRequestError, client_close, request


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        n = int(query.get("n", "1000"))
        if parts.path == "/punycode":
            # ~400 KB of text, declared in a charset Python decodes in quadratic time
            self._reply(b"a" * n + b"-" + b"a" * n, "text/plain; charset=punycode")
        elif parts.path == "/deep":
            # 200 KB of nested arrays: well within the size cap, deeper than Python's JSON parser goes
            self._reply(b"[" * n + b"]" * n, "application/json")
        else:
            self._reply(b"{}", "application/json")


@pytest.fixture
def base(settings: Any) -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    port = httpd.server_address[1]
    settings.AOB_HTTP_ALLOWLIST = [f"127.0.0.1:{port}"]
    client_close()
    yield f"http://127.0.0.1:{port}"
    client_close()
    httpd.shutdown()
    httpd.server_close()


def test_a_response_charset_cannot_stretch_the_request_past_its_deadline(base: str) -> None:
    """The deadline is "one deadline for the whole request" (docs/SECURITY.md, Limits). The body is
    decoded with whatever charset the remote names (``client._result``: ``response.charset_encoding``),
    and Python's ``punycode`` codec is quadratic: 400 KB took 4-19 s here, a 10 MiB body (the cap)
    hours of CPU, after every byte arrived in time. Any remote an http node, an agent's
    ``execute_pipeline`` or a notification webhook reaches chooses it; a notification target is a
    user's own URL, decoded on the notify queue every user shares (150 s soft limit, 6 attempts)."""
    started = time.monotonic()
    try:
        request(method="GET", url=f"{base}/punycode?n=200000", timeout_s=1)
    except HTTPRequestError:
        pass  # refusing the charset, or timing out, are both fine
    elapsed = time.monotonic() - started
    assert elapsed < 3, f"a 1 s request took {elapsed:.1f} s decoding its body"


def test_a_deeply_nested_json_body_is_not_a_crash(base: str) -> None:
    """``client._result`` parses the body with ``json.loads`` and catches ``ValueError`` only; 200 KB
    of ``[[[…]]]`` raises ``RecursionError`` out of ``request()``, which is neither an ``AobError`` nor
    a result: an agent's ``execute_pipeline`` step (``agents/loop._run_tool`` turns only ``AobError``
    into a tool error) fails the whole agent node on a page an attacker serves, instead of giving the
    model an error; an http node fails as a crash (``node_run.crashed``). A body the parser cannot
    take should be text (``json_body`` None), as any other non-JSON body is."""
    result = request(method="GET", url=f"{base}/deep?n=100000", timeout_s=5)
    assert result.status_code == 200 and result.json_body is None
    assert json.loads(json.dumps(result.text[:3])) == "[[["
