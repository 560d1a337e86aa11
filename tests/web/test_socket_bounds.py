"""The event streams' bounds between users: a socket opens only for a page of AOB's own origin
(``aob_project.same_origin``), and one user's replays cannot hold another user's socket
(``workflows.consumers.turns``). Each failed on the code before (a red-team helper's findings)."""

from __future__ import annotations

from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

from aob_project.asgi import application
from tests.web.test_consumers import TIMEOUT, run

SERVER = "127.0.0.1:8000"  # where the browser's page came from: the socket's Host


def browser_cookie(user: Any) -> bytes:
    browser = Client()
    browser.force_login(user)
    return f"sessionid={browser.cookies['sessionid'].value}".encode()


def test_a_page_on_another_port_of_the_same_host_cannot_open_a_users_stream(transactional_db: Any, user: Any,
                                                                             settings: Any) -> None:
    """Cookies are not scoped by port, and two ports of one host are the same site, so a page
    another account of the shared machine serves at http://127.0.0.1:9999 has the browser open
    ws://127.0.0.1:8000/ws/events/ with the AOB user's session cookie. The origin check
    (channels' ``AllowedHostsOriginValidator``) compares the Origin's host name to ALLOWED_HOSTS
    and ignores its port and scheme, so it lets the foreign page in, and the page reads every
    event of the user's runs (inputs, messages, outputs' summaries) live. Django's own CSRF check
    compares the whole origin, port included; the socket's should too. Control: the page's own
    origin opens it; an origin of ``CSRF_TRUSTED_ORIGINS`` opens it too, as a form it posts."""
    cookie = browser_cookie(user)

    async def opened(origin: str) -> bool:
        comm = WebsocketCommunicator(application, "/ws/events/", headers=[
            (b"origin", origin.encode()), (b"host", SERVER.encode()), (b"cookie", cookie)])
        connected, _ = await comm.connect(timeout=TIMEOUT)
        if connected:
            connected = await comm.receive_nothing(timeout=0.3)  # not closed at once (4401/4403/4429)
        await comm.disconnect()
        return connected

    async def main() -> tuple[bool, bool, bool]:
        return (await opened(f"http://{SERVER}"), await opened("http://127.0.0.1:9999"),
                await opened("https://127.0.0.1"))

    own, other_port, other_scheme = run(main())
    settings.CSRF_TRUSTED_ORIGINS = ["https://*.example.com", "http://127.0.0.1:9999"]
    trusted, subdomain = run(opened("http://127.0.0.1:9999")), run(opened("https://aob.example.com"))
    assert own, "control: the page's own origin opens the stream"
    assert not other_port, "a page served on another port of the host opened the user's event stream"
    assert not other_scheme, "a page of another scheme and port opened the user's event stream"
    assert trusted and subdomain, "an origin the operator trusts opens it"


# One user's event-stream client, in a process of its own (as on another machine): ``k`` sockets,
# each replaying the run from the start (?after=0) and reading every frame, again and again.
REPLAYER = r'''
import asyncio, sys, time
from websockets.asyncio.client import connect
base, origin, path, token, n, k, seconds = sys.argv[1:8]
n, k, seconds = int(n), int(k), float(seconds)
async def reader(until):
    done = 0
    while time.monotonic() < until:
        async with connect(base + path, origin=origin, additional_headers={"Authorization": "Token " + token},
                           max_size=2**22, open_timeout=120) as ws:
            for _ in range(n):
                await ws.recv()
        done += 1
    return done
async def main():
    until = time.monotonic() + seconds
    print(sum(await asyncio.gather(*(reader(until) for _ in range(k)))), flush=True)
asyncio.run(main())
'''


