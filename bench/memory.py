"""Peak RSS of named processes and their children, sampled by a background thread."""

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
                self._note(f"{name} (main)", root)
                for child in root.children(recursive=True):
                    self._note(f"{name} (pool {child.pid})", child)

    def _note(self, key: str, proc: psutil.Process) -> None:
        with contextlib.suppress(psutil.Error):
            rss = proc.memory_info().rss
            if rss > self.peaks.get(key, 0):
                self.peaks[key] = rss

    def peaks_mb(self) -> dict[str, float]:
        return {key: round(value / 2**20, 1) for key, value in sorted(self.peaks.items())}
