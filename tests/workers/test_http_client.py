"""The outbound client against real loopback servers, opened to it one port at a time.

Stub resolvers stand in for DNS; no test reaches a remote host.
"""

from __future__ import annotations

import gzip
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, urlsplit

import certifi
import httpcore
import pytest
import structlog

from aob.embedded import free_port
from tests.engine.flow import wait_until
from tests.support.slow_reader import burst_reader
from workers.http import (
    DNSResolutionFailed,
    HTTPRequestError,
    InvalidHeader,
    ResponseTooLarge,
    SSRFBlocked,
    TooManyRedirects,
    client_close,
    request,
)
from workers.http import client as client_module


@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int]


@dataclass
class Server:
    port: int
    hits: list[Hit] = field(default_factory=list)

    def url(self, path: str = "/echo") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"content-type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.record.hits.append(Hit(self.command, self.path, dict(self.headers.items()), body,
                                           self.client_address))
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/echo":
            echoed = {"method": self.command, "path": parts.path, "query": query,
                      "headers": {k.lower(): v for k, v in self.headers.items()},
                      "body": body.decode("utf-8", "replace")}
            self._reply(200, json.dumps(echoed).encode())
        elif parts.path == "/redirect":
            self._reply(int(query.get("status", "302")), b"", {"location": query["to"]})
        elif parts.path == "/file":  # as a HEAD answers: the length a GET would get, and no body
            self.send_response(200)
            self.send_header("content-length", query["n"])
            self.end_headers()
        elif parts.path == "/set-cookie":  # a login's answer
            self._reply(200, b"{}", {"set-cookie": "session=owner-a; Path=/"})
        elif parts.path == "/loop":
            self._reply(302, b"", {"location": "/loop"})
        elif parts.path == "/big":
            self._reply(200, b"x" * int(query["n"]), {"content-type": "text/plain"})
        elif parts.path == "/undeclared":  # no content-length: the body runs until close
            self.send_response(200)
            self.send_header("connection", "close")
            self.end_headers()
            self.wfile.write(b"y" * int(query["n"]))
            self.close_connection = True
        elif parts.path == "/gzip-bomb":
            self._reply(200, gzip.compress(b"\0" * int(query["n"])),
                        {"content-encoding": "gzip", "content-type": "application/octet-stream"})
        elif parts.path == "/gzip-layers":  # gzip on gzip on ...: each layer multiplies the ratio
            layers = int(query["layers"])
            self._reply(200, gzipped(int(query["n"]), layers),
                        {"content-encoding": ", ".join(["gzip"] * layers), "content-type": "text/plain"})
        elif parts.path == "/encoded":  # a body as some servers encode it, its first byte sent alone
            encoding, body = ENCODED[query["as"]]
            self.send_response(200)
            self.send_header("content-encoding", encoding)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:1])
            self.wfile.flush()
            time.sleep(0.05)
            self.wfile.write(body[1:])
        elif parts.path == "/slow":
            time.sleep(float(query["s"]))
            self._reply(200, b"{}")
        elif parts.path == "/drip":
            self.send_response(200)
            self.send_header("content-length", "100")
            self.end_headers()
            for _ in range(100):
                try:
                    self.wfile.write(b"z")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.05)
        else:
            self._reply(404, b"{}")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


ENCODED = {
    "gzip-members": ("gzip", gzip.compress(b"one member, ") + b"\0\0" + gzip.compress(b"then another")),
    "gzip-trailing": ("gzip", gzip.compress(b"one member") + b"\0\0trailing bytes, not a member"),
    "gzip-truncated": ("gzip", gzip.compress(bytes(range(256)) * 40)[:-6]),
    "deflate-raw": ("deflate", _raw_deflate(b"deflate without its zlib header")),
    "deflate-zlib": ("deflate", zlib.compress(b"deflate with its zlib header")),
    "deflate-truncated": ("deflate", zlib.compress(bytes(range(256)) * 40)[:-20]),
}


@cache
def gzipped(n: int, layers: int) -> bytes:
    body = b"\0" * n
    for _ in range(layers):
        body = gzip.compress(body, 9)
    return body


@pytest.fixture
def start_server() -> Iterator[Callable[..., Server]]:
    started: list[ThreadingHTTPServer] = []

    def start(tls: ssl.SSLContext | None = None) -> Server:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        if tls is not None:
            httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
        httpd.record = Server(port=httpd.server_address[1])  # type: ignore[attr-defined]
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        started.append(httpd)
        return httpd.record  # type: ignore[attr-defined]

    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server(start_server: Callable[..., Server], settings: Any) -> Server:
    """One loopback server, allowlisted by exactly its own port."""
    srv = start_server()
    settings.AOB_HTTP_ALLOWLIST = [f"127.0.0.1:{srv.port}"]
    return srv


