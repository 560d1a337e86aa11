"""The LLM client's timeout (AOB_LLM_TIMEOUT_S) is one deadline for the whole call
(``llm.Deadline``): it was httpx's per read, so a provider or gateway dripping its answer held the
agent's worker until the node's own timeout (a red-team helper's finding). Its answer is read within
AOB_LLM_MAX_RESPONSE_BYTES, decoded bytes counted. A local stand-in for the provider, on loopback."""

from __future__ import annotations

import gzip
import json
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest

from agents import llm
from tests.support.slow_reader import burst_reader
from workers.http import ResponseTooLarge

ANSWER = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": "hi"}}],
                     "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()


class Drip(BaseHTTPRequestHandler):
    """Answers a chat completion one byte every 0.2 s: each read well within any read timeout."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b" " * 25 + ANSWER  # leading whitespace, as some gateways send to keep a connection alive
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for i in range(0, 25):
            try:
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.2)
        try:
            self.wfile.write(body[25:])
        except OSError:
            return


@pytest.fixture
def dripping_provider(settings: Any) -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    settings.OPENAI_API_KEY = "test-key"
    settings.AOB_LLM_TIMEOUT_S = 1.0
    settings.AOB_LLM_PRICES = {"gpt-4o-mini": {"input": 0.15, "output": 0.6}}
    yield settings.OPENAI_BASE_URL
    httpd.shutdown()
    httpd.server_close()


def test_the_llm_timeout_is_one_deadline_for_the_call_not_per_read(dripping_provider: str) -> None:
    """docs/SECURITY.md: "nothing else in AOB opens outbound HTTP connections" than
    ``workers.http.request``, whose timeout is one deadline for the whole request. ``agents/llm.py``
    builds its own ``openai.OpenAI`` (its own httpx client: ``timeout=AOB_LLM_TIMEOUT_S`` is httpx's
    per-read timeout, no size cap, environment proxies honoured, redirects followed by httpx), so a
    provider or gateway that drips its answer holds the agent's worker past ``AOB_LLM_TIMEOUT_S``
    for as long as it keeps dripping, up to the node's own timeout (5 min by default)."""
    started = time.monotonic()
    try:
        llm.chat(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], tools=None)
    except openai.APITimeoutError:
        pass
    elapsed = time.monotonic() - started
    assert elapsed < 2.5, f"a call with AOB_LLM_TIMEOUT_S = 1 s took {elapsed:.1f} s"


class Stall(BaseHTTPRequestHandler):
    """Never gets past the head of its answer, writing a little of it every 0.1 s: one byte of a
    header line, or one more interim ``100 Continue`` (each a whole answer to h11, so no read waits
    long and the size bound of a head is never reached)."""

    protocol_version = "HTTP/1.1"
    interim = False

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        first, more = (b"", b"HTTP/1.1 100 Continue\r\n\r\n") if self.interim else (b"HTTP/1.1 200 OK\r\nX-Wait: ", b"w")
        try:
            self.wfile.write(first)
            for _ in range(50):  # 5 s at most: the test has given up long before
                self.wfile.write(more)
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass
        self.close_connection = True


class Interim(Stall):
    interim = True


@cache
def large(gzipped: bool) -> bytes:
    """A valid answer behind 16 MiB of JSON whitespace; gzipped, behind 64 MiB (some 64 KiB sent)."""
    if gzipped:
        return gzip.compress(b" " * (64 * 1024 * 1024) + ANSWER, 6)
    return b" " * (16 * 1024 * 1024) + ANSWER


