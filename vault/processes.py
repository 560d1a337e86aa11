"""Which vault keys the running processes hold, so that a key rotation can wait for all of them.

Each process reads ``AOB_SECRETS_KEYS`` once, from its environment (``vault.crypto``), so a new key
list reaches a process only by restarting it. ``aob_rotate_secrets`` run beside processes started
with the old list re-encrypted every secret under a key they did not hold (every node sending a
secret failed ``SecretUnreadable``, every hook answered 401, until each was restarted), and one
holding the old key first went on encrypting under the key about to be dropped. So every web and
worker process keeps a record in Redis of its key list's fingerprints (a hash of each key, never a
key), for ``KEPT_S`` and renewed every ``REFRESH_S`` while it runs, withdrawn when it stops, and
the command refuses while a running process does not hold its first key first.

Who renews it: a worker's main process, on its event loop's timer (``aob_project.celery``; its pool's
processes are forked from it, with the same environment); each web process, from a thread its
server's start starts (``aob_project.asgi``'s lifespan). One-off commands say nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import redis

from aob_project import redis_client

from . import crypto

logger = logging.getLogger(__name__)

KEY = "aob:vault:keys:{}"
REFRESH_S = 15.0
# A process gone without a word (killed) is forgotten this long after its last record: a rotation
# waits for it that long, or is forced.
KEPT_S = 60
TIMEOUT_S = 0.5  # a worker's event loop, or a web's stop, waits no longer on a Redis that is away


def fingerprint(key: bytes) -> str:
    """A name for a key that gives none of it away: a Fernet key is 256 random bits (the derived
    development key's fingerprint checks a guess of its secret key no better than any token it
    encrypted does)."""
    return hashlib.sha256(b"aob-vault-key:" + key).hexdigest()[:12]


def held() -> list[str]:
    """This process's keys' fingerprints, the one that encrypts first."""
    return [fingerprint(key) for key in crypto.keys()]


@dataclass(frozen=True)
class Holder:
    process: str
    keys: list[str]


# This process's own among the records: a host name and a pid do not tell processes apart
# (containers sharing the host's network each run as pid 1 under the host's name, and would write
# one record, the last one wins, and one's withdraw delete the other's). Made again in a forked
# child, which is another process with a record of its own to make.
_ID = uuid.uuid4().hex[:12]


def _new_id() -> None:
    global _ID
    _ID = uuid.uuid4().hex[:12]


os.register_at_fork(after_in_child=_new_id)


def _key() -> str:
    return KEY.format(f"{socket.gethostname()}:{os.getpid()}:{_ID}")


def announce(name: str) -> None:
    """Record this process's keys for ``KEPT_S``; a Redis that does not answer is tried next time."""
    record = json.dumps({"process": f"{name} (host {socket.gethostname()}, pid {os.getpid()}, id {_ID})",
                         "keys": held()})
    try:
        redis_client.shared(TIMEOUT_S, once=True).set(_key(), record, ex=KEPT_S)
    except redis.RedisError:
        logger.warning("vault.keys_unrecorded", exc_info=True)


def withdraw() -> None:
    with contextlib.suppress(redis.RedisError):  # not withdrawn: it lapses after KEPT_S
        redis_client.shared(TIMEOUT_S, once=True).delete(_key())


def announce_every(name: str) -> Callable[[], None]:
    """``announce`` now and every ``REFRESH_S`` from a thread of its own, for a process with no
    periodic work of its own to do it (the web); returns what stops it and withdraws the record."""
    stop = threading.Event()

    def renew() -> None:
        announce(name)
        while not stop.wait(REFRESH_S):
            announce(name)

    threading.Thread(target=renew, name="aob-vault-keys", daemon=True).start()

    def end() -> None:
        stop.set()
        withdraw()

    return end


def holders() -> list[Holder]:
    """Every process that recorded its keys within the last ``KEPT_S`` (``redis.RedisError`` when
    Redis does not answer: then nobody can say)."""
    client = redis_client.shared()
    found = []
    for key in client.scan_iter(KEY.format("*"), count=1000):
        record = client.get(key)
        if record:  # else lapsed between the scan and the read
            said = json.loads(record)
            found.append(Holder(process=said["process"], keys=said["keys"]))
    return sorted(found, key=lambda holder: holder.process)
