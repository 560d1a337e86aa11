"""A closed-loop HTTP load: N client threads, each with its own keep-alive httpx client, loopback only."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx


def run_load(base_url: str, token: str, requests: int, clients: int,
             make_request: Callable[[httpx.Client, int], httpx.Response], expect: int) -> dict[str, Any]:
    """Send ``requests`` requests from ``clients`` threads; each thread takes the next index until
    none is left. Returns latencies (ms), wall time, requests/s and the responses' JSON."""
    if not base_url.startswith(("http://127.0.0.1", "http://localhost")):
        raise ValueError("the API load goes to loopback only")
    lock = threading.Lock()
    counter = iter(range(requests))
    latencies: list[float] = []
    bodies: list[Any] = []
    errors: list[str] = []

    def client_loop() -> None:
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Token {token}"}, timeout=30) as client:
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                started = time.perf_counter()
                try:
                    response = make_request(client, index)
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(repr(exc))
                    continue
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    if response.status_code == expect:
                        latencies.append(elapsed)
                        bodies.append(response.json())
                    else:
                        errors.append(f"{response.status_code}: {response.text[:200]}")

    threads = [threading.Thread(target=client_loop, name=f"bench-client-{i}") for i in range(clients)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} of {requests} API requests failed; first: {errors[0]}")
    return {"latency_ms": latencies, "seconds": wall, "requests_per_s": len(latencies) / wall, "bodies": bodies}
