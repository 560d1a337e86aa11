"""The LLM client: the ``openai`` SDK against OpenAI or any OpenAI-compatible server.

One pooled client per process; one request per ``chat`` (the agent loop retries what is transient,
each try reserved and charged on its own: ``agents.loop._call``); every call's usage, latency and cost
measured. A request carries an ``Idempotency-Key`` stable across tries and attempts of one turn, so
a provider (or a proxy) can recognise a repeat; ``made`` says which failed requests were made all
the same, and so are charged.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpcore2
import httpx
import httpx2  # the openai SDK's HTTP client
import openai
from django.conf import settings

from agents.exceptions import LLMNotConfigured, ModelNotPriced
from aob_project.exceptions import AobError
from workers.http.body import ACCEPT_ENCODING, body_capped
from workers.http.client import charset
from workers.http.deadline import Clamp
from workers.http.exceptions import HTTPRequestError, ResponseTooLarge

TRANSIENT = (openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError, openai.InternalServerError)
# a connection that never opened: the request was not sent (the SDK's HTTP client is httpx2's)
UNSENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx.ConnectError, httpx.ConnectTimeout)

_clients: dict[tuple[int, str, str], openai.OpenAI] = {}
_lock = threading.Lock()


def configured() -> bool:
    return bool(settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL)


def client() -> openai.OpenAI:
    if not configured():
        raise LLMNotConfigured("no LLM configured: set OPENAI_API_KEY (and OPENAI_BASE_URL for a compatible server)")
    key = (os.getpid(), settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL)
    with _lock:
        if key not in _clients:
            # the operator's endpoint, as configured: no proxy from the environment, no redirect
            # followed elsewhere (the SDK's own client did both), one deadline for each call
            transport = Deadline(settings.AOB_LLM_TIMEOUT_S)
            _clients[key] = openai.OpenAI(api_key=settings.OPENAI_API_KEY or "not-needed",
                                          base_url=settings.OPENAI_BASE_URL or None,
                                          timeout=settings.AOB_LLM_TIMEOUT_S, max_retries=0,
                                          http_client=openai.DefaultHttpxClient(trust_env=False, transport=transport,
                                                                                follow_redirects=False))
        return _clients[key]


_CLAMP = Clamp(httpcore2, "aob_llm_deadline", "the call passed its deadline (AOB_LLM_TIMEOUT_S)")
_deadline = _CLAMP.var
_time_left = _CLAMP.time_left
_DeadlineStream = _CLAMP.stream


class Deadline(httpx2.HTTPTransport):
    """A transport whose every request ends within ``total_s`` of its start: httpx's timeouts are
    per operation, so a provider (or a gateway before it) dripping its answer a byte at a time held
    a call, and its worker, until the node's own timeout (a red-team helper's finding). Every socket
    operation of a call, connect, TLS, the request, the head of the answer (interim ``100 Continue``
    answers included) and its body, gets at most the time the call has left; past it the read
    raises ``ReadTimeout``, which the SDK reports as a timeout."""

    def __init__(self, total_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.total_s = total_s
        pool = getattr(self, "_pool", None)
        if not isinstance(pool, httpcore2.ConnectionPool) or not hasattr(pool, "_network_backend"):
            raise RuntimeError("httpx2/httpcore2 changed: cannot install the LLM call's deadline")
        pool._network_backend = _DeadlineBackend(pool._network_backend)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        # set, not reset on return: the SDK reads the body after this returns, and the next call sets its own
        _deadline.set(time.monotonic() + self.total_s)
        request.headers["Accept-Encoding"] = ACCEPT_ENCODING  # what the answer is decoded from within its bound
        response = super().handle_request(request)
        # decoded here (body_capped), so httpx2, which would decode whatever it is sent, is handed it as it is;
        # and read as text (the SDK reads an error's body so) by its charset only if that decodes in linear time
        declared = response.charset_encoding
        headers = []
        for name, value in response.headers.raw:
            if name.lower() in (b"content-encoding", b"content-length"):
                continue
            if name.lower() == b"content-type" and declared is not None:
                value = value.split(b";")[0] + b"; charset=" + charset(declared).encode()
            headers.append((name, value))
        return httpx2.Response(response.status_code, headers=headers, extensions=response.extensions,
                               stream=_Capped(response, str(request.url)))


class _Capped(httpx2.SyncByteStream):
    """The answer's body within ``AOB_LLM_MAX_RESPONSE_BYTES`` of decoded bytes: the SDK reads an
    answer whole, so a provider's (or a gateway's) answer of any size, or a gzip bomb, went into the
    agent worker's memory for as long as the deadline let it (a red-team helper's finding)."""

    def __init__(self, response: httpx2.Response, url: str) -> None:
        self.response, self.url = response, url

    def __iter__(self) -> Any:
        cap = settings.AOB_LLM_MAX_RESPONSE_BYTES
        try:
            yield from body_capped(self.response.headers, self.response.stream, cap=cap, url=self.url)
        except ResponseTooLarge as exc:
            raise ResponseTooLarge(f"the model's answer passed AOB_LLM_MAX_RESPONSE_BYTES ({cap} bytes)",
                                   extra=exc.extra) from None

    def close(self) -> None:
        self.response.close()


class _DeadlineBackend(httpcore2.NetworkBackend):
    def __init__(self, inner: httpcore2.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore2.NetworkStream:
        return _DeadlineStream(self._inner.connect_tcp(host, port, _time_left(timeout, httpcore2.ConnectTimeout),
                                                       local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore2.NetworkStream:
        return _DeadlineStream(self._inner.connect_unix_socket(path, _time_left(timeout, httpcore2.ConnectTimeout),
                                                               socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


@dataclass
class Call:
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    latency_ms: int = 0
    cost_usd: float = 0.0
    attempts: int = 1
    errors: list[str] = field(default_factory=list)
    usage_unknown: bool = False  # the answer counted no usage it could have: charged at its reservation's worst case

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cached_tokens": self.cached_tokens, "latency_ms": self.latency_ms,
                "cost_usd": round(self.cost_usd, 8), "attempts": self.attempts, "errors": self.errors}


def price(model: str) -> dict[str, float]:
    """The model's prices (USD per 1M tokens). A model without one is refused before any call: a
    call must never count as free."""
    if not isinstance(model, str):  # a reference ($inputs.model) may resolve to anything
        raise ModelNotPriced(f"a model is named by a string, not a {type(model).__name__}",
                             extra={"field": "model", "rule": "model_unpriced", "transient": False})
    prices = settings.AOB_LLM_PRICES.get(model)
    if not isinstance(prices, dict) or not isinstance(prices.get("input"), int | float) or not isinstance(
            prices.get("output"), int | float):
        raise ModelNotPriced(f"model {model!r} has no price in AOB_LLM_PRICES; calls to it are refused",
                             extra={"model": model, "rule": "model_unpriced", "transient": False})
    return prices


def cost(model: str, prompt: int, cached: int, completion: int) -> float:
    prices = price(model)
    uncached = max(prompt - cached, 0)
    return (uncached * prices.get("input", 0) + cached * prices.get("cached_input", prices.get("input", 0))
            + completion * prices.get("output", 0)) / 1_000_000


def made(exc: BaseException) -> bool:
    """Whether a request that ended in ``exc`` may have reached the provider, which then runs and
    bills it: yes unless the provider answered with an error (it refused the call; but a gateway's
    502 or 504, which may follow a call passed on), the connection never opened, or AOB refused
    before sending (a model without a price, no LLM configured). An answer refused for its size or
    encoding (``HTTPRequestError``) came, so the call was made. A
    timeout, a connection cut mid-answer, or the node cut off in the middle (its ``timeout_ms``, a
    lost lease, a cancel) leave the outcome unknown: made."""
    if isinstance(exc, openai.APIStatusError):  # a proxy's 502 or 504 may come after it passed the call on
        return exc.status_code in (502, 504)
    if isinstance(exc, HTTPRequestError):  # its answer came, past its size bound or undecodable
        return True
    if isinstance(exc, AobError):
        return False
    return not (isinstance(exc, openai.APIConnectionError) and isinstance(exc.__cause__, UNSENT))


def chat(*, model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
         max_tokens: int | None = None, prompt_bound: int | None = None,
         key: str | None = None) -> tuple[Any, Call]:
    """One request (no retry here: each try is reserved and charged by the caller). ``key``: the
    request's ``Idempotency-Key``; ``prompt_bound``: the prompt tokens the call cannot exceed (its
    reservation's, ``budget.worst_case``), as ``max_tokens`` bounds its completion."""
    call = Call(model=model)
    kwargs: dict[str, Any] = {"model": model, "messages": messages}
    if tools:
        kwargs["tools"] = tools
    if max_tokens:
        kwargs["max_tokens"] = max_tokens
    if key:
        kwargs["extra_headers"] = {"Idempotency-Key": key}
    started = time.monotonic()
    response = client().chat.completions.create(**kwargs)
    call.latency_ms = int((time.monotonic() - started) * 1000)
    counts = _counts(getattr(response, "usage", None), prompt_bound=prompt_bound, max_tokens=max_tokens)
    if counts is None:
        call.usage_unknown = True  # the caller charges it at its worst case (agents.loop._call)
    else:
        call.prompt_tokens, call.completion_tokens, call.cached_tokens = counts
    call.cost_usd = cost(model, call.prompt_tokens, call.cached_tokens, call.completion_tokens)
    return response, call


def _counts(usage: Any, *, prompt_bound: int | None, max_tokens: int | None) -> tuple[int, int, int] | None:
    """The answer's prompt, completion and cached token counts, or None where it counts nothing a
    call can be charged by: no ``usage`` (which made the call free), a count that is no
    non-negative integer (a negative one took spend off the run and the owner's day), or one past
    what the call can use: its ``prompt_bound`` or ``max_tokens``, cached tokens past its prompt's
    (``completion_tokens: 10**9`` of a 100-token call charged the owner's day $600, and a count past
    a float's range failed the node in ``cost``, after the call was made)."""
    if usage is None:
        return None
    details = getattr(usage, "prompt_tokens_details", None)
    counts = (getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None),
              (getattr(details, "cached_tokens", None) or 0) if details is not None else 0)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        return None
    prompt, completion, cached = counts
    if (prompt_bound is not None and prompt > prompt_bound) or (max_tokens and completion > max_tokens) or cached > prompt:
        return None
    return counts
