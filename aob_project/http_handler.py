"""Django's HTTP requests under uvicorn, each run start to finish in one thread of a fixed pool.

Django's own ``ASGIHandler`` runs every request in a ``ThreadSensitiveContext``: asgiref gives each
request a new single-thread executor, so each request ran in a new thread. Django's database
connections are per thread, so every request opened a new PostgreSQL connection (a backend
fork, authentication, no prepared statement ever reused) and ``CONN_MAX_AGE`` kept nothing.
On top of that our sync middleware made the chain hop between the event loop and threads five
or six times a request (measured: one new PostgreSQL session per request; web CPU per
``POST …/execute`` 10.8 ms under uvicorn against 5.2 ms for the same view in-process).

This handler keeps Django's request class, signals, middleware and exception handling, but runs
the sync middleware chain the way a threaded WSGI server does: the body is read on the event
loop, then one hop into a pool of ``AOB_WEB_THREADS`` long-lived threads runs
``request_started``, the middleware chain, the view and the response's ``close()`` (so
``request_finished`` and ``close_old_connections`` run in the thread that owns the connection),
and the response goes out from the event loop. Each thread keeps its connection across requests
as ``CONN_MAX_AGE`` says, checked before each request reuses it (``AOB_WEB_DB_HEALTH_CHECKS``:
Django's ``CONN_HEALTH_CHECKS`` for the web's connections only, asking the socket before the
server; the workers' hot path goes without). WebSockets stay on Channels (``aob_project/asgi.py``).

Every view here is sync; an async view would still work (Django adapts it with
``async_to_sync``), only without a gain. A streaming response (none of ours is) is sent from the
event loop as Django's handler sends it, and closed in a pool thread; so is a response that holds
something until it has been sent (``SEND_WITHIN_S``: a whole read's place, ``api.views.WholeRead``),
which a client that reads it too slowly has cut off at that deadline.

The pool's threads are taken by clients in turn (``Turns``): at most ``AOB_WEB_THREADS_PER_CLIENT``
run one client's requests at once, at most all but one those of one address, and as threads free
up, the clients waiting take them one request each, round and round. A client is who the request
says it is before anything is read (an API request's token, else its address: ``clients_of``): one
user's forty slow reads held all eight threads in the order they came, and another user's simple
request waited behind every one of them (14 s, a red team's measure). Made-up tokens fail, and the
anonymous limit counts them against their address; a request whose client went away while it
waited is not run.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import hashlib
import logging
import select
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.db import connections
from django.http import HttpResponseBase
from django.urls import set_script_prefix
from psycopg.pq import TransactionStatus

from aob_project.body_limit import send_error

logger = logging.getLogger(__name__)

# A response with this attribute (seconds) is closed once it has been sent, or its client has gone,
# not before: what its ``close()`` gives back is held while a slow client reads it. A client that has
# not read it all within those seconds is cut off: the answer ends short of its Content-Length and
# is let go with what it holds (uvicorn closes the connection once the little it has buffered,
# 64-128 KiB, is read), so the answer's memory ends when the holder's own count of it does.
SEND_WITHIN_S = "aob_send_within_s"


def _closed_after_send(response: HttpResponseBase) -> bool:
    return response.streaming or getattr(response, SEND_WITHIN_S, None) is not None


def _check_kept_connections() -> None:
    """In each pool thread, once: its connections (Django's are per thread) check themselves before
    a request reuses them (``CONN_HEALTH_CHECKS``, read when they connect), on a copy of the
    settings, so nothing else in the process changes; the check asks the socket first
    (``_quiet_or_usable``)."""
    if settings.AOB_WEB_DB_HEALTH_CHECKS:
        for alias in connections:
            wrapper = connections[alias]
            wrapper.settings_dict = {**wrapper.settings_dict, "CONN_HEALTH_CHECKS": True}
            wrapper.is_usable = functools.partial(_quiet_or_usable, wrapper, wrapper.is_usable)


def _quiet_or_usable(wrapper: Any, is_usable: Any) -> bool:
    """Django's check (``SELECT 1``, a round trip) only when the socket says something happened.
    A kept connection sits idle between requests with nothing to read; a server that ends it
    (a restart, ``pg_terminate_backend``, an idle timeout) sends its error and closes, and the
    socket turns readable. Quiet and idle: usable, with no statement sent (asking the socket
    costs 0.008 ms; the ``SELECT 1`` 0.07 ms of CPU in a quiet process, 0.17-0.22 ms in the web
    under load). Anything else: Django's check decides. A server that vanished without a word
    fails the request's first statement, as it would the ``SELECT 1``: a 503
    (workflows/api/errors.py)."""
    raw = wrapper.connection
    if raw is not None and not raw.closed and raw.info.transaction_status == TransactionStatus.IDLE:
        try:
            readable, _, _ = select.select([raw.fileno()], [], [], 0)
        except (OSError, ValueError):
            readable = [True]
        if not readable:
            return True
    return bool(is_usable())


def _hashed(said: bytes) -> str:
    return hashlib.blake2b(said, digest_size=16).hexdigest()


def clients_of(scope: dict[str, Any]) -> tuple[str, str]:
    """Who a request says it is before anything is read, as two keys: its token (an API request's
    ``Authorization: Token`` or ``Bearer``, split as DRF splits it: a user has one), else its
    address; and its address, as rate limits count it. A session cookie is not a key: one user
    logs in as many times as the login limit lets them, each session valid, and a cookie header
    can name several (the reviewer's). Hashed: no key holds a credential."""
    from workflows import ratelimit

    at = _hashed(b"a:" + ratelimit.scope_address(scope).encode())
    if str(scope.get("path", "")).startswith("/api/"):  # the pages read a session alone
        words = b" ".join(v for k, v in scope.get("headers") or [] if k == b"authorization").split()
        if len(words) == 2 and words[0].lower() in (b"token", b"bearer"):
            return _hashed(b"t:" + words[1]), at
    return at, at


class Turns:
    """The pool's ``threads`` taken by clients in turn: at most ``per_client`` run one client's
    requests at once, at most ``per_address`` those from one address (a token's and the address's
    own together), and as threads free up, the clients waiting take them one request each, in the
    order they began to wait, a client served going to the back. Kept on the event loop (no lock)."""

    def __init__(self, threads: int, per_client: int, per_address: int | None = None) -> None:
        self.free = threads
        self.per_client = per_client
        self.per_address = per_address or max(1, threads - 1)
        self.running: collections.Counter[str] = collections.Counter()
        self.waiting: dict[str, collections.deque[tuple[str, asyncio.Future[None]]]] = {}

    def ready(self, client: str, address: str) -> bool:
        """Whether a request of ``client`` from ``address`` would start at once."""
        return bool(self.free) and not self.waiting and self._under(client, address)

    async def take(self, client: str, address: str) -> None:
        """Wait for a thread of ``client``'s turn (at once when ``ready``)."""
        if self.ready(client, address):
            self._start(client, address)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(client, collections.deque()).append((address, future))
        self._grant()
        try:
            await future
        except asyncio.CancelledError:  # gone while it waited, or as its turn came
            if future.done() and not future.cancelled():
                self.give_back(client, address)
            queue = self.waiting.get(client)
            if queue is not None and (address, future) in queue:
                queue.remove((address, future))
                if not queue:
                    del self.waiting[client]
            raise

    def give_back(self, client: str, address: str) -> None:
        """A thread ``client``'s request from ``address`` held is free again."""
        self.free += 1
        for key in {client, _ADDRESS + address}:
            self.running[key] -= 1
            if not self.running[key]:
                del self.running[key]
        self._grant()

    def _under(self, client: str, address: str) -> bool:
        return self.running[client] < self.per_client and self.running[_ADDRESS + address] < self.per_address

    def _start(self, client: str, address: str) -> None:
        self.free -= 1
        for key in {client, _ADDRESS + address}:
            self.running[key] += 1

    def _grant(self) -> None:
        while self.free:
            client = next((c for c, queue in self.waiting.items() if self._under(c, queue[0][0])), None)
            if client is None:
                return
            queue = self.waiting.pop(client)
            address, future = queue.popleft()
            if queue:
                self.waiting[client] = queue  # to the back: the others' turn first
            if future.done():  # cancelled as it waited: not started
                continue
            self._start(client, address)
            future.set_result(None)


_ADDRESS = "@"  # an address's own count beside its clients' (``Turns.running``)


class ThreadPoolHandler(ASGIHandler):
    def __init__(self) -> None:
        base.BaseHandler.__init__(self)  # not ASGIHandler's: its middleware chain is the async one
        self.load_middleware(is_async=False)
        self.pool = ThreadPoolExecutor(max_workers=settings.AOB_WEB_THREADS, thread_name_prefix="aob-web",
                                       initializer=_check_kept_connections)
        self.turns = Turns(settings.AOB_WEB_THREADS, settings.AOB_WEB_THREADS_PER_CLIENT)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        try:  # before any view: nobody is known yet, so the deadline is the only bound on a slow sender
            body_file = await asyncio.wait_for(self.read_body(receive), settings.AOB_BODY_READ_S)
        except RequestAborted:
            return
        except TimeoutError:
            logger.info("web.body_read_timeout", extra={"path": scope.get("path"), "within_s": settings.AOB_BODY_READ_S})
            limit = settings.AOB_BODY_READ_S
            await send_error(send, 408, "request_timeout", f"the request's body did not arrive whole within {limit:g} s",
                             {"rule": "body_read_timeout", "limit_s": limit})
            return
        loop = asyncio.get_running_loop()
        try:
            client, address = clients_of(scope)
            if not await self._turn(client, address, receive):
                return  # the client went away while it waited: nothing of it is run
            # a fresh copy of the context per request, as asgiref gives each sync_to_async call;
            # its thread is given back when the request is done in it, whether or not anyone waits
            try:
                done = self.pool.submit(contextvars.copy_context().run, self.respond, scope, body_file)
            except RuntimeError:  # the pool shut down (the process is stopping)
                self.turns.give_back(client, address)
                raise
            done.add_done_callback(lambda _: loop.call_soon_threadsafe(self.turns.give_back, client, address))
            response = await asyncio.wrap_future(done)
            within = getattr(response, SEND_WITHIN_S, None)
            try:
                await asyncio.wait_for(self.send_response(response, send), within)
            except asyncio.CancelledError:
                pass  # the client went away while we answered
            except TimeoutError:
                logger.warning("web.send_cut_off", extra={"path": scope.get("path"), "within_s": within})
            finally:
                if _closed_after_send(response):
                    await loop.run_in_executor(self.pool, contextvars.copy_context().run, response.close)
        finally:
            body_file.close()

    async def _turn(self, client: str, address: str, receive: Any) -> bool:
        """Take a thread in ``client``'s turn; False if the client went away first (the body read,
        the next message it can send is ``http.disconnect``)."""
        if self.turns.ready(client, address):
            await self.turns.take(client, address)
            return True
        turn = asyncio.ensure_future(self.turns.take(client, address))
        gone = asyncio.ensure_future(receive())
        try:
            await asyncio.wait({turn, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (turn, gone):
                task.cancel()
            await asyncio.gather(turn, gone, return_exceptions=True)
        if turn.cancelled() or turn.exception() is not None:
            return False  # its thread, if its turn came as it went, given back (``Turns.take``)
        return True

    def respond(self, scope: dict[str, Any], body_file: Any) -> HttpResponseBase:
        """The whole request in one pool thread: what ``WSGIHandler.__call__`` does, and for a
        response that is not streamed (nor held until sent, ``SEND_WITHIN_S``) also its ``close()``
        (``request_finished``)."""
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = self.get_response(request)
            response._handler_class = self.__class__  # type: ignore[attr-defined]
        if not _closed_after_send(response):
            response.close()
        return response


def get_thread_pool_application() -> ThreadPoolHandler:
    """Like ``django.core.asgi.get_asgi_application``: set Django up, then build the handler."""
    import django

    django.setup(set_prefix=False)
    return ThreadPoolHandler()
