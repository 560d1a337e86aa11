"""The one outbound HTTP client. HTTP nodes and agent tools send every request through :func:`request`.

Why it is built this way:

- The SSRF check and the connection share one DNS answer. httpcore asks its *network backend*
  for every new TCP connection, so :class:`_GuardedBackend` resolves there once, judges every
  answer (:func:`workers.http.ssrf.resolve_checked`) and connects to one of those addresses. The
  hostname still drives the ``Host`` header, TLS SNI and certificate verification, so HTTPS stays
  verified against the name while the socket goes to the checked address. Redirect hops and
  pooled connections are covered by the same path: the pool only ever holds checked sockets.
- Redirects are followed here, not by httpx, so each hop's URL is judged by the full policy
  before it is requested, and credentials are dropped when a hop changes origin.
- One pooled ``httpx.Client`` per process (keyed on the pid, so a forked Celery worker never
  shares its parent's sockets) and per policy snapshot, so a settings change gets a fresh pool.
- No cookie jar: httpx's client keeps the cookies every answer sets and sends them with later
  requests, and this one client serves every owner's requests in the process, so a session a
  remote gave one owner's request went with another owner's. A request carries only the ``Cookie``
  header its caller set.
- ``trust_env=False``: an ``HTTP_PROXY`` in the environment would send requests to a proxy that
  resolves names itself, bypassing every check.
- One deadline for the whole request (all hops, lookup, connect, send, body): each socket
  operation gets at most the time left, so a server dripping a byte at a time cannot stretch it,
  and the lookup is waited for at most that long (:func:`_lookup_within`).
"""

from __future__ import annotations

import codecs
import http.cookiejar
import json as jsonlib
import logging
import math
import os
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus, urlsplit

import httpcore
import httpx
import idna

from aob_project.context import current_owner_id
from aob_project.exceptions import AobError, ValidationFailed
from workers.http.body import ACCEPT_ENCODING, read_capped
from workers.http.deadline import Clamp
from workers.http.exceptions import HTTPRequestError, SSRFBlocked, TooManyRedirects
from workers.http.headers import TOKEN, check_headers
from workers.http.ssrf import (
    HttpPolicy,
    Resolver,
    check_url_static,
    default_resolver,
    policy_from_settings,
    resolve_checked,
)
from workflows import egress

logger = logging.getLogger(__name__)

USER_AGENT = "aob-http/1.0"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
_BODY_HEADERS = frozenset({"content-type", "content-length", "transfer-encoding", "content-encoding"})

_CLAMP = Clamp(httpcore, "aob_http_deadline", "request deadline passed")  # workers/http/deadline.py
_deadline = _CLAMP.var
_time_left = _CLAMP.time_left
_DeadlineStream = _CLAMP.stream


@dataclass(frozen=True)
class HttpResult:
    """A completed response. Non-2xx statuses are results, not errors: the caller decides."""

    status_code: int
    headers: dict[str, str]
    body_bytes: bytes
    text: str
    json_body: Any
    url: str
    method: str
    duration_ms: int
    redirect_urls: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300


# --- the guarded network backend -----------------------------------------------------------------


MAX_PENDING_LOOKUPS = 16  # lookup threads alive at once for one owner's requests in one process
MAX_PENDING_LOOKUPS_ALL = 256  # and for every request of the process together
_pending: dict[str, int] = {}  # the owner (``current_owner_id``; "" outside a node) → its lookups alive
_pending_lock = threading.Lock()


def _take_lookup(party: str, host: str) -> None:
    """Count a lookup thread for ``party``, or refuse it (a transient connect error saying why)."""
    with _pending_lock:
        mine, alive = _pending.get(party, 0), sum(_pending.values())
        full = (("of this owner's requests", mine) if mine >= MAX_PENDING_LOOKUPS else
                ("in this process", alive) if alive >= MAX_PENDING_LOOKUPS_ALL else None)
        if full is not None:
            raise httpcore.ConnectError(f"not looking up {host!r}: {full[1]} name lookups {full[0]} are still "
                                        "unanswered (a name server that does not answer); try again later")
        _pending[party] = mine + 1


def _give_lookup(party: str) -> None:
    with _pending_lock:
        left = _pending[party] - 1
        if left:
            _pending[party] = left
        else:
            del _pending[party]


