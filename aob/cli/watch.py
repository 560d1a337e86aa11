"""Following a run's events until it ends: the WebSocket stream when it is there, else polling.

Both paths resume from the last ``seq`` printed, so switching from one to the other (a refused
handshake, a dropped connection, a quiet socket) neither repeats nor skips an event.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import connect

from .client import USER_AGENT, ApiClient, ApiError, segment
from .output import echo

# The events that end a run, and the exit code each one gives `aob run watch`.
EXIT_CODES = {"workflow_completed": 0, "workflow_failed": 1, "run_cancelled": 2}
STATUS_EXIT_CODES = {"completed": 0, "failed": 1, "cancelled": 2}
POLL_INTERVAL_S = 0.5
# A server that stops answering while a run is followed (a restart, a deploy) is waited for this long,
# asked again every few seconds, before the follow gives up (``FOLLOW_LOST``): a watch left open on
# an approval for hours ended at the first restart, with the exit code of a failed run.
OUTAGE_S = 120.0
OUTAGE_RETRY_S = 3.0
FOLLOW_LOST = 3  # the exit code of a follow that could not go on (the run's own are 0, 1 and 2)
WS_QUIET_S = 5.0  # no frame for this long: catch up over REST, in case the live push was lost
PAGE = 1000  # the events endpoint's most events an answer

OnEvent = Callable[[dict[str, Any]], None]


class _Cursor:
    def __init__(self, after: int, on_event: OnEvent) -> None:
        self.seq = after
        self.on_event = on_event
        self.exit_code: int | None = None

    def take(self, event: dict[str, Any]) -> None:
        seq = event.get("seq")
        if not isinstance(seq, int) or seq <= self.seq or self.exit_code is not None:
            return
        self.seq = seq
        if event.get("node_id") is None:
            event = {**event, "node_id": ""}  # WebSocket frames say null where the REST API says ""
        self.on_event(event)
        if event.get("type") in EXIT_CODES:
            self.exit_code = EXIT_CODES[event["type"]]


def events_page(client: ApiClient, run_id: str, after: int) -> tuple[list[dict[str, Any]], bool]:
    """One answer of the events endpoint, and whether more follow: its ``Link: rel="next"`` says so
    (an answer stops at 1,000 events or at its byte budget, whichever comes first); a server that
    sends none (before the budget) had more only after a full page."""
    page, following = client.get_with_next(f"runs/{segment(run_id)}/events", after=after)
    return page, following is not None or len(page) >= PAGE


def events_all(client: ApiClient, run_id: str, after: int = 0) -> Iterator[dict[str, Any]]:
    """A run's events after ``after``, in order, one answer at a time (the next read after the last
    event of the one before): never more than one page in memory, however long the run."""
    while True:
        page, more = events_page(client, run_id, after)
        yield from page
        if not more or not page:
            return
        after = page[-1]["seq"]


def run_follow(*, client: ApiClient, run_id: str, on_event: OnEvent, after: int = 0, use_ws: bool = True) -> int:
    """Hand each event after ``after`` to ``on_event`` in order; return the exit code of the one that
    ends the run (0 completed, 1 failed, 2 cancelled). Errors of the REST API raise ``ApiError``."""
    cursor = _Cursor(after, on_event)
    status = client.get(f"runs/{segment(run_id)}")["status"]  # unknown run or bad token: the API's message
    _catch_up(client, run_id, cursor)
    if cursor.exit_code is None and status in STATUS_EXIT_CODES:
        cursor.exit_code = STATUS_EXIT_CODES[status]  # it had ended before, at or below --after
    if cursor.exit_code is None and use_ws and client.token:
        _follow_ws(client, run_id, cursor)
    while cursor.exit_code is None:
        time.sleep(POLL_INTERVAL_S)
        _patiently(lambda: _catch_up(client, run_id, cursor))
    return cursor.exit_code


def _patiently(read: Callable[[], None]) -> None:
    """``read``, asked again while the server does not answer (or its proxy says it is away: 502,
    503, 504), for ``OUTAGE_S``, said once on stderr."""
    deadline = None
    while True:
        try:
            return read()
        except ApiError as exc:
            if exc.code != "unreachable" and exc.status not in (502, 503, 504):
                raise
            now = time.monotonic()
            if deadline is None:
                deadline = now + OUTAGE_S
                echo(f"the API does not answer ({exc.message}); asking again for {OUTAGE_S:g} s", err=True)
            if now >= deadline:
                raise
            time.sleep(OUTAGE_RETRY_S)


def _catch_up(client: ApiClient, run_id: str, cursor: _Cursor) -> None:
    for event in events_all(client, run_id, cursor.seq):
        cursor.take(event)


def ws_url(api_url: str, run_id: str, after: int) -> str:
    parts = urlsplit(api_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = f"{parts.path.rstrip('/')}/ws/runs/{segment(run_id)}/"
    return urlunsplit((scheme, parts.netloc, path, f"after={after}", ""))


def _follow_ws(client: ApiClient, run_id: str, cursor: _Cursor) -> None:
    """Until the run ends or the socket is not usable; the caller polls from where this stopped."""
    parts = urlsplit(client.api_url)
    try:
        ws = connect(ws_url(client.api_url, run_id, cursor.seq), open_timeout=5, close_timeout=1,
                     additional_headers={"Authorization": f"Token {client.token}"},
                     origin=f"{parts.scheme}://{parts.netloc}", user_agent_header=USER_AGENT)
    except (InvalidHandshake, InvalidURI, OSError, TimeoutError):
        return  # no WebSocket endpoint (yet), or a proxy in the way: polling works everywhere
    with ws:
        while cursor.exit_code is None:
            try:
                frame = ws.recv(timeout=WS_QUIET_S)
            except TimeoutError:
                _patiently(lambda: _catch_up(client, run_id, cursor))
                continue
            except ConnectionClosed:
                return  # refused after accept (4401/4403) or the server went away
            try:
                event = json.loads(frame)
            except ValueError:
                continue
            if not isinstance(event, dict) or not isinstance(event.get("seq"), int):
                continue
            if event["seq"] > cursor.seq + 1:
                _patiently(lambda: _catch_up(client, run_id, cursor))  # never skip: fill a hole from the database first
            cursor.take(event)
