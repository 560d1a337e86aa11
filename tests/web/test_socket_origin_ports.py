"""The streams' origin check compares origins as (scheme, host, port), the scheme's default port
filled in (RFC 6454 §4). It compared text: the aob CLI builds its Origin from ``--api-url``'s
netloc (``http://host:80``) while the websockets library sends ``Host: host`` without the default
port, so the socket was refused and the CLI fell back to polling with no word (a review's
finding)."""

from __future__ import annotations

from typing import Any

import pytest
from websockets.headers import build_host
from websockets.uri import parse_uri

from aob.cli.watch import ws_url
from tests.web.test_consumers import TIMEOUT, communicator, run


def cli_host(api_url: str) -> str:
    """The Host header the CLI's websockets client sends for ``api_url``."""
    uri = parse_uri(ws_url(api_url, "00000000-0000-0000-0000-000000000000", 0))
    return build_host(uri.host, uri.port, uri.secure)


@pytest.mark.parametrize(("origin", "host", "same"), [
    ("http://127.0.0.1:80", cli_host("http://127.0.0.1:80"), True),  # the CLI given --api-url http://127.0.0.1:80
    ("http://127.0.0.1", cli_host("http://127.0.0.1"), True),
    ("http://127.0.0.1:8080", cli_host("http://127.0.0.1:8080"), True),
    ("http://127.0.0.1:8080", "127.0.0.1", False),  # control: another port of the host
])
def test_an_origin_naming_the_default_port_is_the_same_origin(engine: Any, user: Any, origin: str, host: str,
                                                             same: bool) -> None:
    async def main() -> bool:
        comm = communicator("/ws/events/", token=user.auth_token.key, origin=origin)
        comm.scope["headers"] = [(k, v) for k, v in comm.scope["headers"] if k != b"host"] + [(b"host", host.encode())]
        connected, _ = await comm.connect(timeout=TIMEOUT)
        await comm.disconnect()
        return connected

    assert run(main()) is same, f"Origin {origin!r} with Host {host!r}"
