"""WebSocket consumers through the real ASGI application (origin check, auth, routing), with the
Redis channel layer and real workers: who may subscribe, and resuming with ?after=<seq>."""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import connections
from django.test import Client
from rest_framework.authtoken.models import Token

from aob_project.asgi import application
from approvals.models import Approval
from approvals.services import approval_decide
from tests.conftest import client_for, stored_run, wait_for_run
from workflows.models import Event, Run

EXAMPLES = Path(settings.BASE_DIR) / "examples"
HELLO = json.loads((EXAMPLES / "hello-chain.json").read_text())
APPROVAL = json.loads((EXAMPLES / "approval.json").read_text())
TIMEOUT = 10


def run(coro: Any) -> Any:
    """Run a test's async part; then close the database connection the consumers used in asgiref's
    one thread-sensitive executor thread, which would otherwise outlive the test database, and
    drop the channel layer, whose locks belong to this event loop (a socket the server closed
    mid-receive can leave one held for the next test's loop)."""

    async def main() -> Any:
        try:
            return await coro
        finally:
            await sync_to_async(connections.close_all)()

    try:
        return asyncio.run(main())
    finally:
        channel_layers.backends.clear()


def headers(token: str | None = None, origin: str = "http://127.0.0.1") -> list[tuple[bytes, bytes]]:
    out = [(b"origin", origin.encode()), (b"host", b"127.0.0.1")]
    if token:
        out.append((b"authorization", f"Token {token}".encode()))
    return out


def communicator(path: str, token: str | None = None, **kw: Any) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path, headers=headers(token, **kw))


async def close_code(comm: WebsocketCommunicator) -> int | None:
    connected, _ = await comm.connect(timeout=TIMEOUT)
    assert connected  # accepted, so the client can read why it is closed
    message = await comm.receive_output(timeout=TIMEOUT)
    assert message["type"] == "websocket.close", message
    return message.get("code")


async def frames_until(comm: WebsocketCommunicator, last_seq: int) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1]["seq"] < last_seq:
        frames.append(await comm.receive_json_from(timeout=TIMEOUT))
    return frames


