"""The fault suite's harness: seeded trials, the kill points drawn from them, and the recorder of
what each trial cost (runs lost, effects doubled, time to recover).

A trial is one fault injected into real processes with everything random about it — which node,
which kill point, how many runs, how long a server stays down — drawn from its seed, so a failed
trial is re-run by its seed alone (``FAULT_SEED=<seed>``). Each fault also has a negative control:
the same trial with its protecting mechanism switched off, which must show the loss or doubling
that the protected trials claim never happens.

Environment: ``FAULT_TRIALS`` (protected trials per fault; unset: the lean subset of ``make test``,
one trial of the faults not marked ``faults_full``), ``FAULT_CONTROL_TRIALS`` (control trials per
fault; 1 when lean, 3 otherwise), ``FAULT_SEED`` (one trial with that seed).
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import statistics
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis
from django.conf import settings

from tests.engine.flow import wait_until

AOB_DIR = Path(__file__).resolve().parents[2] / ".aob"
RESULTS = AOB_DIR / "faults.json"
LEAN_TRIALS = 1


def lean() -> bool:
    return not os.environ.get("FAULT_TRIALS") and not os.environ.get("FAULT_SEED")


def trial_count(control: bool) -> int:
    if os.environ.get("FAULT_SEED"):
        return 1
    if control:
        return int(os.environ.get("FAULT_CONTROL_TRIALS") or (1 if lean() else 3))
    return int(os.environ.get("FAULT_TRIALS") or LEAN_TRIALS)


def seed_for(test: str, index: int) -> int:
    if os.environ.get("FAULT_SEED"):
        return int(os.environ["FAULT_SEED"])
    return zlib.crc32(f"{os.environ.get('FAULT_SEED_BASE', 'aob')}:{test}:{index}".encode())


@dataclass
class Trial:
    """One seeded trial; ``rng`` draws everything random about it."""

    fault: str
    test: str
    index: int
    seed: int
    protected: bool
    rng: random.Random = field(init=False, repr=False)
    tag: str = field(init=False)
    drawn: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.tag = f"t{self.seed:x}"

    def draw(self, name: str, value: Any) -> Any:
        """Remember a drawn choice, so a failure says where the fault was injected."""
        self.drawn[name] = value
        return value

    def choice(self, name: str, options: list[Any]) -> Any:
        return self.draw(name, self.rng.choice(options))

    def uniform(self, name: str, low: float, high: float) -> float:
        return self.draw(name, round(self.rng.uniform(low, high), 3))

    def randint(self, name: str, low: int, high: int) -> int:
        return self.draw(name, self.rng.randint(low, high))

    def __str__(self) -> str:
        kind = "trial" if self.protected else "control"
        return (f"{self.fault} {kind} #{self.index} seed={self.seed} {self.drawn} "
                f"(re-run: FAULT_SEED={self.seed} make test-faults PYTEST_ARGS='-k {self.test}')")


@dataclass
class Outcome:
    runs: int = 0
    lost: int = 0            # runs that did not complete
    doubled: int = 0         # effects applied more than once (node completions, remote effects)
    recover_s: float | None = None  # from the fault to the last run's end
    resent: int = 0          # requests sent again to the remote (no Idempotency-Key yet: counted apart)
    llm_repeated: int = 0    # model calls made again by a resumed agent (the journal replays them)
    detail: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.doubled == 0


_records: list[dict[str, Any]] = []


def record(trial: Trial, outcome: Outcome) -> None:
    _records.append({"fault": trial.fault, "protected": trial.protected, "seed": trial.seed, "drawn": trial.drawn,
                     **{k: v for k, v in asdict(outcome).items() if k != "detail"}})


def summary() -> dict[str, dict[str, Any]]:
    """Per fault: the protected trials' figures and how many controls detected the fault."""
    faults: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["fault"] for r in _records):
        trials = [r for r in _records if r["fault"] == name and r["protected"]]
        controls = [r for r in _records if r["fault"] == name and not r["protected"]]
        times = sorted(r["recover_s"] for r in trials if r["recover_s"] is not None)
        faults[name] = {
            "trials": len(trials),
            "runs": sum(r["runs"] for r in trials),
            "runs_lost": sum(r["lost"] for r in trials),
            "effects_doubled": sum(r["doubled"] for r in trials),
            "requests_resent": sum(r["resent"] for r in trials),
            "llm_calls_repeated": sum(r["llm_repeated"] for r in trials),
            "recover_p50_s": round(statistics.median(times), 2) if times else None,
            "recover_max_s": round(times[-1], 2) if times else None,
            # session processes (worker, beat) that exited of the fault and were started again
            "processes_restarted": sum(len(r["drawn"].get("restarted", [])) for r in trials),
            "controls": len(controls),
            "controls_detected": sum(1 for r in controls if r["lost"] or r["doubled"] or r["llm_repeated"]),
            "seeds": [r["seed"] for r in trials],
            "trial_records": [{k: r[k] for k in ("seed", "protected", "drawn", "lost", "doubled", "resent",
                                                 "llm_repeated", "recover_s")} for r in trials + controls],
        }
    return faults