def _lookup_within(resolver: Resolver, seconds: float | None) -> Resolver:
    """``resolver`` waited for at most ``seconds``, the request's time left.

    ``getaddrinfo`` cannot be interrupted: a name whose server never answers (one any user or agent
    can register) would hold the worker for the system resolver's own timeout, attempts × servers ×
    5 s, past any deadline. The lookup runs in a thread of its own, so no lookup waits behind
    another; one left behind ends at the resolver's timeout, and nothing waits for it. At most
    ``MAX_PENDING_LOOKUPS`` of those threads live for one owner's requests in a process (the owner
    of the node being run, ``aob_project.context.current_owner_id``), and ``MAX_PENDING_LOOKUPS_ALL``
    for all: an agent's loop of requests to such names, each ending at a short deadline, would
    otherwise leave a thread behind for every one, and one owner's loop must not use up the others'
    lookups. Past either a request fails at once, as a transient connect error saying why.
    """
    if seconds is None:
        return resolver

    def lookup(host: str, port: int) -> list[str]:
        party = current_owner_id()
        _take_lookup(party, host)
        outcome: list[Any] = []
        done = threading.Event()

        def resolve() -> None:
            try:
                outcome.append(list(resolver(host, port)))
            except BaseException as exc:  # noqa: BLE001 - handed to the request's thread, raised there
                outcome.append(exc)
            finally:
                _give_lookup(party)
                done.set()

        try:
            threading.Thread(target=resolve, name="aob-http-lookup", daemon=True).start()
        except BaseException:
            _give_lookup(party)
            raise
        if not done.wait(seconds):
            raise httpcore.ConnectTimeout(f"looking up {host!r} took longer than the request's time left")
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    return lookup