def start(user: Any, definition: dict[str, Any], inputs: dict[str, Any]) -> str:
    response = client_for(user).post("/api/v1/runs", {"workflow": definition, "inputs": inputs}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["run_id"]


def waiting_approval_run(owner: Any) -> tuple[str, Approval]:
    """A run of the approval example, parked at its gate: its id and the pending approval."""
    run_id = start(owner, APPROVAL, {"amount": 5, "customer": "Ada"})
    wait_for_run(run_id, statuses={"waiting_for_approval"})
    return run_id, Approval.objects.get(run_id=run_id, status=Approval.Status.PENDING)


def stored(run_id: str, after: int) -> list[dict[str, Any]]:
    return json.loads(json.dumps([e.as_dict() for e in Event.objects.filter(run_id=run_id, seq__gt=after)
                                  .order_by("seq")], default=str))


def test_socket_without_credentials_is_closed_4401(engine: Any) -> None:
    async def main() -> int | None:
        return await close_code(communicator(f"/ws/runs/{uuid.uuid4()}/"))

    assert run(main()) == 4401


def test_user_stream_without_credentials_is_closed_4401(engine: Any) -> None:
    async def main() -> int | None:
        return await close_code(communicator("/ws/events/", token="not-a-token"))

    assert run(main()) == 4401


def test_another_users_run_is_refused_4403(engine: Any, make_user: Any) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    run_id = start(alice, HELLO, {"name": "Ada"})
    wait_for_run(run_id)

    async def main() -> tuple[int | None, int | None]:
        other = await close_code(communicator(f"/ws/runs/{run_id}/", token=bob.auth_token.key))
        unknown = await close_code(communicator(f"/ws/runs/{uuid.uuid4()}/", token=bob.auth_token.key))
        return other, unknown

    assert run(main()) == (4403, 4403)


def test_a_person_a_gate_names_reads_its_run_and_a_stranger_does_not(engine: Any, make_user: Any) -> None:
    """The handshake asks the approvals of the one run (``visibility.run_visible``), not every approval
    naming the user: each way of asking answers alike."""
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    run_id, approval = waiting_approval_run(alice)
    Approval.objects.filter(pk=approval.pk).update(approvers=["bob"])

    async def main() -> tuple[dict[str, Any], int | None]:
        asked = communicator(f"/ws/runs/{run_id}/", token=bob.auth_token.key)
        connected, _ = await asked.connect(timeout=TIMEOUT)
        assert connected
        first = await asked.receive_json_from(timeout=TIMEOUT)
        await asked.disconnect()
        return first, await close_code(communicator(f"/ws/runs/{run_id}/", token=carol.auth_token.key))

    first, stranger = run(main())
    assert first["type"] == "workflow_started" and first["run_id"] == run_id
    assert stranger == 4403


def test_foreign_origin_is_rejected(engine: Any, user: Any) -> None:
    async def main() -> bool:
        comm = communicator("/ws/events/", token=user.auth_token.key, origin="http://evil.example")
        connected, _ = await comm.connect(timeout=TIMEOUT)
        await comm.disconnect()
        return connected

    assert run(main()) is False


def test_resume_after_returns_exactly_the_missing_events(engine: Any, user: Any) -> None:
    run_id = start(user, HELLO, {"name": "Ada"})
    assert wait_for_run(run_id).status == "completed"
    last = Run.objects.get(pk=run_id).event_seq
    expected = stored(run_id, after=3)
    assert last > 4 and expected[-1]["seq"] == last

    async def main() -> tuple[list[dict[str, Any]], bool]:
        comm = communicator(f"/ws/runs/{run_id}/?after=3", token=user.auth_token.key)
        connected, _ = await comm.connect(timeout=TIMEOUT)
        assert connected
        frames = await frames_until(comm, last)
        quiet = await comm.receive_nothing(timeout=0.5)
        await comm.disconnect()
        return frames, quiet

    frames, quiet = run(main())
    assert [f["seq"] for f in frames] == list(range(4, last + 1))
    assert frames == expected  # each frame is the event as stored
    assert quiet  # nothing after the last one: no duplicate


def test_live_events_follow_the_replay_without_gap_or_duplicate(engine: Any, user: Any) -> None:
    run_id, approval = waiting_approval_run(user)
    replayed_upto = Run.objects.get(pk=run_id).event_seq

    async def main() -> list[dict[str, Any]]:
        comm = communicator(f"/ws/runs/{run_id}/?after=2", token=user.auth_token.key)
        connected, _ = await comm.connect(timeout=TIMEOUT)
        assert connected
        frames = await frames_until(comm, replayed_upto)
        # Now something new happens: the decision, then the workers finish the run.
        await sync_to_async(approval_decide)(approval=approval, user=user, approve=True, comment="ok")
        while frames[-1]["type"] != "workflow_completed":
            frames.append(await comm.receive_json_from(timeout=TIMEOUT))
        assert await comm.receive_nothing(timeout=0.5)
        await comm.disconnect()
        return frames

    frames = run(main())
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(3, seqs[-1] + 1))
    live = [f["type"] for f in frames if f["seq"] > replayed_upto]
    assert live[0] == "approval_decided" and live[-1] == "workflow_completed"
    assert frames == stored(run_id, after=2)


def test_user_stream_carries_every_run_of_the_user(engine: Any, user: Any) -> None:
    async def main() -> list[dict[str, Any]]:
        comm = communicator("/ws/events/", token=user.auth_token.key)
        connected, _ = await comm.connect(timeout=TIMEOUT)
        assert connected
        run_id = await sync_to_async(start)(user, HELLO, {"name": "Ada"})
        frames = []
        while not frames or frames[-1]["type"] != "workflow_completed":
            frames.append(await comm.receive_json_from(timeout=TIMEOUT))
        await comm.disconnect()
        assert {f["run_id"] for f in frames} == {run_id}
        return frames

    frames = run(main())
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))


def test_a_long_node_is_seen_starting_while_it_runs(engine: Any, user: Any, remote: Any) -> None:
    """``node_started`` is pushed when the node starts, not held until its task ends."""
    definition = {"nodes": [{"id": "first", "type": "http", "config": {"url": f"{remote.base}/sleep/0.5"}},
                            {"id": "slow", "type": "http", "config": {"url": f"{remote.base}/sleep/2"}}],
                  "edges": [{"from": "first", "to": "slow"}]}

    run_ids: list[str] = []

    async def main() -> str:
        run_id = await sync_to_async(start)(user, definition, {})
        run_ids.append(run_id)
        comm = communicator(f"/ws/runs/{run_id}/", token=user.auth_token.key)
        connected, _ = await comm.connect(timeout=TIMEOUT)
        assert connected
        while True:
            frame = await comm.receive_json_from(timeout=TIMEOUT)
            if frame["type"] == "node_started" and frame["node_id"] == "slow":
                break
        status = await sync_to_async(lambda: Run.objects.get(pk=run_id).node_runs.get(node_id="slow").status)()
        await comm.disconnect()
        return status

    assert run(main()) == "running"
    # the session worker finishes the run before the next test's flush truncates its tables
    assert wait_for_run(run_ids[0]).status == "completed"


