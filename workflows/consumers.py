"""WebSocket consumers: a run's events (``ws/runs/<id>/``) and all of a user's (``ws/events/``).

``?after=<seq>`` replays what the client missed from the database, then streams live with no gap
and no duplicate at the seam: the consumer joins the group before reading the database, drops a
live event it already sent, and fills any hole from the database before sending a later one.
A replay or a fill reads the database one page at a time (``_replay``), each at most
``AOB_DETAILS_MAX_BYTES`` of events and 1,000 of them, and reads on from the last one sent until
none is left: one socket's replay never loads a whole run's events at once, and a hole larger
than a page is filled whole. The user is judged again between pages, as before live events
(``still_allowed``), so a long replay does not outlive their access.

A live message can be lost on the way (a worker killed between its commit and its push, a channel
past its capacity or expiry, Redis restarted): a run's stream that has sent nothing for
``AOB_WS_RECHECK_S``, and the user's stream every ``AOB_WS_RECHECK_S`` (one run's events say
nothing of another's), judge the user again and read on from the database (``_tail``,
``quiet_read``): a run's stream the run's events after the last one it sent, the user's stream
those of the runs it heard of latest whose counter went past what it sent. So the last event of a
run, the one a page waits for, reaches the client within that time even when its message never
came, and no later event is needed to reveal the hole.

A socket joins its groups at its handshake and again every ``AOB_WS_RECHECK_S`` (``rejoin``):
channels_redis drops a member older than ``group_expiry`` (a day) at the next send to its group,
so a page open longer went deaf while it said it was live, and a group Redis lost (a restart)
is joined again. The user's stream is also in the group of each approver name of the user
(``approvers.inbox_group``), and forwards a change of an approval naming them as
``{"type": "inbox_changed"}``, nothing more: the inbox reads itself again, on another's run too;
at most every ``AOB_WS_INBOX_NUDGE_MIN_S``, the changes within it told once at its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from importlib import import_module
from itertools import islice
from typing import Any
from urllib.parse import parse_qs

from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.utils import timezone

logger = logging.getLogger(__name__)

UNAUTHENTICATED = 4401
FORBIDDEN = 4403
TOO_MANY = 4429


@database_sync_to_async
def _token_user(key: str) -> User | None:
    from workflows.api.authentication import token_with_user

    token = token_with_user(key)
    return token.user if token and token.user.is_active else None


HANDSHAKE = "aob.handshake"  # the scope's (address, entry) of its count as anonymous (``AnonymousLimit``)


class AnonymousLimit:
    """Before a socket's credentials are read (a session and a token lookup on the one thread all
    of a process's sockets share), its handshake counts against its address's anonymous limit
    (``AOB_RATE_ANON_PER_MIN``), and past it is refused with none: one address judged 2,377 made-up
    credentials in 10 s and held others' sockets (a red-team helper's measurement). A handshake
    that proves a user is taken out of the count again (``authenticate``). Past the limit a socket
    is closed with 4429 before anything is read: a user behind the same address as a flood waits
    out the window, as its HTTP requests without credentials would."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        from workflows import ratelimit

        address = ratelimit.scope_address(scope)
        try:
            member = await asyncio.to_thread(ratelimit.count_anonymous, address=address)
        except ratelimit.RateLimited:
            if (await receive())["type"] == "websocket.connect":  # closed as past a limit, as 4429 says
                await send({"type": "websocket.accept"})
                await send({"type": "websocket.close", "code": TOO_MANY})
            return None
        return await self.application({**scope, HANDSHAKE: (address, member)}, receive, send)


async def _proven(scope: dict[str, Any]) -> None:
    """The handshake proved a user: it no longer counts as anonymous (``AnonymousLimit``)."""
    from workflows import ratelimit

    address, member = scope.get(HANDSHAKE) or (None, None)
    if member is not None:
        scope[HANDSHAKE] = (address, None)
        await asyncio.to_thread(ratelimit.uncount_anonymous, address=address, member=member)


