"""Fair shares of the coordinator between owners: the decisions of an owner past its share wait
behind everyone else's, not in front of them.

Each decision is bounded (``pure.Budget``: nodes and evaluation time, every condition within one
``AOB_CEL_TIMEOUT_MS``), but the coordinator's queue is one, first in, first out: one owner's many
runs of a loop whose condition spends its whole second each pass would put hours of decisions ahead
of every other owner's. So the time of each full decision is charged to its run's owner in a leaky
bucket in Redis (``SCRIPT``), which drains at ``AOB_DECISION_OWNER_MS_PER_S``; an owner holding more
than ``AOB_DECISION_OWNER_BURST_MS`` is past its share (the bucket holds at most what takes
``MOST_OVER_S`` to drain past the burst, so that lasts a bounded time after its load ends; it is
timed by Redis's clock, as the hosts' may disagree). Such an owner's decisions are asked for at the
lowest of the Redis transport's priorities (``dispatch.LAST``): its decisions' continuations and a
run start's first decision as they are sent, and any other (an executor's link, sent when its node
was queued, maybe minutes before) when it reaches the coordinator, sent again before the run is
locked. A worker takes a message at that priority only when none of its queues holds one at a
higher, so the decisions of owners within their share (and their nodes, on a worker that runs both)
never wait behind such an owner's, only behind those already being decided; with nobody else
waiting they are decided at once, charged as any other (a decision that raised too), never sent
again: it reorders, it never throttles. The flip side: while others' work never lets up, an owner
past its share waits; its bucket drains meanwhile, and its next decisions take their turn again.
The sweeper asks again for such an owner's decisions only past its longer patience
(``sweeper.reconsume``), and does not count them as the coordinator's backlog.

Cheap on the hot path: a plain step (one statement, nothing evaluated) is never charged; a full
decision's time is added up in the process and sent once an owner's sum reaches ``FLUSH_MS`` (an
ordinary decision of a few milliseconds costs no round trip); and whether an owner is past its
share (``over``) is known in the process, from the answer to its own last charge or a read of the
bucket, until it may have changed (an owner within its share is read again after ``FRESH_S``). Redis
unreachable: nothing is charged and nobody is past its share (fail open). With RabbitMQ as the
broker there is no share (its queues would need priorities declared): left alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis
from django.conf import settings

from aob_project import redis_client

logger = logging.getLogger(__name__)

FLUSH_MS = 20.0  # an owner's time is sent to Redis once its sum in a process reaches this much
FRESH_S = 1.0  # how long a process takes an owner within its share for so, before it reads again
MOST_OVER_S = 60  # how long an owner is past its share at most once its decisions stop
MOST_OWNERS = 10_000  # owners a process remembers between charges (past it, it forgets them all)
KEY = "aob:shares:decide:{owner_id}"

# The owner's bucket: ``held`` ms of decisions, drained at ARGV[1] ms a ms since ``at`` (Redis's
# clock: the hosts' may disagree, and one behind would drain the bucket again), then ARGV[2] ms
# added, and never more than ARGV[3] ms (so an owner is past its share for a bounded time after its
# load ends); the key lives as long as it takes to drain. Answers what it holds now (a read, adding
# nothing to an owner with no bucket, makes none).
SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local rate = tonumber(ARGV[1])
local kept = redis.call('HMGET', KEYS[1], 'held', 'at')
local held = tonumber(kept[1]) or 0
if not kept[1] and tonumber(ARGV[2]) == 0 then
  return '0'
end
local at = tonumber(kept[2]) or now
held = math.min(tonumber(ARGV[3]), math.max(0, held - math.max(0, now - at) * rate) + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'held', tostring(held), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(held / rate) + 1000)
return tostring(held)
"""


@dataclass(frozen=True)
class Share:
    ms_per_s: int
    burst_ms: int


def share() -> Share | None:
    """The share of each owner, or None when there is none (``AOB_DECISION_OWNER_MS_PER_S=0``)."""
    if settings.AOB_DECISION_OWNER_MS_PER_S <= 0 or settings.AOB_BROKER_IS_AMQP:
        return None
    return Share(settings.AOB_DECISION_OWNER_MS_PER_S, settings.AOB_DECISION_OWNER_BURST_MS)


_unsent: dict[int, float] = {}  # owner: ms of full decisions not yet charged
_known: dict[int, tuple[bool, float]] = {}  # owner: (past its share?, until when (monotonic) that holds)


def over(owner_id: int) -> bool:
    """Whether the owner is past its share: as this process last heard (from a charge of its own or
    a read), read again once that may have changed, at most every ``FRESH_S`` for an owner within."""
    terms = share()
    if terms is None:
        return False
    known = _known.get(owner_id)
    if known is None or time.monotonic() >= known[1]:
        known = _remember(owner_id, terms, _bucket(owner_id, terms, 0.0))
    return known[0]


def charge(owner_id: int, seconds: float) -> None:
    """Charge a full decision's time to its run's owner."""
    terms = share()
    if terms is None:
        return
    spent = _unsent.pop(owner_id, 0.0) + seconds * 1000
    if spent < FLUSH_MS:
        if len(_unsent) >= MOST_OWNERS:
            _unsent.clear()
        _unsent[owner_id] = spent
        return
    held = _bucket(owner_id, terms, spent)
    if held > terms.burst_ms and not _known.get(owner_id, (False,))[0]:
        logger.info("shares.owner_over_share", extra={"owner_id": owner_id, "held_ms": round(held)})
    _remember(owner_id, terms, held)


def _bucket(owner_id: int, terms: Share, add_ms: float) -> float:
    """What the owner's bucket holds once drained and ``add_ms`` added (nothing, Redis unreachable)."""
    try:
        most = terms.burst_ms + terms.ms_per_s * MOST_OVER_S
        held = redis_client.script(SCRIPT)(keys=[KEY.format(owner_id=owner_id)], args=[terms.ms_per_s / 1000, add_ms, most])
        return float(held)
    except redis.RedisError as exc:
        logger.warning("shares.redis_unavailable", extra={"error": str(exc)})
        return 0.0


def _remember(owner_id: int, terms: Share, held: float) -> tuple[bool, float]:
    past = held > terms.burst_ms
    until = time.monotonic() + ((held - terms.burst_ms) / terms.ms_per_s if past else FRESH_S)
    if len(_known) >= MOST_OWNERS:
        _known.clear()
    _known[owner_id] = (past, until)
    return past, until