def stored_run_with_events(user: Any, count: int) -> tuple[str, list[dict[str, Any]]]:
    """A run and ``count`` of its events, stored without any worker or push."""
    from django.utils import timezone

    run_ = stored_run(user, HELLO)
    rows = Event.objects.bulk_create([Event(run=run_, seq=seq, type="node_started", node_id="greet", data={},
                                            created_at=timezone.now()) for seq in range(1, count + 1)])
    return str(run_.pk), [e.as_dict() for e in rows]


def test_user_stream_keeps_a_runs_order_when_a_push_overtakes_another(transactional_db: Any, user: Any) -> None:
    """Two workers push one run's events; the later one may arrive first."""
    from channels.layers import get_channel_layer

    async def main() -> list[dict[str, Any]]:
        comm = communicator("/ws/events/", token=user.auth_token.key)
        connected, _ = await comm.connect(timeout=TIMEOUT)
        assert connected
        _, frames = await sync_to_async(stored_run_with_events)(user, 4)
        layer = get_channel_layer()
        for seq in (3, 1, 2, 4, 4):
            await layer.group_send(f"user.{user.pk}", {"type": "run.event", "event": frames[seq - 1]})
        got = [await comm.receive_json_from(timeout=TIMEOUT) for _ in range(4)]
        assert await comm.receive_nothing(timeout=0.5)
        await comm.disconnect()
        return got

    assert [f["seq"] for f in run(main())] == [1, 2, 3, 4]


def test_a_replay_and_a_fill_read_a_page_at_a_time_and_lose_nothing(transactional_db: Any, user: Any,
                                                                    settings: Any) -> None:
    """A replay read up to 5,000 events at once whatever their size (up to 64 KiB each: 320 MB in
    the web process, for one socket), and a hole larger than that lost the events past it. Now
    each read holds at most ``AOB_DETAILS_MAX_BYTES`` of events and the consumer reads on after the
    last one sent, on connect and when a live event comes after a hole: 2 events a read here, and
    every event once, in order."""
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    settings.AOB_DETAILS_MAX_BYTES = 30_000
    run_ = stored_run(user, HELLO)
    run_id = str(run_.pk)

    def store(seqs: range) -> list[dict[str, Any]]:
        return [e.as_dict() for e in Event.objects.bulk_create(
            Event(run=run_, seq=seq, type="node_completed", node_id="greet",
                  data={"iteration": seq, "pad": "x" * 10_000}, created_at=timezone.now()) for seq in seqs)]

    def capture() -> CaptureQueriesContext:
        """The statements of the thread the consumers read the database in (asgiref's one)."""
        context = CaptureQueriesContext(connections["default"])
        context.__enter__()
        return context

    store(range(1, 21))

    async def main() -> tuple[list[dict[str, Any]], bool, CaptureQueriesContext]:
        reads = await sync_to_async(capture)()
        comm = communicator(f"/ws/runs/{run_id}/?after=0", token=user.auth_token.key)
        connected, _ = await comm.connect(timeout=TIMEOUT)
        assert connected
        frames = await frames_until(comm, 20)
        *_, last = await sync_to_async(store)(range(21, 41))  # only the last one is pushed
        await get_channel_layer().group_send(f"run.{run_id}", {"type": "run.event", "event": last})
        frames += await frames_until(comm, 40)
        quiet = await comm.receive_nothing(timeout=0.5)
        await comm.disconnect()
        await sync_to_async(reads.__exit__)(None, None, None)
        return frames, quiet, reads

    frames, quiet, reads = run(main())
    assert [f["seq"] for f in frames] == list(range(1, 41)) and quiet
    assert frames == stored(run_id, 0)
    pages = [q["sql"] for q in reads.captured_queries
             if '"workflows_event"."data"' in q["sql"] and "octet_length" not in q["sql"]]
    assert len(pages) == 10 + 10  # 20 events replayed, 2 a read; 19 filled, 2 a read


def test_a_token_in_the_query_string_is_not_accepted(engine: Any, make_user: Any) -> None:
    """Tokens travel in the Authorization header only: URLs end up in access logs."""
    alice = make_user("alice")
    run_id = start(alice, HELLO, {"name": "Ada"})

    async def main() -> int | None:
        return await close_code(communicator(f"/ws/runs/{run_id}/?token={alice.auth_token.key}"))

    assert run(main()) == 4401
    # the session worker finishes the run before the next test's flush truncates its tables
    assert wait_for_run(run_id).status == "completed"


