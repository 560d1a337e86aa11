"""Red-team findings on the event streams (rt-sock): each test fails on the code it was written
against and passes once the hole is closed."""

from __future__ import annotations

from typing import Any

from channels.testing import WebsocketCommunicator
from django.test import Client

from aob_project.asgi import application
from tests.web.test_consumers import TIMEOUT, run

SERVER = "127.0.0.1:8000"  # where the browser's page came from: the socket's Host


def browser_cookie(user: Any) -> bytes:
    browser = Client()
    browser.force_login(user)
    return f"sessionid={browser.cookies['sessionid'].value}".encode()


def test_a_page_on_another_port_of_the_same_host_cannot_open_a_users_stream(transactional_db: Any,
                                                                             user: Any) -> None:
    """Cookies are not scoped by port, and two ports of one host are the same site, so a page
    another account of the shared machine serves at http://127.0.0.1:9999 has the browser open
    ws://127.0.0.1:8000/ws/events/ with the AOB user's session cookie. The origin check
    (channels' ``AllowedHostsOriginValidator``) compares the Origin's host name to ALLOWED_HOSTS
    and ignores its port and scheme, so it lets the foreign page in, and the page reads every
    event of the user's runs (inputs, messages, outputs' summaries) live. Django's own CSRF check
    compares the whole origin, port included; the socket's should too. Control: the page's own
    origin opens it."""
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
    assert own, "control: the page's own origin opens the stream"
    assert not other_port, "a page served on another port of the host opened the user's event stream"
    assert not other_scheme, "a page of another scheme and port opened the user's event stream"