async def authenticate(scope: dict[str, Any], *, again: bool = False) -> User | None:
    """Session (browser) or token (``Authorization: Token <key>`` or ``Bearer <key>`` header). Never a token in the
    query string: servers log URLs, and a token there would end up in access logs. ``again``: for an
    open socket, read the session from the database afresh (a logout, an expiry or a password change
    ends it; the scope keeps what was read at the handshake)."""
    user = scope.get("user")
    if user is not None and not isinstance(user, AnonymousUser) and user.is_authenticated:
        if not again:
            await _proven(scope)
            return user
        key = getattr(scope.get("session"), "session_key", None)
        fresh = import_module(settings.SESSION_ENGINE).SessionStore(session_key=key) if key else None
        user = await get_user({**scope, "session": fresh}) if fresh is not None else None
        return user if user is not None and user.is_authenticated and user.is_active else None
    headers = dict(scope.get("headers") or [])
    auth = headers.get(b"authorization", b"").decode(errors="ignore")
    key = auth.split(" ", 1)[1].strip() if auth.lower().startswith(("token ", "bearer ")) else ""
    user = await _token_user(key) if key else None
    if user is not None and not again:
        await _proven(scope)
    return user


def _after(scope: dict[str, Any]) -> int:
    query = parse_qs((scope.get("query_string") or b"").decode(errors="ignore"))
    try:
        return max(0, int((query.get("after") or ["0"])[0]))
    except ValueError:
        return 0


@database_sync_to_async
def _visible_run(user: User, run_id: str) -> bool:
    """``visibility.run_visible`` of the run's row: another's run asks the approvals of that run
    alone. Asked as "is it among the runs this user sees", it read every approval in the table
    naming the user (200 ms a handshake, and again each recheck, beside another tenant's 300,000
    waiting gates), on the one thread every socket's reads share."""
    from workflows.models import Run
    from workflows.visibility import run_visible

    try:
        run = Run.objects.only("owner_id").filter(pk=run_id).first()
    except Exception:  # noqa: BLE001 - a malformed id is simply not visible
        return False
    return run is not None and run_visible(run, user=user)


@database_sync_to_async
def _events(run_id: str, after: int, upto: int | None, since: datetime | None) -> tuple[list[dict[str, Any]], bool]:
    from workflows.selectors import events_page

    page, more = events_page(run_id=run_id, after=after, upto=upto, since=since)
    return [e.as_dict() for e in page], more