@pytest.mark.parametrize("auth", [b"Token a\x00b", b"Bearer \x00", b"Token \xff\xfe\x00", b"Token " + b"k" * 5000])
def test_an_authorization_no_key_can_be_is_closed_4401_not_raised(transactional_db: Any, auth: bytes) -> None:
    """A NUL in the key reached PostgreSQL, which refuses it in text: the handshake raised. uvicorn's
    parser refuses a NUL in a header first; daphne and other ASGI servers pass it."""
    async def main() -> int | None:
        return await close_code(WebsocketCommunicator(application, f"/ws/runs/{uuid.uuid4()}/",
                                                      headers=[*headers(), (b"authorization", auth)]))

    assert run(main()) == 4401


def test_a_frame_a_client_sends_is_dropped_unread_and_the_stream_goes_on(engine: Any, user: Any) -> None:
    """The stream is one-way: what a client sends (here 1 MB that is not JSON) is never parsed in
    the event loop every socket and request of the process shares, and breaks nothing."""
    run_id, approval = waiting_approval_run(user)
    seen = Run.objects.get(pk=run_id).event_seq

    async def main() -> list[dict[str, Any]]:
        comm = communicator(f"/ws/runs/{run_id}/?after={seen}", token=user.auth_token.key)
        connected, _ = await comm.connect(timeout=TIMEOUT)
        assert connected
        await comm.send_to(text_data="[" * 1_000_000)
        await comm.send_to(bytes_data=b"\x00" * 1000)
        assert await comm.receive_nothing(timeout=0.5)
        await sync_to_async(approval_decide)(approval=approval, user=user, approve=True, comment="ok")
        frames = [await comm.receive_json_from(timeout=TIMEOUT)]
        while frames[-1]["type"] != "workflow_completed":
            frames.append(await comm.receive_json_from(timeout=TIMEOUT))
        await comm.disconnect()
        return frames

    frames = run(main())
    assert frames[0]["type"] == "approval_decided" and frames == stored(run_id, after=seen)


def test_an_open_stream_ends_when_its_token_is_revoked_or_its_user_deactivated(engine: Any, user: Any,
                                                                               make_user: Any, settings: Any) -> None:
    """An open socket is judged again before it streams on (``AOB_WS_RECHECK_S``, 0 here): the
    next event after its token is deleted, or its user deactivated, closes it with 4401 instead of
    reaching a client that may no longer read it. The control: the same user's stream goes on
    through a whole run while the user is still active."""
    settings.AOB_WS_RECHECK_S = 0
    keeper = make_user("keeper")
    waiting = [waiting_approval_run(owner) for owner in (user, keeper, keeper)]
    (revoked_run, revoked_approval), (first_run, first_approval), (_, second_approval) = waiting
    seen = Run.objects.get(pk=revoked_run).event_seq
    revoked, kept_key = user.auth_token.key, keeper.auth_token.key

    async def main() -> tuple[Any, Any, list[dict[str, Any]], Any]:
        comm = communicator(f"/ws/runs/{revoked_run}/?after={seen}", token=revoked)
        events = communicator("/ws/events/", token=revoked)
        kept = communicator("/ws/events/", token=kept_key)
        for socket in (comm, events, kept):
            assert (await socket.connect(timeout=TIMEOUT))[0]
        await sync_to_async(lambda: Token.objects.filter(key=revoked).delete())()
        await sync_to_async(approval_decide)(approval=revoked_approval, user=user, approve=True, comment="ok")
        closed = await comm.receive_output(timeout=TIMEOUT)
        closed_too = await events.receive_output(timeout=TIMEOUT)  # the same token, on the user stream
        await sync_to_async(approval_decide)(approval=first_approval, user=keeper, approve=True, comment="ok")
        frames = [await kept.receive_json_from(timeout=TIMEOUT)]
        while frames[-1]["type"] != "workflow_completed":
            frames.append(await kept.receive_json_from(timeout=TIMEOUT))
        await sync_to_async(lambda: User.objects.filter(pk=keeper.pk).update(is_active=False))()
        await sync_to_async(approval_decide)(approval=second_approval, user=keeper, approve=True, comment="ok")
        later = await kept.receive_output(timeout=TIMEOUT)
        for socket in (comm, events, kept):
            await socket.disconnect()
        return closed, closed_too, frames, later

    closed, closed_too, frames, later = run(main())
    assert closed == {"type": "websocket.close", "code": 4401}
    assert closed_too == {"type": "websocket.close", "code": 4401}
    frames = [f for f in frames if f["type"] != "inbox_changed"]  # keeper decided: their inbox is nudged too
    assert {f["run_id"] for f in frames} == {first_run} and "approval_decided" in [f["type"] for f in frames]
    assert later == {"type": "websocket.close", "code": 4401}


