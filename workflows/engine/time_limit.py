"""A node's ``timeout_ms`` as it reaches the executor: Celery's soft time limit, which billiard's
prefork pool delivers by signalling the pool process (``SIGUSR1``), its handler raising
``SoftTimeLimitExceeded`` wherever the main thread is. Raised mid-statement it leaves the
connection with a command in progress, which the next task of the process (any owner's) then
fails on. So the engine's own statements (claim, park, complete, fail) are held off from it
(``held``): a limit that fires there is noted (``fired``), never raised, and the executor decides
what it means (a claim's: the attempt timed out; a recorded outcome's: nothing). Held off by a
flag the handler reads, not by a signal mask: a mask is a thread's, and the signal is the
process's, delivered to the heartbeat's thread as readily (``heartbeat``)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from celery.exceptions import SoftTimeLimitExceeded

# billiard's SIG_SOFT_TIMEOUT
SIGNAL = getattr(signal, "SIGUSR1", None)

_depth = 0  # the engine's statements the main thread is in
_fired = False  # the limit fired in this task


def _on_limit(signum: int, frame: FrameType | None) -> None:
    global _fired
    _fired = True
    if not _depth:
        raise SoftTimeLimitExceeded()


def begin() -> None:
    """At the start of an executor task, in the pool process's main thread: this module's handler
    in place of billiard's (the same outside ``held``), no limit fired yet, and none held off (an
    exception another signal raised in a ``held``'s ``finally`` left no count for later tasks)."""
    global _fired, _depth
    _fired = False
    _depth = 0
    if SIGNAL is not None and threading.current_thread() is threading.main_thread() \
            and signal.getsignal(SIGNAL) is not _on_limit:
        signal.signal(SIGNAL, _on_limit)


def fired() -> bool:
    """Whether this task's limit fired (held off, or raised)."""
    return _fired


@contextmanager
def held() -> Iterator[None]:
    """The limit is not raised in here (the main thread's; elsewhere nothing delivers it)."""
    global _depth
    main = threading.current_thread() is threading.main_thread()
    if main:
        _depth += 1
    try:
        yield
    finally:
        if main:
            _depth -= 1