class _GuardedBackend(httpcore.NetworkBackend):
    """Resolves once, judges every answer, connects only to a judged address."""

    def __init__(self, *, policy: HttpPolicy, resolver: Resolver | None) -> None:
        self._policy = policy
        self._resolver = resolver
        self._sockets = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None, socket_options: Any = None) -> httpcore.NetworkStream:
        lookup = _lookup_within(self._resolver or default_resolver, _time_left(timeout, httpcore.ConnectTimeout))
        addresses = resolve_checked(host=host, port=port, policy=self._policy, resolver=lookup)
        failure: Exception | None = None
        for address in addresses:  # each one judged; an IP literal makes no lookup in the socket layer
            try:
                stream = self._sockets.connect_tcp(
                    address, port, timeout=_time_left(timeout, httpcore.ConnectTimeout),
                    local_address=local_address, socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            return _DeadlineStream(stream)
        raise failure or httpcore.ConnectError(f"no address to connect to for {host}")

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        raise SSRFBlocked("unix sockets are never reachable", rule="unix-socket")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _client_build(*, policy: HttpPolicy, resolver: Resolver | None) -> httpx.Client:
    transport = httpx.HTTPTransport(retries=0, trust_env=False,
                                    limits=httpx.Limits(max_connections=100, max_keepalive_connections=20))
    pool = getattr(transport, "_pool", None)
    if not isinstance(pool, httpcore.ConnectionPool) or not hasattr(pool, "_network_backend"):
        raise RuntimeError("httpx/httpcore changed: cannot install the SSRF-guarded network backend")
    pool._network_backend = _GuardedBackend(policy=policy, resolver=resolver)
    # timeout=None: the request's own deadline (the network backend's _time_left) bounds every
    # step; httpx's default 5 s per read would cut a slow but legitimate answer short.
    # a jar whose policy allows no domain: no answer's Set-Cookie is kept, none is added to a request
    no_cookies = http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return httpx.Client(transport=transport, follow_redirects=False, trust_env=False, timeout=None,  # noqa: S113
                        cookies=no_cookies, headers={"user-agent": USER_AGENT, "accept-encoding": ACCEPT_ENCODING})


_lock = threading.Lock()
_shared: tuple[int, HttpPolicy, httpx.Client] | None = None


def _client_shared(policy: HttpPolicy) -> httpx.Client:
    """The process's pooled client, rebuilt after a fork or a settings change."""
    global _shared
    with _lock:
        if _shared is not None and _shared[0] == os.getpid() and _shared[1] == policy:
            return _shared[2]
        if _shared is not None and _shared[0] == os.getpid():
            _shared[2].close()  # same process, new policy; a forked child must not close its parent's
        client = _client_build(policy=policy, resolver=None)
        _shared = (os.getpid(), policy, client)
        return client


def client_close() -> None:
    """Close this process's pooled client (tests, shutdown). The next request builds a new one."""
    global _shared
    with _lock:
        if _shared is not None and _shared[0] == os.getpid():
            _shared[2].close()
        _shared = None


# --- the request ---------------------------------------------------------------------------------


def _caller_headers(headers: dict[str, str] | None) -> dict[str, str]:
    """Caller headers as text; one that would retarget or desynchronize the request, or smuggle
    another (CR/LF), is refused by name, never silently dropped."""
    return check_headers(headers)


def _host_of(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:  # a URL the policy refused for being malformed
        return None


def _same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    return (a.scheme, a.raw_host, a.port) == (b.scheme, b.raw_host, b.port)


def _is_tls_failure(exc: BaseException) -> bool:
    """A certificate or handshake refusal: retrying will not change the server's certificate."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# Failures after the request went out (some or all of it): whether the remote acted on it is unknown.
# A connection never made (ConnectError, ConnectTimeout, PoolTimeout) sent nothing.
AFTER_SENDING = (httpx.WriteError, httpx.WriteTimeout, httpx.ReadError, httpx.ReadTimeout, httpx.RemoteProtocolError)


def _request_error(exc: httpx.HTTPError, url: str) -> HTTPRequestError:
    """The failure of one step of a request; ``sent`` once this step's bytes went out (``_send``
    marks every failure after an earlier step was answered: the remote had the request, and may
    have acted on it, as a 303 after a POST says)."""
    sent = isinstance(exc, AFTER_SENDING)
    if isinstance(exc, httpx.TimeoutException):
        return HTTPRequestError(f"timed out: {exc}", extra={"url": url, "transient": True, "kind": "timeout",
                                                            "sent": sent})
    transient = isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError) and not _is_tls_failure(exc)
    return HTTPRequestError(f"{type(exc).__name__}: {exc}",
                            extra={"url": url, "transient": transient, "kind": type(exc).__name__, "sent": sent})


# The charsets a response is decoded by: the ones whose decoding is linear in the body (Unicode's,
# ASCII, the ISO 8859 and Windows code pages, the common multibyte ones). Python decodes some others
# in quadratic time: a 400 KB body declared ``charset=punycode`` took 8 s of CPU after its last byte
# arrived, past the request's deadline, and a notification target could do it to the shared notify
# queue (a red-team helper's finding). Any other is read as UTF-8.
LINEAR_CHARSETS = re.compile(r"utf-(8|8-sig|16|16-le|16-be|32|32-le|32-be)|ascii|latin-1|iso8859-\d+|cp\d+|koi8-[ru]"
                             r"|mac-\w+|shift_jis(2004|x0213)?|euc_(jp|jis_2004|jisx0213|kr)|gb2312|gbk|gb18030|big5"
                             r"(hkscs)?|johab|tis-620")


def charset(name: str | None) -> str:
    """The codec a body is decoded by: the one it names, if linear (``LINEAR_CHARSETS``), else UTF-8."""
    try:
        codec = codecs.lookup(name or "utf-8").name
    except LookupError:  # an unknown charset name
        return "utf-8"
    return codec if LINEAR_CHARSETS.fullmatch(codec) else "utf-8"


def _result(response: httpx.Response, body: bytes, *, method: str, started: float,
            redirects: list[str]) -> HttpResult:
    text = body.decode(charset(response.charset_encoding), errors="replace")
    try:
        json_body = jsonlib.loads(text) if body.strip() else None
    except (ValueError, RecursionError):  # not JSON, or nested past the parser: the body is text
        json_body = None
    return HttpResult(
        status_code=response.status_code, headers=dict(response.headers.items()), body_bytes=body,
        text=text, json_body=json_body, url=str(response.request.url), method=method,
        duration_ms=round((time.monotonic() - started) * 1000), redirect_urls=tuple(redirects),
    )


def request(*, method: str, url: str, headers: dict[str, str] | None = None, params: dict[str, Any] | None = None,
            json: Any = None, content: str | bytes | None = None, timeout_s: float | None = None,
            max_response_bytes: int | None = None, follow_redirects: bool = True,
            max_redirects: int | None = None, resolver: Resolver | None = None) -> HttpResult:
    """Send one request through the SSRF policy and return the whole (capped) response.

    Raises :class:`SSRFBlocked` for a refused URL or redirect hop (nothing is sent to it),
    :class:`HTTPRequestError` for timeouts and transport failures (``transient`` set for
    timeouts and connection errors), :class:`ResponseTooLarge` past the cap, and
    :class:`TooManyRedirects`; each with ``extra["sent"]`` once the request went out (whether it
    took effect is then unknown), as it has once any hop was answered. ``resolver`` replaces DNS for this request only (tests, or a
    caller with its own resolver); such a request gets its own unpooled connection.
    """
    if json is not None and content is not None:
        raise ValidationFailed("send either json or content, not both")
    if not isinstance(method, str) or not TOKEN.match(method):  # httpcore raised TypeError past ASCII
        raise HTTPRequestError(f"method {str(method)[:40]!r} is not an HTTP token (RFC 9110)",
                               extra={"transient": False, "kind": "method"})
    policy = policy_from_settings()
    # A caller (a workflow's http node, an agent's tool call) may lower the operator's caps, never raise them.
    timeout = policy.timeout_s if timeout_s is None else min(float(timeout_s), policy.timeout_s)
    cap = policy.max_response_bytes if max_response_bytes is None else min(int(max_response_bytes),
                                                                            policy.max_response_bytes)
    hops = policy.max_redirects if max_redirects is None else min(int(max_redirects), policy.max_redirects)
    if not (timeout > 0 and math.isfinite(timeout)) or cap < 0 or hops < 0:
        raise ValidationFailed("timeout_s must be positive; max_response_bytes and max_redirects not negative")

    started = time.monotonic()
    client = _client_shared(policy) if resolver is None else _client_build(policy=policy, resolver=resolver)
    token = _deadline.set(started + timeout)
    try:
        return _send(client, policy=policy, method=method.upper(), url=url, headers=_caller_headers(headers),
                     params=params, json=json, content=content, cap=cap, hops=hops,
                     follow_redirects=follow_redirects, started=started)
    except SSRFBlocked as exc:
        # the host only: a URL can be a credential (a token in its query, a webhook's path)
        logger.warning("http.ssrf_blocked", extra={"rule": exc.rule, "host": _host_of(exc.extra.get("url") or url)})
        raise
    finally:
        _deadline.reset(token)
        if resolver is not None:
            client.close()


def _keep_secrets_home(headers: dict[str, str], body: dict[str, Any], target: httpx.URL) -> None:
    """A secret the request carries (``vault``: the executor's active ``SecretBox``) in a header
    other than the credential ones dropped above, in a body a 307/308 sends again, or in the
    location itself (a query a move keeps: ``return 301 https://new$request_uri`` sent a
    ``query``'s secret on), was meant for one origin: a redirect to another is refused, not
    followed (an open redirect, or a location an agent's output chose, would otherwise receive it
    in plain text)."""
    from vault.references import active_box

    box = active_box()
    if box is None or not box.used:
        return
    content = body.get("content")
    location = str(target)
    sent = [*headers.values(), content.decode(errors="replace") if isinstance(content, bytes) else content or "",
            location, unquote_plus(location)]  # as the remote wrote it, and read: any escaping of its own
    if body.get("json") is not None:
        sent.append(jsonlib.dumps(body["json"], ensure_ascii=False))
    carried = box.carried(sent)  # in any form the box masks: as it is, URL-encoded, in a JSON string
    if carried:
        raise SSRFBlocked(f"a redirect to another origin ({target.scheme}://{target.netloc.decode()}) from a request "
                          f"that carries secrets ({', '.join(sorted(carried))}) is not followed",
                          rule="secret-redirect", url=str(target))


def _judged(url: str, policy: HttpPolicy) -> None:
    """A hop's URL by the SSRF policy's rules that need no DNS, then by the run's ``allowed_hosts``
    (``workflows.egress``: the node's, set around its executor), for the first request and every
    redirect: an allowed host's redirect elsewhere is refused, not followed."""
    target = check_url_static(url, policy=policy)
    refused_by = egress.refusing(target.host, egress.current())
    if refused_by is not None:
        raise SSRFBlocked(egress.refusal(target.host, refused_by), rule=egress.RULE, url=url, host=target.host)


def _send(client: httpx.Client, *, policy: HttpPolicy, method: str, url: str, headers: dict[str, str],
          params: dict[str, Any] | None, json: Any, content: str | bytes | None, cap: int, hops: int,
          follow_redirects: bool, started: float) -> HttpResult:
    redirects: list[str] = []
    current = url
    body: dict[str, Any] = {"json": json} if json is not None else {"content": content}
    answered = False  # a response arrived: whatever refuses or fails after it, the request was sent
    try:
        while True:
            _judged(current, policy)
            try:
                if params:  # merged into the URL's own query (httpx would replace it)
                    current = str(httpx.URL(current).copy_merge_params(params))
                outgoing = client.build_request(method, current, headers=headers, **body)
            except httpx.InvalidURL as exc:
                raise SSRFBlocked(f"invalid URL: {exc}", rule="invalid-url", url=current) from exc
            except (TypeError, ValueError) as exc:
                # what httpx cannot encode, before a byte is sent: a lone surrogate in a body or a query
                # (UnicodeEncodeError), NaN in a JSON body, a method outside ASCII. An agent's tool call
                # or a run's input can carry each; it is this request's failure, never its executor's
                raise HTTPRequestError(f"the request cannot be encoded: {type(exc).__name__}: {exc}"[:500],
                                       extra={"url": current, "transient": False, "kind": "encoding"}) from exc
            sent_url = str(outgoing.url)
            _judged(sent_url, policy)  # the exact URL httpx will send (params merged)
            try:
                response = client.send(outgoing, stream=True)
            except SSRFBlocked as exc:  # refused at connect time, after resolution
                exc.extra.setdefault("url", sent_url)
                raise
            except httpx.HTTPError as exc:
                raise _request_error(exc, sent_url) from exc
            except (httpx.InvalidURL, idna.IDNAError) as exc:
                # httpx builds the next request of every 3xx, followed or not, and some Locations it
                # cannot read (``http:x``, an empty IDNA label) came out as these, past its own
                # RemoteProtocolError for the others: a page an agent fetched ended the agent node
                raise _request_error(httpx.RemoteProtocolError(f"Invalid URL in location header: {exc}"),
                                     sent_url) from exc
            answered = True
            try:
                location = response.headers.get("location")
                if not (follow_redirects and response.status_code in REDIRECT_STATUSES and location):
                    try:
                        data = read_capped(response, cap=cap, url=sent_url)
                    except httpx.HTTPError as exc:
                        raise _request_error(exc, sent_url) from exc
                    result = _result(response, data, method=method, started=started, redirects=redirects)
                    logger.info("http.request", extra={"method": method, "host": outgoing.url.host,
                                                       "status": result.status_code,
                                                       "duration_ms": result.duration_ms})
                    return result
            finally:
                response.close()
            if len(redirects) >= hops:
                raise TooManyRedirects(f"more than {hops} redirects", extra={"url": url, "transient": False,
                                                                             "redirects": redirects})
            try:
                target = outgoing.url.join(location)
            except httpx.InvalidURL as exc:
                raise SSRFBlocked(f"invalid redirect location: {exc}", rule="invalid-url", url=location) from exc
            cross_origin = not _same_origin(outgoing.url, target)
            if cross_origin:
                headers = {k: v for k, v in headers.items() if k.lower() not in _CREDENTIAL_HEADERS}
            if (response.status_code == 303 and method != "HEAD") or (
                    response.status_code in (301, 302) and method == "POST"):
                method, body = "GET", {}
                headers = {k: v for k, v in headers.items() if k.lower() not in _BODY_HEADERS}
            if cross_origin:
                _keep_secrets_home(headers, body, target)
            current, params = str(target), None
            redirects.append(current)
    except AobError as exc:  # a later hop's refusal (an SSRF rule, allowed_hosts, a secret), failure or cap
        if answered:
            exc.extra["sent"] = True
        raise