def test_a_browsers_open_stream_ends_at_logout(engine: Any, user: Any, settings: Any) -> None:
    """A session socket is judged again from the session as the database has it now (the scope
    keeps what the handshake read): after a logout its next event closes it with 4401; before it,
    the stream goes on (the control)."""
    settings.AOB_WS_RECHECK_S = 0
    waiting = [waiting_approval_run(user)[1] for _ in range(2)]
    browser = Client()
    browser.force_login(user)
    cookie = f"sessionid={browser.cookies['sessionid'].value}".encode()

    async def main() -> tuple[list[dict[str, Any]], Any]:
        comm = WebsocketCommunicator(application, "/ws/events/", headers=[*headers(), (b"cookie", cookie)])
        assert (await comm.connect(timeout=TIMEOUT))[0]
        await sync_to_async(approval_decide)(approval=waiting[0], user=user, approve=True, comment="ok")
        frames = [await comm.receive_json_from(timeout=TIMEOUT)]
        while frames[-1]["type"] != "workflow_completed":
            frames.append(await comm.receive_json_from(timeout=TIMEOUT))
        await sync_to_async(browser.logout)()
        await sync_to_async(approval_decide)(approval=waiting[1], user=user, approve=True, comment="ok")
        closed = await comm.receive_output(timeout=TIMEOUT)
        await comm.disconnect()
        return frames, closed

    frames, closed = run(main())
    assert "approval_decided" in [f["type"] for f in frames]
    assert closed == {"type": "websocket.close", "code": 4401}


def test_one_user_has_at_most_the_operators_number_of_open_streams(transactional_db: Any, make_user: Any,
                                                                    settings: Any) -> None:
    """Past ``AOB_WS_MAX_PER_USER`` open in a process, a user's next socket is closed with 4429;
    another user's is not, and closing one makes room again."""
    settings.AOB_WS_MAX_PER_USER = 2
    many, other = make_user("many"), make_user("other")
    keys = {"many": many.auth_token.key, "other": other.auth_token.key}

    async def main() -> tuple[Any, bool, bool]:
        first, second = (communicator("/ws/events/", token=keys["many"]) for _ in range(2))
        for socket in (first, second):
            assert (await socket.connect(timeout=TIMEOUT))[0]
        third = communicator("/ws/events/", token=keys["many"])
        refused = await close_code(third)
        theirs = communicator("/ws/events/", token=keys["other"])
        their_ok = (await theirs.connect(timeout=TIMEOUT))[0] and await theirs.receive_nothing(timeout=0.2)
        await first.disconnect()
        again = communicator("/ws/events/", token=keys["many"])
        room = (await again.connect(timeout=TIMEOUT))[0] and await again.receive_nothing(timeout=0.2)
        for socket in (second, theirs, again, third):
            await socket.disconnect()
        return refused, their_ok, room

    refused, their_ok, room = run(main())
    assert refused == 4429 and their_ok and room


async def group_members(group: str) -> list[bytes]:
    layer = get_channel_layer()
    return await layer.connection(layer.consistent_hash(group)).zrange(layer._group_key(group), 0, -1)


def test_a_socket_whose_handler_raised_gives_its_place_back(transactional_db: Any, make_user: Any,
                                                           settings: Any) -> None:
    """A handler that raises (a client gone mid-send, a Redis error) ends the consumer without
    ``disconnect()``: its place among the user's open sockets is released all the same, and its
    channel leaves the group (before, events went on queuing for it until the group expired)."""
    settings.AOB_WS_MAX_PER_USER = 1
    owner = make_user("owner")
    key = owner.auth_token.key
    group = f"user.{owner.pk}"

    async def break_one() -> bool:
        broken = communicator("/ws/events/", token=key)
        assert (await broken.connect(timeout=TIMEOUT))[0]
        assert len(await group_members(group)) == 1
        await get_channel_layer().group_send(group, {"type": "run.event"})  # no event: KeyError
        try:
            await broken.wait(timeout=TIMEOUT)
        except KeyError:
            deadline = asyncio.get_running_loop().time() + TIMEOUT
            while await group_members(group) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)  # polls the condition: the departure runs as a task of its own
            return not await group_members(group)
        return False

    async def open_another() -> bool:
        fresh = communicator("/ws/events/", token=key)
        admitted = (await fresh.connect(timeout=TIMEOUT))[0] and await fresh.receive_nothing(timeout=0.2)
        await fresh.disconnect()
        return admitted

    # two event loops: the consumer that died mid-receive may leave the loop's layer connection unusable
    assert run(break_one())
    assert run(open_another())


