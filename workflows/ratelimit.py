"""Rate limits that know how heavy a workflow is.

A sliding-window log per key in a Redis sorted set, checked and recorded by one Lua script (one
round trip, atomic across every layer of the check): all layers must have room, and only then is
the call recorded in each — a rejected call is never counted. Unlike the fixed window of the
system we replace, a sliding window cannot be doubled at a window's edge.

Layers: a global limit on state-changing API requests by known users (a DRF throttle, after
authentication, so anonymous traffic cannot spend it); each user's reads of a stored value whole
(``begin_whole_read``: the answers that no byte budget bounds), per minute and in flight (a held
layer: ``release`` gives a call's place back when it ends); requests without a valid identity per
client address; login attempts per address and per username; and on run creation a per-user
limit plus a per-user tier by the number of agent nodes in the version to run (0 simple, 1–2
standard, ≥3 heavy), enforced in ``run_start`` so every surface is limited alike. An API request
that starts a run has its global write layer checked in ``run_start``'s call, ahead of the run's
own layers (one round trip, the same order as two calls): such a request spends the global budget
when it reaches the start, so one refused earlier for its input, or by a run limit, or answered
from its idempotency key changes nothing and spends nothing.

Redis unreachable: run creation fails closed with 503 (we cannot know it is within limits);
other checks fail open, logged, since they do not start work.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import time
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings

from aob_project import redis_client
from aob_project.exceptions import AobError, ServiceUnavailable
from aob_project.metrics import RATE_LIMITED
from workflows import registry
from workflows.definition.ir import IR

logger = logging.getLogger(__name__)

WINDOW_S = 60
# A layer is a sliding-window log: a call is one entry, dropped once it is its window old. A held
# layer's entry is also taken out when its call ends (``release``): the entries left are the calls
# in flight, and its window only bounds how long one whose process died holds its place. Entries
# are timed by Redis's clock: every web process and worker counts in the same windows, and the
# hosts' clocks may disagree (before, calls counted on a host two minutes behind were out of the
# window at once for a host on time, and those counted on one ahead held it two minutes too long).
SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local member = ARGV[1]
local n = #KEYS
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[1 + n + i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  if count >= tonumber(ARGV[1 + i]) then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    local retry = window
    if oldest[2] then retry = window - (now - tonumber(oldest[2])) end
    return {i, count, retry}
  end
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, tonumber(ARGV[1 + n + i]))
end
return {0, 0, 0}
"""
# How long a whole read's place is held at most, past the deadline of its answer's sending
# (``AOB_WHOLE_READ_SEND_S``, at which a slow client is cut off): a minute to read and build it. Past
# it, one whose web process died is forgotten.
WHOLE_READ_BUILD_S = 60


class RateLimited(AobError):
    code = "rate_limit_exceeded"
    status = 429


@dataclass(frozen=True)
class Layer:
    key: str
    limit: int
    code: str
    label: str
    tier: str | None = None
    window_s: int = WINDOW_S
    held: bool = False  # a place per call in flight (``release``), not a count per window


TIMEOUT_S = 1  # a request waits at most this on Redis (``redis_client``)


def entry() -> str:
    """A new call's entry in the layers' logs (unique; its time first)."""
    return f"{int(time.time() * 1000)}-{uuid.uuid4().hex}"