@pytest.fixture(autouse=True)
def fresh_pool() -> Iterator[None]:
    client_close()
    yield
    client_close()


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every host the socket layer is asked to connect to."""
    seen: list[str] = []
    real = httpcore.SyncBackend.connect_tcp

    def spy(self: httpcore.SyncBackend, host: str, port: int, **kwargs: Any) -> Any:
        seen.append(f"{host}:{port}")
        return real(self, host, port, **kwargs)

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", spy)
    return seen


# --- what is sent arrives as sent ----------------------------------------------------------------


def test_headers_query_and_json_arrive_as_sent(server: Server) -> None:
    result = request(method="post", url=server.url("/echo?fixed=1"), headers={"X-Trace": "abc", "Accept": "a/b"},
                     params={"q": "two words", "n": 3}, json={"a": [1, "é"], "b": None})
    echoed = result.json_body
    assert result.status_code == 200 and result.ok and result.method == "POST"
    assert echoed["method"] == "POST"
    assert echoed["query"] == {"fixed": "1", "q": "two words", "n": "3"}
    assert echoed["headers"]["x-trace"] == "abc" and echoed["headers"]["accept"] == "a/b"
    assert echoed["headers"]["content-type"] == "application/json"
    assert echoed["headers"]["host"] == f"127.0.0.1:{server.port}"
    assert json.loads(echoed["body"]) == {"a": [1, "é"], "b": None}
    assert result.headers["content-type"] == "application/json"
    assert result.text == result.body_bytes.decode()
    assert result.url.startswith(server.url("/echo?"))
    assert result.duration_ms >= 0 and result.redirect_urls == ()


def test_raw_content_is_sent_as_is(server: Server) -> None:
    result = request(method="PUT", url=server.url(), content=b"\x00raw")
    assert server.hits[0].body == b"\x00raw"
    assert result.json_body["headers"]["host"] == f"127.0.0.1:{server.port}"


@pytest.mark.parametrize(("headers", "rule"), [
    ({"Host": "evil.example"}, "header_forbidden"),
    ({"transfer-encoding": "chunked"}, "header_forbidden"),
    ({"Proxy-Authorization": "Basic x"}, "header_forbidden"),
    # the synonyms servers read for the method applied, the path or host routed, the client's address
    *[({name: "DELETE" if "Method" in name else "127.0.0.1"}, "header_forbidden") for name in (
        "X-HTTP-Method", "X-Method-Override", "X-Original-URL", "X-Rewrite-URL", "X-Forwarded-Server", "X-Host",
        "True-Client-IP", "X-Client-IP", "CF-Connecting-IP")],
    ({"X-Ok": "a\r\nX-Injected: 1"}, "header_value"),
    ({"X-Ok": "a\nb"}, "header_value"),
    ({"X-Ok": "a\x00b"}, "header_value"),
    ({"Bad Name": "x"}, "header_name"),
    ({"X-Ok:": "x"}, "header_name"),
    ({"X-Ok\n": "x"}, "header_name"),  # a final line break: a pattern's ``$`` let it through
])
def test_a_header_that_would_retarget_or_smuggle_is_refused_by_name_and_nothing_is_sent(server: Server, headers,
                                                                                        rule) -> None:
    with pytest.raises(InvalidHeader) as refused:
        request(method="GET", url=server.url(), headers=headers)
    assert refused.value.extra["rule"] == rule and refused.value.extra["transient"] is False
    assert server.hits == []


@pytest.mark.parametrize("value", [" s'e\"cret-1", "s'e\"cret-2 ", "s'e\"cret-3\t", "se\x0bcret-4", "se\x01cret-5",
                                   "se\x7fcret-6"])
def test_a_header_value_http_forbids_is_refused_by_name_never_echoed(server: Server, value: str) -> None:
    """h11 refuses a value with leading or trailing whitespace, or some control characters, with the
    value's repr in its message: a secret, escaped where masking cannot find it, in the node's error."""
    with pytest.raises(InvalidHeader) as refused:
        request(method="GET", url=server.url(), headers={"X-Api-Key": value})
    assert refused.value.extra["rule"] == "header_value" and "cret" not in refused.value.message
    assert server.hits == []


def test_non_json_body_has_no_json(server: Server) -> None:
    result = request(method="GET", url=server.url("/big?n=5"))
    assert (result.text, result.json_body) == ("xxxxx", None)


def test_pooled_connection_is_reused(server: Server) -> None:
    request(method="GET", url=server.url())
    request(method="GET", url=server.url())
    assert server.hits[0].peer == server.hits[1].peer


def test_one_client_per_process(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    request(method="GET", url=server.url())
    first = client_module._shared[2]
    request(method="GET", url=server.url())
    assert client_module._shared[2] is first
    monkeypatch.setattr(client_module.os, "getpid", lambda: -1)  # as after a fork
    request(method="GET", url=server.url())
    assert client_module._shared[2] is not first and not first.is_closed  # the parent's stays open


def test_environment_proxies_are_ignored(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9/")
    assert request(method="GET", url=server.url()).status_code == 200


# --- the allowlist at the socket -----------------------------------------------------------------


def test_allowlisted_port_only(start_server: Callable[..., Server], settings: Any, connects: list[str]) -> None:
    opened, other = start_server(), start_server()
    settings.AOB_HTTP_ALLOWLIST = [f"127.0.0.1:{opened.port}"]
    assert request(method="GET", url=opened.url()).status_code == 200
    with pytest.raises(SSRFBlocked) as caught:
        request(method="GET", url=other.url())
    assert str(caught.value) == "blocked address 127.0.0.1: loopback"
    assert caught.value.extra == {"rule": "loopback", "address": "127.0.0.1", "url": other.url()}
    assert other.hits == [] and connects == [f"127.0.0.1:{opened.port}"]


def test_refused_without_allowlist_sends_nothing(start_server: Callable[..., Server], connects: list[str]) -> None:
    srv = start_server()
    with pytest.raises(SSRFBlocked):
        request(method="GET", url=srv.url())
    assert srv.hits == [] and connects == []


# --- redirects -----------------------------------------------------------------------------------


def test_redirect_within_allowlist_is_followed(server: Server) -> None:
    result = request(method="GET", url=server.url("/redirect?to=/echo%3Fafter%3D1"))
    assert result.status_code == 200 and result.json_body["query"] == {"after": "1"}
    assert result.redirect_urls == (server.url("/echo?after=1"),) and result.url == server.url("/echo?after=1")


def test_redirect_to_another_loopback_port_is_blocked_at_the_hop(
        start_server: Callable[..., Server], server: Server, connects: list[str]) -> None:
    second = start_server()
    with pytest.raises(SSRFBlocked) as caught:
        request(method="GET", url=server.url(f"/redirect?to=http://127.0.0.1:{second.port}/echo"))
    assert caught.value.extra["rule"] == "loopback"
    assert caught.value.extra["url"] == f"http://127.0.0.1:{second.port}/echo"
    assert len(server.hits) == 1 and second.hits == []
    assert connects == [f"127.0.0.1:{server.port}"]


@pytest.mark.parametrize(("location", "rule"), [
    ("http://169.254.169.254/latest/meta-data/", "cloud-metadata"),
    ("http://[::ffff:169.254.169.254]/", "ipv4-mapped"),
    ("http://metadata.google.internal/", "blocked-name"),
    ("http://0x7f000001/", "loopback"),
    ("file:///etc/passwd", "scheme"),
    ("gopher://127.0.0.1:6379/_INFO", "scheme"),
])
def test_redirect_to_forbidden_places(server: Server, connects: list[str], location: str, rule: str) -> None:
    with pytest.raises(SSRFBlocked) as caught:
        request(method="GET", url=server.url("/redirect"), params={"to": location})
    assert caught.value.rule == rule
    assert connects == [f"127.0.0.1:{server.port}"]


def test_redirect_to_a_name_resolving_private_is_blocked(server: Server, connects: list[str]) -> None:
    answers = {"innocent.example": ["10.0.0.7"]}
    with pytest.raises(SSRFBlocked) as caught:
        request(method="GET", url=server.url("/redirect?to=http://innocent.example/"),
                resolver=lambda host, port: answers[host])
    assert caught.value.rule == "private" and caught.value.extra["url"] == "http://innocent.example/"
    assert connects == [f"127.0.0.1:{server.port}"]


def test_redirect_limit(server: Server, settings: Any) -> None:
    with pytest.raises(TooManyRedirects) as caught:
        request(method="GET", url=server.url("/loop"))
    assert len(server.hits) == 6 and caught.value.code == "TooManyRedirects"
    server.hits.clear()
    settings.AOB_HTTP_MAX_REDIRECTS = 2
    with pytest.raises(TooManyRedirects):
        request(method="GET", url=server.url("/loop"))
    assert len(server.hits) == 3
    server.hits.clear()
    with pytest.raises(TooManyRedirects):
        request(method="GET", url=server.url("/loop"), max_redirects=0)
    assert len(server.hits) == 1


def test_a_cookie_a_remote_sets_is_never_sent_with_another_request(server: Server) -> None:
    """One client serves every owner's requests in a process, and httpx's client keeps a cookie jar:
    a session cookie a remote gave one owner's request (a login, with that owner's credentials) went
    with every later request of any owner to that host. A request carries the Cookie its caller set."""
    request(method="POST", url=server.url("/set-cookie"), headers={"Authorization": "Bearer owner-a"})
    later = request(method="GET", url=server.url("/echo"))  # another owner's node, say
    assert "cookie" not in later.json_body["headers"]
    mine = request(method="GET", url=server.url("/echo"), headers={"Cookie": "mine=1"})
    assert mine.json_body["headers"]["cookie"] == "mine=1"


@pytest.mark.parametrize("location", ["http:x", "http://xn--/"])
@pytest.mark.parametrize("follow", [True, False])
def test_a_location_httpx_cannot_read_is_a_request_error_followed_or_not(server: Server, location: str,
                                                                         follow: bool) -> None:
    """httpx builds the next request of every 3xx, followed or not, and lets some Locations out as
    ``InvalidURL`` or idna's ``IDNAError``, not an httpx error: a page an agent fetched that answered
    so ended the whole agent node, as an executor's crash, instead of answering its tool call. It is
    what httpx answers for the Locations it does refuse (``http://[::1``)."""
    for to in (location, "http://[::1"):
        with pytest.raises(HTTPRequestError) as caught:
            request(method="GET", url=server.url("/redirect"), params={"to": to}, follow_redirects=follow)
        assert "Invalid URL in location header" in caught.value.message


def test_redirects_can_be_left_to_the_caller(server: Server) -> None:
    result = request(method="GET", url=server.url("/redirect?to=/echo"), follow_redirects=False)
    assert result.status_code == 302 and result.headers["location"] == "/echo" and len(server.hits) == 1


def test_303_turns_post_into_get_and_307_keeps_it(server: Server) -> None:
    after_303 = request(method="POST", url=server.url("/redirect?status=303&to=/echo"), json={"x": 1})
    assert after_303.json_body["method"] == "GET" and after_303.json_body["body"] == ""
    assert "content-type" not in after_303.json_body["headers"]
    after_307 = request(method="POST", url=server.url("/redirect?status=307&to=/echo"), json={"x": 1})
    assert after_307.json_body["method"] == "POST" and json.loads(after_307.json_body["body"]) == {"x": 1}


@pytest.mark.parametrize("status", [303, 307])
def test_a_request_a_redirect_answered_counts_as_sent_whatever_its_next_hop_meets(
        server: Server, settings: Any, status: int) -> None:
    """The remote had the request once it answered it, with a redirect too (a 303 after a POST says
    it acted): a next hop that cannot even connect is still a failure after sending. ``sent`` was the
    last hop's alone, and the node's retry sent a POST without a key again (a red-team helper's)."""
    closed = free_port()  # allowlisted and closed: the hop's connect is refused
    settings.AOB_HTTP_ALLOWLIST = [f"127.0.0.1:{server.port}", f"127.0.0.1:{closed}"]
    with pytest.raises(HTTPRequestError) as caught:
        request(method="POST", url=server.url(f"/redirect?status={status}&to=http://127.0.0.1:{closed}/x"),
                json={"x": 1})
    assert caught.value.extra["kind"] == "ConnectError" and caught.value.extra["sent"] is True, caught.value.extra
    with pytest.raises(HTTPRequestError) as first:  # the same hop asked directly: nothing was sent
        request(method="POST", url=f"http://127.0.0.1:{closed}/x", json={"x": 1})
    assert first.value.extra["sent"] is False, first.value.extra


def _unresolvable(host: str, port: int) -> list[str]:
    raise socket.gaierror(socket.EAI_NONAME, "no such name")


@pytest.mark.parametrize(("location", "rule"), [
    ("http://169.254.169.254/latest", "cloud-metadata"),  # by the URL alone
    ("http://elsewhere.example/", "host_not_allowed"),  # the run's allowed_hosts
    ("http://innocent.example/", "private"),  # at connect, by its address
    ("http://gone.example/", "unresolvable"),  # at connect, no address (transient)
    ("http://127.0.0.1:{closed}/", "secret-redirect"),  # a secret for the first origin only
])
def test_a_redirect_refused_after_a_post_was_answered_counts_as_sent(server: Server, location: str,
                                                                     rule: str) -> None:
    """The remote answered the POST (a 307 it may have acted on) before the hop was refused: told of
    the refusal alone, an agent called again, with a new Idempotency-Key, and the remote applied it
    twice (a red-team helper's). Every refusal after an answer is ``sent``; the same one first is not."""
    from vault.references import SecretBox
    from workflows import egress

    answers = {"innocent.example": ["10.0.0.7"]}
    resolver = _unresolvable if rule == "unresolvable" else (lambda host, port: answers[host])
    to = location.format(closed=free_port())
    box = SecretBox(1, loader=lambda owner, names: {name: "tok-3e1a" for name in names})
    with egress.only((("127.0.0.1", "innocent.example", "gone.example"),)), box.active():
        headers = {"X-Api-Key": box.render("$secrets.API_KEY", None, str)} if rule == "secret-redirect" else {}
        with pytest.raises(SSRFBlocked) as caught:
            request(method="POST", url=server.url("/redirect"), params={"status": "307", "to": to},
                    headers=headers, json={"amount": 100}, resolver=resolver)
        assert caught.value.rule == rule and caught.value.extra["sent"] is True, caught.value.extra
        assert len(server.hits) == 1
        if rule != "secret-redirect":  # the same hop asked first: nothing was sent
            with pytest.raises(SSRFBlocked) as first:
                request(method="POST", url=to, json={"amount": 100}, resolver=resolver)
            assert first.value.rule == rule and "sent" not in first.value.extra, first.value.extra


def test_credentials_do_not_follow_a_redirect_to_another_origin(
        start_server: Callable[..., Server], settings: Any) -> None:
    first, second = start_server(), start_server()
    settings.AOB_HTTP_ALLOWLIST = [f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"]
    secret = {"Authorization": "Bearer s3cret", "Cookie": "a=b", "X-Keep": "1"}
    same = request(method="GET", url=first.url("/redirect?to=/echo"), headers=secret)
    assert same.json_body["headers"]["authorization"] == "Bearer s3cret"
    other = request(method="GET", url=first.url(f"/redirect?to={second.url()}"), headers=secret)
    assert "authorization" not in other.json_body["headers"] and "cookie" not in other.json_body["headers"]
    assert other.json_body["headers"]["x-keep"] == "1"


def test_a_secret_in_a_custom_header_or_the_body_never_follows_a_redirect_to_another_origin(
        start_server: Callable[..., Server], settings: Any) -> None:
    """The executors render ``$secrets.NAME`` in a ``SecretBox`` active while they send: a 307 to
    another origin would re-send a custom header (``X-Api-Key``) and the body. Refused instead,
    naming the secret, never its value; without secrets, or to the same origin, it is followed."""
    from vault.references import SecretBox

    first, second = start_server(), start_server()
    settings.AOB_HTTP_ALLOWLIST = [f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"]
    value = "tok/9f+8e7=d6c"  # a slash, a plus and '=' so the URL-encoded forms differ from the value
    to_second = f"/redirect?status=307&to={second.url('/echo')}"
    box = SecretBox(1, loader=lambda owner, names: {name: value for name in names})
    with box.active():
        box.render("$secrets.API_KEY", None, str)  # as an executor renders the author's config
        for headers, body in (({"X-Api-Key": value}, {}), ({}, {"json": {"token": value}}),
                              ({}, {"content": f"token={quote_plus(value)}"})):  # a form body, URL-encoded
            with pytest.raises(SSRFBlocked) as caught:
                request(method="POST", url=first.url(to_second), headers=headers, **body)
            assert caught.value.rule == "secret-redirect" and "API_KEY" in str(caught.value)
            assert value not in str(caught.value) and not second.hits
        # in the query, which a move keeps (``return 301 https://new$request_uri``), as sent or escaped anew
        for escaped in (quote_plus(value), quote(value, safe="").lower()):
            moved = quote_plus(second.url(f"/echo?api_key={escaped}"))
            with pytest.raises(SSRFBlocked) as caught:
                request(method="GET", url=first.url(f"/redirect?status=301&to={moved}"), params={"api_key": value})
            assert caught.value.rule == "secret-redirect" and not second.hits, escaped
        home = request(method="POST", url=first.url("/redirect?status=307&to=/echo"), headers={"X-Api-Key": value})
        assert home.json_body["headers"]["x-api-key"] == value  # the same origin: followed
        # a 303 turns the POST into a GET without the body: nothing of the secret goes on
        request(method="POST", url=first.url(f"/redirect?status=303&to={second.url('/echo')}"), json={"t": value})
        assert len(second.hits) == 1 and value.encode() not in second.hits[0].body
    # the control: the same request with no secret in use is followed to the other origin
    request(method="POST", url=first.url(to_second), headers={"X-Api-Key": value})
    assert second.hits[-1].headers["X-Api-Key"] == value


def test_a_query_secret_encoded_again_in_a_login_chain_never_follows_a_redirect_to_another_origin(
        start_server: Callable[..., Server], settings: Any) -> None:
    """A login chain: the page behind ``login_required`` sends the person on with the URL it was
    asked for in ``next``, its query encoded once more, and the single sign-on server is sent that
    login URL, encoded again, in its ``service=`` (django-cas-ng; an IdP's ``return_to``): the key the
    request sent in its query is three times encoded in that Location. The client read a Location as
    sent and unquoted once, found no form of the key, and followed: the key went to a host neither
    the author nor the API chose (a red-team helper's find)."""
    from vault.references import SecretBox

    first, second = start_server(), start_server()
    settings.AOB_HTTP_ALLOWLIST = [f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"]
    value = "AbC+dEf/gh42=="  # a base64 API key
    login = first.url("/login?next=" + quote("/data?api_key=" + quote(value, safe=""), safe="/"))
    sso = second.url("/echo?service=" + quote(login, safe=""))
    box = SecretBox(1, loader=lambda owner, names: {name: value for name in names})
    with box.active():
        box.render("$secrets.API_KEY", None, str)  # as the http executor renders the author's query
        with pytest.raises(SSRFBlocked) as caught:
            request(method="GET", url=first.url("/redirect?status=302&to=" + quote(sso, safe="")),
                    params={"api_key": value})
    assert caught.value.rule == "secret-redirect" and "API_KEY" in str(caught.value)
    assert not second.hits and first.hits[0].path.endswith("api_key=" + quote(value, safe=""))
    # the control: the same chain with no secret in use is followed to the other origin
    request(method="GET", url=first.url("/redirect?status=302&to=" + quote(sso, safe="")), params={"api_key": value})
    assert len(second.hits) == 1


@pytest.mark.parametrize("value", ['Pässwört"42\\x', 'Passwort"42\\x', "Pässwört42"],
                         ids=["non-ascii-and-escaped", "escaped", "non-ascii"])
def test_a_secret_in_a_json_body_is_known_in_the_form_httpx_sends(
        start_server: Callable[..., Server], settings: Any, value: str) -> None:
    """httpx writes a JSON body with its non-ASCII characters as they are; the box knew a JSON
    string's form with them escaped only, so a secret with both (an umlaut and a quote) was sent
    on a 307 to another origin, and masked nowhere when a server echoed it (a red-team helper's
    finding). Each value fails neither way now; the last two were refused before too."""
    from vault.references import SecretBox

    first, second = start_server(), start_server()
    settings.AOB_HTTP_ALLOWLIST = [f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"]
    box = SecretBox(1, loader=lambda owner, names: {name: value for name in names})
    with box.active():
        box.render("$secrets.API_KEY", None, str)
        with pytest.raises(SSRFBlocked) as caught:
            request(method="POST", url=first.url(f"/redirect?status=307&to={second.url('/echo')}"),
                    json={"token": value})
        assert caught.value.rule == "secret-redirect" and not second.hits
        sent = request(method="POST", url=first.url("/echo"), json={"token": value}).json_body["body"]
    assert json.loads(sent) == {"token": value}  # the body as the server received it, echoed back
    assert box.mask({"body": sent}) == {"body": '{"token":"[secret:API_KEY]"}'}


# --- one resolution, and the connection goes where it was judged ---------------------------------


def test_connects_to_the_address_it_checked_with_one_lookup(
        server: Server, connects: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])  # a rebinding name: safe, then metadata
    calls: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    lookups: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def watch_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        lookups.append(str(host))
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", watch_getaddrinfo)
    url = f"http://rebind.test:{server.port}/echo"
    result = request(method="GET", url=url, resolver=rebinding)
    assert result.status_code == 200
    assert calls == ["rebind.test"]  # resolved once: no second lookup between check and connect
    assert connects == [f"127.0.0.1:{server.port}"]  # the socket went to the checked address
    assert set(lookups) <= {"127.0.0.1"}  # the socket layer only ever saw the literal address
    assert result.json_body["headers"]["host"] == f"rebind.test:{server.port}"  # the name drives Host
    # The next connection resolves afresh, judges the new answer, and refuses it.
    with pytest.raises(SSRFBlocked) as caught:
        request(method="GET", url=url, resolver=rebinding)
    assert caught.value.rule == "cloud-metadata" and caught.value.extra["url"] == url
    assert calls == ["rebind.test", "rebind.test"] and len(connects) == 1 and len(server.hits) == 1


def test_name_resolving_private_is_refused_before_connecting(server: Server, connects: list[str]) -> None:
    with pytest.raises(SSRFBlocked) as caught:
        request(method="GET", url=f"http://internal.test:{server.port}/echo",
                resolver=lambda host, port: ["10.0.0.5"])
    assert caught.value.rule == "private" and connects == [] and server.hits == []


def test_one_private_answer_among_good_ones_refuses(server: Server, connects: list[str]) -> None:
    with pytest.raises(SSRFBlocked):
        request(method="GET", url=f"http://mixed.test:{server.port}/echo",
                resolver=lambda host, port: ["127.0.0.1", "192.168.0.10"])
    assert connects == [] and server.hits == []


def test_failed_resolution_fails_closed_as_a_transient_dns_failure(server: Server, connects: list[str]) -> None:
    def broken(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "no such name")

    for resolver in (broken, lambda host, port: []):
        with pytest.raises(SSRFBlocked) as caught:
            request(method="GET", url=f"http://gone.test:{server.port}/", resolver=resolver)
        assert caught.value.rule == "unresolvable"
        # a name that does not resolve now may resolve later: transient, so the node's retries are used
        assert isinstance(caught.value, DNSResolutionFailed) and caught.value.code == "DNSResolutionFailed"
        assert caught.value.transient is True
    assert connects == []


# --- limits --------------------------------------------------------------------------------------


def test_declared_body_over_the_cap(server: Server) -> None:
    with pytest.raises(ResponseTooLarge) as caught:
        request(method="GET", url=server.url("/big?n=2000"), max_response_bytes=1000)
    assert caught.value.code == "ResponseTooLarge" and caught.value.extra["limit"] == 1000
    assert request(method="GET", url=server.url("/big?n=1000"), max_response_bytes=1000).body_bytes == b"x" * 1000


def test_undeclared_body_over_the_cap_is_cut_while_streaming(server: Server, settings: Any) -> None:
    settings.AOB_HTTP_MAX_RESPONSE_BYTES = 50_000
    with pytest.raises(ResponseTooLarge):
        request(method="GET", url=server.url("/undeclared?n=200000"))
    assert len(request(method="GET", url=server.url("/undeclared?n=50000")).body_bytes) == 50_000


def test_a_head_answer_is_not_refused_for_the_size_it_declares(server: Server) -> None:
    """A HEAD answer's Content-Length is the size a GET would get (RFC 9110 §9.3.2), no body comes:
    asking a large file's size failed as ResponseTooLarge."""
    result = request(method="HEAD", url=server.url("/file?n=20000000000"))
    assert result.status_code == 200 and result.body_bytes == b""
    assert result.headers["content-length"] == "20000000000"


def test_cap_counts_decompressed_bytes(server: Server) -> None:
    with pytest.raises(ResponseTooLarge):
        request(method="GET", url=server.url("/gzip-bomb?n=5000000"), max_response_bytes=100_000)


def test_a_compression_bomb_never_fills_memory_past_the_cap(server: Server) -> None:
    """httpx decodes a whole network read at once, before a byte can be counted: a 64 KiB read of
    gzip is up to 64 MiB, and gzip on gzip (500 bytes on the wire for 200 MB) a thousand times that."""
    for n, layers in ((200_000_000, 2), (50_000_000, 1)):
        gzipped(n, layers)  # made before measuring: the server's work is not the client's memory
        tracemalloc.start()
        try:
            with pytest.raises(HTTPRequestError) as caught:
                request(method="GET", url=server.url(f"/gzip-layers?n={n}&layers={layers}"), max_response_bytes=100_000)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 8 * 1024 * 1024, (layers, peak)
        assert caught.value.transient is False
    # one layer within the cap is decoded as ever
    assert request(method="GET", url=server.url("/gzip-layers?n=90000&layers=1"),
                   max_response_bytes=100_000).body_bytes == b"\0" * 90_000


@pytest.mark.parametrize(("case", "body"), [
    ("gzip-members", b"one member, then another"),  # RFC 1952 §2.2: a gzip file is a series of members
    ("gzip-trailing", b"one member"),  # bytes after the last member that begin none: ignored, as gzip(1) does
    ("deflate-raw", b"deflate without its zlib header"),
    ("deflate-zlib", b"deflate with its zlib header"),
])
def test_every_gzip_member_and_either_deflate_is_decoded_whole(server: Server, case: str, body: bytes) -> None:
    assert request(method="GET", url=server.url(f"/encoded?as={case}")).body_bytes == body


@pytest.mark.parametrize("case", ["gzip-members", "gzip-trailing", "deflate-raw", "deflate-zlib"])
def test_the_decoder_reads_the_same_body_however_the_network_splits_it(case: str) -> None:
    """Reads of any size, down to one byte: a member's end, the next one's magic, or deflate's
    two-byte wrapping split across reads."""
    from workers.http.body import _inflated

    encoding, body = ENCODED[case]
    whole = b"".join(_inflated(iter([body]), encoding, lambda: 1 << 20, "u"))
    for size in range(1, len(body) + 1):
        reads = (body[i:i + size] for i in range(0, len(body), size))
        assert b"".join(_inflated(reads, encoding, lambda: 1 << 20, "u")) == whole, size


@pytest.mark.parametrize("case", ["gzip-truncated", "deflate-truncated"])
def test_a_body_cut_before_its_compressed_end_is_refused_not_taken_as_whole(server: Server, case: str) -> None:
    with pytest.raises(HTTPRequestError) as caught:
        request(method="GET", url=server.url(f"/encoded?as={case}"))
    assert caught.value.extra["kind"] == "DecodingError" and "truncated" in caught.value.message
    assert caught.value.transient is False


def test_slow_server_times_out_as_transient(server: Server) -> None:
    started = time.monotonic()
    with pytest.raises(HTTPRequestError) as caught:
        request(method="GET", url=server.url("/slow?s=3"), timeout_s=0.3)
    assert time.monotonic() - started < 2
    assert caught.value.code == "HTTPRequestError" and caught.value.extra["transient"] is True
    assert caught.value.transient


def test_timeout_is_total_not_per_read(server: Server) -> None:
    started = time.monotonic()  # each byte arrives well within any read timeout; the whole does not
    with pytest.raises(HTTPRequestError) as caught:
        request(method="GET", url=server.url("/drip"), timeout_s=0.5)
    assert time.monotonic() - started < 1.5 and caught.value.transient


def test_a_remote_reading_the_body_slowly_cannot_stretch_the_request_past_its_deadline(settings: Any) -> None:
    """httpcore writes a body in one call whose every send got the call's whole timeout again: a
    remote reading 1 MiB each 0.8 s held a request with a 1 s deadline 7 s (16 MiB at 30 s, minutes
    of a shared worker). Each send gets the time the request has left; the body counts as sent."""
    port, bursts = burst_reader(burst=1024 * 1024, every=0.8)
    settings.AOB_HTTP_ALLOWLIST = [f"127.0.0.1:{port}"]
    started = time.monotonic()
    with pytest.raises(HTTPRequestError) as caught:
        request(method="POST", url=f"http://127.0.0.1:{port}/upload", content=b"x" * 12_000_000, timeout_s=1)
    elapsed = time.monotonic() - started
    assert elapsed < 2.5, f"a request with a 1 s deadline took {elapsed:.1f} s writing its body (bursts at {bursts})"
    assert caught.value.extra["kind"] == "timeout" and caught.value.extra["sent"] is True


def test_a_caller_may_lower_the_operator_s_timeout_never_raise_it(server: Server, settings: Any) -> None:
    """An http node may ask for up to 600 s (its schema), an agent's tool call for what it likes:
    past ``AOB_HTTP_TIMEOUT_S`` a server that drips one byte at a time held a worker that long."""
    settings.AOB_HTTP_TIMEOUT_S = 0.5
    started = time.monotonic()
    with pytest.raises(HTTPRequestError) as caught:
        request(method="GET", url=server.url("/drip"), timeout_s=600)
    assert time.monotonic() - started < 1.5 and caught.value.transient


def test_a_lookup_that_never_answers_ends_at_the_request_deadline() -> None:
    """A name whose server never answers (anyone can register one) holds the request no longer than
    its deadline: the system resolver's own timeout is attempts × servers × 5 s."""
    answered = threading.Event()

    def silent_name_server(host: str, port: int) -> list[str]:
        answered.wait(5)  # the stand-in for a name server that does not answer
        return ["203.0.113.9"]

    started = time.monotonic()
    try:
        with pytest.raises(HTTPRequestError) as caught:
            request(method="GET", url="http://never-answers.example/", timeout_s=0.4, resolver=silent_name_server)
        assert time.monotonic() - started < 1.5
        assert caught.value.transient and "looking up 'never-answers.example'" in caught.value.message
    finally:
        answered.set()


def test_lookups_left_behind_are_bounded_per_owner_and_past_the_bound_a_request_fails_at_once() -> None:
    """Each request to a silent name ends at its deadline but leaves its lookup thread behind: an
    agent's loop of them would leave one per request. Past ``MAX_PENDING_LOOKUPS`` of one owner's a
    request of that owner fails at once saying why; another owner's lookups are made as before;
    once the name server answers, the first owner's are made again."""
    answered = threading.Event()

    def silent_name_server(host: str, port: int) -> list[str]:
        answered.wait(10)
        raise OSError("no answer")

    def lookup_threads() -> int:
        return sum(t.name == "aob-http-lookup" for t in threading.enumerate())

    # long enough for the request to reach its lookup on a loaded machine (at 0.05 s the deadline
    # passed before it, in one fresh clone's run: "request deadline passed")
    def as_owner(owner: str, url: str, timeout_s: float = 0.3) -> HTTPRequestError:
        structlog.contextvars.bind_contextvars(owner_id=owner)  # as execution.claim binds it
        try:
            with pytest.raises(HTTPRequestError) as caught:
                request(method="GET", url=url, timeout_s=timeout_s, resolver=silent_name_server)
            return caught.value
        finally:
            structlog.contextvars.unbind_contextvars("owner_id")

    # An earlier test's lookup may still be ending (its name server answered in its teardown).
    wait_until(lambda: lookup_threads() == 0, timeout=15)
    try:
        for i in range(client_module.MAX_PENDING_LOOKUPS):
            assert "looking up" in as_owner("alice", f"http://silent-{i}.example/").message
        assert lookup_threads() == client_module.MAX_PENDING_LOOKUPS
        started = time.monotonic()
        refused = as_owner("alice", "http://one-more.example/", timeout_s=5)
        assert time.monotonic() - started < 1  # not the request's 5 s deadline
        assert refused.transient and "of this owner's requests are still unanswered" in refused.message
        other = as_owner("bob", "http://bobs.example/")  # another owner's lookup is made
        assert "looking up 'bobs.example'" in other.message and "unanswered" not in other.message
    finally:
        answered.set()
    wait_until(lambda: lookup_threads() == 0, timeout=5)
    answered.clear()
    try:
        again = as_owner("alice", "http://silent-again.example/")  # a lookup is made again
        assert "looking up" in again.message and "unanswered" not in again.message
    finally:
        answered.set()


def test_connection_refused_is_transient(settings: Any) -> None:
    port = free_port()
    settings.AOB_HTTP_ALLOWLIST = [f"127.0.0.1:{port}"]
    with pytest.raises(HTTPRequestError) as caught:
        request(method="GET", url=f"http://127.0.0.1:{port}/")
    assert caught.value.extra["transient"] is True and caught.value.extra["url"] == f"http://127.0.0.1:{port}/"


def test_json_and_content_together_are_refused(server: Server) -> None:
    with pytest.raises(Exception, match="either json or content"):
        request(method="POST", url=server.url(), json={}, content=b"x")
    assert server.hits == []


# --- TLS: the socket goes to the checked address, the certificate is verified against the name ---


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA and a certificate for ``tls.test`` signed by it."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to mint a test certificate")
    work = tmp_path_factory.mktemp("tls")
    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=AOB test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=work)
    _openssl("req", *curve, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=tls.test", cwd=work)
    (work / "leaf.ext").write_text("subjectAltName=DNS:tls.test\nbasicConstraints=CA:FALSE\n"
                                   "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "leaf.pem", "-days", "2", "-extfile", "leaf.ext", cwd=work)
    return work


@pytest.fixture
def tls_server(start_server: Callable[..., Server], tls_ca: Path, settings: Any) -> tuple[Server, list[str]]:
    """A loopback HTTPS server for ``tls.test``; records the SNI names clients send."""
    names: list[str] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_ca / "leaf.pem", tls_ca / "leaf.key")
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    srv = start_server(tls=context)
    settings.AOB_HTTP_ALLOWLIST = [f"127.0.0.1:{srv.port}"]
    return srv, names


def test_https_verifies_the_name_and_sends_sni(
        tls_server: tuple[Server, list[str]], tls_ca: Path, connects: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    srv, names = tls_server
    monkeypatch.setattr(certifi, "where", lambda: str(tls_ca / "ca.pem"))  # trust the test CA only
    result = request(method="GET", url=f"https://tls.test:{srv.port}/echo", resolver=lambda h, p: ["127.0.0.1"])
    assert result.status_code == 200 and result.json_body["headers"]["host"] == f"tls.test:{srv.port}"
    assert names == ["tls.test"] and connects == [f"127.0.0.1:{srv.port}"]


def test_https_refuses_a_certificate_for_another_name(
        tls_server: tuple[Server, list[str]], tls_ca: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    srv, _ = tls_server
    monkeypatch.setattr(certifi, "where", lambda: str(tls_ca / "ca.pem"))
    with pytest.raises(HTTPRequestError, match="(?i)certificate|hostname"):
        request(method="GET", url=f"https://other.test:{srv.port}/echo", resolver=lambda h, p: ["127.0.0.1"])
    assert srv.hits == []


def test_https_refuses_an_untrusted_certificate(tls_server: tuple[Server, list[str]]) -> None:
    srv, _ = tls_server
    with pytest.raises(HTTPRequestError, match="(?i)certificate") as caught:
        request(method="GET", url=f"https://tls.test:{srv.port}/echo", resolver=lambda h, p: ["127.0.0.1"])
    assert srv.hits == [] and caught.value.extra["transient"] is False


@pytest.mark.parametrize(("value", "seconds"), [
    ("120", 120.0), (" 3 ", 3.0), ("Wed, 02 Dec 2026 10:00:30 GMT", 30.0), ("Wed, 02 Dec 2026 09:59:00 GMT", 0.0),
    ("soon", None), ("-5", None), ("1.5", None), ("", None), ("\u00b2", None),  # a digit, not an ASCII one
    ("9" * 400, None), ("99999", 3600.0), ("Fri, 31 Dec 9999 23:59:59 GMT", 3600.0),  # at most an hour
])
def test_retry_after_is_read_as_seconds_or_an_http_date(value: str, seconds: float | None) -> None:
    from datetime import UTC, datetime

    from workers.http.idempotency import retry_after_seconds

    now = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)
    assert retry_after_seconds({"retry-after": value}, now) == seconds
    assert retry_after_seconds({"Retry-After": value}, now) == seconds
    assert retry_after_seconds({}, now) is None
