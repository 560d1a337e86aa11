"""A loopback HTTP server standing in for remote hosts (the outside world, never our code).

Paths: ``/echo`` (method, path, query, headers, JSON body back), ``/status/<code>``,
``/sleep/<seconds>``, ``/seq/<key>`` (answers the next item of a scripted list set by the test; an item ``Reply(status,
body[, headers])`` answers that status),
``/flaky/<key>/<n>`` (drops the connection the first n times for that key), ``/big/<bytes>``,
``/nested/<depth>`` (``[[[…]]]`` that deep, as raw JSON text),
``/redirect?to=<url>[&code=<3xx>]`` (answers a redirect to that URL, 302 unless told),
``/hold/<key>`` (answers only once the test calls ``release(key)``; 60 s at most; ``outcomes(key)``
says for each request whether it was ``answered`` or ``aborted`` — the client closed the connection
while it was held),
``/effect/<name>/<seconds>`` (applies an effect — appended to ``effects(name)`` — then answers after
sleeping; it honours ``Idempotency-Key`` as Stripe does: a request repeating a key applies nothing
and gets the first request's answer, waiting for it if that one is still running).
Every request is recorded.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Reply:
    """A scripted ``/seq`` answer with its own status (a remote that fails for a while)."""

    status: int
    body: Any
    headers: tuple[tuple[str, str], ...] = ()


class RemoteServer:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.scripts: dict[str, list[Any]] = {}
        self.counters: dict[str, int] = {}
        self.holds: dict[str, threading.Event] = {}
        self.applied: list[dict[str, Any]] = []
        self.held_outcomes: dict[str, list[str]] = {}
        self.keys: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                record = {"method": self.command, "path": parts.path, "query": parse_qs(parts.query),
                          "headers": dict(self.headers), "body": raw.decode(errors="replace"), "at": time.time()}
                with owner.lock:
                    owner.requests.append(record)
                owner.route(self, parts.path, record)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.scripts.clear()
            self.counters.clear()
            for held in self.holds.values():
                held.set()  # a request a finished test left holding answers now
            self.holds.clear()
            self.applied.clear()
            self.held_outcomes.clear()
            self.keys.clear()

    def _hold(self, key: str) -> threading.Event:
        with self.lock:
            return self.holds.setdefault(key, threading.Event())

    def release(self, key: str) -> None:
        self._hold(key).set()

    def script(self, key: str, answers: list[Any]) -> None:
        with self.lock:
            self.scripts[key] = list(answers)

    def hits(self, path_prefix: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"].startswith(path_prefix)]

    def outcomes(self, key: str) -> list[str]:
        with self.lock:
            return list(self.held_outcomes.get(key, []))

    def _held(self, handler: BaseHTTPRequestHandler, key: str) -> None:
        """Wait for ``release(key)``, noticing a client that gives up meanwhile."""
        released, deadline = self._hold(key), time.monotonic() + 60
        while not released.wait(0.05) and time.monotonic() < deadline:
            readable, _, _ = select.select([handler.connection], [], [], 0)
            if readable and handler.connection.recv(1, socket.MSG_PEEK) == b"":
                with self.lock:
                    self.held_outcomes.setdefault(key, []).append("aborted")
                handler.close_connection = True
                return
        with self.lock:
            self.held_outcomes.setdefault(key, []).append("answered")
        self._send(handler, 200, {"held": key})

    def effects(self, name: str) -> list[dict[str, Any]]:
        """The effects ``/effect/<name>/…`` applied: one per request, one per key when one is sent."""
        with self.lock:
            return [e for e in self.applied if e["name"] == name]

    def applied_once(self, name: str, sent: int = 2) -> list[dict[str, Any]]:
        """Asserts ``/effect/<name>/`` was sent ``sent`` times under one Idempotency-Key and applied
        once (a repeat the payee recognised); returns the requests."""
        hits = self.hits(f"/effect/{name}/")
        keys = [next((v for k, v in hit["headers"].items() if k.lower() == "idempotency-key"), "") for hit in hits]
        assert len(hits) == sent and len(set(keys)) == 1, keys
        assert len(self.effects(name)) == 1, self.effects(name)
        return hits

    def close(self) -> None:
        self.httpd.shutdown()

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, code: int, payload: Any,
              headers: tuple[tuple[str, str], ...] = ()) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(code)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if handler.command != "HEAD":
            try:
                handler.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up first (a timeout test)

    def route(self, handler: BaseHTTPRequestHandler, path: str, record: dict[str, Any]) -> None:
        parts = [p for p in path.split("/") if p]
        head = parts[0] if parts else ""
        if head == "echo":
            body: Any = record["body"]
            try:
                body = json.loads(body) if body else None
            except ValueError:
                pass
            self._send(handler, 200, {"method": record["method"], "path": path, "query": record["query"],
                                      "headers": record["headers"], "json": body})
        elif head == "status":
            self._send(handler, int(parts[1]), {"status": int(parts[1])})
        elif head == "hold":
            self._held(handler, parts[1])
        elif head == "sleep":
            time.sleep(float(parts[1]))
            self._send(handler, 200, {"slept": float(parts[1])})
        elif head == "effect":
            name, seconds = parts[1], float(parts[2])
            key = handler.headers.get("Idempotency-Key")
            with self.lock:
                entry = self.keys.get(key) if key else None
                first = entry is None
                if first:
                    entry = {"done": threading.Event(), "answer": None}
                    if key:
                        self.keys[key] = entry
                    self.applied.append({"name": name, "key": key, "at": time.time()})
                    count = len([e for e in self.applied if e["name"] == name])
            if not first:
                entry["done"].wait(60)
                self._send(handler, 200, entry["answer"])
                return
            time.sleep(seconds)
            entry["answer"] = {"effect": count, "slept": seconds, "key": key}
            entry["done"].set()
            self._send(handler, 200, entry["answer"])
        elif head == "seq":
            with self.lock:
                answers = self.scripts.get(parts[1], [])
                answer = answers.pop(0) if len(answers) > 1 else (answers[0] if answers else {})
            if isinstance(answer, Reply):
                self._send(handler, answer.status, answer.body, answer.headers)
            else:
                self._send(handler, 200, answer)
        elif head == "flaky":
            key, failures = parts[1], int(parts[2])
            with self.lock:
                self.counters[key] = self.counters.get(key, 0) + 1
                count = self.counters[key]
            if count <= failures:
                handler.close_connection = True
                handler.connection.shutdown(2)
                return
            self._send(handler, 200, {"attempt": count})
        elif head == "big":
            size = int(parts[1])
            handler.send_response(200)
            handler.send_header("Content-Type", "text/plain")
            handler.send_header("Content-Length", str(size))
            handler.end_headers()
            handler.wfile.write(b"x" * size)
        elif head == "nested":  # ``[[[…]]]`` n deep, raw: deeper than any JSON encoder here would write it
            depth = int(parts[1])
            data = b"[" * depth + b"]" * depth
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        elif head == "redirect":
            handler.send_response(int(record["query"].get("code", ["302"])[0]))
            handler.send_header("Location", record["query"]["to"][0])
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        else:
            self._send(handler, 404, {"error": "no such path"})