def check(layers: list[Layer], member: str | None = None) -> str | None:
    """Record one call in every layer, or raise RateLimited naming the first full one. Returns the
    call's entry (``member``, else a new one), which ``release`` takes out of a held layer when the
    call ends."""
    if not settings.AOB_RATE_LIMITS_ENABLED or not layers:
        return None
    script = redis_client.script(SCRIPT, TIMEOUT_S)
    member = member or entry()
    failed, count, retry_ms = script(keys=[layer.key for layer in layers],
                                     args=[member, *[layer.limit for layer in layers],
                                           *[layer.window_s * 1000 for layer in layers]])
    if not failed:
        return member
    layer = layers[int(failed) - 1]
    if layer.held:  # a place frees when a call in flight ends: soon, not when the window says
        retry_after = 1
        details: dict[str, Any] = {"limit": layer.limit, "in_flight": int(count), "retry_after_seconds": retry_after}
        message = f"{layer.label}: at most {layer.limit} at once; retry in {retry_after} s"
    else:
        retry_after = max(1, -(-int(retry_ms) // 1000))
        details = {"limit": layer.limit, "window": f"{layer.window_s} seconds", "current_count": int(count),
                   "retry_after_seconds": retry_after}
        message = f"{layer.label}: at most {layer.limit} per {layer.window_s} seconds; retry in {retry_after} s"
    if layer.tier:
        details["tier"] = layer.tier
    RATE_LIMITED.labels(layer.code, layer.tier or "").inc()
    raise RateLimited(message, code=layer.code, extra=details)


def release(layers: list[Layer], member: str | None) -> None:
    """The call recorded as ``member`` has ended: its place in each held layer is free."""
    held = [layer.key for layer in layers if layer.held]
    if member is None or not held:
        return
    client = redis_client.shared(TIMEOUT_S)
    try:
        with client.pipeline(transaction=False) as pipe:
            for key in held:
                pipe.zrem(key, member)
            pipe.execute()
    except redis.RedisError as exc:  # its place is freed by its window instead
        logger.warning("ratelimit.release_failed", extra={"error": str(exc), "layer": layers[0].code})


def tier_for(ir: IR) -> tuple[str, int]:
    """A run's rate tier by how many of its nodes call a model (the registry's ``model``: agents)."""
    agents = sum(1 for node in ir.nodes.values() if registry.calls_a_model(node.type))
    if agents == 0:
        return "simple", settings.AOB_RATE_TIER_SIMPLE_PER_MIN
    if agents <= 2:
        return "standard", settings.AOB_RATE_TIER_STANDARD_PER_MIN
    return "heavy", settings.AOB_RATE_TIER_HEAVY_PER_MIN


def check_run_start(*, user: Any, ir: IR, api_write: bool = False) -> None:
    """The run limits of a start by ``user``; with ``api_write`` (a state-changing API request,
    whose throttle left the global write limit to this call) the global write layer first."""
    tier, tier_limit = tier_for(ir)
    layers = [
        Layer(f"aob:rl:user:{user.pk}:runs", settings.AOB_RATE_USER_RUNS_PER_MIN, "user_rate_limit_exceeded",
              "run creations per user"),
        Layer(f"aob:rl:user:{user.pk}:tier:{tier}", tier_limit, "rate_limit_exceeded", f"{tier} workflow runs",
              tier=tier),
    ]
    if api_write:
        layers.insert(0, global_write_layer())
    _fail_closed(layers)


def check_hook_delivery(*, owner_id: int, paused_hook: str | None = None) -> None:
    """One authenticated delivery to one of ``owner_id``'s hooks, counted before its mapping is
    evaluated in the request: each may start a run, so past the owner's run limit
    (``AOB_RATE_USER_RUNS_PER_MIN``) a flood of deliveries costs no evaluation (the run's own
    limits are checked again when it starts). One to a paused hook (``paused_hook``, its id) starts
    nothing and is counted in a layer of that hook's own, of the same size: its sender sending on
    spends none of what the owner's enabled hooks may start."""
    _fail_closed([_hook_delivery_layer(owner_id, paused_hook)])


def hook_refusal_kept(*, owner_id: int, paused_hook: str | None = None) -> bool:
    """Whether one more delivery that ``check_hook_delivery`` refused may be remembered (its
    signature bound to its delivery id, ``hooks._first_seen``): as many per window as that limit lets
    through, so a sender that holds the secret and sends on past its 429s keeps no more in Redis
    than one whose deliveries were accepted. Past it (or without Redis) nothing is kept."""
    layer = _hook_delivery_layer(owner_id, paused_hook)
    try:
        check([Layer(f"{layer.key}-refused-kept", layer.limit, layer.code, f"refused {layer.label} remembered")])
    except (RateLimited, redis.RedisError):
        return False
    return True


def _hook_delivery_layer(owner_id: int, paused_hook: str | None) -> Layer:
    if paused_hook is None:
        return Layer(f"aob:rl:user:{owner_id}:deliveries", settings.AOB_RATE_USER_RUNS_PER_MIN,
                     "user_rate_limit_exceeded", "hook deliveries per owner")
    return Layer(f"aob:rl:hook:{paused_hook}:paused-deliveries", settings.AOB_RATE_USER_RUNS_PER_MIN,
                 "user_rate_limit_exceeded", "deliveries to a paused hook")


def _fail_closed(layers: list[Layer]) -> None:
    """``check`` for what may start a run: without Redis, nothing starts (503)."""
    try:
        check(layers)
    except redis.RedisError as exc:
        logger.error("ratelimit.redis_unavailable", extra={"error": str(exc)})
        raise ServiceUnavailable("rate limiting is unavailable (Redis unreachable); no run was created",
                                 code="rate_limiter_unavailable") from exc


def global_write_layer() -> Layer:
    return Layer("aob:rl:global", settings.AOB_RATE_GLOBAL_PER_MIN, "global_rate_limit_exceeded",
                 "state-changing requests across all users")


def check_write(*, user_id: int) -> None:
    """One state-changing API request by ``user_id`` that starts no run (``check_run_start`` counts
    those, against their own per-user limit): the global write limit, and this user's share of it
    (``AOB_RATE_USER_WRITES_PER_MIN``). A write past the share is refused unrecorded, so it spends
    nothing of the global limit: one user's flood of cheap writes cannot keep every other user from
    approving, cancelling or saving for as long as it lasts."""
    _fail_open([global_write_layer(), Layer(f"aob:rl:user:{user_id}:writes", settings.AOB_RATE_USER_WRITES_PER_MIN,
                                            "user_rate_limit_exceeded", "state-changing requests per user")])


def begin_whole_read(*, user_id: int, size: int | None) -> Callable[[], None]:
    """A read by ``user_id`` that answers a stored value of ``size`` bytes whole (an artifact, a
    run's inputs, one field of a node run; None: not known before it is read, a run's output). Past
    an answer's byte budget (``AOB_DETAILS_MAX_BYTES``) or of unknown size, it counts against the
    user's ``AOB_RATE_USER_WHOLE_READS_PER_MIN``, and takes one of the user's
    ``AOB_WHOLE_READS_AT_ONCE_PER_USER`` places until the returned ``end`` is called (when its answer
    has been sent: ``api.views.WholeRead``): such a value is up to 32 MiB, built in the web process
    and held there until the client has read it, and one user looping on them, or reading their
    answers slowly, would hold the web processes' memory and the database for everyone. A smaller
    one (the definitions the run page reads for each patch) is a bounded read like any other, not
    counted. Fails open."""
    if size is not None and size <= settings.AOB_DETAILS_MAX_BYTES:
        return _nothing_held
    layers = [Layer(f"aob:rl:user:{user_id}:whole", settings.AOB_RATE_USER_WHOLE_READS_PER_MIN,
                    "read_rate_limit_exceeded", "reads of a stored value whole per user")]
    if settings.AOB_WHOLE_READS_AT_ONCE_PER_USER:
        layers.insert(0, Layer(f"aob:rl:user:{user_id}:whole:now", settings.AOB_WHOLE_READS_AT_ONCE_PER_USER,
                               "read_concurrency_exceeded", "reads of a stored value whole in flight per user",
                               window_s=settings.AOB_WHOLE_READ_SEND_S + WHOLE_READ_BUILD_S, held=True))
    member = entry()
    try:
        check(layers, member)
    except redis.RedisError as exc:
        logger.warning("ratelimit.redis_unavailable", extra={"error": str(exc), "layer": layers[0].code})
        release(layers, member)  # the script may have run and its answer been lost: its place is not kept
        return _nothing_held
    return functools.partial(release, layers, member)


def _nothing_held() -> None:
    return None


def check_anonymous(*, address: str) -> None:
    _fail_open([anonymous_layer(address)])


def anonymous_layer(address: str) -> Layer:
    return Layer(f"aob:rl:anon:{address}", settings.AOB_RATE_ANON_PER_MIN, "anonymous_rate_limit_exceeded",
                 "requests without a valid identity from one address")


def count_anonymous(*, address: str) -> str | None:
    """A request counted as anonymous before its credentials are checked: a WebSocket handshake
    (each costs a session and a token lookup on the one thread every socket of a web process
    shares) and a hook's signed delivery. Past the limit it is refused with none (RateLimited).
    One that proves its identity is taken out again (``uncount_anonymous``), so only those without
    a valid identity count, as on HTTP. Returns the entry, or None when Redis is away (fail open)."""
    try:
        return check([anonymous_layer(address)])
    except redis.RedisError as exc:
        logger.warning("ratelimit.redis_unavailable", extra={"error": str(exc), "layer": "anonymous_rate_limit_exceeded"})
        return None


def uncount_anonymous(*, address: str, member: str) -> None:
    try:
        redis_client.shared(TIMEOUT_S).zrem(anonymous_layer(address).key, member)
    except redis.RedisError as exc:  # it counts until its window ends
        logger.warning("ratelimit.release_failed", extra={"error": str(exc), "layer": "anonymous_rate_limit_exceeded"})


UNKNOWN_ADDRESS = "unknown"  # a client whose address cannot be read (no REMOTE_ADDR, a unix socket)
KNOWN_ADDRESSES_KEPT = 20  # the latest addresses a username logged in from
KNOWN_FOR_S = 30 * 86400


def _login_name(username: str) -> str:
    """The username as the login form reads it (NFKC, Django's ``UsernameField``), and any case:
    ``ｂｏｂ`` is bob's account, so it is bob's count too (it was a fresh one, and every letter has
    several such spellings). Hashed: a key names no account."""
    return hashlib.sha256(unicodedata.normalize("NFKC", username).strip().casefold().encode()).hexdigest()[:32]


def check_login(*, address: str, username: str) -> None:
    """One login attempt, counted for its address and for the username it tries (whatever the
    outcome: a password guess costs the same whether it is right), but not for the username from an
    address it logged in from before (``login_remembered``): a guesser spends a user's limit from
    their own addresses, and locks the user out of those only, never out of the user's own (before
    6 December, eleventh session, ten guesses a minute from anywhere kept a user from logging in
    with a password at all). The address limit binds every attempt."""
    name = _login_name(username)
    layers = [Layer(f"aob:rl:login:addr:{address}", settings.AOB_RATE_LOGIN_PER_ADDRESS_PER_MIN,
                    "login_rate_limit_exceeded", "login attempts from one address")]
    if not _known_address(name, address):
        layers.append(Layer(f"aob:rl:login:user:{name}", settings.AOB_RATE_LOGIN_PER_USERNAME_PER_MIN,
                            "login_rate_limit_exceeded", "login attempts for one username"))
    _fail_open(layers)


def login_remembered(*, address: str, username: str) -> None:
    """A login that succeeded from ``address`` (a page's session, an API token): that address is
    the user's own for ``KNOWN_FOR_S``, among the ``KNOWN_ADDRESSES_KEPT`` latest. Fails open."""
    if address == UNKNOWN_ADDRESS:  # no address: nothing to tell this client from any other by
        return
    key = f"aob:rl:login:known:{_login_name(username)}"
    now = time.time()
    try:
        pipe = redis_client.shared(TIMEOUT_S).pipeline(transaction=True)
        pipe.zadd(key, {address: now})
        pipe.zremrangebyscore(key, "-inf", now - KNOWN_FOR_S)
        pipe.zremrangebyrank(key, 0, -(KNOWN_ADDRESSES_KEPT + 1))
        pipe.expire(key, KNOWN_FOR_S)
        pipe.execute()
    except redis.RedisError as exc:
        logger.warning("ratelimit.redis_unavailable", extra={"error": str(exc), "layer": "login_known_address"})


def login_remembered_from_request(sender: Any, request: Any, user: Any, **_: Any) -> None:
    """``user_logged_in`` (the login pages, the admin's): ``login_remembered``."""
    if request is not None:
        login_remembered(address=client_address(request.META), username=user.get_username())


def _known_address(name: str, address: str) -> bool:
    """Whether the username logged in from ``address`` within ``KNOWN_FOR_S`` (one more round trip
    than the limits' script, before it)."""
    try:
        since = redis_client.shared(TIMEOUT_S).zscore(f"aob:rl:login:known:{name}", address)
        return since is not None and since >= time.time() - KNOWN_FOR_S
    except redis.RedisError:  # counted, as any attempt (the limits themselves fail open)
        return False


def _fail_open(layers: list[Layer]) -> None:
    try:
        check(layers)
    except redis.RedisError as exc:
        logger.warning("ratelimit.redis_unavailable", extra={"error": str(exc), "layer": layers[0].code})


def scope_address(scope: dict[str, Any]) -> str:
    """``client_address`` of an ASGI connection (an HTTP request before Django has read it, a
    WebSocket handshake): its peer, and its ``X-Forwarded-For`` headers as Django joins them."""
    forwarded = b",".join(v for k, v in scope.get("headers") or [] if k == b"x-forwarded-for")
    return client_address({"REMOTE_ADDR": (scope.get("client") or ("",))[0],
                           "HTTP_X_FORWARDED_FOR": forwarded.decode("latin1")})


def client_address(meta: dict[str, Any]) -> str:
    """The client's address as rate limits count it: behind a proxy (``AOB_BEHIND_PROXY``) the
    last ``X-Forwarded-For`` entry, which that proxy wrote; an IPv6 client by its /64, since one
    host commonly holds the whole prefix."""
    raw = meta.get("REMOTE_ADDR") or ""
    if settings.AOB_BEHIND_PROXY and meta.get("HTTP_X_FORWARDED_FOR"):
        raw = meta["HTTP_X_FORWARDED_FOR"].split(",")[-1].strip()
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return UNKNOWN_ADDRESS
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return f"{ipaddress.ip_network(f'{address}/64', strict=False).network_address}/64"
    return str(address)