class Large(BaseHTTPRequestHandler):
    """``large()``, as it is or gzipped (``/gzip/v1/...``)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        gzipped = self.path.startswith("/gzip/")
        body = large(gzipped)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass


@pytest.fixture
def provider(settings: Any) -> Iterator[Callable[[type[BaseHTTPRequestHandler], str], None]]:
    servers: list[ThreadingHTTPServer] = []

    def start(handler: type[BaseHTTPRequestHandler], prefix: str = "") -> None:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        servers.append(httpd)
        settings.OPENAI_BASE_URL = f"http://127.0.0.1:{httpd.server_address[1]}{prefix}/v1"

    settings.OPENAI_API_KEY = "test-key"
    settings.AOB_LLM_PRICES = {"gpt-4o-mini": {"input": 0.15, "output": 0.6}}
    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("handler", [Stall, Interim], ids=["head-dripped", "endless-100-continue"])
def test_the_deadline_covers_the_head_of_the_answer_too(provider: Any, settings: Any,
                                                        handler: type[BaseHTTPRequestHandler]) -> None:
    """The deadline was kept only while the body was read: a provider (or a gateway before it) that
    drips the head of its answer, or sends interim answers without end, held the call, and the
    agent's worker, until the node's own timeout."""
    provider(handler)
    settings.AOB_LLM_TIMEOUT_S = 1.0
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        llm.chat(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], tools=None)
    elapsed = time.monotonic() - started
    assert elapsed < 2.5, f"a call with AOB_LLM_TIMEOUT_S = 1 s took {elapsed:.1f} s"


def test_the_deadline_covers_the_request_s_body_too(settings: Any) -> None:
    """httpcore2 writes the request in one call whose every send got the call's whole timeout again:
    a provider (or a gateway) reading a long prompt a burst at a time held the call past its deadline."""
    port, bursts = burst_reader(burst=1024 * 1024, every=0.8)
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{port}/v1"
    settings.OPENAI_API_KEY = "test-key"
    settings.AOB_LLM_TIMEOUT_S = 1.0
    settings.AOB_LLM_PRICES = {"gpt-4o-mini": {"input": 0.15, "output": 0.6}}
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        llm.chat(model="gpt-4o-mini", messages=[{"role": "user", "content": "x" * 12_000_000}], tools=None)
    elapsed = time.monotonic() - started
    assert elapsed < 2.5, f"a call with AOB_LLM_TIMEOUT_S = 1 s took {elapsed:.1f} s writing its prompt ({bursts})"


@pytest.mark.parametrize("prefix", ["", "/gzip"], ids=["plain", "gzip-bomb"])
def test_an_answer_past_its_size_bound_is_refused_whatever_its_encoding(provider: Any, settings: Any,
                                                                       prefix: str) -> None:
    """The SDK reads an answer whole, and httpx decodes what the provider compressed: a provider
    could send gigabytes, or a gzip bomb (64 KiB here for 64 MiB), into the agent worker's memory
    for as long as the deadline lets it. Past ``AOB_LLM_MAX_RESPONSE_BYTES`` of decoded bytes the
    call fails saying so (charged: the provider ran it), with no more than that held."""
    provider(Large, prefix)
    settings.AOB_LLM_MAX_RESPONSE_BYTES = 1024 * 1024
    settings.AOB_LLM_TIMEOUT_S = 10.0
    large(bool(prefix))  # made before memory is measured: the stand-in's, not the client's
    tracemalloc.start()
    try:
        with pytest.raises(ResponseTooLarge) as caught:
            llm.chat(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], tools=None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "AOB_LLM_MAX_RESPONSE_BYTES" in caught.value.message and llm.made(caught.value)
    assert peak < 8 * 1024 * 1024, f"{peak} bytes held for an answer refused past 1 MiB"


class Punycode(BaseHTTPRequestHandler):
    """A 500 whose 600 KB of text name ``charset=punycode``, which Python decodes in quadratic time."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"a" * 300_000 + b"-" + b"a" * 300_000
        self.send_response(500)
        self.send_header("Content-Type", "text/plain; charset=punycode")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass


def test_an_answer_is_decoded_by_its_charset_only_when_that_decodes_in_linear_time(provider: Any,
                                                                                   settings: Any) -> None:
    """The SDK reads an error's body as text, by the charset it names: 600 KB named ``punycode`` took
    seconds of CPU after the last byte came, past any deadline (10 MiB, the size bound, would take
    hours), as the http node's client did before it read such bodies as UTF-8
    (``workers.http.client.charset``, ``tests/workers/test_http_bodies.py``)."""
    provider(Punycode)
    settings.AOB_LLM_TIMEOUT_S = 1.0
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError):
        llm.chat(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], tools=None)
    elapsed = time.monotonic() - started
    assert elapsed < 2.5, f"a call with AOB_LLM_TIMEOUT_S = 1 s took {elapsed:.1f} s"
