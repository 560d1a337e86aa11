"""Requests racing, made to meet: several released together (``together``), or one holding its
rows' locks in a transaction kept open while the other is sent and waits on them (seen in
``pg_stat_activity``), then committing (``asked_while_held``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import connection, connections, transaction

from tests.engine.flow import wait_until


def blocked_on(pid: list[int]) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", pid)
        return bool(cursor.fetchone()[0])


def asked_while_held(hold: Callable[[], Any], ask: Callable[[], Any]) -> tuple[list[Any], list[Any]]:
    """``ask()``'s answer to a request made while ``hold()`` runs in a transaction held open (its
    locks kept) until the request waits on them; then ``hold()``'s transaction commits. Returns
    (what hold returned or raised, what ask answered)."""
    holding, release = threading.Event(), threading.Event()
    holder_pid: list[int] = []
    held: list[Any] = []
    answers: list[Any] = []

    def holder() -> None:
        try:
            with transaction.atomic():
                try:
                    held.append(hold())
                except Exception as exc:  # noqa: BLE001 - the test reads it
                    held.append(exc)
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_backend_pid()")
                    holder_pid.append(cursor.fetchone()[0])
                holding.set()
                release.wait(15)
        finally:
            connections.close_all()

    def asker() -> None:
        try:
            answers.append(ask())
        finally:
            connections.close_all()

    first = threading.Thread(target=holder)
    first.start()
    assert holding.wait(15)
    second = threading.Thread(target=asker)
    second.start()
    try:
        wait_until(lambda: blocked_on(holder_pid), timeout=15, what="the request waiting on the held lock")
    finally:
        release.set()
        first.join(15)
        second.join(30)
    return held, answers


def together(count: int, attempt: Callable[[int], Any]) -> list[Any]:
    """``attempt(i)`` in ``count`` threads released together, each on its own connection."""
    gate = threading.Barrier(count)
    answers: list[Any] = [None] * count

    def run(i: int) -> None:
        try:
            gate.wait(timeout=10)
            answers[i] = attempt(i)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return answers
