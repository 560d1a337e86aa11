"""The web process's threads are taken by clients in turn (``aob_project.http_handler.Turns``): one
user's forty slow reads held all eight threads in the order they came, and another user's simple
request waited behind every one of them (14 s; a red team's measure, and 4.3 s behind searches that
each held a thread for their full second)."""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import httpx
import pytest

from tests.conftest import stored_run
from tests.support.stack import start_web
from workflows.models import Run, canonical_json, size_of

pytestmark = pytest.mark.system  # a web process of its own, loaded from outside (make test-system)

NEAR_MISS = "a" * 150 + "b"  # matches no run's inputs: each search reads them all, up to its timeout


def _searched_runs(owner: Any, count: int = 1000) -> None:
    """``count`` runs whose 16 KiB inputs a near-miss ``?q=`` reads whole (the search's bounds)."""
    base = stored_run(owner)
    runs = Run.objects.bulk_create([Run(owner=owner, base_artifact=base.base_artifact,
                                        current_artifact=base.base_artifact, inputs={}) for _ in range(count)])
    pad = {"t": "a" * (16 * 1024 - 20)}
    Run.objects.filter(pk__in=[r.pk for r in runs]).update(inputs=pad, inputs_bytes=size_of(canonical_json(pad)))


def _latencies(url: str, token: str, seconds: float) -> list[float]:
    taken = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}, timeout=60) as client:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            started = time.monotonic()
            assert client.get("/api/v1/auth/me").status_code == 200
            taken.append(time.monotonic() - started)
            time.sleep(0.1)
    return taken


def test_one_users_slow_reads_do_not_make_anothers_request_wait_behind_them(
        engine: Any, stack_env: dict[str, str], make_user: Any) -> None:
    mallory, alice = make_user("mallory"), make_user("alice")
    _searched_runs(mallory)
    proc = start_web({**stack_env, "AOB_WEB_THREADS": "4"}, "uvicorn-turns")
    stop = threading.Event()
    answers: list[int] = []

    held: list[float] = []

    def flood() -> None:  # one of mallory's connections, searching again as soon as answered
        with httpx.Client(base_url=proc.url, headers={"Authorization": f"Token {mallory.auth_token.key}"},
                          timeout=120) as client:
            while not stop.is_set():
                started = time.monotonic()
                answers.append(client.get("/api/v1/runs", params={"q": NEAR_MISS}).status_code)
                held.append(time.monotonic() - started)

    try:
        control = _latencies(proc.url, alice.auth_token.key, 2)
        floods = [threading.Thread(target=flood) for _ in range(12)]
        for thread in floods:
            thread.start()
        time.sleep(1)  # every thread of the pool taken, and mallory's others waiting
        loaded = _latencies(proc.url, alice.auth_token.key, 5)
        stop.set()
        for thread in floods:
            thread.join(timeout=120)
    finally:
        stop.set()
        proc.stop()

    assert answers and set(answers) <= {200, 400}, set(answers)  # 400: the search's timeout, as bounded
    # each search held its thread long enough that twelve of them, first come first served, would
    # have made alice wait seconds: 12 × this / 4 threads
    assert statistics.median(held) > 0.3, statistics.median(held)
    # behind twelve searches of a second each on four threads, first come first served: ~3 s
    assert statistics.median(loaded) < 0.5, f"alice waited {statistics.median(loaded):.2f} s (control " \
                                            f"{statistics.median(control):.3f} s)"
