"""A local OpenAI-compatible server for tests (the outside world's LLM), reached through the real
``openai`` SDK. Each test scripts its answers; every request is recorded.

Script items: ``{"content": "text"}`` for a plain answer, ``{"tool_calls": [(name, args_dict), ...]}``
for function calls, ``{"status": 500}`` for an error response, optionally with ``"usage"``, and
with ``"until"``: a ``threading.Event`` the answer waits for (a call a test holds in flight).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RawArguments(str):
    """Tool-call arguments sent as written, not dumped from a dict: text that is no JSON, or JSON
    past the parser's depth, as a model (or an injected prompt) may send."""


class FakeLLM:
    def __init__(self) -> None:
        self.script: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with owner.lock:
                    owner.requests.append({"path": self.path, "body": body, "at": time.time(),
                                           "headers": {k.lower(): v for k, v in self.headers.items()}})
                    item = owner.script.pop(0) if owner.script else {"content": "(script exhausted)"}
                if "until" in item:
                    item["until"].wait(timeout=60)
                status, payload = owner.reply(body, item)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the caller gave up on a held call (its timeout)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def reset(self, script: list[dict[str, Any]] | None = None) -> None:
        with self.lock:
            self.script = list(script or [])
            self.requests.clear()

    def close(self) -> None:
        self.httpd.shutdown()

    @staticmethod
    def reply(body: dict[str, Any], item: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if "status" in item:
            return item["status"], {"error": {"message": item.get("message", "scripted failure"),
                                              "type": "server_error", "code": None}}
        usage = item.get("usage", {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
                                   "prompt_tokens_details": {"cached_tokens": 64}})
        message: dict[str, Any] = {"role": "assistant", "content": item.get("content")}
        finish = "stop"
        if "tool_calls" in item:
            message["tool_calls"] = [
                {"id": f"call_{uuid.uuid4().hex[:8]}", "type": "function",
                 "function": {"name": name, "arguments": args if isinstance(args, RawArguments) else json.dumps(args)}}
                for name, args in item["tool_calls"]
            ]
            finish = "tool_calls"
        return 200, {"id": f"chatcmpl-{uuid.uuid4().hex[:8]}", "object": "chat.completion", "created": int(time.time()),
                     "model": body.get("model", "test-model"),
                     "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}