def results_path() -> Path:
    """The lean subset of ``make test`` keeps its figures apart from the suite's."""
    return AOB_DIR / "faults-lean.json" if lean() else RESULTS


def write_results() -> dict[str, dict[str, Any]]:
    """Merge this session's figures into .aob/faults.json (faults not run now keep theirs)."""
    current = summary()
    if not current:
        return current
    AOB_DIR.mkdir(parents=True, exist_ok=True)
    path = results_path()
    with open(path.with_suffix(".lock"), "w") as lock:  # another worker process merging its own
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            stored = {}
        stored.update(current)
        path.write_text(json.dumps(stored, indent=2, sort_keys=True))
    return current


def table(faults: dict[str, dict[str, Any]]) -> list[str]:
    head = f"{'fault':<48} {'trials':>6} {'runs':>5} {'lost':>5} {'doubled':>7} {'resent':>6} {'llm+':>5} " \
           f"{'p50 s':>6} {'max s':>6} {'controls':>9}"
    lines = [head, "-" * len(head)]
    for name, f in faults.items():
        p50 = "-" if f["recover_p50_s"] is None else f"{f['recover_p50_s']:.2f}"
        top = "-" if f["recover_max_s"] is None else f"{f['recover_max_s']:.2f}"
        lines.append(f"{name:<48} {f['trials']:>6} {f['runs']:>5} {f['runs_lost']:>5} {f['effects_doubled']:>7} "
                     f"{f['requests_resent']:>6} {f['llm_calls_repeated']:>5} {p50:>6} {top:>6} "
                     f"{f['controls_detected']:>4}/{f['controls']:<4}")
    return lines


# --- injecting faults from outside -------------------------------------------------------------

def hooks() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def mark_stall(point: str, node_id: str) -> None:
    """Ask the process that reaches ``point`` for ``node_id`` to hold there (tests/support/fault_points.py)."""
    hooks().set(f"aob:test:stall:{point}:{node_id}", 1)


def wait_stalled(point: str, node_id: str, timeout: float = 30.0) -> int:
    key = f"aob:test:stalled:{point}:{node_id}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = hooks().get(key)
        if pid:
            return int(pid)
        time.sleep(0.02)
    raise AssertionError(f"nothing reached the kill point {point} for {node_id} in {timeout}s")


def kill9(pid: int, *, inside: Iterable[int]) -> None:
    """``kill -9`` a process, after checking it belongs to one of the process trees we started."""
    roots = {int(p) for p in inside}
    proc = psutil.Process(pid)
    if pid not in roots and not any(parent.pid in roots for parent in proc.parents()):
        raise AssertionError(f"pid {pid} is not one of ours ({sorted(roots)})")
    os.kill(pid, signal.SIGKILL)
    try:
        proc.wait(timeout=10)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:  # a pool child is reaped by its own parent, not by us
        if proc.status() != psutil.STATUS_ZOMBIE and proc.is_running():
            raise


def pause_sweeper() -> None:
    hooks().set("aob:test:sweeper_paused", 1)


def resume_sweeper() -> None:
    hooks().delete("aob:test:sweeper_paused")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """The engine tests' wait (``tests.engine.flow.wait_until``), every argument named."""
    return wait_until(predicate, timeout=timeout, what=what)


# --- workers the suite may kill whole -----------------------------------------------------------

