from __future__ import annotations

from typing import Any

import pytest

from tests.support.remote import RemoteServer


@pytest.fixture(autouse=True)
def web_allowlist(settings: Any, remote: RemoteServer) -> None:
    """The web process checks literal URLs of patched nodes: give it the workers' allowlist, as a
    deployment would, so a patch or approval decided here may add a node calling the remote."""
    settings.AOB_HTTP_ALLOWLIST = [f"127.0.0.1:{remote.port}"]