@pytest.mark.system  # web processes of their own, from outside (make test-system)
def test_one_users_replays_do_not_stall_another_users_stream(web: str, make_user: Any) -> None:
    """A run of 20,000 small events (a loop of 10,000 iterations is within
    ``AOB_MAX_NODE_RUNS_PER_RUN``); its owner opens the 50 sockets ``AOB_WS_MAX_PER_USER`` allows,
    each ``?after=0``, and replays it over and over. Every socket's database reads in a web process
    go through asgiref's one thread-sensitive thread (``database_sync_to_async``; no
    ``ThreadSensitiveContext`` under Channels), first in first out, and nothing bounds how much
    replaying one user asks for: another user's socket waited 13-24 s to open (its token and its
    run's visibility are read on that thread), where it opens in about 10 ms otherwise (the
    control, measured first). It should open within a few seconds whatever another user replays."""
    import asyncio
    import subprocess
    import sys
    import time

    from django.utils import timezone
    from websockets.asyncio.client import connect

    from tests.conftest import stored_run
    from tests.web.test_consumers import HELLO
    from workflows.models import Event

    heavy, other = make_user("heavy"), make_user("other")
    theirs, count = stored_run(heavy, HELLO), 20_000
    Event.objects.bulk_create([Event(run=theirs, seq=seq, type="node_completed", node_id="greet",
                                     data={"iteration": seq, "output_artifact_id": "sha256:" + "ab" * 32},
                                     created_at=timezone.now()) for seq in range(1, count + 1)], batch_size=2000)
    mine = stored_run(other, HELLO)
    base = web.replace("http://", "ws://")

    async def opening_times() -> list[float]:
        times = []
        for _ in range(5):
            started = time.monotonic()
            async with connect(f"{base}/ws/runs/{mine.pk}/", origin=web, open_timeout=120,
                               additional_headers={"Authorization": f"Token {other.auth_token.key}"}):
                times.append(round(time.monotonic() - started, 3))
            await asyncio.sleep(0.2)
        return times

    control = asyncio.run(opening_times())
    replayer = subprocess.Popen([sys.executable, "-c", REPLAYER, base, web, f"/ws/runs/{theirs.pk}/?after=0",
                                 heavy.auth_token.key, str(count), "50", "8"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        loaded = asyncio.run(opening_times())
    finally:
        replayer.kill()  # mid-replay: what it read is not the point, the other socket's wait is
        replayer.wait(timeout=60)
    assert max(control) < 1.0, control
    assert max(loaded) < 3.0, f"another user's socket took {loaded} s to open (control {control})"


class Listeners:
    """WebSocket clients of a live web process, each reading every frame into ``frames[name]`` (seq,
    the time it came), and ``ended[name]`` once its socket closes."""

    def __init__(self, web: str) -> None:
        self.web, self.base = web, web.replace("http://", "ws://")
        self.frames: dict[str, list[tuple[int, float]]] = {}
        self.ended: dict[str, Any] = {}
        self.sockets: list[Any] = []

    async def open(self, name: str, run: Any, user: Any) -> None:
        import asyncio
        import json
        import time

        from websockets.asyncio.client import connect

        socket = await connect(f"{self.base}/ws/runs/{run.pk}/", origin=self.web, open_timeout=60,
                               additional_headers={"Authorization": f"Token {user.auth_token.key}"})
        self.sockets.append(socket)
        self.frames[name] = []

        async def read() -> None:
            try:
                async for text in socket:
                    self.frames[name].append((json.loads(text)["seq"], time.monotonic()))
            except Exception as exc:  # noqa: BLE001 - how it ended is what is recorded
                self.ended[name] = repr(exc)
            self.ended.setdefault(name, socket.close_code)

        asyncio.get_running_loop().create_task(read())

    async def seen(self, name: str, seq: int, within: float) -> float | None:
        """When ``name`` got ``seq``, waiting at most ``within`` seconds; None if it did not."""
        import asyncio
        import time

        until = time.monotonic() + within
        while time.monotonic() < until:
            got = [at for number, at in self.frames[name] if number == seq]
            if got:
                return got[0]
            await asyncio.sleep(0.02)
        return None

    async def close(self) -> None:
        for socket in self.sockets:
            await socket.close()


def appended(run: Any, items: list[tuple[str, str, dict[str, Any]]]) -> None:
    """A run's events appended and committed, pushed as a worker pushes them (in a thread of its own)."""
    from django.db import connection, transaction

    from workflows.engine.events import append

    try:
        with transaction.atomic():
            append(run.pk, run.owner_id, items)
    finally:
        connection.close()


@pytest.mark.system
def test_a_co_tenants_burst_of_events_does_not_drop_anothers_live_event(engine: Any, stack_env: dict[str, str],
                                                                       make_user: Any) -> None:
    """All of a web process's sockets share one Redis list of ``capacity`` messages, each a delivery
    to each member socket. A co-tenant's decision of 200 events (a branch of skipped nodes),
    watched by 10 of their sockets, filled it, and another user's event pushed then was dropped:
    it came by the quiet read, 30 s later (a red team's measure, 7 runs of 8). A burst goes as one
    stub now (``events.coalesced``), each socket reading it from the database."""
    import asyncio
    import time

    from tests.conftest import stored_run
    from tests.support.stack import start_web

    proc = start_web({**stack_env, "AOB_WS_RECHECK_S": "60"}, "uvicorn-bursts")
    heavy, victim = make_user("heavy"), make_user("victim")
    theirs, mine = stored_run(heavy), stored_run(victim)
    listeners = Listeners(proc.url)
    burst = 200

    async def scenario() -> tuple[float | None, float | None]:
        await listeners.open("victim", mine, victim)
        for i in range(10):
            await listeners.open(f"heavy{i}", theirs, heavy)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(appended, theirs, [("node_skipped", f"n{i}", {}) for i in range(burst)])
        await asyncio.to_thread(appended, mine, [("node_started", "a", {})])
        pushed = time.monotonic()
        victims = await listeners.seen("victim", 1, 10)
        theirs_last = await listeners.seen("heavy9", burst, 20)
        await listeners.close()
        return (None if victims is None else victims - pushed), (None if theirs_last is None else theirs_last - pushed)

    try:
        victims, theirs_last = asyncio.run(scenario())
    finally:
        proc.stop()
    assert victims is not None and victims < 5, f"the victim's live event came after {victims} s"
    assert theirs_last is not None  # the burst's own sockets got all of it, in order
    assert [seq for seq, _ in listeners.frames["heavy0"]] == list(range(1, burst + 1))