def fresh_connections(app: Any) -> None:
    """Drop this process's broker connections for new ones. A pool closed with ``force_close_all``
    refuses every acquire from then on ("Acquire on closed pool"), and kombu keeps it in its
    process-wide registry, where the app finds it again: every later publish of the session failed
    (the sweeper's republish hid it) and every later remote control of a worker. kombu's ``reset``
    closes and forgets every pool; the app's own references go too, and the next use makes them."""
    from kombu import pools

    pools.reset()
    app._pool = None
    app.amqp._producer_pool = None


def control(worker: str, command: str, queue: str) -> None:
    """Remote control of a worker by name (add_consumer / cancel_consumer), retried: the broker
    may have just come back."""
    from aob_project.celery import app

    for _ in range(5):
        try:
            if getattr(app.control, command)(queue, destination=[worker], reply=True, timeout=10):
                return
        except Exception:  # noqa: BLE001 - a connection the broker's restart broke: try a fresh one
            fresh_connections(app)
            time.sleep(0.5)
    raise AssertionError(f"{worker} did not answer {command} {queue}")


# The queues a ``Victim`` holds: the session worker, started again by ``supervise``, leaves them to it.
_held_queues: set[str] = set()


class Victim:
    """A worker of its own on some queues, which a trial may kill whole (``kill -9`` of its process
    group: the main process and its pool) and start again. The session worker stops consuming
    those queues meanwhile, so the victim's processes are the ones that take the work."""

    def __init__(self, workers: dict[str, Any], env: dict[str, str], queues: list[str], concurrency: int = 2) -> None:
        self.session_worker = workers["worker"]
        self.env, self.queues, self.concurrency = env, queues, concurrency
        self.generation = 0
        self.proc = self._start()
        for queue in queues:
            control(self.session_worker.node_name, "cancel_consumer", queue)
        _held_queues.update(queues)

    def _start(self) -> Any:
        from tests.support import stack

        self.generation += 1
        return stack.start_worker(self.env, f"victim{self.generation}", queues=self.queues,
                                  concurrency=self.concurrency)

    @property
    def pid(self) -> int:
        return self.proc.popen.pid

    def kill_all(self) -> None:
        self.proc.kill(signal.SIGKILL)
        self.proc.stop()

    def restart(self) -> None:
        self.proc = self._start()

    def stop(self) -> None:
        self.proc.stop()

    def close(self, workers: dict[str, Any] | None = None) -> None:
        """Hand the queues back to the session worker; when it no longer answers remote control
        (after a broker restart this process's replies can go astray), start it again instead."""
        self.proc.stop()
        _held_queues.difference_update(self.queues)
        try:
            for queue in self.queues:
                control(self.session_worker.node_name, "add_consumer", queue)
        except AssertionError:
            if workers is None:
                raise
            from tests.support import stack

            workers["worker"].stop()
            workers["worker"] = stack.start_worker(self.env, "w1", concurrency=3)


def owned_server(kind: type) -> Any:
    """The embedded server of this test session (tests/plugins/services.py) of that kind; a
    server named by the environment is not ours to restart."""
    import pytest

    from tests.plugins import services

    for server in services._started:
        if isinstance(server, kind):
            return server
    pytest.skip(f"the {kind.__name__} of this session was given by the environment: not ours to restart")


def supervise(workers: dict[str, Any], env: dict[str, str], settle_s: float = 3.0) -> list[str]:
    """Do what a deployment's supervisor does (compose ``restart: unless-stopped``, systemd): start
    again each session process (worker, beat) that exited. Waits ``settle_s`` first, so a process
    that is going to die of the fault has died. Returns the names of those started again. The
    session worker started again leaves a ``Victim``'s queues to it, as the one it replaces did
    (else a later trial's stopped victim would not stop that work: its control would lose nothing)."""
    from tests.support import stack

    time.sleep(settle_s)
    restarted = []
    for name, proc in list(workers.items()):
        if proc.popen.poll() is None:
            continue
        restarted.append(name)
        proc.stop()
        queues = [queue for queue in stack.stack_queues() if queue not in _held_queues]
        workers[name] = (stack.start_beat(env) if name == "beat"
                         else stack.start_worker(env, "w1", queues=queues, concurrency=3))
    return restarted
