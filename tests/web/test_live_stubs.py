"""A live frame's size must not decide whether the user's stream delivers it (``events.live_frame``
is a transport detail: a stub is read from the database in the socket's turn). The user's stream
sends the first live event it sees of a run whatever its stamp; a stub of the same event is read
with the connection's ``since`` filter was dropped when stamped more than ``SINCE_MARGIN_S`` before
the socket opened (stamped before its transaction commits, on its worker's clock), and every later
event of that run repeated the same filtered read: the client never saw it (a review's finding).
Now the stub's own event is read apart, unfiltered."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.utils import timezone

from tests.conftest import stored_run
from tests.web.test_consumers import HELLO, TIMEOUT, communicator, run
from workflows.engine.events import LIVE_FRAME_MAX_BYTES, live_frame
from workflows.models import Event


def _event_stamped_early(user: Any, data: dict[str, Any]) -> dict[str, Any]:
    run_ = stored_run(user, HELLO)
    Event.objects.create(run=run_, seq=1, type="approval_required", node_id="greet", data=data)
    # stamped before its transaction committed, or on a worker's clock behind the web's
    Event.objects.filter(run=run_, seq=1).update(created_at=timezone.now() - timedelta(seconds=10))
    return Event.objects.get(run=run_, seq=1).as_dict()


@pytest.mark.parametrize("size", ["small", "large"])
def test_the_user_stream_delivers_a_live_event_whatever_its_size(transactional_db: Any, user: Any, size: str) -> None:
    data = {"message": "x" * (10 if size == "small" else LIVE_FRAME_MAX_BYTES * 2)}

    async def main() -> dict[str, Any] | None:
        comm = communicator("/ws/events/", token=user.auth_token.key)
        connected, _ = await comm.connect(timeout=TIMEOUT)
        assert connected
        frame = await sync_to_async(_event_stamped_early)(user, data)
        pushed = live_frame(frame)
        assert pushed.get("stub", False) is (size == "large")
        await get_channel_layer().group_send(f"user.{user.pk}", {"type": "run.event", "event": pushed})
        try:
            return await comm.receive_json_from(timeout=TIMEOUT)
        except TimeoutError:
            return None
        finally:
            await comm.disconnect()

    got = run(main())
    assert got is not None, (f"the {size} event (seq 1, stamped 10 s before it was pushed) never reached the user's "
                             "stream: its stub was read with the connection's since filter")
    assert got["seq"] == 1 and got["data"] == data, got


def test_a_burst_of_one_runs_events_goes_as_one_stub_of_its_last_where_it_ended() -> None:
    """``events.coalesced``: each group's events of one run past ``BURST_FRAMES`` in a push batch are
    one stub of the highest seq naming the lowest (``first``), where the last of them stood; fewer
    are sent as they are, in order."""
    from workflows.engine.events import BURST_FRAMES, coalesced

    def sent(group: str, run_id: str, seq: int) -> tuple[str, dict[str, Any]]:
        return group, {"type": "run.event", "event": {"run_id": run_id, "seq": seq, "type": "node_skipped",
                                                       "node_id": f"n{seq}", "data": {}}}

    burst = [sent("run.a", "a", seq) for seq in range(1, BURST_FRAMES + 3)]
    burst[2], burst[-1] = burst[-1], burst[2]  # out of order: the stub names the highest seq
    few = [sent("run.b", "b", seq) for seq in range(1, BURST_FRAMES + 1)]
    owner = [sent("user.7", "a", seq) for seq in range(1, BURST_FRAMES + 3)]
    batch = [burst[0], few[0], *burst[1:], *few[1:], *owner]

    out = coalesced(batch)

    assert out == [few[0], ("run.a", {"type": "run.event", "event": {
        "run_id": "a", "seq": BURST_FRAMES + 2, "type": "node_skipped", "node_id": f"n{BURST_FRAMES + 2}",
        "stub": True, "first": 1}}), *few[1:], ("user.7", {"type": "run.event", "event": {
        "run_id": "a", "seq": BURST_FRAMES + 2, "type": "node_skipped", "node_id": f"n{BURST_FRAMES + 2}",
        "stub": True, "first": 1}})]
    assert coalesced(few) == few


def test_an_inboxs_nudges_go_once_a_group_and_leave_the_events_stubbed_as_before() -> None:
    """``events.coalesced`` with an inbox's nudges in the batch (``inboxes_nudge_after_commit``:
    no event): they go once a group, where the first stood, and the events around them are kept or
    stubbed as without them (before nudges, every message of a batch was read as an event)."""
    from workflows.engine.events import BURST_FRAMES, coalesced

    def sent(seq: int) -> tuple[str, dict[str, Any]]:
        return "run.a", {"type": "run.event", "event": {"run_id": "a", "seq": seq, "type": "node_skipped",
                                                         "node_id": f"n{seq}", "data": {}}}

    def nudge(group: str, change: str) -> tuple[str, dict[str, Any]]:
        return group, {"type": "inbox.changed", "change": change}

    few = [sent(seq) for seq in range(1, 3)]
    assert coalesced([few[0], nudge("inbox.x", "1"), few[1], nudge("inbox.x", "2"), nudge("inbox.y", "2")]) == [
        few[0], nudge("inbox.x", "1"), few[1], nudge("inbox.y", "2")]
    burst = [sent(seq) for seq in range(1, BURST_FRAMES + 3)]
    out = coalesced([nudge("inbox.x", "1"), *burst])
    assert out[0] == nudge("inbox.x", "1") and len(out) == 2 and out[1][1]["event"]["stub"]
