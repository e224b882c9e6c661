"""Pairs LiDAR instance tables with camera detection tables by header stamp (ROS-free).

LiDAR frames drive the tracker; a camera table is optional. Rules, in stamp order:

* an instance frame is released as soon as a detection table lies within `tolerance_s`
  of it (the nearest one is attached), or once a detection *newer* than stamp + tolerance
  arrived (the matching one will never come), or after `max_wait_s` of wall time, or at
  once when no camera table came in the last `camera_timeout_s` (LiDAR-only mode);
* frames are released strictly in stamp order; an instance frame older than the last
  released one by at most `jump_back_s` is late and dropped (counted); older than that
  is a time jump backwards (a bag loop): every buffer is cleared and the frame is
  released with `reset=True` so the tracker starts over;
* buffers are bounded (`max_pending` instance frames, `max_detections` camera tables);
  the oldest entries go first.

`now_s` is a monotonic wall clock supplied by the caller, so the logic is testable
without sleeping and independent of sim time.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np


@dataclass
class SyncedFrame:
    stamp_ns: int
    instances: np.ndarray
    detections: np.ndarray | None  # None: no camera table paired (LiDAR-only frame)
    detection_stamp_ns: int | None = None
    reset: bool = False


@dataclass
class SyncStats:
    released: int = 0
    paired: int = 0
    late_dropped: int = 0
    overflow_dropped: int = 0
    resets: int = 0


@dataclass
class StampSync:
    tolerance_s: float = 0.05
    max_wait_s: float = 0.15
    camera_timeout_s: float = 1.0
    jump_back_s: float = 0.5
    max_pending: int = 10
    max_detections: int = 30
    stats: SyncStats = field(default_factory=SyncStats)

    def __post_init__(self) -> None:
        self._pending: list[tuple[int, float, np.ndarray]] = []  # (stamp_ns, arrival_s, table), sorted
        self._det_stamps: list[int] = []  # sorted
        self._det_tables: list[np.ndarray] = []
        self._last_released_ns: int | None = None
        self._last_camera_arrival_s: float | None = None
        self._reset_next = False

    # ------------------------------------------------------------------ inputs
    def push_instances(self, stamp_ns: int, table: np.ndarray, now_s: float) -> list[SyncedFrame]:
        jump = int(self.jump_back_s * 1e9)
        if self._last_released_ns is not None and stamp_ns <= self._last_released_ns:
            if stamp_ns < self._last_released_ns - jump:
                self.reset()
                self._reset_next = True
            else:
                self.stats.late_dropped += 1
                return self.poll(now_s)
        keys = [p[0] for p in self._pending]
        if stamp_ns in keys:  # duplicate stamp: keep the newest table
            self._pending[keys.index(stamp_ns)] = (stamp_ns, now_s, table)
        else:
            bisect.insort(self._pending, (stamp_ns, now_s, table), key=lambda p: p[0])
        while len(self._pending) > self.max_pending:
            self._pending.pop(0)
            self.stats.overflow_dropped += 1
        return self.poll(now_s)

    def push_detections(self, stamp_ns: int, table: np.ndarray, now_s: float) -> list[SyncedFrame]:
        self._last_camera_arrival_s = now_s
        i = bisect.bisect_left(self._det_stamps, stamp_ns)
        if i < len(self._det_stamps) and self._det_stamps[i] == stamp_ns:
            self._det_tables[i] = table
        else:
            self._det_stamps.insert(i, stamp_ns)
            self._det_tables.insert(i, table)
        while len(self._det_stamps) > self.max_detections:
            self._det_stamps.pop(0)
            self._det_tables.pop(0)
        return self.poll(now_s)

    def reset(self) -> None:
        self._pending.clear()
        self._det_stamps.clear()
        self._det_tables.clear()
        self._last_released_ns = None
        self.stats.resets += 1

    # ------------------------------------------------------------------ release
    def camera_active(self, now_s: float) -> bool:
        return self._last_camera_arrival_s is not None and now_s - self._last_camera_arrival_s <= self.camera_timeout_s

    def poll(self, now_s: float) -> list[SyncedFrame]:
        """Release every pending instance frame whose camera partner is found or given up on."""
        out: list[SyncedFrame] = []
        tol = int(self.tolerance_s * 1e9)
        camera = self.camera_active(now_s)
        while self._pending:
            stamp, arrived, table = self._pending[0]
            match = self._nearest_detection(stamp, tol)
            newer_camera = bool(self._det_stamps) and self._det_stamps[-1] > stamp + tol
            if match is None and camera and not newer_camera and now_s - arrived < self.max_wait_s:
                break  # wait for the camera; later frames wait behind this one (order kept)
            self._pending.pop(0)
            frame = SyncedFrame(stamp, table, None, None, reset=self._reset_next)
            self._reset_next = False
            if match is not None:
                frame.detections, frame.detection_stamp_ns = self._det_tables[match], self._det_stamps[match]
                self.stats.paired += 1
            self._last_released_ns = stamp
            self.stats.released += 1
            self._drop_old_detections(stamp - tol)
            out.append(frame)
        return out

    def _nearest_detection(self, stamp: int, tol: int) -> int | None:
        if not self._det_stamps:
            return None
        i = bisect.bisect_left(self._det_stamps, stamp)
        best = None
        for j in (i - 1, i):
            if 0 <= j < len(self._det_stamps) and abs(self._det_stamps[j] - stamp) <= tol:
                if best is None or abs(self._det_stamps[j] - stamp) < abs(self._det_stamps[best] - stamp):
                    best = j
        return best

    def _drop_old_detections(self, older_than_ns: int) -> None:
        i = bisect.bisect_left(self._det_stamps, older_than_ns)
        del self._det_stamps[:i]
        del self._det_tables[:i]
