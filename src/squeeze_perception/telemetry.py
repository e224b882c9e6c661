"""ROS-free per-stage latency / throughput / energy bookkeeping.

Nodes feed it and publish its summary as diagnostics; bench/ and the launch runner's
end-of-run report read the same summary, so every number has one definition.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np


@dataclass
class StageStats:
    """Rolling window of one stage's timings (milliseconds) plus lifetime counters."""

    name: str
    window: int = 200
    frames_in: int = 0
    frames_out: int = 0
    frames_dropped: int = 0
    errors: int = 0
    energy_mj_total: float = 0.0
    last_error: str = ""
    _processing_ms: deque = field(default_factory=deque, repr=False)
    _latency_ms: deque = field(default_factory=deque, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_processing(self, ms: float) -> None:
        with self._lock:
            self._processing_ms.append(float(ms))
            while len(self._processing_ms) > self.window:
                self._processing_ms.popleft()

    def add_latency(self, ms: float) -> None:
        with self._lock:
            self._latency_ms.append(float(ms))
            while len(self._latency_ms) > self.window:
                self._latency_ms.popleft()

    def add_energy(self, mj: float) -> None:
        self.energy_mj_total += float(mj)

    def error(self, message: str, dropped: bool = True) -> None:
        self.errors += 1
        self.frames_dropped += int(dropped)
        self.last_error = message

    @staticmethod
    def _summ(values) -> dict[str, float]:
        if not values:
            return {}
        a = np.asarray(values, dtype=np.float64)
        return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
                "p99": float(np.percentile(a, 99)), "std": float(a.std()), "max": float(a.max())}

    def summary(self) -> dict[str, float | int | str]:
        with self._lock:
            proc, lat = list(self._processing_ms), list(self._latency_ms)
        out: dict[str, float | int | str] = {
            "frames_in": self.frames_in, "frames_out": self.frames_out,
            "frames_dropped": self.frames_dropped, "errors": self.errors,
        }
        for k, v in self._summ(proc).items():
            out[f"processing_ms_{k}"] = v
        for k, v in self._summ(lat).items():
            out[f"latency_ms_{k}"] = v
        if self.energy_mj_total:
            out["energy_mj_total"] = self.energy_mj_total
            if self.frames_out:
                out["energy_mj_per_frame"] = self.energy_mj_total / self.frames_out
        if self.last_error:
            out["last_error"] = self.last_error
        return out

    @contextmanager
    def measure(self):
        """Time a block as this stage's processing time (wall clock, monotonic)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add_processing((time.perf_counter() - t0) * 1e3)


class RateLimiter:
    """True at most once per `period_s` per key: for logs that must not flood."""

    def __init__(self, period_s: float = 5.0, clock=time.monotonic):
        self.period_s = period_s
        self._clock = clock
        self._last: dict[str, float] = {}

    def ready(self, key: str) -> bool:
        now = self._clock()
        last = self._last.get(key)
        if last is None or now - last >= self.period_s:
            self._last[key] = now
            return True
        return False
