"""What `make up` prints once the web app answers: the UI, API base, docs, admin and Flower URLs,
the demo login and its token."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from aob import launcher


class NoDeaths:
    def first_dead(self) -> None:
        return None


class StopAfterOneLook:
    def wait(self, seconds: float) -> None:
        raise launcher.Stop


def test_up_prints_every_url_and_the_demo_login(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setattr(launcher, "port_open", lambda port: True)
    args = argparse.Namespace(port=8123, flower_port=5566, no_flower=False, demo_login=("demo", "demo-password"),
                              demo_token="abc123")
    with pytest.raises(launcher.Stop):
        launcher.supervise(NoDeaths(), StopAfterOneLook(), args)
    out = capsys.readouterr().out
    for line in ("UI        http://127.0.0.1:8123/", "Admin     http://127.0.0.1:8123/admin/",
                 "API base  http://127.0.0.1:8123/api/v1/", "API docs  http://127.0.0.1:8123/api/v1/docs/",
                 "Flower    http://127.0.0.1:5566/", "Login     demo / demo-password",
                 "Token     abc123  (header: Authorization: Token abc123)"):
        assert line in out, out