class _Turns:
    """Each user's page reads in turn, at most ``AOB_WS_READS_PER_USER`` at once in a process. Every
    socket's database reads in a web process share one thread (``database_sync_to_async``), first
    come first served: one user's 50 sockets replaying a run of 20,000 events from the start, over
    and over, kept another user's socket from opening for 8-25 s (a red-team helper's measurement).
    Now another user's read waits behind at most that many of theirs."""

    def __init__(self) -> None:
        self.gates: dict[int, tuple[asyncio.Semaphore, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def of(self, user_id: int | None) -> AsyncIterator[None]:
        key = user_id or 0
        if key not in self.gates:
            self.gates[key] = (asyncio.Semaphore(settings.AOB_WS_READS_PER_USER), [0])
        gate, users = self.gates[key]
        users[0] += 1
        try:
            async with gate:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                self.gates.pop(key, None)


turns = _Turns()


async def _replay(run_id: str, after: int, upto: int | None = None, since: datetime | None = None, *,
                  allowed: Callable[[], Awaitable[bool]], reader: int | None) -> AsyncIterator[dict[str, Any]]:
    """A run's events after ``after`` (up to ``upto``, stamped from ``since``), in order, read one
    page at a time (``selectors.events_page``: within ``AOB_DETAILS_MAX_BYTES``, at least one
    event), each read after the last event of the one before, until none is left or ``allowed``
    (asked before each page after the first) says the socket may not read on. Each page is read in
    the ``reader``'s turn (``turns``)."""
    while True:
        async with turns.of(reader):
            page, more = await _events(run_id, after, upto, since)
        for frame in page:
            yield frame
        if not more or not await allowed():
            return
        after = page[-1]["seq"]


@database_sync_to_async
def _runs_behind(owner_id: int, last: dict[str, int]) -> list[tuple[str, int]]:
    """Of ``last`` (run id → the last seq sent), ``owner_id``'s runs with later events, and that seq."""
    from workflows.models import Run

    if not last:
        return []
    counters = Run.objects.filter(pk__in=list(last), owner_id=owner_id).values_list("pk", "event_seq")
    return [(str(pk), last[str(pk)]) for pk, seq in counters if seq > last[str(pk)]]


@database_sync_to_async
def _inbox_groups(user_id: int) -> list[str]:
    """The Channels groups of the user's approver names (``approvers.approver_names``), those an
    approval naming them nudges (``events.inboxes_nudge_after_commit``); one query."""
    from workflows.approvers import approver_names, inbox_group

    return [inbox_group(name) for name in sorted(approver_names(User(pk=user_id)))]


def _left(task: asyncio.Task[None]) -> None:
    _Consumer.leaving.discard(task)
    if not task.cancelled() and task.exception() is not None:  # Redis away: the group's expiry ends it
        logger.warning("ws.group_discard_failed", exc_info=task.exception())


class _Consumer(AsyncJsonWebsocketConsumer):
    user_id: int | None = None
    recheck_at = 0.0
    closed = False
    groups: list[str] = []
    joined_at = 0.0
    tail: asyncio.Task[None] | None = None
    heard_at = 0.0
    TAIL_MIN_S = 0.25  # however small AOB_WS_RECHECK_S is set, a quiet socket reads at most this often
    # Whether the quiet read waits for the socket to be quiet: a run's stream, yes (anything sent
    # is the run's); the user's stream reads every period, since one run's events say nothing of another's.
    READ_WHEN_QUIET_ONLY = True
    # Open sockets per user in this process (gone with it, so a crash leaves no count behind).
    open_sockets: dict[int, int] = {}

    async def admit(self, user: User) -> bool:
        """Join the socket's groups (``groups_now``) and accept the socket of an authenticated user,
        or refuse it (4429) past ``AOB_WS_MAX_PER_USER`` open in this process: one user's sockets
        cannot take a web process's memory and file descriptors from everyone else's. The groups
        are joined before the socket is accepted, so no event sent once the client sees it open
        can pass it by."""
        if self.open_sockets.get(user.pk, 0) >= settings.AOB_WS_MAX_PER_USER:
            await self.refuse(TOO_MANY)
            return False
        self.open_sockets[user.pk] = self.open_sockets.get(user.pk, 0) + 1
        self.user_id, self.recheck_at = user.pk, time.monotonic() + settings.AOB_WS_RECHECK_S
        await self.rejoin()
        await self.accept()
        return True

    async def groups_now(self, user_id: int) -> list[str]:
        """The groups the socket of ``user_id`` is to be in now."""
        raise NotImplementedError

    async def rejoin(self) -> None:
        """Join the socket's groups (again: each membership's age starts over, and a group Redis
        lost is made again), and leave those it is no longer to be in (a user out of a group whose
        approvals nudged them). One pipelined round trip: at most every ``AOB_WS_RECHECK_S``."""
        if self.user_id is None:
            return  # released: the socket is ending
        groups = await self.groups_now(self.user_id)
        for group in set(self.groups) - set(groups):
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups, self.joined_at = groups, time.monotonic()
        if hasattr(self.channel_layer, "group_add_many"):
            await self.channel_layer.group_add_many(groups, self.channel_name)
        else:
            for group in groups:
                await self.channel_layer.group_add(group, self.channel_name)

    # The group departures of consumers that ended without disconnect(), until they are done.
    leaving: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:  # a handler that raised (a client gone mid-send, Redis) never reaches disconnect()
            self._release()
            if self.groups:  # nor leaves its groups: a task of its own does, this one may be cancelled
                task = asyncio.get_running_loop().create_task(self._leave(self.groups))
                self.groups = []
                self.leaving.add(task)
                task.add_done_callback(_left)

    async def _leave(self, groups: list[str]) -> None:
        for group in groups:
            await self.channel_layer.group_discard(group, self.channel_name)

    def start_tail(self) -> None:
        self.heard_at = time.monotonic()
        self.tail = asyncio.get_running_loop().create_task(self._tail())

    async def _tail(self) -> None:
        """While the socket is open: after ``AOB_WS_RECHECK_S`` with nothing sent (a run's stream) or
        every ``AOB_WS_RECHECK_S`` (the user's), ``quiet_read`` (judge the user again, read on from
        the database), for an event whose live message was lost; and every ``AOB_WS_RECHECK_S``,
        quiet or not, ``rejoin`` (a membership's age is its join's, not its last message's)."""
        while not self.closed:
            quiet = max(self.TAIL_MIN_S, settings.AOB_WS_RECHECK_S)
            if not self.READ_WHEN_QUIET_ONLY:
                await asyncio.sleep(quiet)
            else:
                await asyncio.sleep(max(0.0, min(self.heard_at, self.joined_at) + quiet - time.monotonic()))
            if time.monotonic() - self.joined_at >= quiet and not self.closed:
                try:
                    await self.rejoin()
                except Exception:  # Redis or the database away for a moment: the next period tries again
                    logger.warning("ws.rejoin_failed", extra={"groups": self.groups[:1]}, exc_info=True)
            if self.READ_WHEN_QUIET_ONLY and time.monotonic() - self.heard_at < quiet:
                continue  # something was sent meanwhile
            async with self.sending:
                self.heard_at = time.monotonic()
                try:
                    await self.quiet_read()
                except Exception:  # the database away for a moment: the next quiet read tries again
                    logger.warning("ws.quiet_read_failed", extra={"groups": self.groups[:1]}, exc_info=True)

    async def quiet_read(self) -> None:
        raise NotImplementedError

    async def sent(self, frame: dict[str, Any]) -> None:
        await self.send_json(frame)
        self.heard_at = time.monotonic()

    def _release(self) -> None:
        if self.tail is not None and self.tail is not asyncio.current_task():
            self.tail.cancel()
        self.tail = None
        if self.user_id is not None:
            left = self.open_sockets.get(self.user_id, 1) - 1
            if left > 0:
                self.open_sockets[self.user_id] = left
            else:
                self.open_sockets.pop(self.user_id, None)
            self.user_id = None

    async def disconnect(self, code: int) -> None:
        groups, self.groups = self.groups, []
        await self._leave(groups)
        self._release()

    async def still_allowed(self, run_id: str | None = None) -> bool:
        """Before it streams on, an open socket's user is judged again, at most every
        ``AOB_WS_RECHECK_S``: a revoked token, a logout or a deactivated user closes it (4401),
        and so does a run no longer visible to them (4403)."""
        if self.closed:
            return False  # events already queued for a socket closed here are dropped
        if time.monotonic() < self.recheck_at:
            return True
        self.recheck_at = time.monotonic() + settings.AOB_WS_RECHECK_S
        user = await authenticate(self.scope, again=True)
        code = (UNAUTHENTICATED if user is None or user.pk != self.user_id else
                FORBIDDEN if run_id is not None and not await _visible_run(user, run_id) else None)
        if code is not None:
            self.closed = True
            await self.close(code=code)
        return code is None

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        """The stream is one-way (steering goes through the REST API): a frame a client sends is
        dropped unread. Decoding it would parse up to the server's frame limit of JSON in the event
        loop every other socket and request of this process shares."""

    async def refuse(self, code: int) -> None:
        """Accept, then close with a policy code, so the client learns why (a refused handshake
        is only an HTTP 403)."""
        await self.accept()
        await self.close(code=code)


class RunEventsConsumer(_Consumer):
    async def connect(self) -> None:
        self.run_id = str(self.scope["url_route"]["kwargs"]["run_id"])
        self.groups = []
        # one sender at a time: a live event, its fill and the quiet read each send in order
        self.sending = asyncio.Lock()
        user = await authenticate(self.scope)
        if user is None:
            await self.refuse(UNAUTHENTICATED)
            return
        if not await _visible_run(user, self.run_id):
            await self.refuse(FORBIDDEN)
            return
        if not await self.admit(user):
            return
        self.last = _after(self.scope)
        async with self.sending:
            await self._read_on()
        self.start_tail()

    async def groups_now(self, user_id: int) -> list[str]:
        return [f"run.{self.run_id}"]

    async def _allowed(self) -> bool:
        return await self.still_allowed(self.run_id)

    async def _read_on(self, upto: int | None = None) -> None:
        """Send the run's events after the last one sent (up to ``upto``) from the database."""
        async for frame in _replay(self.run_id, self.last, upto, allowed=self._allowed, reader=self.user_id):
            await self._send(frame)

    async def _send(self, frame: dict[str, Any]) -> None:
        await self.sent(frame)
        self.last = frame["seq"]

    async def quiet_read(self) -> None:
        if await self._allowed():
            await self._read_on()

    async def run_event(self, message: dict[str, Any]) -> None:
        frame = message["event"]
        async with self.sending:
            if frame["seq"] <= self.last:
                return  # already sent, from the replay, an earlier fill or the quiet read
            if not await self._allowed():
                return
            if frame["seq"] > self.last + 1:
                await self._read_on(frame["seq"] - 1)
                if self.closed:
                    return  # judged again between pages and closed
            if frame.get("stub"):  # a large event, read whole from the database (events.live_frame)
                await self._read_on(frame["seq"])
                return
            await self._send(frame)


class UserEventsConsumer(_Consumer):
    """Every event of the user's runs appended since the connection opened, live, in each run's
    order (per-run numbering; resume per run with ws/runs). Events of one run are pushed by
    different worker processes, so one can overtake another: a later event first fills the hole
    from the database, and the overtaken one is dropped when it arrives. The first event seen of
    a run also brings that run's events stamped up to ``SINCE_MARGIN_S`` before the connection
    opened (an event is stamped before it commits, on its worker's clock).

    It is in the group of each of the user's approver names too (``_inbox_groups``, at most
    ``NAMES_JOINED``), and tells the client of a change to an approval naming them, on any run, by
    ``{"type": "inbox_changed"}`` alone (``inbox_changed``), at most every ``AOB_WS_INBOX_NUDGE_MIN_S``."""

    SINCE_MARGIN_S = 5
    RUNS_TRACKED = 10_000
    QUIET_RUNS = 200  # the runs a quiet read looks at: those seen latest
    READ_WHEN_QUIET_ONLY = False
    NAMES_JOINED = 1000  # a user's approver names whose groups a socket joins (groups are an admin's to give)
    nudged: str | None = None
    nudged_at = 0.0  # when the client was last told
    nudge: asyncio.Task[None] | None = None  # the one nudge held for the end of the interval

    async def connect(self) -> None:
        self.groups = []
        self.sending = asyncio.Lock()
        self.since = timezone.now() - timedelta(seconds=self.SINCE_MARGIN_S)
        self.last: dict[str, int] = {}
        user = await authenticate(self.scope)
        if user is None:
            await self.refuse(UNAUTHENTICATED)
            return
        if not await self.admit(user):
            return
        self.start_tail()

    async def groups_now(self, user_id: int) -> list[str]:
        return [f"user.{user_id}", *(await _inbox_groups(user_id))[:self.NAMES_JOINED]]

    async def inbox_changed(self, message: dict[str, Any]) -> None:
        """An approval naming the user changed: the client reads its inbox again. Said once a change
        (a user in several of the groups it named hears it from each), and with nothing of the
        approval: what the inbox shows, it reads as its user. At most every
        ``AOB_WS_INBOX_NUDGE_MIN_S``: anyone may name anyone as an approver, and each nudge is a read
        of the inbox (15 gates in 5 s read bob's open inbox 15 times); changes within it are told
        once, at its end (``_nudge_later``), so the last one is never lost."""
        async with self.sending:
            if message.get("change") == self.nudged or not await self.still_allowed():
                return
            self.nudged = message.get("change")
            wait = self.nudged_at + settings.AOB_WS_INBOX_NUDGE_MIN_S - time.monotonic()
            if wait <= 0:
                await self._nudge()
            elif self.nudge is None:
                self.nudge = asyncio.get_running_loop().create_task(self._nudge_later(wait))

    async def _nudge(self) -> None:
        self.nudged_at = time.monotonic()
        await self.sent({"type": "inbox_changed"})

    async def _nudge_later(self, wait: float) -> None:
        await asyncio.sleep(wait)
        async with self.sending:
            self.nudge = None
            try:
                if await self.still_allowed():
                    await self._nudge()
            except Exception:  # the client gone meanwhile: its socket's end is disconnect()'s
                logger.warning("ws.nudge_failed", extra={"groups": self.groups[:1]}, exc_info=True)

    def _release(self) -> None:
        if self.nudge is not None and self.nudge is not asyncio.current_task():
            self.nudge.cancel()
        self.nudge = None
        super()._release()

    async def _send(self, frame: dict[str, Any]) -> None:
        await self.sent(frame)
        run_id = frame["run_id"]
        self.last.pop(run_id, None)  # to the end: the order is the order runs were last heard of
        self.last[run_id] = frame["seq"]
        if len(self.last) > self.RUNS_TRACKED:
            self.last.pop(next(iter(self.last)))  # the run seen longest ago

    async def _read_on(self, run_id: str, after: int, upto: int | None = None,
                       since: datetime | None = None) -> None:
        async for frame in _replay(run_id, after, upto, since=since, allowed=self.still_allowed,
                                    reader=self.user_id):
            await self._send(frame)

    async def quiet_read(self) -> None:
        """The runs seen latest (``QUIET_RUNS``) whose events went on past the last one sent, in one
        read of their counters, and those runs' events after it."""
        if self.user_id is None or not await self.still_allowed():
            return
        latest = dict(islice(reversed(self.last.items()), self.QUIET_RUNS))
        for run_id, seq in await _runs_behind(self.user_id, latest):
            await self._read_on(run_id, seq)
            if self.closed:
                return

    async def run_event(self, message: dict[str, Any]) -> None:
        frame = message["event"]
        run_id, seq = frame["run_id"], frame["seq"]
        # a stub stands for its own event, a large one (events.live_frame), or for a burst from
        # ``first`` (events.coalesced): those are read whatever their stamp, as if sent whole
        first = min(frame.get("first", seq), seq) if frame.get("stub") else seq
        async with self.sending:
            last = self.last.get(run_id)
            if last is not None and seq <= last:
                return
            if not await self.still_allowed():
                return
            if last is None and first > 1:
                await self._read_on(run_id, 0, first - 1, since=self.since)
            elif last is not None and first > last + 1:
                await self._read_on(run_id, last, first - 1)
            if self.closed:
                return  # judged again between pages and closed
            if frame.get("stub"):
                await self._read_on(run_id, max(first - 1, self.last.get(run_id, 0)), seq)
                return
            await self._send(frame)
