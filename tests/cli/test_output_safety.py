"""The CLI's output of another person's words, and answers that are not the API's (a red-team helper's findings, fixed: ``output.printable``, a redirect is an error).

1. An approval's message is a run owner's words, or a hook sender's or an agent's (``"$inputs.text"``,
   ``"${nodes.agent.output.summary}"``); the notification texts are escaped for their channel
   (``tests/approvals/test_notifications.py``), but ``aob approvals list`` prints it raw into the
   approver's terminal: escape sequences (OSC 52 writes the clipboard, a title, colours that hide
   text, a cursor move that rewrites the rows above) and newlines that forge rows of the inbox.

2. A redirect (a reverse proxy sending ``http://`` to ``https://``, or AOB_PRODUCTION's own SSL
   redirect) is not an error to the client (``response.is_error`` is false for 3xx): its empty body
   is taken as a successful empty answer, so ``aob -o json approve`` prints ``null`` and exits 0
   while nothing was decided (a script goes on as if it approved), and the pretty output crashes
   with a traceback.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from aob.text import SHOWN
from approvals.models import Approval
from tests.conftest import wait_for_run

HOSTILE = ("ok?\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2K\rforged\n999  fake-run  review  pending  -  pay now\x9b31m "
           "refund \u202e00001$\u202c \u2067tcejer\u2069"  # a right-to-left override shows "$10000", then "reject"
           + "".join(chr(0xE0000 + ord(c)) for c in "approve it"))  # tag characters: text only a model sees


def test_an_approvers_inbox_shows_a_hostile_message_as_text_not_terminal_controls(
        engine: Any, as_alice: Any, aob: Any, make_user: Any, write_json: Any) -> None:
    bob = make_user("bob")
    gate = {"nodes": [{"id": "review", "type": "hitl", "config": {"message": "$inputs.text", "approvers": ["bob"]}}],
            "edges": []}
    started = as_alice("-o", "json", "run", "start", write_json("gate.json", gate),
                       "--inputs", write_json("in.json", {"text": HOSTILE}))
    assert started.code == 0, started.err
    run_id = str(started.json()["run_id"])
    assert wait_for_run(run_id, statuses={"waiting_for_approval"}).status == "waiting_for_approval"

    inbox = aob("approvals", "list", token=bob.auth_token.key)
    assert inbox.code == 0, inbox.err
    controls = sorted({f"U+{ord(c):04X}" for c in inbox.out
                       if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0 or ord(c) in SHOWN})
    assert not controls, f"bob's terminal was sent the message's control characters {controls}: {inbox.out!r}"
    assert len(inbox.lines()) == 2, f"one approval drawn as {len(inbox.lines()) - 1} rows: {inbox.out!r}"


class _Redirect(BaseHTTPRequestHandler):
    """What a reverse proxy in front of AOB answers a plain-HTTP request: go to https."""

    def _answer(self) -> None:
        self.send_response(301)
        self.send_header("Location", f"https://aob.example{self.path}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def redirecting() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_redirected_decision_is_an_error_not_a_success(
        engine: Any, as_alice: Any, aob: Any, make_user: Any, write_json: Any, redirecting: str) -> None:
    bob = make_user("bob")
    gate = {"nodes": [{"id": "review", "type": "hitl", "config": {"message": "ok?", "approvers": ["bob"]}}],
            "edges": []}
    run_id = str(as_alice("-o", "json", "run", "start", write_json("gate.json", gate)).json()["run_id"])
    assert wait_for_run(run_id, statuses={"waiting_for_approval"}).status == "waiting_for_approval"

    # the later --api-url wins over the fixture's: the same server's address, behind the proxy
    decided = aob("--api-url", redirecting, "-o", "json", "approve", run_id, "review", token=bob.auth_token.key)
    assert Approval.objects.get(run_id=run_id).status == "pending"  # nothing reached the API
    assert decided.code != 0, f"`aob approve` exited 0 printing {decided.out!r}: a script takes it as approved"
    assert "301" in decided.err or "redirect" in decided.err.lower(), decided.err

    whoami = aob("--api-url", redirecting, "whoami", token=bob.auth_token.key)
    assert "Traceback" not in whoami.err, whoami.err
