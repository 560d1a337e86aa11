"""Idempotent requests: a run's start (``POST /workflows/{tag}/execute``, ``POST /runs``, a replay)
and a person's run patch (``POST /runs/{id}/patches``) with an ``Idempotency-Key`` header (the
Stripe / IETF draft convention).

The same key and the same request within ``TTL`` answer what the first request made (200, the
body it got); the same key with another request is refused (422). Keys are scoped per user.
A key outlives its run (``IdempotencyKey.run`` is SET_NULL): a retry after the run was deleted
still answers that body, naming a run that is now a 404, since the request it repeats did start
it and a second run would repeat its outbound calls under new keys.
Two requests with one key race on the table's unique constraint inside the transaction that
creates the run: the loser's run rolls back and it answers the winner's run. No check-then-insert.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from django.contrib.auth.models import User
from django.db import connection

from aob_project.exceptions import AobError, ValidationFailed
from workflows.models import Run

HEADER = "Idempotency-Key"
TTL = timedelta(hours=24)
MAX_LENGTH = 255

RULE_REUSED = ("a key names one request: within 24 h the same key with the same endpoint and body returns what "
               "it made; with another endpoint or body it is refused")


@dataclass(frozen=True)
class StartKey:
    key: str
    fingerprint: str


class KeyReused(AobError):
    code = "idempotency_key_reused"
    status = 422


class KeyTaken(Exception):
    """Raised inside run_start's transaction when another request holds the key: rolls its run back."""


def start_key(*, header: str | None, endpoint: str, body: Any) -> StartKey | None:
    """The request's key and fingerprint; None without the header. A malformed key is a 400 naming it."""
    if header is None:
        return None
    key = header.strip()
    if not key or len(key) > MAX_LENGTH or not key.isascii() or not key.isprintable():
        raise ValidationFailed(f"{HEADER} must be 1 to {MAX_LENGTH} printable ASCII characters",
                               code="invalid_idempotency_key",
                               extra={"field": HEADER, "rule": f"1 to {MAX_LENGTH} printable ASCII characters"})
    return StartKey(key, request_fingerprint(endpoint, body))


def request_fingerprint(endpoint: str, body: Any) -> str:
    """What names a request: a hash of its endpoint and body as ``json`` writes them, sorted keys, no
    whitespace, a number as Python writes it (``-0.0``, ``1e+16``), as every release since keys
    came has. Its own serialization, not ``canonical_json`` (content ids', which may change: 6eac6d4
    had it write a number as jsonb reads it back): a key lives ``TTL`` and a retry may reach a web
    process of another release, which must take the same bytes for the same request, or it refuses
    the retry as another and the client starts a second run under a new key. A change here needs a
    release that accepts both forms for ``TTL`` first."""
    value = {"endpoint": endpoint, "body": body}
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def start_key_answer(*, owner: User, start: StartKey) -> dict[str, Any] | None:
    """The stored answer of a live key with this request's fingerprint, whether or not its run is
    still there (it is read from the key alone); None if the key is unused (or older than ``TTL``);
    ``KeyReused`` if it named another request."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT fingerprint, response FROM workflows_idempotencykey "
            "WHERE owner_id = %s AND key = %s AND created_at > now() - %s",
            [owner.pk, start.key, TTL])
        row = cursor.fetchone()
    if row is None:
        return None
    fingerprint, response = row
    if fingerprint != start.fingerprint:
        raise KeyReused(f"the {HEADER} {start.key!r} was already used for another request",
                        extra={"field": HEADER, "rule": RULE_REUSED})
    return json.loads(response) if isinstance(response, str) else response


def start_key_record(*, owner: User, start: StartKey, run: Run, response: dict[str, Any]) -> None:
    """Claim the key for ``run`` (the run a start created, or the run a patch changed) inside the
    transaction that makes it. A live key held by another
    request (committed, or committing: PostgreSQL makes this insert wait for it) raises ``KeyTaken``;
    an expired one is taken over."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO workflows_idempotencykey (owner_id, key, fingerprint, run_id, response, created_at)
            VALUES (%s, %s, %s, %s, %s::jsonb, now())
            ON CONFLICT (owner_id, key) DO UPDATE
               SET fingerprint = EXCLUDED.fingerprint, run_id = EXCLUDED.run_id, response = EXCLUDED.response,
                   created_at = EXCLUDED.created_at
             WHERE workflows_idempotencykey.created_at <= now() - %s
            RETURNING id
            """,
            [owner.pk, start.key, start.fingerprint, run.pk, json.dumps(response, default=str), TTL])
        if cursor.fetchone() is None:
            raise KeyTaken(start.key)


Made = TypeVar("Made")


class Recorder:
    """What ``begin`` is handed: ``record(made)`` claims the key in the transaction that makes
    ``made``; ``record.check()``, once that transaction holds the lock the request waited for,
    raises ``KeyTaken`` if the key's first request committed meanwhile (a patch's retry that waited
    on the run's lock was judged against the patched definition, and refused)."""

    def __init__(self, claim: Callable[[Any], None], taken: Callable[[], bool]) -> None:
        self._claim, self._taken = claim, taken

    def __call__(self, made: Any) -> None:
        self._claim(made)

    def check(self) -> None:
        if self._taken():
            raise KeyTaken("held")


def request_once(*, owner: User, start: StartKey | None, respond: Callable[[Made], dict[str, Any]],
                   begin: Callable[[Callable[[Made], None] | None], Made],
                   run_of: Callable[[Made], Run] = lambda made: made) -> tuple[dict[str, Any], bool]:
    """Do a request at most once per key: ``(answer, created)``. ``begin(record)`` makes what it
    makes (run_start a run, run_patch_propose a patch), calling ``record(made)`` in its transaction;
    ``respond(made)`` shapes the answer kept, ``run_of(made)`` the run the key names."""
    if start is None:
        return respond(begin(None)), True
    answer = start_key_answer(owner=owner, start=start)
    if answer is not None:
        return answer, False
    record = Recorder(lambda made: start_key_record(owner=owner, start=start, run=run_of(made),
                                                    response=respond(made)),
                      lambda: start_key_answer(owner=owner, start=start) is not None)
    try:
        made = begin(record)
    except KeyTaken:
        answer = start_key_answer(owner=owner, start=start)
        if answer is None:  # the holder's key expired between the two statements; vanishingly rare
            raise
        return answer, False
    return respond(made), True
