"""Peak RSS of named processes and their children, sampled by a background thread, and the CPU
time each tree used between entering and leaving."""

from __future__ import annotations

import contextlib
import threading

import psutil


class RssSampler:
    """``with RssSampler({"web": pid, "aob-worker": pid}) as s: ...`` then ``s.peaks_mb()``:
    ``{"web": MB, "aob-worker (main)": MB, "aob-worker (pool 1234)": MB, ...}``."""

    def __init__(self, roots: dict[str, int], interval_s: float = 0.1) -> None:
        self.roots = roots
        self.interval_s = interval_s
        self.peaks: dict[str, int] = {}
        # CPU seconds (user + system) per process, first and last seen, by root name
        self.cpu_first: dict[str, dict[int, float]] = {}
        self.cpu_last: dict[str, dict[int, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-rss", daemon=True)

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        for name, pid in self.roots.items():
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                self._note(name, f"{name} (main)", root)
                for child in root.children(recursive=True):
                    self._note(name, f"{name} (pool {child.pid})", child)

    def _note(self, name: str, key: str, proc: psutil.Process) -> None:
        with contextlib.suppress(psutil.Error):
            rss = proc.memory_info().rss
            if rss > self.peaks.get(key, 0):
                self.peaks[key] = rss
            times = proc.cpu_times()
            self.cpu_first.setdefault(name, {}).setdefault(proc.pid, times.user + times.system)
            self.cpu_last.setdefault(name, {})[proc.pid] = times.user + times.system
            # its children that ended and were reaped (-pid: a key of its own), e.g. PostgreSQL
            # backends of connections that lived less than a sampling interval
            reaped = times.children_user + times.children_system
            self.cpu_first[name].setdefault(-proc.pid, reaped)
            self.cpu_last[name][-proc.pid] = reaped

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time each root and its descendants used while sampled (a process that started
        meanwhile counts from its first sample; one that ended after its last, plus, once its
        parent reaped it, all of its time through the parent's children times: an ended process
        that was sampled twice or more is counted partly twice, one never sampled is counted once)."""
        return {name: round(sum(last[pid] - self.cpu_first[name][pid] for pid in last), 3)
                for name, last in sorted(self.cpu_last.items())}

    def peaks_mb(self) -> dict[str, float]:
        return {key: round(value / 2**20, 1) for key, value in sorted(self.peaks.items())}