def test_an_event_whose_live_message_was_lost_reaches_a_quiet_stream(transactional_db: Any, user: Any,
                                                                     settings: Any) -> None:
    """A run's last event, stored and never pushed (its worker killed between commit and push, a
    channel past capacity, Redis restarted): before, the page watching waited for a later event
    that never came and showed the run running. A stream quiet for ``AOB_WS_RECHECK_S`` reads on
    from the database. The control: with a longer quiet time the same event does not arrive
    within the test's wait, so it is the tail's read that brought it, not a push."""
    from django.utils import timezone

    run_id, frames = stored_run_with_events(user, 3)

    def lost(seq: int) -> dict[str, Any]:  # stored, never pushed
        event = Event.objects.create(run_id=run_id, seq=seq, type="workflow_completed", data={},
                                     created_at=timezone.now())
        return json.loads(json.dumps(event.as_dict(), default=str))

    async def watch(quiet_s: float, seq: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Replay the run's last event (``seq``), then store the next one without a push."""
        settings.AOB_WS_RECHECK_S = quiet_s
        comm = communicator(f"/ws/runs/{run_id}/?after={seq - 1}", token=user.auth_token.key)
        assert (await comm.connect(timeout=TIMEOUT))[0]
        replayed = [await comm.receive_json_from(timeout=TIMEOUT)]
        stored_last = await sync_to_async(lost)(seq + 1)
        if not await comm.receive_nothing(timeout=3, interval=0.05):
            replayed.append(await comm.receive_json_from(timeout=TIMEOUT))
        await comm.disconnect()
        return replayed, stored_last

    seen, last = run(watch(0.5, 3))
    assert [f["seq"] for f in seen] == [3, 4] and seen[1] == last
    control, _ = run(watch(60, 4))
    assert [f["seq"] for f in control] == [4]


def test_a_quiet_stream_ends_when_its_token_is_revoked(transactional_db: Any, user: Any, settings: Any) -> None:
    """Before, a socket was judged again only when a live event came: a revoked token kept a quiet
    run's socket open. Now its quiet read judges the user first and closes it (4401)."""
    settings.AOB_WS_RECHECK_S = 0.3
    run_id, _ = stored_run_with_events(user, 1)
    key = user.auth_token.key

    async def main() -> Any:
        comm = communicator(f"/ws/runs/{run_id}/?after=1", token=key)
        assert (await comm.connect(timeout=TIMEOUT))[0]
        assert await comm.receive_nothing(timeout=0.8)  # quiet reads while the token holds: nothing to send
        await sync_to_async(lambda: Token.objects.filter(key=key).delete())()
        closed = await comm.receive_output(timeout=TIMEOUT)
        await comm.disconnect()
        return closed

    assert run(main()) == {"type": "websocket.close", "code": 4401}


def test_the_user_stream_reads_on_for_a_run_whose_last_message_was_lost(transactional_db: Any, user: Any,
                                                                         settings: Any) -> None:
    """The runs list and the inbox follow ``ws/events/``: a run's last event lost on the way left
    its row showing the run running. A quiet user stream reads the counters of the runs it has
    seen and the events past what it sent. The control: with a longer quiet time, nothing comes."""
    from django.utils import timezone

    run_id, frames = stored_run_with_events(user, 2)

    def lost(seq: int) -> dict[str, Any]:  # stored and counted on the run, never pushed
        event = Event.objects.create(run_id=run_id, seq=seq, type="workflow_completed", data={},
                                     created_at=timezone.now())
        Run.objects.filter(pk=run_id).update(event_seq=seq)
        return json.loads(json.dumps(event.as_dict(), default=str))

    async def watch(quiet_s: float, seq: int) -> tuple[list[int], dict[str, Any]]:
        """The stream sees the run's event ``seq`` live, then its next is stored without a push."""
        settings.AOB_WS_RECHECK_S = quiet_s
        comm = communicator("/ws/events/", token=user.auth_token.key)
        assert (await comm.connect(timeout=TIMEOUT))[0]
        pushed = await sync_to_async(stored)(run_id, seq - 1)
        await get_channel_layer().group_send(f"user.{user.pk}", {"type": "run.event", "event": pushed[0]})
        got = [f["seq"] for f in await frames_until(comm, seq)][-1:]  # with the run's recent ones before it
        stored_last = await sync_to_async(lost)(seq + 1)
        if not await comm.receive_nothing(timeout=3, interval=0.05):
            got.append((await comm.receive_json_from(timeout=TIMEOUT))["seq"])
        await comm.disconnect()
        return got, stored_last

    Run.objects.filter(pk=run_id).update(event_seq=2)
    seen, _ = run(watch(0.5, 2))
    assert seen == [2, 3]
    control, _ = run(watch(60, 3))
    assert control == [3]


def test_the_user_stream_reads_on_for_a_lost_event_while_another_run_keeps_talking(transactional_db: Any,
                                                                                    user: Any, settings: Any) -> None:
    """The user's stream carries every run of the user: a run whose last message was lost is
    read on even while another run's events keep arriving (a quiet read that waited for silence
    never came, on a busy account)."""
    from django.utils import timezone

    settings.AOB_WS_RECHECK_S = 0.5
    quiet_run, _ = stored_run_with_events(user, 1)
    busy_run, _ = stored_run_with_events(user, 1)

    def store(run_id: str, seq: int) -> dict[str, Any]:
        event = Event.objects.create(run_id=run_id, seq=seq, type="node_started", data={}, created_at=timezone.now())
        Run.objects.filter(pk=run_id).update(event_seq=seq)
        return json.loads(json.dumps(event.as_dict(), default=str))

    async def main() -> list[tuple[str, int]]:
        comm = communicator("/ws/events/", token=user.auth_token.key)
        assert (await comm.connect(timeout=TIMEOUT))[0]
        layer = get_channel_layer()
        seen = []
        for run_id in (quiet_run, busy_run):
            first = (await sync_to_async(stored)(run_id, 0))[0]
            await layer.group_send(f"user.{user.pk}", {"type": "run.event", "event": first})
            frame = await comm.receive_json_from(timeout=TIMEOUT)
            seen.append((frame["run_id"], frame["seq"]))
        await sync_to_async(store)(quiet_run, 2)  # lost: never pushed
        for seq in range(2, 12):  # the busy run talks every 0.2 s (a pace, not a wait), past the quiet time
            pushed = await sync_to_async(store)(busy_run, seq)
            await layer.group_send(f"user.{user.pk}", {"type": "run.event", "event": pushed})
            await asyncio.sleep(0.2)
        while not await comm.receive_nothing(timeout=0.3):
            frame = await comm.receive_json_from(timeout=TIMEOUT)
            seen.append((frame["run_id"], frame["seq"]))
        await comm.disconnect()
        return seen

    seen = run(main())
    assert (quiet_run, 2) in seen
    assert [seq for run_id, seq in seen if run_id == busy_run] == list(range(1, 12))


def gated_for(approvers: list[str]) -> dict[str, Any]:
    """The approval example with its gate asking ``approvers`` (two of them to approve, never its owner)."""
    definition = copy.deepcopy(APPROVAL)
    for node in definition["nodes"]:
        if node["type"] == "hitl":
            node["config"].update(approvers=approvers, required_approvals=2, allow_self_approval=False)
    return definition


def test_an_approvers_inbox_stream_hears_of_each_change_to_a_gate_on_another_owners_run(
        engine: Any, make_user: Any, settings: Any) -> None:
    """The inbox (approvals.js) follows ``ws/events/``, which carries the events of the user's own
    runs alone: a gate on alice's run asking bob, a colleague's vote on it, the run cancelled under
    it, none reached bob's inbox, which went on saying it was live with a stale list. Now a change
    to an approval nudges the groups of the names it lists, and a user's stream is in the group of
    each of their names (``approvers.inbox_group``): bob hears ``{"type": "inbox_changed"}`` and
    nothing else (no run, no approval: his inbox reads what he may see), once a change though the
    gate names him twice (himself and his group); someone it does not name hears nothing."""
    settings.AOB_WS_RECHECK_S = 1  # the quiet reads each second bring bob nothing either: not his runs
    settings.AOB_WS_INBOX_NUDGE_MIN_S = 0.2  # each change heard alone, not held to the next window
    alice, bob, carol, mallory = (make_user(name) for name in ("alice", "bob", "carol", "mallory"))
    finance = Group.objects.create(name="finance")
    finance.user_set.add(bob, carol)

    def decide_as_carol(run_id: str) -> None:
        approval = Approval.objects.get(run_id=run_id, status=Approval.Status.PENDING)
        approval_decide(approval=approval, user=carol, approve=True)

    def cancel(run_id: str) -> None:
        assert client_for(alice).post(f"/api/v1/runs/{run_id}/cancel").status_code == 200

    async def heard(comm: WebsocketCommunicator) -> list[dict[str, Any]]:
        frames = [await comm.receive_json_from(timeout=TIMEOUT)]
        while not await comm.receive_nothing(timeout=0.5):
            frames.append(await comm.receive_json_from(timeout=TIMEOUT))
        return frames

    async def main() -> tuple[list[list[dict[str, Any]]], bool]:
        sockets = [communicator("/ws/events/", token=u.auth_token.key) for u in (bob, mallory)]
        for comm in sockets:
            assert (await comm.connect(timeout=TIMEOUT))[0]
        approver, bystander = sockets
        run_id = await sync_to_async(start)(alice, gated_for(["finance", "bob"]), {"amount": 5, "customer": "Ada"})
        asked = await heard(approver)
        await sync_to_async(decide_as_carol)(run_id)
        voted = await heard(approver)
        await sync_to_async(cancel)(run_id)
        ended = await heard(approver)
        quiet = await bystander.receive_nothing(timeout=1)
        for comm in sockets:
            await comm.disconnect()
        return [asked, voted, ended], quiet

    changes, bystander_heard_nothing = run(main())
    assert changes == [[{"type": "inbox_changed"}]] * 3
    assert bystander_heard_nothing


async def age_memberships(group: str, seconds: int | None) -> int:
    """Make the group's members look as if they joined ``seconds`` ago (what a day without a join
    does), or, with None, drop the group (what a Redis restart does); how many members it had."""
    layer = get_channel_layer()
    key = layer._group_key(group)
    async with layer.connection(layer.consistent_hash(group)) as conn:
        members = await conn.zrange(key, 0, -1)
        if seconds is None:
            await conn.delete(key)
        for member in members if seconds is not None else []:
            await conn.zadd(key, {member: int(time.time()) - seconds})
    return len(members)


@pytest.mark.parametrize("lost", ["a-day-old", "redis-restarted"])
def test_a_user_stream_open_for_more_than_a_day_still_hears_of_a_new_run(engine: Any, user: Any, settings: Any,
                                                                       lost: str) -> None:
    """A socket joined its group once, at its handshake, and channels_redis trims a member older
    than ``group_expiry`` (a day) at the next send to the group: a page open longer (the runs list,
    the inbox) said "● live" and heard of no new run again (its quiet read reads only runs it has
    heard of). A group lost with a Redis restart did the same at once. A socket now joins its
    groups again every ``AOB_WS_RECHECK_S`` (``_Consumer.rejoin``)."""
    settings.AOB_WS_RECHECK_S = 1
    expiry = get_channel_layer().group_expiry

    async def main() -> list[dict[str, Any]]:
        comm = communicator("/ws/events/", token=user.auth_token.key)
        assert (await comm.connect(timeout=TIMEOUT))[0]
        aged = await age_memberships(f"user.{user.pk}", expiry + 1 if lost == "a-day-old" else None)
        assert aged == 1  # the socket, a day on (or gone with Redis)
        assert await comm.receive_nothing(timeout=2.5)  # a recheck period or two pass, as they would in a day
        await sync_to_async(start)(user, HELLO, {"name": "Ada"})
        frames: list[dict[str, Any]] = []
        while not frames or frames[-1]["type"] != "workflow_completed":
            frames.append(await comm.receive_json_from(timeout=TIMEOUT))
        await comm.disconnect()
        return frames

    frames = run(main())
    assert frames[0]["type"] == "workflow_started" and frames[-1]["type"] == "workflow_completed"


def test_the_inbox_page_reads_itself_again_on_a_nudge_and_on_opening_again() -> None:
    """The nudge is only as good as the page that reads it: approvals.js re-reads the inbox on
    ``inbox_changed``, and at every open of its socket (the first too: a gate asking before the socket
    joined its groups; again: nudges sent while it was closed are lost). In a browser:
    ``tests/web/test_browser.py``'s gate asking while the inbox's socket connects."""
    script = (Path(settings.BASE_DIR) / "workflows/static/aob/approvals.js").read_text()
    assert 'frame.type === "inbox_changed"' in script
    assert 'onState: (s) => { if (s === "live") load(); }' in script
