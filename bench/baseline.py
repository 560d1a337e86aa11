"""The plain-Celery baseline: AOB's hop shapes with nothing but Celery and Redis.

    celery -A bench.baseline worker -Q bench.node,bench.callback -c 2 -P prefork

A *node* task does no work but record when it started and finished (one Redis round trip, like
the one write an AOB node needs at least); its *linked callback* task decides what comes next and
enqueues it, exactly the executor → link → coordinator → executor hop of AOB. The Celery settings
mirror AOB's production ones (``aob_project/settings.py``: acks late, prefetch 1, JSON, no
results, task events on), so the difference measured is the engine's, not the configuration's.

Broker and timestamps: the bench's Redis at DB index 1; chord results at DB index 2 (a chord
cannot work without a result backend). The module never imports Django.

Timestamps are kept in ``bb:<batch>:ts`` as ``"<run> <k> <start> <finish>"`` (wall-clock
seconds, the same clock as AOB's stored timings) and counted in ``bb:<batch>:done``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import redis
from celery import Celery, chord
from kombu import Exchange, Queue

NODE_QUEUE = "bench.node"
CALLBACK_QUEUE = "bench.callback"
QUEUES = [NODE_QUEUE, CALLBACK_QUEUE]


def with_db(url: str, db: int) -> str:
    """``url`` pointed at Redis database ``db``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def broker_url() -> str:
    return with_db(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), 1)


app = Celery("bench_baseline")
app.conf.update(
    broker_url=broker_url(),
    result_backend=with_db(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), 2),
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    result_expires=600,
    broker_connection_retry_on_startup=True,
    broker_transport_options={"visibility_timeout": 3600},
    worker_send_task_events=True,
    task_send_sent_event=False,  # as AOB's production settings
    task_queues=[Queue(q, Exchange(q, type="direct"), routing_key=q) for q in QUEUES],
    task_default_queue=NODE_QUEUE,
    task_routes={"bench.node": {"queue": NODE_QUEUE}, "bench.member": {"queue": NODE_QUEUE},
                 "bench.*": {"queue": CALLBACK_QUEUE}},
)

_client: redis.Redis | None = None


def client() -> redis.Redis:
    global _client
    if _client is None:  # one per process; redis-py's pool resets itself after a fork
        _client = redis.Redis.from_url(app.conf.broker_url)
    return _client


def _record(batch: str, run: str, k: int, start: float) -> None:
    finish = time.time()
    pipe = client().pipeline(transaction=False)
    pipe.rpush(f"bb:{batch}:ts", f"{run} {k} {start!r} {finish!r}")
    pipe.incr(f"bb:{batch}:done")
    pipe.execute()


# --- node tasks -----------------------------------------------------------------------------------

@app.task(name="bench.node", acks_late=True, ignore_result=True)
def node(batch: str, run: str, k: int) -> None:
    _record(batch, run, k, time.time())


@app.task(name="bench.member", acks_late=True, ignore_result=False)
def member(batch: str, run: str, k: int) -> int:
    """A chord header node: the same as ``node`` but its result is stored (chords count results)."""
    _record(batch, run, k, time.time())
    return k


# --- callbacks (the coordinator's role) ---------------------------------------------------------------

def send_chain_node(batch: str, run: str, k: int, length: int) -> None:
    node.apply_async((batch, run, k), link=chain_next.si(batch, run, k, length))


@app.task(name="bench.chain_next", acks_late=True, ignore_result=True)
def chain_next(batch: str, run: str, k: int, length: int) -> None:
    if k + 1 < length:
        send_chain_node(batch, run, k + 1, length)


def send_fanout_root(batch: str, run: str, width: int, join: str) -> None:
    callback = fan_out_chord if join == "chord" else fan_out_counted
    node.apply_async((batch, run, 0), link=callback.si(batch, run, width))


@app.task(name="bench.fan_out_counted", acks_late=True, ignore_result=True)
def fan_out_counted(batch: str, run: str, width: int) -> None:
    for k in range(1, width + 1):
        node.apply_async((batch, run, k), link=count_join.si(batch, run, width))


@app.task(name="bench.count_join", acks_late=True, ignore_result=True)
def count_join(batch: str, run: str, width: int) -> None:
    """A hand-counted join: each parent's callback counts; the last one enqueues the join."""
    if client().incr(f"bb:{batch}:{run}:joined") == width:
        node.apply_async((batch, run, width + 1))


@app.task(name="bench.fan_out_chord", acks_late=True, ignore_result=True)
def fan_out_chord(batch: str, run: str, width: int) -> None:
    chord([member.si(batch, run, k) for k in range(1, width + 1)])(node.si(batch, run, width + 1))


# --- the driver's side ----------------------------------------------------------------------------------

def reset(batch: str) -> None:
    r = client()
    keys = list(r.scan_iter(f"bb:{batch}:*"))
    if keys:
        r.delete(*keys)


def done(batch: str) -> int:
    return int(client().get(f"bb:{batch}:done") or 0)


watchdog: Callable[[], None] | None = None  # see bench.aob.watchdog


def wait_done(batch: str, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while done(batch) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"baseline batch {batch}: {done(batch)}/{expected} nodes after {timeout:.0f}s")
        if watchdog is not None:
            watchdog()
        time.sleep(0.02)


def timings(batch: str) -> dict[str, dict[int, tuple[float, float]]]:
    """``{run: {k: (start, finish)}}`` of a finished batch."""
    out: dict[str, dict[int, tuple[float, float]]] = {}
    for raw in client().lrange(f"bb:{batch}:ts", 0, -1):
        run, k, start, finish = raw.decode().split()
        out.setdefault(run, {})[int(k)] = (float(start), float(finish))
    return out
