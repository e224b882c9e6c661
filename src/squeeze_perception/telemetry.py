"""ROS-free per-stage latency / throughput / energy bookkeeping.

Nodes feed it and publish its summary as diagnostics; bench/ and the launch runner's
end-of-run report read the same summary, so every number has one definition.

Counters per stage (docs/reliability.md): `frames_in` received by the callback,
`frames_skipped` sent but never seen (overwritten in the best-effort keep-last input queue or
lost on the way; from publisher sequence-number gaps, or header-stamp gaps at a known period),
`frames_processed` handled without an error, `frames_out` published something, `frames_failed`
refused or failed; `frames_dropped` = skipped + failed. Latency samples whose header stamp is
implausibly far from the node clock (stamp 0, a bag loop's backward jump, a clock from another
machine) are counted in `stamps_rejected` and kept out of the latency statistics.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass
class StageStats:
    """Rolling window of one stage's timings (milliseconds) plus lifetime counters."""

    name: str
    window: int = 200
    frames_in: int = 0
    frames_out: int = 0
    frames_failed: int = 0
    frames_skipped: int = 0
    frames_processed: int = 0
    errors: int = 0
    stamps_rejected: int = 0
    energy_mj_total: float = 0.0
    last_error: str = ""
    last_warning: str = ""
    warnings: int = 0
    counters: dict = field(default_factory=dict)  # e.g. points_dropped_range -> count
    info: dict = field(default_factory=dict)  # text facts, e.g. energy_source -> rapl
    _processing_ms: deque = field(default_factory=deque, repr=False)
    _inference_ms: deque = field(default_factory=deque, repr=False)
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

    def add_inference(self, ms: float) -> None:
        """The backend's own latency of the network call (emulated device time for an emulated
        backend), apart from processing time, which is this host's wall time for the frame."""
        with self._lock:
            self._inference_ms.append(float(ms))
            while len(self._inference_ms) > self.window:
                self._inference_ms.popleft()

    @property
    def frames_dropped(self) -> int:
        """Frames that produced no result: skipped by the input queue plus failed."""
        return self.frames_failed + self.frames_skipped

    def add_latency_checked(self, ms: float, max_past_ms: float, max_ahead_ms: float) -> str | None:
        """Add a latency sample if the stamp is plausible; else count it and return why not.

        A sample more than `max_past_ms` old (stamp 0, a clock from elsewhere, a frame from
        before a bag loop) or more than `max_ahead_ms` in the future (the node clock jumped back,
        a sensor clock ahead) is not a latency: counted in `stamps_rejected`, left out of the stats.
        """
        ms = float(ms)
        if not np.isfinite(ms) or ms > max_past_ms:
            reason = f"header stamp {ms / 1e3:.3g} s behind the node clock (limit {max_past_ms / 1e3:g} s)"
        elif ms < -max_ahead_ms:
            reason = f"header stamp {-ms / 1e3:.3g} s ahead of the node clock (limit {max_ahead_ms / 1e3:g} s)"
        else:
            self.add_latency(ms)
            return None
        self.stamps_rejected += 1
        return reason

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + int(n)

    def add_energy(self, mj: float) -> None:
        self.energy_mj_total += float(mj)

    def error(self, message: str, dropped: bool = True) -> None:
        self.errors += 1
        self.frames_failed += int(dropped)
        self.last_error = message

    def warning(self, message: str) -> None:
        self.warnings += 1
        self.last_warning = message

    @staticmethod
    def _summ(values) -> dict[str, float]:
        if not values:
            return {}
        a = np.asarray(values, dtype=np.float64)
        return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
                "p99": float(np.percentile(a, 99)), "std": float(a.std()), "max": float(a.max())}

    def summary(self) -> dict[str, float | int | str]:
        with self._lock:
            proc, lat, inf = list(self._processing_ms), list(self._latency_ms), list(self._inference_ms)
        out: dict[str, float | int | str] = {
            "frames_in": self.frames_in, "frames_out": self.frames_out,
            "frames_dropped": self.frames_dropped, "errors": self.errors,
            "frames_skipped": self.frames_skipped, "frames_processed": self.frames_processed,
            "frames_failed": self.frames_failed, "stamps_rejected": self.stamps_rejected,
        }
        out.update(sorted(self.counters.items()))
        for k, v in self._summ(proc).items():
            out[f"processing_ms_{k}"] = v
        for k, v in self._summ(lat).items():
            out[f"latency_ms_{k}"] = v
        for k, v in self._summ(inf).items():
            out[f"inference_ms_{k}"] = v
        if self.energy_mj_total:
            out["energy_mj_total"] = self.energy_mj_total
            if self.frames_out:
                out["energy_mj_per_frame"] = self.energy_mj_total / self.frames_out
        out.update(sorted(self.info.items()))
        if self.last_error:
            out["last_error"] = self.last_error
        if self.last_warning:
            out["last_warning"] = self.last_warning
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


SEQUENCE_UNSUPPORTED = (0, 2**64 - 1)  # rmw: RMW_MESSAGE_INFO_SEQUENCE_NUMBER_UNSUPPORTED, or none


class InputMonitor:
    """One subscribed input: arrivals, frames lost before the callback, silence, stamp jumps.

    Lost frames come from the publisher's sequence numbers (DDS publication sequence number,
    one series per publisher): a gap between consecutive numbers seen from one publisher is
    that many messages overwritten in the keep-last queue or lost on the way. Without sequence
    numbers, and when `period_s` > 0 (a source at a known rate, e.g. the bag player's 10 Hz
    sensors), a header-stamp step of k periods counts k - 1 skipped frames. A backward stamp
    step (a bag loop) is counted in `jumps_back` and never as skipped frames; steps longer
    than `max_gap_s` are a pause, not loss.
    """

    def __init__(self, topic: str = "", period_s: float = 0.0, max_gap_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.topic = topic
        self.period_s = float(period_s)
        self.max_gap_s = float(max_gap_s)
        self._clock = clock
        self.started_s = clock()
        self.last_arrival_s: float | None = None
        self.received = 0
        self.skipped = 0
        self.jumps_back = 0
        self._last_seq: dict[Any, int] = {}
        self._last_stamp_ns: int | None = None

    def observe(self, seq: int | None = None, source: Any = None, stamp_ns: int | None = None) -> int:
        """Record one arrival; returns how many frames were skipped just before it."""
        self.received += 1
        self.last_arrival_s = self._clock()
        skipped = 0
        have_seq = seq is not None and int(seq) not in SEQUENCE_UNSUPPORTED
        if have_seq:
            seq = int(seq)
            last = self._last_seq.get(source)
            if last is not None and seq > last + 1:
                skipped = seq - last - 1
            self._last_seq[source] = seq  # seq <= last: the publisher restarted; start over
        if stamp_ns is not None:
            stamp_ns = int(stamp_ns)
            last_stamp = self._last_stamp_ns
            if last_stamp is not None:
                dt_s = (stamp_ns - last_stamp) / 1e9
                if dt_s < 0:
                    self.jumps_back += 1
                elif not have_seq and self.period_s > 0 and dt_s <= self.max_gap_s:
                    skipped = max(0, int(round(dt_s / self.period_s)) - 1)
            self._last_stamp_ns = stamp_ns
        self.skipped += skipped
        return skipped

    def silent_for(self, now_s: float | None = None) -> float:
        """Seconds since the last arrival (since creation when nothing came yet)."""
        now_s = self._clock() if now_s is None else now_s
        return now_s - (self.last_arrival_s if self.last_arrival_s is not None else self.started_s)
